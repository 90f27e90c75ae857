"""Numpy-only user towers: embed a user from their current ratings with a published artifact.

The ``softmax`` kind (``trainer.models.softmax``) publishes its tower as plain float32 arrays: the input
movie table (``tower_input``, or ``item_factors`` when the input and output embeddings are the same) and
the layers ``tower_w{k}`` (out, in) / ``tower_b{k}``; ``manifest.hyperparameters["tower"]`` says how many
layers there are, the bag weighting, the temperature and the rating map's slope. With them the service
can embed a user the model never saw (or a known user after new ratings) without torch:

    u = slope * tower(sum_i w_i x_i) / temperature,  w = 1/n (mean) or r_i / sum r (rating)

``tower`` is the layers with a ReLU between them (none after the last). The result lives in the same
space as ``user_factors`` (a known user's ``embed_user`` of their training ratings *is* their row of
``user_factors``), so ``u . item_factors[i] + item_bias[i]`` is the served ranking score and
``u . item_factors[i] + user_bias + item_bias[i] + global_offset`` the predicted rating; for a new user
:func:`user_bias` gives the bias the rating map would fit.

Imports numpy only (the service must not need torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["embed_user", "user_bias", "tower_spec"]


def tower_spec(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """The ``tower`` block of a softmax manifest's hyperparameters, checked."""
    spec = hyperparameters.get("tower") if isinstance(hyperparameters, Mapping) else None
    if not isinstance(spec, Mapping):
        raise ValueError("this artifact has no user tower (hyperparameters['tower'] is missing): not a softmax model")
    if spec.get("activation", "relu") != "relu":
        raise ValueError(f"unsupported tower activation {spec.get('activation')!r}")
    if spec.get("weighting", "mean") not in ("mean", "rating"):
        raise ValueError(f"unsupported bag weighting {spec.get('weighting')!r}")
    return dict(spec)


def embed_user(
    arrays: Mapping[str, np.ndarray],
    manifest_hyperparameters: Mapping[str, Any],
    item_codes: np.ndarray | list[int],
    ratings: np.ndarray | list[float] | None = None,
) -> np.ndarray:
    """The user vector (float32, ``(dim,)``) of a user who rated ``item_codes`` (with ``ratings``).

    ``arrays`` is an artifact's arrays (``ModelArtifact.arrays``), ``manifest_hyperparameters`` its
    ``manifest.hyperparameters``. ``ratings`` is required when the model weights the bag by rating, and
    ignored otherwise. An empty history gives the tower's output for an empty bag (a popularity-like
    vector). Arithmetic is float64 on the stored float32 arrays.
    """
    spec = tower_spec(manifest_hyperparameters)
    table = arrays[spec.get("input", "tower_input")]
    items = np.asarray(item_codes, dtype=np.int64).ravel()
    if items.size and (int(items.min()) < 0 or int(items.max()) >= table.shape[0]):
        raise ValueError(f"item codes must lie in [0, {table.shape[0]})")
    if spec.get("weighting", "mean") == "rating":
        if ratings is None:
            raise ValueError("this tower weights the bag by rating: pass the ratings")
        w = np.asarray(ratings, dtype=np.float64).ravel()
        if w.shape != items.shape:
            raise ValueError(f"{items.size} item codes but {w.size} ratings")
    else:
        w = np.ones(items.size, dtype=np.float64)
    total = float(w.sum())
    x = (w / total) @ table[items].astype(np.float64) if items.size and total > 0 else np.zeros(table.shape[1])
    n_layers = int(spec["layers"])
    for k in range(n_layers):
        x = arrays[f"tower_w{k}"].astype(np.float64) @ x + arrays[f"tower_b{k}"].astype(np.float64)
        if k < n_layers - 1:
            x = np.maximum(x, 0.0)
    x = x * (float(spec.get("slope", 1.0)) / float(spec.get("temperature", 1.0)))
    return x.astype(np.float32)


def user_bias(
    arrays: Mapping[str, np.ndarray],
    manifest_hyperparameters: Mapping[str, Any],
    global_offset: float,
    user_vector: np.ndarray,
    item_codes: np.ndarray | list[int],
    ratings: np.ndarray | list[float],
) -> float:
    """The rating map's user bias for a user embedded as ``user_vector``: the ridge-shrunk mean residual.

    Same estimator the trainer fits (``sum(r - offset - score) / (reg + n)``, ``reg`` the manifest's
    ``calibration_reg``), so a folded-in user's predicted ratings are on the same footing as a known one's;
    the trainer scores each rating out of bag (from the other half of the history), this scores the
    history with the embedding built from it, so it reads a little low for short histories.
    """
    items = np.asarray(item_codes, dtype=np.int64).ravel()
    r = np.asarray(ratings, dtype=np.float64).ravel()
    if items.size == 0:
        return 0.0
    score = arrays["item_factors"][items].astype(np.float64) @ np.asarray(user_vector, dtype=np.float64)
    score += arrays["item_bias"][items].astype(np.float64)
    reg = float(manifest_hyperparameters.get("calibration_reg", 5.0))
    return float(np.sum(r - global_offset - score) / (reg + items.size))
