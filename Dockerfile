# syntax=docker/dockerfile:1
# movierec images, one file, two targets (docker-compose.yml builds both):
#   trainer  PyTorch + CUDA, the train and store extras; loads MovieLens into the store, trains, publishes.
#   api      slim Python, the serve extra only (no torch, no CUDA); serves the artifacts over HTTP.
#     docker build --target trainer -t movierec-trainer .
#     docker build --target api -t movierec-api .
#
# Base images are pinned by exact tag. They are not pinned by digest (@sha256:...) because no registry could
# be reached where this file was written; to pin them byte for byte, append the digest that
# `docker buildx imagetools inspect <image>` prints. The two images of each target must stay equal (the api
# venv is built in one and copied into the other).
#
# Layer order: each target installs its dependencies from pyproject.toml alone (docker/requirements.py lists
# them) before any source is copied, so editing code rebuilds only the last, small layers.

ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm
# PyTorch 2.5.1, CUDA 12.4, cuDNN 9, Python 3.11 (conda under /opt/conda); the CPU is used when no GPU is given.
ARG PYTORCH_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# ------------------------------------------------------------------------------------------------------------
# api, stage 1: a virtual environment with the package and the serve extra.
FROM ${PYTHON_IMAGE} AS api-build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

COPY pyproject.toml docker/requirements.py ./
RUN python requirements.py pyproject.toml serve > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt

COPY README.md ./
COPY movierec ./movierec
COPY service ./service
COPY trainer ./trainer
# The venv's own pip and setuptools are not needed at run time (about 25 MB).
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    && pip uninstall --yes pip setuptools

# ------------------------------------------------------------------------------------------------------------
# api, stage 2: the runtime image, the venv copied in, nothing else built here.
FROM ${PYTHON_IMAGE} AS api

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MOVIEREC_HOST=0.0.0.0 \
    MOVIEREC_PORT=8000 \
    MOVIEREC_WORKERS=2 \
    MOVIEREC_ARTIFACTS_DIR=/artifacts

# uid/gid 10001 in both images: the trainer writes the artifacts volume, the api reads it.
RUN groupadd --system --gid 10001 movierec \
    && useradd --system --uid 10001 --gid movierec --create-home --home-dir /home/movierec movierec \
    && mkdir /artifacts \
    && chown movierec:movierec /artifacts

COPY --from=api-build /opt/venv /opt/venv
COPY --chmod=0755 docker/api-entrypoint.sh docker/healthcheck.py /opt/movierec/docker/

USER 10001:10001
WORKDIR /home/movierec
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/movierec/docker/healthcheck.py", "/health"]
ENTRYPOINT ["/opt/movierec/docker/api-entrypoint.sh"]

# ------------------------------------------------------------------------------------------------------------
# trainer: the package with the train and store extras on top of the base image's own CUDA build of torch.
FROM ${PYTORCH_IMAGE} AS trainer

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MOVIEREC_ARTIFACTS_DIR=/artifacts \
    MOVIEREC_CACHE_DIR=/cache \
    MOVIEREC_DEVICE=auto
WORKDIR /src

COPY pyproject.toml docker/requirements.py ./
# The constraint pins torch to the version already installed, so pip keeps the base's CUDA build and never
# downloads a second torch (it fails instead of replacing it).
RUN python -c "from importlib.metadata import version; print('torch==' + version('torch'))" > constraints.txt \
    && python requirements.py pyproject.toml train store > requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r requirements.txt

COPY README.md ./
COPY movierec ./movierec
COPY service ./service
COPY trainer ./trainer
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf /src/*

RUN groupadd --system --gid 10001 movierec \
    && useradd --system --uid 10001 --gid movierec --create-home --home-dir /home/movierec movierec \
    && mkdir /artifacts /cache \
    && chown movierec:movierec /artifacts /cache

COPY --chmod=0755 docker/trainer-entrypoint.sh /opt/movierec/docker/

USER 10001:10001
WORKDIR /home/movierec
ENTRYPOINT ["/opt/movierec/docker/trainer-entrypoint.sh"]
