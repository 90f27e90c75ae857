# Two entry points, both self-contained: `make up` (the main job) and `make test` (every test).
PY ?= python3
VENV ?= .venv
SHARED ?= ../shared/data/movielens
DATA ?= $(SHARED)/ml-latest-small

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# The CPU build of torch that lies on disk; an unpinned torch would pull a multi-GB CUDA build.
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e ".[train,serve,dev]"
	touch $@

setup: $(VENV)/.installed

up: setup
	$(VENV)/bin/movierec up --data $(DATA)

train: setup
	$(VENV)/bin/movierec train --data $(DATA) --out artifacts

test: setup
	$(VENV)/bin/python -m pytest

.PHONY: setup up train test
