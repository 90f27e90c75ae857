"""Evaluation: rating metrics vs sklearn/hand values, baselines, top-K metrics vs a brute-force reference."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    recall_score,
)

from trainer.data.dataset import RatingScale, RatingsData
from trainer.evaluation import (
    BiasesOnly,
    GlobalMean,
    GlobalMedian,
    _top_k,
    baseline_table,
    popularity_scores,
    ranking_baselines,
    ranking_metrics,
    rating_metrics,
)


def make_data(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_items: int,
    scale: RatingScale | None = None,
) -> RatingsData:
    """A RatingsData with codes == ids and empty metadata: all evaluation needs is codes and ratings."""
    return RatingsData(
        users=np.asarray(users, dtype=np.int32),
        items=np.asarray(items, dtype=np.int32),
        ratings=np.asarray(ratings, dtype=np.float32),
        timestamps=np.zeros(len(users), dtype=np.int64),
        user_ids=np.arange(n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        item_titles=np.array([""] * n_items),
        item_years=np.zeros(n_items, dtype=np.int16),
        item_genres=np.zeros((n_items, 0), dtype=np.uint8),
        genre_names=(),
        scale=scale or RatingScale(),
        has_timestamps=False,
        source="test",
    )


def split_random(
    rng: np.random.Generator, n_users: int, n_items: int, density: float, test_frac: float
) -> tuple[RatingsData, RatingsData]:
    """Random half-star ratings on a random sparse pattern, split row-wise into disjoint train/test."""
    mask = rng.random((n_users, n_items)) < density
    users, items = np.nonzero(mask)
    ratings = rng.integers(1, 11, size=len(users)) / 2.0
    is_test = rng.random(len(users)) < test_frac
    full = make_data(users, items, ratings, n_users, n_items)
    return full.subset(~is_test), full.subset(is_test)


# ------------------------------------------------------------------------------------------ rating metrics


def test_rating_metrics_hand_computed() -> None:
    y_true = [1.0, 2.0, 3.0, 4.0, 5.0]
    y_pred = [1.2, 2.26, 2.74, 4.0, 5.6]
    got = rating_metrics(y_true, y_pred)
    err = np.array([0.2, 0.26, -0.26, 0.0, 0.6])
    assert got["mse"] == pytest.approx(np.mean(err**2))
    assert got["rmse"] == pytest.approx(math.sqrt(np.mean(err**2)))
    assert got["mae"] == pytest.approx(np.mean(np.abs(err)))
    # Half stars: 1.2 -> 1.0, 2.26 -> 2.5, 2.74 -> 2.5, 4.0 -> 4.0, 5.6 -> clipped 5.0.
    true_cls = ["1.0", "2.0", "3.0", "4.0", "5.0"]
    pred_cls = ["1.0", "2.5", "2.5", "4.0", "5.0"]
    assert got["accuracy"] == pytest.approx(0.6)
    kw = {"average": "weighted", "zero_division": 0}
    assert got["f1_weighted"] == pytest.approx(f1_score(true_cls, pred_cls, **kw))
    assert got["precision_weighted"] == pytest.approx(precision_score(true_cls, pred_cls, **kw))
    assert got["recall_weighted"] == pytest.approx(recall_score(true_cls, pred_cls, **kw))
    assert got["precision_weighted"] == pytest.approx(0.6)  # three classes perfectly right, 2.5 never true
    assert set(got) == {
        "rmse",
        "mae",
        "mse",
        "accuracy",
        "f1_weighted",
        "precision_weighted",
        "recall_weighted",
    }


def test_half_star_rounding_is_half_up_and_clipped() -> None:
    # 3.25 -> 3.5 and 3.75 -> 4.0 (numpy's round-half-even would send 3.25 to 3.0); 0.1 -> 0.5; 9 -> 5.0.
    got = rating_metrics([3.5, 4.0, 0.5, 5.0], [3.25, 3.75, 0.1, 9.0])
    assert got["accuracy"] == 1.0
    assert got["f1_weighted"] == 1.0


def test_rating_metrics_match_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(1, 11, size=400) / 2.0
    y_pred = y_true + rng.normal(scale=0.8, size=400)
    got = rating_metrics(y_true, y_pred)
    assert got["mse"] == pytest.approx(mean_squared_error(y_true, y_pred))
    assert got["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y_true, y_pred)))
    assert got["mae"] == pytest.approx(mean_absolute_error(y_true, y_pred))
    classes = np.clip(np.floor(y_pred * 2 + 0.5) / 2, 0.5, 5.0)
    t, p = (y_true * 2).astype(int), (classes * 2).astype(int)
    kw = {"average": "weighted", "zero_division": 0}
    assert got["accuracy"] == pytest.approx(accuracy_score(t, p))
    assert got["f1_weighted"] == pytest.approx(f1_score(t, p, **kw))
    assert got["precision_weighted"] == pytest.approx(precision_score(t, p, **kw))
    assert got["recall_weighted"] == pytest.approx(recall_score(t, p, **kw))


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [([], [], "at least one"), ([1.0, 2.0], [1.0], "values"), ([1.0], [float("nan")], "NaN")],
)
def test_rating_metrics_refuse_bad_input(y_true: list[float], y_pred: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rating_metrics(y_true, y_pred)


# ----------------------------------------------------------------------------------------------- baselines


@pytest.fixture
def planted() -> tuple[RatingsData, RatingsData, np.ndarray, np.ndarray]:
    """Ratings = 3.5 + b_u + b_i + small noise, on a wide scale so nothing is clipped."""
    rng = np.random.default_rng(42)
    n_users, n_items = 300, 200
    bu = rng.normal(scale=0.6, size=n_users)
    bi = rng.normal(scale=0.6, size=n_items)
    users, items = np.nonzero(rng.random((n_users, n_items)) < 0.5)
    ratings = 3.5 + bu[users] + bi[items] + rng.normal(scale=0.1, size=len(users))
    full = make_data(users, items, ratings, n_users, n_items, RatingScale(low=-10.0, high=20.0, step=0.5))
    is_test = rng.random(len(users)) < 0.2
    return full.subset(~is_test), full.subset(is_test), bu, bi


def test_biases_only_recovers_planted_biases(
    planted: tuple[RatingsData, RatingsData, np.ndarray, np.ndarray],
) -> None:
    train, test, bu, bi = planted
    model = BiasesOnly().fit(train)
    # Biases are identifiable up to a shared constant; compare centred values.
    assert np.corrcoef(model.user_bias_, bu)[0, 1] > 0.98
    assert np.corrcoef(model.item_bias_, bi)[0, 1] > 0.98
    pred = model.predict(test.users, test.items)
    mean_pred = GlobalMean().fit(train).predict(test.users, test.items)
    rmse_biases = rating_metrics(test.ratings, pred)["rmse"]
    rmse_mean = rating_metrics(test.ratings, mean_pred)["rmse"]
    assert rmse_biases < 0.3 * rmse_mean
    assert rmse_biases < 0.25  # close to the noise (0.1) despite the shrinkage of the regularisation


def test_biases_only_equals_surprise_loop() -> None:
    """The bincount passes compute exactly Surprise's per-item/per-user ALS loops."""
    rng = np.random.default_rng(1)
    train, _ = split_random(rng, 30, 20, 0.3, 0.0)
    model = BiasesOnly(reg_items=10, reg_users=15, n_iter=10).fit(train)
    mu = float(np.mean(train.ratings.astype(np.float64)))
    bu, bi = np.zeros(30), np.zeros(20)
    by_item, by_user = defaultdict(list), defaultdict(list)
    for u, i, r in zip(train.users, train.items, train.ratings.astype(np.float64), strict=True):
        by_item[i].append((u, r))
        by_user[u].append((i, r))
    for _ in range(10):
        bi = np.zeros(20)
        for i, rows in by_item.items():
            bi[i] = sum(r - mu - bu[u] for u, r in rows) / (10 + len(rows))
        bu = np.zeros(30)
        for u, rows in by_user.items():
            bu[u] = sum(r - mu - bi[i] for i, r in rows) / (15 + len(rows))
    np.testing.assert_allclose(model.item_bias_, bi, atol=1e-12)
    np.testing.assert_allclose(model.user_bias_, bu, atol=1e-12)
    assert model.global_mean_ == pytest.approx(mu)


def test_constant_baselines_and_clipping() -> None:
    scale = RatingScale(low=1.0, high=5.0, step=1.0)
    train = make_data([0, 0, 1, 1], [0, 1, 0, 2], [1, 2, 2, 5], 2, 3, scale)
    assert GlobalMean().fit(train).predict(np.array([0, 1]), np.array([2, 2])).tolist() == [2.5, 2.5]
    assert GlobalMedian().fit(train).predict(np.array([1]), np.array([0])).tolist() == [2.0]
    # A user with huge residuals cannot push BiasesOnly outside the scale.
    extreme = make_data([0] * 3 + [1] * 3, [0, 1, 2] * 2, [5, 5, 5, 1, 1, 1], 2, 3, scale)
    pred = BiasesOnly(reg_items=0, reg_users=0).fit(extreme).predict(np.array([0, 1]), np.array([0, 0]))
    assert pred.min() >= 1.0 and pred.max() <= 5.0
    with pytest.raises(RuntimeError, match="not fitted"):
        GlobalMean().predict(np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="empty"):
        BiasesOnly().fit(train.subset(np.zeros(4, dtype=bool)))


def test_baseline_table(planted: tuple[RatingsData, RatingsData, np.ndarray, np.ndarray]) -> None:
    train, test, _, _ = planted
    table = baseline_table(train, test)
    assert list(table) == ["global_mean", "global_median", "biases_only"]
    for metrics in table.values():
        assert set(metrics) >= {"rmse", "mae", "f1_weighted"}
    assert table["biases_only"]["rmse"] < 0.3 * min(
        table["global_mean"]["rmse"], table["global_median"]["rmse"]
    )
    mean = GlobalMean().fit(train).predict(test.users, test.items)
    assert table["global_mean"] == rating_metrics(test.ratings, mean)


# ---------------------------------------------------------------------------------------- ranking metrics


def brute_force_ranking(
    scores: np.ndarray, train: RatingsData, test: RatingsData, ks: tuple[int, ...], threshold: float
) -> dict[str, float]:
    """Pure-Python per-user reference: full sort by (-score, item code), training items last."""
    seen: dict[int, set[int]] = defaultdict(set)
    for u, i in zip(train.users.tolist(), train.items.tolist(), strict=True):
        seen[u].add(i)
    relevant: dict[int, set[int]] = defaultdict(set)
    for u, i, r in zip(test.users.tolist(), test.items.tolist(), test.ratings.tolist(), strict=True):
        if r >= threshold and i not in seen[u]:
            relevant[u].add(i)
    totals: dict[str, float] = defaultdict(float)
    for u, rel in relevant.items():
        candidates = sorted(
            (i for i in range(train.n_items) if i not in seen[u]), key=lambda i: (-scores[u, i], i)
        )
        ranking = candidates + sorted(seen[u])
        for k in ks:
            top = ranking[:k]
            hits = [i in rel for i in top]
            n_hits = sum(hits)
            totals[f"recall@{k}"] += n_hits / min(k, len(rel))
            totals[f"recall_raw@{k}"] += n_hits / len(rel)
            dcg = sum(1 / math.log2(p + 2) for p, h in enumerate(hits) if h)
            idcg = sum(1 / math.log2(p + 2) for p in range(min(k, len(rel))))
            totals[f"ndcg@{k}"] += dcg / idcg
            totals[f"hr@{k}"] += float(n_hits > 0)
    result = {name: value / len(relevant) for name, value in totals.items()}
    result["n_users_ranked"] = len(relevant)
    return result


def table_score_fn(scores: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A score_fn backed by a full (n_users, n_items) table, checking it only gets valid user codes."""

    def score(users: np.ndarray) -> np.ndarray:
        assert users.dtype.kind == "i" and users.ndim == 1
        return scores[users]

    return score


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=30), elements=st.integers(-3, 3)
    ),
    st.integers(1, 35),
)
def test_top_k_equals_a_stable_full_sort(scores: np.ndarray, k: int) -> None:
    scores[:, ::4] = -np.inf  # excluded items, as ranking_metrics writes them
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(_top_k(scores.copy(), min(k, scores.shape[1])), expected)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("batch_users", [1, 7, 512])
def test_ranking_matches_brute_force(seed: int, batch_users: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items = 50, 40
    train, test = split_random(rng, n_users, n_items, density=0.35, test_frac=0.3)
    # Few distinct values: lots of ties, including at the top-K cut.
    scores = rng.integers(0, 4, size=(n_users, n_items)).astype(np.float32)
    ks = (1, 5, 10, 50)  # 50 > n_items: the whole catalogue
    got = ranking_metrics(table_score_fn(scores), train, test, ks=ks, threshold=3.5, batch_users=batch_users)
    expected = brute_force_ranking(scores, train, test, ks, 3.5)
    assert got["n_users_ranked"] == expected["n_users_ranked"] > 0
    assert got["n_relevant_in_train"] == 0
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_ties_go_to_lower_item_code() -> None:
    # One user, nothing in train, items 3 and 5 relevant; all scores equal -> ranking is 0, 1, 2, ...
    train = make_data([], [], [], 1, 8)
    test = make_data([0, 0], [3, 5], [5.0, 5.0], 1, 8)
    flat = np.zeros((1, 8))
    got = ranking_metrics(lambda u: flat[u], train, test, ks=(4, 6))
    assert got["hr@4"] == 1.0 and got["recall@4"] == 0.5  # item 3 is 4th, item 5 is 6th
    assert got["recall@6"] == 1.0
    assert got["ndcg@4"] == pytest.approx((1 / math.log2(5)) / (1 + 1 / math.log2(3)))


def test_training_items_are_excluded_and_dropped_from_relevant() -> None:
    # The user's best-scored items are in train; item 1 is "relevant" in test but also in train.
    train = make_data([0, 0, 0], [0, 1, 2], [5, 5, 5], 1, 6)
    test = make_data([0, 0], [1, 4], [5.0, 5.0], 1, 6)
    scores = np.array([[9.0, 8.0, 7.0, 1.0, 0.5, 0.0]])
    got = ranking_metrics(lambda u: scores[u], train, test, ks=(1, 2))
    assert got["n_relevant_in_train"] == 1
    assert got["recall@1"] == 0.0  # item 3 comes first once 0, 1, 2 are excluded
    assert got["recall@2"] == 1.0 and got["ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert scores[0, 0] == 9.0  # the caller's array is not modified


def test_oracle_and_reversed_oracle() -> None:
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 100
    train_u, train_i, test_u, test_i = [], [], [], []
    for u in range(n_users):
        items = rng.permutation(n_items)
        train_u += [u] * 10
        train_i += items[:10].tolist()
        test_u += [u] * 5
        test_i += items[10:15].tolist()
    train = make_data(train_u, train_i, np.full(len(train_u), 3.0), n_users, n_items)
    test = make_data(test_u, test_i, np.full(len(test_u), 4.5), n_users, n_items)
    relevant = np.zeros((n_users, n_items))
    relevant[test.users, test.items] = 1.0
    # Training items get the oracle's top score too: exclusion must still keep them out.
    oracle = relevant.copy()
    oracle[train.users, train.items] = 10.0
    best = ranking_metrics(lambda u: oracle[u], train, test, ks=(3, 10, 20), batch_users=16)
    worst = ranking_metrics(lambda u: -relevant[u], train, test, ks=(3, 10, 20), batch_users=16)
    for k in (3, 10, 20):
        assert best[f"recall@{k}"] == best[f"ndcg@{k}"] == best[f"hr@{k}"] == 1.0
        assert worst[f"recall@{k}"] == worst[f"ndcg@{k}"] == worst[f"hr@{k}"] == 0.0
    assert best["recall_raw@3"] == pytest.approx(3 / 5)
    assert best["n_users_ranked"] == n_users


def test_ranking_input_errors_and_empty() -> None:
    train = make_data([0], [0], [3.0], 2, 4)
    test = make_data([1], [2], [5.0], 2, 4)
    with pytest.raises(ValueError, match="shape"):
        ranking_metrics(lambda u: np.zeros((len(u), 3)), train, test)
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(lambda u: np.full((len(u), 4), np.nan), train, test)
    with pytest.raises(ValueError, match="ks"):
        ranking_metrics(lambda u: np.zeros((len(u), 4)), train, test, ks=(0,))
    low = make_data([1], [2], [1.0], 2, 4)
    empty = ranking_metrics(lambda u: np.zeros((len(u), 4)), train, low, ks=(2,))
    assert empty["n_users_ranked"] == 0 and math.isnan(empty["recall@2"])


def test_vectorised_top_k_handles_a_larger_catalogue() -> None:
    """argpartition path with ties at the cut on a catalogue far larger than K, vs the brute force."""
    rng = np.random.default_rng(9)
    train, test = split_random(rng, 30, 600, density=0.05, test_frac=0.5)
    scores = np.round(rng.random((30, 600)), 1)  # 11 distinct values over 600 items: the cut is always tied
    got = ranking_metrics(table_score_fn(scores), train, test, ks=(10, 20), threshold=3.0, batch_users=8)
    expected = brute_force_ranking(scores, train, test, (10, 20), 3.0)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_popularity_baseline() -> None:
    rng = np.random.default_rng(5)
    train, test = split_random(rng, 60, 50, density=0.3, test_frac=0.3)
    pop = popularity_scores(train)
    np.testing.assert_array_equal(pop, np.bincount(train.items, minlength=50))
    table = ranking_baselines(train, test, ks=(5, 10), threshold=3.0)
    assert set(table) == {"popularity", "random"}
    expected = brute_force_ranking(np.tile(pop, (60, 1)), train, test, (5, 10), 3.0)
    for name, value in expected.items():
        assert table["popularity"][name] == pytest.approx(value, abs=1e-12), name
    for metrics in table.values():
        assert all(0.0 <= metrics[f"{m}@{k}"] <= 1.0 for m in ("recall", "ndcg", "hr") for k in (5, 10))
