"""Where the tests find the real MovieLens files (never copied into the repo: research-only licence)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_movielens() -> Path:
    """The real MovieLens files: beside the repo, else $MOVIEREC_SHARED_DATA; missing is a failure."""
    candidates = [Path(__file__).resolve().parents[2] / "shared/data/movielens"]
    if os.environ.get("MOVIEREC_SHARED_DATA"):
        candidates.append(Path(os.environ["MOVIEREC_SHARED_DATA"]))
    for candidate in candidates:
        if (candidate / "MANIFEST.md").is_file():
            return candidate
    pytest.fail(
        "real MovieLens data not found at "
        + " or ".join(str(c) for c in candidates)
        + "; set MOVIEREC_SHARED_DATA to the folder holding ml-100k/ and ml-latest-small/"
    )
