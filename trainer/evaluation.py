"""Offline evaluation: rating-error metrics, the baselines a model must beat, and top-K ranking metrics.

numpy + scikit-learn only (no torch), so evaluation runs anywhere the data loads, and every model is
scored through the same two narrow interfaces: ``predict(users, items)`` for rating error and a
``score_fn(user_codes) -> (n_users, n_items)`` for ranking. Baselines are part of this module because a
metric is only meaningful next to what a trivial model gets on the same split.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol, Self

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from trainer.data.dataset import RatingScale, RatingsData

__all__ = [
    "HALF_STAR_CLASSES",
    "Predictor",
    "GlobalMean",
    "GlobalMedian",
    "BiasesOnly",
    "rating_metrics",
    "fit_baselines",
    "baseline_table",
    "ranking_metrics",
    "popularity_scores",
    "ranking_baselines",
]

logger = logging.getLogger(__name__)

HALF_STAR_CLASSES = np.arange(1, 11) / 2.0
"""The ten classes 0.5, 1.0, ..., 5.0 used for the classification view of rating prediction."""

ScoreFn = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------------------
# Rating metrics
# --------------------------------------------------------------------------------------------------------


def _half_star_class(values: np.ndarray) -> np.ndarray:
    """Class index 1..10 (= rating * 2) of the nearest half star, clipped to [0.5, 5.0].

    Rounds half up (``floor(2x + 0.5)``), not numpy's round-half-to-even: 3.25 -> 3.5 and 3.75 -> 4.0
    alike, so a prediction exactly between two stars always moves the same way. Integer classes avoid
    float-equality pitfalls when sklearn compares labels.
    """
    return np.clip(np.floor(values * 2.0 + 0.5), 1, 10).astype(np.int64)


def _as_float_vector(values: Iterable[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def rating_metrics(
    y_true: Iterable[float] | np.ndarray, y_pred: Iterable[float] | np.ndarray
) -> dict[str, float]:
    """Error metrics plus the half-star classification view of the same predictions.

    Keys: ``rmse``, ``mae``, ``mse`` on the raw predictions; ``accuracy``, ``f1_weighted``,
    ``precision_weighted``, ``recall_weighted`` after rounding both truth and prediction to the nearest
    half star in [0.5, 5.0] (see :func:`_half_star_class`) over the ten classes 0.5..5.0, weighted by
    true-class support, ``zero_division=0``. The classification view is what people mean by "how often
    is the predicted star right", which RMSE alone hides. Classes are fixed to half stars whatever the
    dataset's scale (integer-star data simply never uses the half classes as truth).
    """
    t = _as_float_vector(y_true, "y_true")
    p = _as_float_vector(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values, y_pred {p.size}")
    if t.size == 0:
        raise ValueError("rating_metrics needs at least one rating")
    err = p - t
    mse = float(np.mean(err**2))
    tc, pc = _half_star_class(t), _half_star_class(p)
    precision, recall, f1, _ = precision_recall_fscore_support(
        tc, pc, labels=np.arange(1, 11), average="weighted", zero_division=0
    )
    return {
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(err))),
        "mse": mse,
        "accuracy": float(np.mean(tc == pc)),
        "f1_weighted": float(f1),
        "precision_weighted": float(precision),
        "recall_weighted": float(recall),
    }


# --------------------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------------------


class Predictor(Protocol):
    """Anything that rates (user, item) code pairs; what :func:`baseline_table` and models share."""

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray: ...


def _require_ratings(train: RatingsData, who: str) -> None:
    if len(train) == 0:
        raise ValueError(f"{who}: cannot fit on an empty training set")


def _pair_shape(users: np.ndarray, items: np.ndarray) -> tuple[int, ...]:
    return np.broadcast_shapes(np.shape(users), np.shape(items))


class _Constant:
    """One number for every pair; subclasses decide which."""

    value_: float | None = None

    def _statistic(self, ratings: np.ndarray) -> float:
        raise NotImplementedError

    def fit(self, train: RatingsData) -> Self:
        _require_ratings(train, type(self).__name__)
        raw = self._statistic(train.ratings.astype(np.float64))
        self.value_ = float(np.clip(raw, train.scale.low, train.scale.high))
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self.value_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return np.full(_pair_shape(users, items), self.value_, dtype=np.float64)


class GlobalMean(_Constant):
    """The mean training rating: the RMSE-optimal constant, the floor every model must clear."""

    def _statistic(self, ratings: np.ndarray) -> float:
        return float(np.mean(ratings))


class GlobalMedian(_Constant):
    """The median training rating: the MAE-optimal constant (and usually a whole/half star)."""

    def _statistic(self, ratings: np.ndarray) -> float:
        return float(np.median(ratings))


class BiasesOnly:
    """``mu + b_u + b_i`` with regularised biases, fitted like Surprise's ``BaselineOnly`` (ALS).

    Each pass solves item biases in closed form given user biases, then user biases given item biases::

        b_i = sum_{u in R(i)} (r_ui - mu - b_u) / (reg_items + |R(i)|)
        b_u = sum_{i in R(u)} (r_ui - mu - b_i) / (reg_users + |R(u)|)

    Defaults are Surprise's (``reg_i=10``, ``reg_u=15``, 10 passes), so numbers are comparable with the
    literature; each pass is two ``np.bincount`` calls. Users/items without training ratings get bias 0.
    Predictions are clipped to the training scale.
    """

    def __init__(self, reg_items: float = 10.0, reg_users: float = 15.0, n_iter: int = 10) -> None:
        if reg_items < 0 or reg_users < 0 or n_iter < 1:
            raise ValueError("BiasesOnly needs reg_items >= 0, reg_users >= 0 and n_iter >= 1")
        self.reg_items = reg_items
        self.reg_users = reg_users
        self.n_iter = n_iter
        self.global_mean_: float | None = None
        self.user_bias_ = np.zeros(0)
        self.item_bias_ = np.zeros(0)
        self.scale_ = RatingScale()

    def fit(self, train: RatingsData) -> Self:
        _require_ratings(train, "BiasesOnly")
        users, items = train.users.astype(np.intp), train.items.astype(np.intp)
        r = train.ratings.astype(np.float64)
        mu = float(r.mean())
        n_per_user = np.bincount(users, minlength=train.n_users)
        n_per_item = np.bincount(items, minlength=train.n_items)
        bu = np.zeros(train.n_users)
        bi = np.zeros(train.n_items)
        residual = r - mu
        for _ in range(self.n_iter):
            bi = np.bincount(items, weights=residual - bu[users], minlength=train.n_items)
            bi /= self.reg_items + n_per_item
            bu = np.bincount(users, weights=residual - bi[items], minlength=train.n_users)
            bu /= self.reg_users + n_per_user
        self.global_mean_, self.user_bias_, self.item_bias_ = mu, bu, bi
        self.scale_ = train.scale
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self.global_mean_ is None:
            raise RuntimeError("BiasesOnly is not fitted")
        raw = self.global_mean_ + self.user_bias_[np.asarray(users)] + self.item_bias_[np.asarray(items)]
        return np.clip(raw, self.scale_.low, self.scale_.high)


def fit_baselines(train: RatingsData) -> dict[str, Predictor]:
    """The rating baselines, fitted on ``train``, by the names :func:`baseline_table` reports."""
    return {
        "global_mean": GlobalMean().fit(train),
        "global_median": GlobalMedian().fit(train),
        "biases_only": BiasesOnly().fit(train),
    }


def baseline_table(train: RatingsData, test: RatingsData) -> dict[str, dict[str, float]]:
    """:func:`rating_metrics` on ``test`` for each baseline fitted on ``train``."""
    return {
        name: rating_metrics(test.ratings, model.predict(test.users, test.items))
        for name, model in fit_baselines(train).items()
    }


# --------------------------------------------------------------------------------------------------------
# Ranking metrics
# --------------------------------------------------------------------------------------------------------


def _csr_entries(rows: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in ``rows``, column) pairs of the CSR rows ``rows``, fully vectorised."""
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    batch_pos = np.repeat(np.arange(len(rows)), lengths)
    # Offsets inside each row: 0..len-1, built without a Python loop.
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return batch_pos, indices[np.repeat(starts, lengths) + offsets].astype(np.intp)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Item codes of each row's ``k`` best scores, best first; ties go to the lower item code.

    ``argpartition`` finds a top-k set in O(n_items), but which of several items tied at the cut it keeps
    is unspecified, so rows with such a tie are redone exactly: their candidates (every item scoring at
    least the k-th best score) are sorted by (-score, code) and the first k kept. The k winners are then
    sorted by (-score, code). Results are identical to a full stable sort, reproducibly across numpy
    versions, at O(n_items) per row.
    """
    n_rows, n_items = scores.shape
    if k >= n_items:
        return np.argsort(-scores, axis=1, kind="stable")
    top = np.argpartition(scores, n_items - k, axis=1)[:, n_items - k :]
    rows = np.arange(n_rows)[:, None]
    kth = scores[rows, top].min(axis=1)
    at_least = scores >= kth[:, None]
    n_at_least = at_least.sum(axis=1)
    ambiguous = np.nonzero(n_at_least > k)[0]  # more items tie at the cut than fit in the top k
    if len(ambiguous):
        # All candidates of those rows, ordered by (row, -score, code); each row's first k are its top k.
        r, c = np.nonzero(at_least[ambiguous])
        order = np.lexsort((c, -scores[ambiguous[r], c], r))
        counts = n_at_least[ambiguous]
        firsts = np.cumsum(counts) - counts
        top[ambiguous] = c[order][(firsts[:, None] + np.arange(k)).ravel()].reshape(len(ambiguous), k)
    top_scores = scores[rows, top]
    order = np.lexsort((top, -top_scores), axis=1)
    return np.take_along_axis(top, order, axis=1)


def ranking_metrics(
    score_fn: ScoreFn,
    train: RatingsData,
    test: RatingsData,
    ks: Iterable[int] = (10, 20),
    threshold: float = 4.0,
    batch_users: int = 512,
) -> dict[str, float]:
    """Top-K metrics of ``score_fn`` on the held-out ratings, averaged over users.

    Protocol: an item is relevant to a user when the user rated it ``>= threshold`` in ``test``. Users with
    at least one relevant item are ranked; ``score_fn(user_codes)`` must return ``(len(user_codes),
    n_items)`` float scores (higher is better, no NaN). Each user's training items are set to ``-inf``
    before ranking (recommending what the user already rated is not a hit), and ties are broken by the
    lower item code, deterministically (see :func:`_top_k`). A relevant test pair that is also in train
    (should not happen with a proper split) cannot be recommended, so it is dropped from the relevant
    set and counted in ``n_relevant_in_train``; a user left with no relevant item is not ranked.

    Per user, with ``hits`` = relevant items in the top K and ``R`` = number of relevant items:

    * ``recall@K`` = hits / min(K, R): the convention of most papers (1.0 is reachable for every user);
      ``recall_raw@K`` = hits / R is also returned.
    * ``ndcg@K``: binary gains, DCG = sum over hit positions p (1-based) of 1 / log2(p + 1), divided by
      the ideal DCG of min(K, R) hits in the first positions.
    * ``hr@K``: 1 if any hit.
    * ``precision@K`` = hits / K (K, not min(K, R), in the denominator: the usual definition, as in
      Microsoft Recommenders' ``precision_at_k``).

    Also ``n_users_ranked``. With no rankable user the metrics are NaN (undefined, not zero).
    Scores are processed ``batch_users`` users at a time; memory is about a few bytes x batch x n_items.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError("ks must hold positive integers")
    if batch_users < 1:
        raise ValueError("batch_users must be >= 1")
    n_users, n_items = train.n_users, train.n_items
    if test.n_items != n_items or test.n_users != n_users:
        raise ValueError("train and test must share id maps (split the same RatingsData)")

    # Relevant (user, item) pairs, deduplicated, sorted by user then item; minus pairs seen in training.
    train_indptr, train_indices = train.user_item_csr()
    # user * n_items + item keys; the CSR is sorted by user then item, so its keys are sorted already.
    train_keys = (
        np.repeat(np.arange(n_users, dtype=np.int64), np.diff(train_indptr)) * n_items + train_indices
    )
    relevant = test.ratings >= threshold
    rel_keys = np.sort(test.users[relevant].astype(np.int64) * n_items + test.items[relevant])
    rel_keys = (
        rel_keys[np.concatenate(([True], rel_keys[1:] != rel_keys[:-1]))] if len(rel_keys) else rel_keys
    )
    at = np.minimum(np.searchsorted(train_keys, rel_keys), max(len(train_keys) - 1, 0))
    in_train = train_keys[at] == rel_keys if len(train_keys) else np.zeros(len(rel_keys), dtype=bool)
    n_in_train = int(in_train.sum())
    if n_in_train:
        logger.warning("%d relevant test pairs are also in train; dropped from the relevant sets", n_in_train)
    rel_keys = rel_keys[~in_train]
    rel_users, rel_items = rel_keys // n_items, (rel_keys % n_items).astype(np.int32)
    rel_indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rel_users, minlength=n_users), out=rel_indptr[1:])
    ranked_users = np.nonzero(np.diff(rel_indptr))[0].astype(np.int32)

    k_max = min(ks[-1], n_items)
    discounts = 1.0 / np.log2(np.arange(2, k_max + 2))
    ideal = np.cumsum(discounts)
    names = [f"{m}@{k}" for k in ks for m in ("recall", "recall_raw", "ndcg", "hr", "precision")]
    sums = dict.fromkeys(names, 0.0)

    for start in range(0, len(ranked_users), batch_users):
        users = ranked_users[start : start + batch_users]
        scores = np.asarray(score_fn(users))
        if scores.shape != (len(users), n_items):
            raise ValueError(f"score_fn returned shape {scores.shape}, expected {(len(users), n_items)}")
        if scores.dtype.kind not in "fiub":
            raise ValueError(f"score_fn returned dtype {scores.dtype}, expected floats")
        # Always a private float copy: we write -inf into it and must not touch the caller's array.
        dtype = scores.dtype if scores.dtype.kind == "f" else np.float64
        scores = np.array(scores, dtype=dtype, copy=True)
        if np.isnan(scores).any():
            raise ValueError("score_fn returned NaN scores")
        pos, cols = _csr_entries(users, train_indptr, train_indices)
        scores[pos, cols] = -np.inf
        top = _top_k(scores, k_max)

        is_rel = np.zeros((len(users), n_items), dtype=bool)
        pos, cols = _csr_entries(users, rel_indptr, rel_items)
        is_rel[pos, cols] = True
        hits = np.take_along_axis(is_rel, top, axis=1)
        n_rel = (rel_indptr[users + 1] - rel_indptr[users]).astype(np.float64)

        for k in ks:
            h = hits[:, : min(k, n_items)]
            n_hits = h.sum(axis=1)
            best = np.minimum(k, n_rel)
            sums[f"recall@{k}"] += float(np.sum(n_hits / best))
            sums[f"recall_raw@{k}"] += float(np.sum(n_hits / n_rel))
            dcg = h @ discounts[: h.shape[1]]
            sums[f"ndcg@{k}"] += float(np.sum(dcg / ideal[best.astype(np.intp) - 1]))
            sums[f"hr@{k}"] += float(np.count_nonzero(n_hits))
            sums[f"precision@{k}"] += float(np.sum(n_hits)) / k

    n_ranked = len(ranked_users)
    if n_ranked == 0:
        logger.warning("ranking_metrics: no test user has a relevant (>= %s) unseen item", threshold)
    result: dict[str, float] = {
        name: (s / n_ranked if n_ranked else float("nan")) for name, s in sums.items()
    }
    result["n_users_ranked"] = n_ranked
    result["n_relevant_in_train"] = n_in_train
    return result


def popularity_scores(train: RatingsData) -> np.ndarray:
    """Number of training ratings per item (float64): the non-personalised ranking baseline."""
    return np.bincount(train.items, minlength=train.n_items).astype(np.float64)


def ranking_baselines(
    train: RatingsData,
    test: RatingsData,
    ks: Iterable[int] = (10, 20),
    threshold: float = 4.0,
    batch_users: int = 512,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """:func:`ranking_metrics` of most-popular-first and of random scores (seeded), for comparison.

    Popularity is the baseline personalised models notoriously struggle to beat on MovieLens; random is
    the floor (and a sanity check of the metric code: its recall@K is about K / n_candidate_items).
    """
    pop = popularity_scores(train)
    rng = np.random.default_rng(seed)

    def popular(users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(pop, (len(users), train.n_items))

    def random_scores(users: np.ndarray) -> np.ndarray:
        return rng.random((len(users), train.n_items))

    ks = tuple(ks)
    return {
        "popularity": ranking_metrics(popular, train, test, ks, threshold, batch_users),
        "random": ranking_metrics(random_scores, train, test, ks, threshold, batch_users),
    }
