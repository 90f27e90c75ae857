"""Fold a new user into a published ALS model: the closed-form ALS user step, in numpy alone.

The service imports this module (no torch, no pandas). Given a list of (movie code, rating) pairs and the
model's fixed movie factors, it solves exactly the ridge regression one ALS sweep solves for every training
user (:func:`trainer.models.als.als_half_step`), with the same target space, normalisation, bias column and
penalty, and returns the user's vector and bias in the artifact's exported scale, so that
:func:`movierec.artifacts.predict`'s formula ``u . V[i] + b_u + b_i + global_offset`` (then the output
transform) scores the folded-in user like a trained one.

Exported scale (see ``trainer.models.als``): with normalisation ``z = (t - mean) / std`` of the targets
``t``, the artifact stores ``std * U``, ``V``, ``std * b_u``, ``std * b_i`` and ``global_offset = mean``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["FOLD_IN_KEYS", "fold_in", "fold_in_from_artifact", "fold_in_params"]

#: The manifest hyper-parameters fold-in reads (written by the ``als`` kind's export).
FOLD_IN_KEYS: tuple[str, ...] = ("lambda_u", "lambda_bias", "biased", "weighted", "norm_std")


def _to_target(ratings: np.ndarray, output: str, low: float | None, high: float | None) -> np.ndarray:
    if output == "linear":
        return ratings
    if output != "sigmoid":
        raise ValueError(f"unknown output {output!r}; expected 'linear' or 'sigmoid'")
    if low is None or high is None or not high > low:
        raise ValueError("output 'sigmoid' needs the sigmoid range: low < high")
    p = np.clip((ratings - low) / (high - low), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def fold_in(
    item_factors: np.ndarray,
    item_bias: np.ndarray,
    global_offset: float,
    item_codes: np.ndarray | list[int],
    ratings: np.ndarray | list[float],
    lambda_u: float,
    *,
    lambda_bias: float = 0.0,
    biased: bool = True,
    weighted: bool = False,
    scale: float = 1.0,
    output: str = "linear",
    low: float | None = None,
    high: float | None = None,
) -> tuple[np.ndarray, float]:
    """The ALS user step for one user from their ratings, against fixed (exported) movie factors.

    Args:
        item_factors, item_bias, global_offset: the artifact's arrays and offset (exported scale).
        item_codes, ratings: the user's ratings as movie codes and values on the rating scale. Each pair is
            one observation (a repeated movie counts twice, as it would in training data).
        lambda_u: the prior's weight on the user vector; ``lambda_bias`` on the user bias.
        biased: solve a user bias along with the vector (the ``biased`` ALS variant); else the bias is 0.
        weighted: multiply the penalty by the number of ratings (ALS-WR), as training did.
        scale: the targets' normalisation std (``norm_std``); the mean is ``global_offset``.
        output, low, high: the target space: ``linear`` fits ratings, ``sigmoid`` fits
            ``logit((r - low) / (high - low))`` (the artifact's sigmoid output range).

    Returns:
        (user vector as float32 of length dim, user bias as a float), in the artifact's exported scale.
        No ratings gives the prior's answer: a zero vector and a zero bias.
    """
    V = np.asarray(item_factors)
    codes = np.asarray(item_codes)
    r = np.asarray(ratings, dtype=np.float64)
    if codes.ndim != 1 or r.ndim != 1 or len(codes) != len(r):
        raise ValueError(f"item_codes and ratings must be 1-D and equally long, got {codes.shape} and {r.shape}")
    if codes.size and codes.dtype.kind not in "iu":
        raise ValueError(f"item codes must be integers, got dtype {codes.dtype}")
    n_items, dim = V.shape
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= n_items):
        raise ValueError(f"item codes must lie in [0, {n_items})")
    if not np.all(np.isfinite(r)):
        raise ValueError("ratings must be finite")
    if not (lambda_u > 0 and lambda_bias >= 0 and scale > 0):
        raise ValueError("need lambda_u > 0, lambda_bias >= 0 and scale > 0")
    if codes.size == 0:
        return np.zeros(dim, dtype=np.float32), 0.0

    z = (_to_target(r, output, low, high) - float(global_offset)) / scale
    X = V[codes].astype(np.float64)
    diag = np.full(dim, float(lambda_u))
    if biased:
        z = z - np.asarray(item_bias, dtype=np.float64)[codes] / scale
        X = np.hstack([X, np.ones((len(codes), 1))])
        diag = np.append(diag, float(lambda_bias))
    if weighted:
        diag = diag * len(codes)
    A = X.T @ X + np.diag(diag)
    b = X.T @ z
    try:
        w = np.linalg.solve(A, b)
    except np.linalg.LinAlgError:  # lambda_bias = 0 with degenerate factors: least-norm solution
        w = np.linalg.lstsq(A, b, rcond=None)[0]
    user_bias = float(scale * w[dim]) if biased else 0.0
    return (scale * w[:dim]).astype(np.float32), user_bias


def fold_in_params(hyperparameters: Mapping[str, Any], output: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`fold_in` from a manifest's hyper-parameters and output spec.

    ``output`` is the manifest's :class:`~movierec.artifacts.OutputSpec` (or a dict with transform/low/high).
    Raises ValueError when the hyper-parameters are not an ALS model's.
    """
    missing = [k for k in FOLD_IN_KEYS if k not in hyperparameters]
    if missing:
        raise ValueError(f"no ALS fold-in hyper-parameters in this model (missing {', '.join(missing)})")
    spec = output if isinstance(output, Mapping) else {k: getattr(output, k) for k in ("transform", "low", "high")}
    return {
        "lambda_u": float(hyperparameters["lambda_u"]),
        "lambda_bias": float(hyperparameters["lambda_bias"]),
        "biased": bool(hyperparameters["biased"]),
        "weighted": bool(hyperparameters["weighted"]),
        "scale": float(hyperparameters["norm_std"]),
        "output": str(spec["transform"]),
        "low": float(spec["low"]),
        "high": float(spec["high"]),
    }


def fold_in_from_artifact(
    artifact: Any, item_codes: np.ndarray | list[int], ratings: np.ndarray | list[float]
) -> tuple[np.ndarray, float]:
    """:func:`fold_in` against a loaded :class:`~movierec.artifacts.ModelArtifact` of kind ``als``.

    Everything the solve needs (lambdas, bias and weighting scheme, normalisation, target space) comes from
    the artifact's manifest, so the result is the user step the model was trained with.
    """
    m = artifact.manifest
    try:
        params = fold_in_params(m.hyperparameters, m.output)
    except ValueError as exc:
        raise ValueError(f"artifact {m.version} (kind {m.model_kind}): {exc}") from None
    return fold_in(artifact.item_factors, artifact.item_bias, m.global_offset, item_codes, ratings, **params)
