"""Cold-start recommendations: movies ranked by a damped (Bayesian) mean rating.

A movie with two 5-star ratings should not outrank one with thousands of 4.5s, so each movie's mean is
shrunk towards the global mean as if ``prior`` extra ratings at the global mean had been given::

    score_i = (count_i * mean_i + prior * global_mean) / (count_i + prior)

Numpy only (never torch or pandas). Rankings use the same exactness and tie rules as
:mod:`service.retrieval`: score descending, then item code ascending; ``exclude`` never returned,
only ``allowed`` movies returned, all eligible ones when fewer than ``k`` exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from movierec.artifacts import ModelArtifact, apply_output_transform
from service.retrieval import SearchResult, _check_k, eligible_mask, top_k_exact

__all__ = ["popular_scores", "top_popular", "Popularity", "from_artifact"]


def popular_scores(count: np.ndarray, mean: np.ndarray, prior: float, global_mean: float | None = None) -> np.ndarray:
    """Damped mean per movie (float64): ``(count * mean + prior * global_mean) / (count + prior)``.

    ``global_mean`` defaults to the count-weighted mean of all ratings, ``sum(count * mean) / sum(count)``
    (the mean of movies without ratings is ignored). ``prior`` (pseudo-ratings) must be positive and
    finite; counts non-negative; means finite where ``count > 0``.
    """
    count = np.asarray(count)
    mean = np.asarray(mean, dtype=np.float64)
    if count.ndim != 1 or mean.shape != count.shape:
        raise ValueError(f"count and mean must be 1-D of the same length, got {count.shape} and {mean.shape}")
    if count.size and count.dtype.kind not in "iuf":
        raise ValueError(f"count must be numeric, got dtype {count.dtype}")
    count = count.astype(np.float64)
    if not np.isfinite(count).all() or (count < 0).any():
        raise ValueError("counts must be finite and non-negative")
    prior = float(prior)
    if not (np.isfinite(prior) and prior > 0):
        raise ValueError(f"prior must be positive and finite, got {prior}")
    rated = count > 0
    if not np.isfinite(mean[rated]).all():
        raise ValueError("means of rated movies must be finite")
    mean = np.where(rated, mean, 0.0)  # a NaN mean with count 0 must not leak into 0 * NaN
    if global_mean is None:
        total = float(count.sum())
        if total <= 0:
            raise ValueError("no ratings at all: pass global_mean explicitly")
        global_mean = float((count * mean).sum() / total)
    global_mean = float(global_mean)
    if not np.isfinite(global_mean):
        raise ValueError(f"global_mean must be finite, got {global_mean}")
    return (count * mean + prior * global_mean) / (count + prior)


def top_popular(
    scores: np.ndarray, k: int, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None
) -> SearchResult:
    """The ``k`` best-scored eligible movies (exact; ties by code ascending); scores returned as float32."""
    k = _check_k(k)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {scores.shape}")
    mask, n_eligible = eligible_mask(len(scores), exclude, allowed)
    if n_eligible == 0:
        return SearchResult(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))
    codes = top_k_exact(scores, min(k, n_eligible), mask)
    return SearchResult(codes, scores[codes].astype(np.float32))


@dataclass(frozen=True, eq=False)
class Popularity:
    """One artifact's popularity ranking, computed once per model version.

    ``source`` says where ``count``/``mean`` came from: ``"statistics"`` (the artifact's
    ``item_rating_count`` / ``item_rating_mean``) or ``"fallback"`` (older artifacts without them: counts
    from the already-rated CSR, means from the model as the predicted rating of a user with zero factors and
    zero bias, ``transform(global_offset + item_bias)``).
    """

    scores: np.ndarray
    count: np.ndarray
    mean: np.ndarray
    prior: float
    global_mean: float
    source: Literal["statistics", "fallback"]

    @classmethod
    def from_artifact(cls, art: ModelArtifact, prior: float = 20.0) -> Popularity:
        """Popularity of an artifact's movies with ``prior`` pseudo-ratings (``ServiceSettings.popularity_prior``)."""
        n = art.n_items
        if "item_rating_count" in art.arrays and "item_rating_mean" in art.arrays:
            count = np.asarray(art.arrays["item_rating_count"]).astype(np.int64)
            mean = np.asarray(art.arrays["item_rating_mean"], dtype=np.float64)
            source: Literal["statistics", "fallback"] = "statistics"
        else:
            indices = np.asarray(art.arrays["rated_indices"])
            count = np.bincount(indices.astype(np.int64), minlength=n).astype(np.int64)
            m = art.manifest
            raw = m.global_offset + np.asarray(art.item_bias, dtype=np.float64)
            mean = apply_output_transform(raw, m.output, m.rating_scale)
            source = "fallback"
        if count.shape != (n,) or mean.shape != (n,):
            raise ValueError(f"{art.version}: popularity arrays must have shape ({n},)")
        if int(count.sum()) > 0:
            global_mean = float((count * np.where(count > 0, mean, 0.0)).sum() / count.sum())
        else:  # nothing rated: the model's own intercept, through the output transform
            m = art.manifest
            global_mean = float(apply_output_transform(np.array(m.global_offset), m.output, m.rating_scale))
        scores = popular_scores(count, mean, prior, global_mean)
        for a in (scores, count, mean):
            a.flags.writeable = False
        return cls(scores, count, mean, float(prior), global_mean, source)

    def top(self, k: int, *, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None) -> SearchResult:
        """The ``k`` most popular eligible movies (see :func:`top_popular`)."""
        return top_popular(self.scores, k, exclude, allowed)


def from_artifact(art: ModelArtifact, prior: float = 20.0) -> Popularity:
    """Shorthand for :meth:`Popularity.from_artifact`."""
    return Popularity.from_artifact(art, prior)
