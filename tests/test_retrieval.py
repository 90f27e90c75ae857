"""Service retrieval (FAISS) and cold-start popularity against brute-force numpy references.

The references below are the definitions in service/retrieval.py's docstring, computed independently in
float64: dot = u . v_i + b_i; cosine = u . v_i / (|u| |v_i|), 0 where either norm is below COSINE_EPS;
order = score descending, then code ascending.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pytest

from movierec import artifacts
from service.popularity import Popularity, popular_scores, top_popular
from service.retrieval import COSINE_EPS, ItemIndex, SearchResult, configure_faiss_threads

ROOT = Path(__file__).resolve().parents[1]
N, D = 500, 16
ZERO_ROWS = (3, 77, 250)
TINY_ROWS = (5, 123, 499)
DUPES = (40, 41, 300)  # identical vectors and biases: exact ties in every score
STRATEGIES = ["auto", "subset", "selector", "overfetch"]


# --------------------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------------------


def ref_scores(factors: np.ndarray, bias: np.ndarray | None, q: np.ndarray, sim: str) -> np.ndarray:
    v = factors.astype(np.float64)
    q = np.asarray(q, dtype=np.float64)
    if sim == "dot":
        s = v @ q
        return s + bias.astype(np.float64) if bias is not None else s
    norms = np.linalg.norm(v, axis=1)
    qn = np.linalg.norm(q)
    out = np.zeros(len(v))
    if qn >= COSINE_EPS:
        ok = norms >= COSINE_EPS
        out[ok] = (v[ok] @ q) / (norms[ok] * qn)
    return out


def ref_topk(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    codes = np.arange(len(scores)) if mask is None else np.flatnonzero(mask)
    order = np.lexsort((codes, -scores[codes]))
    return codes[order][:k]


def assert_topk(res: SearchResult, scores: np.ndarray, k: int, mask: np.ndarray | None = None, tol=1e-5):
    """Same length, scores and codes as the reference; codes may differ only among (near-)equal scores."""
    ref = ref_topk(scores, k, mask)
    assert res.codes.dtype == np.int64 and res.scores.dtype == np.float32
    assert len(res.codes) == len(ref) == len(res.scores)
    assert len(np.unique(res.codes)) == len(res.codes)
    if mask is not None:
        assert mask[res.codes].all()
    assert np.isfinite(res.scores).all()
    np.testing.assert_allclose(res.scores, scores[res.codes], atol=tol, rtol=0)
    # position by position the same score: a differing code can only be a tie of the reference's
    np.testing.assert_allclose(scores[res.codes], scores[ref], atol=tol, rtol=0)
    assert (np.diff(res.scores) <= 0).all()


# --------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    v = rng.normal(0, 0.4, (N, D)).astype(np.float32)
    b = rng.normal(0, 0.3, N).astype(np.float32)
    v[list(ZERO_ROWS)] = 0.0
    v[list(TINY_ROWS)] = rng.normal(0, 1e-30, (len(TINY_ROWS), D)).astype(np.float32)
    v[list(DUPES)] = v[40] * 3  # long: often in the top 10, so ties get exercised
    b[list(DUPES)] = 0.5
    v[60] = 2 * v[61]  # same direction: a cosine tie
    return v, b


@pytest.fixture(scope="module")
def users() -> np.ndarray:
    rng = np.random.default_rng(8)
    u = rng.normal(0, 0.5, (25, D))
    u[0] = 0.0  # a zero user vector
    return u


@pytest.fixture(scope="module")
def flat(catalogue) -> ItemIndex:
    return ItemIndex(*catalogue)


@pytest.fixture(scope="module")
def by_strategy(catalogue) -> dict[str, ItemIndex]:
    return {s: ItemIndex(*catalogue, filter_strategy=s) for s in STRATEGIES}


@pytest.fixture(scope="module")
def hnsw(catalogue) -> ItemIndex:
    return ItemIndex(*catalogue, kind="hnsw")


@pytest.fixture(scope="module")
def real_artifact(tmp_path_factory) -> artifacts.ModelArtifact:
    """A tiny MF trained by the real trainer and loaded through the artifact contract."""
    from trainer.config import load_settings
    from trainer.data.synth import generate, write_movielens
    from trainer.pipeline import train

    tmp = tmp_path_factory.mktemp("retrieval-art")
    data = write_movielens(generate(150, 120, 5000, rank=4, noise=0.3, seed=11).data, tmp / "data")
    train(load_settings(None, data=data, artifacts_dir=tmp / "art", epochs=2, dim=8))
    return artifacts.load_version(tmp / "art")


def _filters(rng: np.random.Generator, case: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    exclude = rng.choice(N, 150, replace=False) if case in ("exclude", "both") else None
    allowed = rng.random(N) < 0.3 if case in ("allowed", "both") else None
    if exclude is not None:
        exclude = np.concatenate([exclude, exclude[:10]])  # duplicates in exclude are fine
    return exclude, allowed


def _mask(exclude, allowed) -> np.ndarray | None:
    if exclude is None and allowed is None:
        return None
    mask = np.ones(N, bool) if allowed is None else allowed.copy()
    if exclude is not None:
        mask[exclude] = False
    return mask


# --------------------------------------------------------------------------------------------------------
# recommend(): exactness against the reference
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", ["none", "exclude", "allowed", "both"])
@pytest.mark.parametrize("sim", ["dot", "cosine"])
def test_recommend_matches_reference(catalogue, users, by_strategy, strategy, case, sim):
    v, b = catalogue
    index = by_strategy[strategy]
    rng = np.random.default_rng(hash((strategy, case, sim)) % 2**32)
    for u in users:
        exclude, allowed = _filters(rng, case)
        scores = ref_scores(v, b if sim == "dot" else None, u, sim)
        for k in (1, 10, 37):
            res = index.recommend(u, k, sim, exclude=exclude, allowed=allowed)
            assert_topk(res, scores, k, _mask(exclude, allowed))


def test_strategies_agree_exactly(users, by_strategy):
    rng = np.random.default_rng(3)
    for u in users:
        exclude = rng.choice(N, 300, replace=False)
        allowed = rng.random(N) < 0.4
        for sim in ("dot", "cosine"):
            for ex, al in ((exclude, None), (exclude, allowed), (None, allowed)):
                a = by_strategy["selector"].recommend(u, 20, sim, exclude=ex, allowed=al)
                for index in by_strategy.values():
                    b = index.recommend(u, 20, sim, exclude=ex, allowed=al)
                    np.testing.assert_array_equal(a.codes, b.codes)
                    np.testing.assert_array_equal(a.scores, b.scores)


def test_exact_ties_order_by_code(catalogue, flat):
    v, b = catalogue
    # a user pointing along the duplicated vector: the three duplicates are the top 3, tied exactly
    u = v[40].astype(np.float64)
    for sim in ("dot", "cosine"):
        res = flat.recommend(u, 3, sim)
        assert res.codes.tolist() == [40, 41, 300]
        assert res.scores[0] == res.scores[1] == res.scores[2]
    # a catalogue of identical movies: everything ties, so the answer is the lowest eligible codes
    same = np.tile(v[7], (50, 1))
    index = ItemIndex(same, np.full(50, 0.25, np.float32))
    for sim in ("dot", "cosine"):
        res = index.recommend(np.ones(D), 5, sim, exclude=np.array([0, 2]))
        assert res.codes.tolist() == [1, 3, 4, 5, 6]
        res = index.recommend(-np.ones(D), 5, sim, allowed=np.arange(50) >= 45)
        assert res.codes.tolist() == [45, 46, 47, 48, 49]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tie_groups_larger_than_k_are_cut_by_code(strategy):
    """25 distinct movies, each present 20 times at random codes: every top-k cut falls inside a tie group."""
    rng = np.random.default_rng(12)
    base_v = rng.normal(0, 0.4, (25, D)).astype(np.float32)
    base_b = rng.normal(0, 0.3, 25).astype(np.float32)
    which = rng.permutation(np.repeat(np.arange(25), 20))
    v, b = base_v[which], base_b[which]
    index = ItemIndex(v, b, filter_strategy=strategy)
    for u in rng.normal(0, 0.5, (10, D)):
        exclude = rng.choice(N, 60, replace=False)
        allowed = rng.random(N) < 0.6
        for sim in ("dot", "cosine"):
            group_scores = ref_scores(base_v, base_b if sim == "dot" else None, u, sim)[which]  # exact ties
            for k in (1, 7, 10, 33):
                for ex, al in ((None, None), (exclude, None), (exclude, allowed)):
                    res = index.recommend(u, k, sim, exclude=ex, allowed=al)
                    np.testing.assert_array_equal(res.codes, ref_topk(group_scores, k, _mask(ex, al)))


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_user_who_rated_all_but_three(catalogue, users, kind, strategy):
    v, b = catalogue
    index = ItemIndex(v, b, kind=kind, filter_strategy=strategy)
    left = np.array([17, 250, 444])  # 250 is a zero row
    exclude = np.setdiff1d(np.arange(N), left)
    for u in users[:5]:
        for sim in ("dot", "cosine"):
            res = index.recommend(u, 10, sim, exclude=exclude)
            assert sorted(res.codes.tolist()) == left.tolist()
            assert_topk(res, ref_scores(v, b if sim == "dot" else None, u, sim), 10, _mask(exclude, None))


def test_k_larger_than_eligible_and_bad_arguments(catalogue, users, flat):
    v, b = catalogue
    u = users[3]
    assert len(flat.recommend(u, 10_000, "dot")) == N
    allowed = np.zeros(N, bool)
    allowed[[1, 2, 3, 9, 10, 11, 400]] = True
    res = flat.recommend(u, 50, "dot", exclude=np.array([2, 400, 401]), allowed=allowed)
    assert sorted(res.codes.tolist()) == [1, 3, 9, 10, 11]
    assert_topk(res, ref_scores(v, b, u, "dot"), 50, _mask(np.array([2, 400, 401]), allowed))
    empty = flat.recommend(u, 5, "cosine", exclude=np.arange(N))
    assert len(empty) == 0 and empty.codes.dtype == np.int64
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be positive"):
            flat.recommend(u, k, "dot")
    with pytest.raises(ValueError):
        flat.recommend(u, 2.5, "dot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="similarity"):
        flat.recommend(u, 3, "l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        flat.recommend(u[:-1], 3, "dot")
    with pytest.raises(ValueError, match="finite"):
        flat.recommend(np.full(D, np.nan), 3, "dot")
    with pytest.raises(ValueError, match="exclude"):
        flat.recommend(u, 3, "dot", exclude=np.array([N]))
    with pytest.raises(ValueError, match="exclude"):
        flat.recommend(u, 3, "dot", exclude=np.array([-1]))
    with pytest.raises(ValueError, match="allowed"):
        flat.recommend(u, 3, "dot", allowed=np.ones(N - 1, bool))
    with pytest.raises(ValueError, match="allowed"):
        flat.recommend(u, 3, "dot", allowed=np.ones(N, int))
    with pytest.raises(ValueError):
        ItemIndex(v, b[:-1])
    with pytest.raises(ValueError, match="finite"):
        ItemIndex(np.full((3, 2), np.inf, np.float32), np.zeros(3, np.float32))


def test_biases_only_model_and_empty_filters():
    bias = np.array([0.1, 0.5, 0.3, 0.5, -1.0], np.float32)
    for kind in ("flat", "hnsw"):
        index = ItemIndex(np.zeros((5, 0), np.float32), bias, kind=kind)  # dim 0: a biases-only model
        assert index.recommend(np.zeros(0), 3, "dot").codes.tolist() == [1, 3, 2]
        assert index.recommend(np.zeros(0), 3, "dot", exclude=np.array([], np.int64)).codes.tolist() == [1, 3, 2]
        assert index.recommend(np.zeros(0), 3, "dot", allowed=np.ones(5, bool)).codes.tolist() == [1, 3, 2]
        assert index.recommend(np.zeros(0), 2, "cosine").codes.tolist() == [0, 1]
        assert index.similar(1, 2, "dot").codes.tolist() == [0, 2]


def test_cosine_zero_and_tiny_vectors(catalogue, users, flat, hnsw):
    v, b = catalogue
    special = list(ZERO_ROWS) + list(TINY_ROWS)
    for index in (flat, hnsw):
        for u in users[1:]:
            res = index.recommend(u, N, "cosine")
            assert len(res) == N
            assert np.isfinite(res.scores).all()
            assert (res.scores >= -1).all() and (res.scores <= 1).all()
            got = dict(zip(res.codes.tolist(), res.scores.tolist(), strict=True))
            assert all(got[c] == 0.0 for c in special)
        # zero query: all scores 0, ties by code ascending, exclusion honoured
        res = index.recommend(np.zeros(D), 6, "cosine", exclude=np.array([0, 2]))
        assert res.codes.tolist() == [1, 3, 4, 5, 6, 7] and (res.scores == 0).all()
        res = index.recommend(np.full(D, 1e-300), 3, "cosine")
        assert res.codes.tolist() == [0, 1, 2] and (res.scores == 0).all()
        # a zero / tiny movie's neighbours: all 0, lowest codes, never itself
        res = index.similar(3, 4, "cosine")
        assert res.codes.tolist() == [0, 1, 2, 4] and (res.scores == 0).all()
        res = index.similar(5, 4, "cosine")
        assert res.codes.tolist() == [0, 1, 2, 3] and (res.scores == 0).all()
        res = index.similar(77, 3, "dot")
        assert res.codes.tolist() == [0, 1, 2] and (res.scores == 0).all()


# --------------------------------------------------------------------------------------------------------
# similar()
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sim", ["dot", "cosine"])
def test_similar_matches_reference_and_excludes_itself(catalogue, flat, by_strategy, sim):
    v, _ = catalogue
    rng = np.random.default_rng(5)
    for index in by_strategy.values():
        for code in [40, 61, 123, 250, *rng.choice(N, 20, replace=False).tolist()]:
            scores = ref_scores(v, None, v[code], sim)
            mask = np.ones(N, bool)
            mask[code] = False
            res = index.similar(code, 10, sim)
            assert code not in res.codes
            assert_topk(res, scores, 10, mask)
            allowed = rng.random(N) < 0.2
            allowed[code] = True  # allowed or not, the movie itself never comes back
            res = index.similar(code, 10, sim, allowed=allowed)
            assert code not in res.codes
            assert_topk(res, scores, 10, allowed & mask)
    assert flat.similar(40, 2, "dot").codes.tolist() == [41, 300]  # its exact duplicates, by code
    assert len(flat.similar(9, N, sim)) == N - 1
    only_self = np.zeros(N, bool)
    only_self[9] = True
    assert len(flat.similar(9, 5, sim, allowed=only_self)) == 0
    with pytest.raises(ValueError):
        flat.similar(N, 5, sim)
    with pytest.raises(ValueError):
        flat.similar(0, 0, sim)


# --------------------------------------------------------------------------------------------------------
# A real artifact from the trainer
# --------------------------------------------------------------------------------------------------------


def test_real_artifact_dot_order_is_predicted_rating_order(real_artifact):
    art = real_artifact
    index = ItemIndex.from_artifact(art)
    all_items = np.arange(art.n_items)
    for user in range(0, art.n_users, 7):
        rated = art.rated_items(user)
        res = index.recommend(art.user_factors[user], art.n_items, "dot", exclude=rated)
        assert len(res) == art.n_items - len(np.unique(rated))
        assert not np.isin(res.codes, rated).any()
        pred = artifacts.predict(art, user, all_items)
        # the predicted rating never increases down the list...
        assert (np.diff(pred[res.codes]) <= 1e-12).all()
        # ...and the top 10 is the top 10 by predicted rating among unrated movies (ties aside)
        unrated = np.ones(art.n_items, bool)
        unrated[rated] = False
        top = index.recommend(art.user_factors[user], 10, "dot", exclude=rated)
        ref = ref_topk(pred, 10, unrated)
        np.testing.assert_allclose(pred[top.codes], pred[ref], atol=1e-9)
        # the returned score is u . v + b_i: the raw prediction minus the user's constant part
        raw = art.user_factors[user].astype(np.float64) @ art.item_factors[top.codes].T.astype(np.float64)
        np.testing.assert_allclose(top.scores, raw + art.item_bias[top.codes], atol=1e-5)
    for sim in ("dot", "cosine"):
        for user in (0, 1, 2):
            u = art.user_factors[user]
            assert_topk(
                index.recommend(u, 10, sim, exclude=art.rated_items(user)),
                ref_scores(art.item_factors, art.item_bias if sim == "dot" else None, u, sim),
                10,
                np.isin(np.arange(art.n_items), art.rated_items(user), invert=True),
            )


def test_real_artifact_popularity(real_artifact):
    art = real_artifact
    pop = Popularity.from_artifact(art, prior=20.0)
    assert pop.source == "statistics"
    counts = np.bincount(art.arrays["rated_indices"], minlength=art.n_items)
    np.testing.assert_array_equal(pop.count, counts)
    gm = float((pop.count * pop.mean).sum() / pop.count.sum())
    np.testing.assert_allclose(pop.scores, (pop.count * pop.mean + 20 * gm) / (pop.count + 20), rtol=1e-12)
    rated = art.rated_items(0)
    res = pop.top(10, exclude=rated)
    assert not np.isin(res.codes, rated).any()
    assert_topk(res, pop.scores, 10, np.isin(np.arange(art.n_items), rated, invert=True))

    # an older artifact without the statistics: counts from the CSR, means from the model
    old_arrays = {k: a for k, a in art.arrays.items() if k not in ("item_rating_count", "item_rating_mean")}
    old = replace(art, arrays=old_arrays)
    fallback = Popularity.from_artifact(old, prior=20.0)
    assert fallback.source == "fallback"
    np.testing.assert_array_equal(fallback.count, counts)
    m = art.manifest
    expected_mean = artifacts.apply_output_transform(
        m.global_offset + art.item_bias.astype(np.float64), m.output, m.rating_scale
    )
    np.testing.assert_allclose(fallback.mean, expected_mean)
    assert np.isfinite(fallback.scores).all()
    assert len(fallback.top(5)) == 5


# --------------------------------------------------------------------------------------------------------
# HNSW
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_catalogue() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(21)
    n, d = 5000, 32
    # trained-like: a few dominant directions plus noise, biases of a similar spread
    basis = rng.normal(0, 1, (8, d))
    v = (rng.normal(0, 0.5, (n, 8)) @ basis * 0.15 + rng.normal(0, 0.1, (n, d))).astype(np.float32)
    b = rng.normal(0, 0.3, n).astype(np.float32)
    u = rng.normal(0, 0.5, (200, 8)) @ basis * 0.15 + rng.normal(0, 0.1, (200, d))
    return v, b, u


@pytest.mark.parametrize("sim", ["dot", "cosine"])
def test_hnsw_recall_at_10(big_catalogue, sim):
    v, b, users = big_catalogue
    flat = ItemIndex(v, b)
    hnsw = ItemIndex(v, b, kind="hnsw")
    hits = 0
    for u in users:
        exact = flat.recommend(u, 10, sim)
        approx = hnsw.recommend(u, 10, sim)
        assert len(approx) == 10 and (np.diff(approx.scores) <= 0).all()
        hits += len(np.intersect1d(exact.codes, approx.codes))
    recall = hits / (10 * len(users))
    assert recall >= 0.95, recall


def test_hnsw_k_results_under_heavy_filtering(big_catalogue):
    v, b, users = big_catalogue
    n = len(v)
    hnsw = ItemIndex(v, b, kind="hnsw", hnsw_ef_search=16)
    rng = np.random.default_rng(4)
    for u in users[:40]:
        allowed = np.zeros(n, bool)
        allowed[rng.choice(n, 25, replace=False)] = True  # 0.5 % of the catalogue
        exclude = rng.choice(np.flatnonzero(allowed), 10, replace=False)
        for sim in ("dot", "cosine"):
            res = hnsw.recommend(u, 10, sim, exclude=exclude, allowed=allowed)
            assert len(res) == 10
            assert allowed[res.codes].all() and not np.isin(res.codes, exclude).any()
            exclude_most = np.setdiff1d(np.arange(n), rng.choice(n, 12, replace=False))
            res = hnsw.recommend(u, 10, sim, exclude=exclude_most)
            assert len(res) == 10 and not np.isin(res.codes, exclude_most).any()
            res = hnsw.similar(int(rng.integers(n)), 10, sim, allowed=allowed)
            assert len(res) >= 9 and allowed[res.codes].all()


# --------------------------------------------------------------------------------------------------------
# Popularity
# --------------------------------------------------------------------------------------------------------


def test_popularity_hand_computed():
    count = np.array([0, 2, 10, 4], dtype=np.int64)
    mean = np.array([0.0, 5.0, 4.0, 3.0], dtype=np.float32)
    gm = (2 * 5 + 10 * 4 + 4 * 3) / 16  # 3.875
    expected = [gm, (10 + 5 * gm) / 7, (40 + 5 * gm) / 15, (12 + 5 * gm) / 9]
    s = popular_scores(count, mean, prior=5.0)
    np.testing.assert_allclose(s, expected, rtol=1e-12)
    assert top_popular(s, 10).codes.tolist() == [1, 2, 0, 3]
    assert top_popular(s, 2, exclude=np.array([1])).codes.tolist() == [2, 0]
    assert top_popular(s, 10, exclude=np.array([1]), allowed=np.array([True, True, False, True])).codes.tolist() == [
        0,
        3,
    ]
    np.testing.assert_allclose(top_popular(s, 1).scores, [expected[1]], rtol=1e-6)
    # an explicit global mean; equal scores come back by code
    s2 = popular_scores(count, mean, prior=5.0, global_mean=4.0)
    np.testing.assert_allclose(s2[0], 4.0)
    assert top_popular(np.array([1.0, 2.0, 2.0, 1.0, 2.0]), 4).codes.tolist() == [1, 2, 4, 0]
    assert len(top_popular(s, 3, exclude=np.arange(4))) == 0
    with pytest.raises(ValueError):
        popular_scores(count, mean, prior=0.0)
    with pytest.raises(ValueError):
        popular_scores(np.array([-1, 2]), np.array([1.0, 2.0]), prior=1.0)
    with pytest.raises(ValueError, match="global_mean"):
        popular_scores(np.zeros(3, np.int64), np.zeros(3), prior=1.0)
    with pytest.raises(ValueError, match="k must be positive"):
        top_popular(s, 0)


# --------------------------------------------------------------------------------------------------------
# Threads, imports
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_concurrent_searches_match_sequential(catalogue, users, kind):
    index = ItemIndex(*catalogue, kind=kind)
    rng = np.random.default_rng(9)
    jobs = [(u, sim, rng.choice(N, 100, replace=False)) for u in users for sim in ("dot", "cosine")] * 4
    expected = [index.recommend(u, 10, sim, exclude=ex) for u, sim, ex in jobs]
    seen_threads: set[int] = set()

    def run(job):
        res = index.recommend(job[0], 10, job[1], exclude=job[2])
        seen_threads.add(faiss.omp_get_max_threads())  # the setting reached this worker thread
        return res

    previous = configure_faiss_threads(2)  # also with OpenMP inside each search
    try:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(run, jobs))
    finally:
        assert configure_faiss_threads(previous) == 2
    assert seen_threads == {2}
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.scores, b.scores)
    with pytest.raises(ValueError):
        configure_faiss_threads(0)


def test_service_modules_do_not_import_torch_or_pandas():
    code = (
        "import sys, service.retrieval, service.popularity; "
        "bad = [m for m in ('torch', 'pandas') if m in sys.modules]; assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
