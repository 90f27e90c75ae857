"""Synthetic data: exact shape, no repeated pairs, planted model recoverable, round trip through CSV."""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from trainer.data.dataset import RatingScale
from trainer.data.features import MOVIELENS_GENRES
from trainer.data.movielens import load_movielens
from trainer.data.synth import SyntheticData, generate, parse_shape, write_movielens


def test_parse_shape() -> None:
    assert parse_shape("ml-1m") == (6040, 3706, 1000209)
    assert parse_shape("ML-25M") == (162541, 59047, 25000095)
    assert parse_shape("ml-100k") == (943, 1682, 100000)
    assert parse_shape("ml-latest-small") == (610, 9724, 100836)
    assert parse_shape("100x50x1000") == (100, 50, 1000)
    assert parse_shape(" 1_000 x 20 x 5_000 ") == (1000, 20, 5000)
    with pytest.raises(ValueError, match="unknown shape"):
        parse_shape("ml-7m")
    with pytest.raises(ValueError, match="at least max"):
        parse_shape("100x50x99")
    with pytest.raises(ValueError, match="more ratings than"):
        parse_shape("10x10x101")


def check_invariants(syn: SyntheticData, shape: tuple[int, int, int]) -> None:
    data = syn.data
    n_users, n_items, n_ratings = shape
    assert (data.n_users, data.n_items, len(data)) == shape
    assert data.users.dtype == np.int32 and data.items.dtype == np.int32
    assert data.ratings.dtype == np.float32 and data.timestamps.dtype == np.int64
    key = data.users.astype(np.int64) * n_items + data.items
    assert np.all(np.diff(key) > 0)  # sorted by (user, movie), hence no repeated pair
    assert np.bincount(data.users, minlength=n_users).min() >= 1
    assert np.bincount(data.items, minlength=n_items).min() >= 1
    scale = data.scale
    steps = (data.ratings - scale.low) / scale.step
    assert (
        np.allclose(steps, np.round(steps))
        and data.ratings.min() >= scale.low
        and data.ratings.max() <= scale.high
    )
    # Per user, times are distinct (strictly increasing in time order) and inside 1996..2019.
    order = np.lexsort((data.timestamps, data.users))
    same_user = np.diff(data.users[order]) == 0
    assert np.all(np.diff(data.timestamps[order])[same_user] > 0)
    assert data.timestamps.min() >= 820454400 and data.timestamps.max() <= 1574294400
    assert data.item_genres.shape == (n_items, 18) and data.genre_names == MOVIELENS_GENRES
    assert data.item_genres.sum(axis=1).min() >= 1
    assert data.item_titles[0] == f"Synthetic Movie 1 ({data.item_years[0]})"
    assert data.user_ids.tolist() == list(range(1, n_users + 1))


@pytest.mark.parametrize("shape", ["100x50x1000", "10x10x100", "3x7x7", "50x4x150", "ml-100k"])
def test_generate_invariants(shape: str) -> None:
    dims = parse_shape(shape)
    check_invariants(generate(*dims, seed=3), dims)


def test_generate_is_deterministic_per_seed() -> None:
    a, b, c = (generate(200, 100, 3000, seed=s) for s in (1, 1, 2))
    assert a.data.fingerprint() == b.data.fingerprint()
    assert np.array_equal(a.item_factors, b.item_factors)
    assert a.data.fingerprint() != c.data.fingerprint()


def test_planted_model_explains_the_ratings() -> None:
    noise = 0.3
    syn = generate(943, 1682, 100000, rank=8, noise=noise, seed=0)
    data = syn.data
    residual = data.ratings - syn.expected(data.users, data.items)
    inside = (data.ratings > data.scale.low) & (data.ratings < data.scale.high)  # clipping distorts the rest
    # Gaussian noise plus uniform rounding error over one step.
    expected_std = np.sqrt(noise**2 + data.scale.step**2 / 12)
    assert abs(residual[inside].std() - expected_std) < 0.03
    assert abs(residual[inside].mean()) < 0.02
    # The planted parameters matter: the model explains most of the variance of the ratings.
    assert 1 - residual[inside].var() / data.ratings[inside].var() > 0.75
    assert abs(float(data.ratings.mean()) - syn.global_mean) < 0.2
    # Genres are correlated with the item factors: a linear fit of one genre flag on them beats chance.
    flags = data.item_genres[:, MOVIELENS_GENRES.index("Drama")].astype(np.float64)
    x = np.c_[syn.item_factors, np.ones(len(flags))]
    coef, *_ = np.linalg.lstsq(x, flags, rcond=None)
    assert 1 - ((flags - x @ coef) ** 2).mean() / flags.var() > 0.1


def test_popularity_and_activity_are_skewed() -> None:
    data = generate(943, 1682, 100000, seed=0).data
    per_item = np.sort(np.bincount(data.items))[::-1]
    assert per_item[:17].sum() / len(data) > 0.04  # the top 1% of movies get well over 1% of ratings
    per_user = np.bincount(data.users)
    assert per_user.max() > 5 * np.median(per_user)
    assert per_user.max() <= data.n_items


def test_whole_star_scale() -> None:
    syn = generate(30, 40, 600, scale=RatingScale(1.0, 5.0, 1.0), seed=5)
    assert set(np.unique(syn.data.ratings).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_write_movielens_round_trip(tmp_path: Path) -> None:
    data = generate(120, 80, 2500, seed=4).data
    titles = data.item_titles.astype("U64")  # room for the longer title
    titles[0] = 'Comma, "Quote" Movie (1999)'
    years = data.item_years.copy()
    years[0] = 1999
    data = replace(data, item_titles=titles, item_years=years)
    out = write_movielens(data, tmp_path / "syn")
    assert sorted(p.name for p in out.iterdir()) == ["movies.csv", "ratings.csv"]
    assert (out / "ratings.csv").read_text().splitlines()[0] == "userId,movieId,rating,timestamp"
    back = load_movielens(out)
    assert back.fingerprint() == data.fingerprint()
    assert back.item_titles.tolist() == data.item_titles.tolist()
    assert np.array_equal(back.item_years, data.item_years)
    used = data.item_genres.any(axis=0)  # names are read back from the file, so only genres in use
    assert back.genre_names == tuple(np.array(MOVIELENS_GENRES)[used])
    assert np.array_equal(back.item_genres, data.item_genres[:, used])


def test_write_movielens_formats_like_grouplens(tmp_path: Path) -> None:
    data = generate(3, 4, 6, seed=0).data
    data = replace(
        data,
        ratings=np.array([0.5, 1, 3.5, 4, 5, 2.5], dtype=np.float32),
        timestamps=np.array([0, 9, 10, 99, 1234567890, 5], dtype=np.int64),
    )
    lines = (write_movielens(data, tmp_path) / "ratings.csv").read_text().splitlines()
    ids = [(data.user_ids[u], data.item_ids[i]) for u, i in zip(data.users, data.items, strict=True)]
    expected = [
        f"{u},{i},{r}" for (u, i), r in zip(ids, ["0.5", "1.0", "3.5", "4.0", "5.0", "2.5"], strict=True)
    ]
    assert lines[1:] == [f"{e},{t}" for e, t in zip(expected, [0, 9, 10, 99, 1234567890, 5], strict=True)]
    movies = (tmp_path / "movies.csv").read_text().splitlines()
    assert movies[1].startswith('1,"Synthetic Movie 1 (')


def test_write_movielens_string_ids(tmp_path: Path) -> None:
    data = generate(2, 2, 3, seed=0).data
    data = replace(data, user_ids=np.array(["a,b", "c"]), item_ids=np.array(["m1", "m2"]))
    text = (write_movielens(data, tmp_path) / "ratings.csv").read_text()
    assert text.splitlines()[1].startswith('"a,b",m')


def test_ml1m_shape_round_trip(tmp_path: Path) -> None:
    dims = parse_shape("ml-1m")
    syn = generate(*dims, seed=1)
    check_invariants(syn, dims)
    back = load_movielens(write_movielens(syn.data, tmp_path / "ml-1m-synth"))
    assert back.fingerprint() == syn.data.fingerprint()


@pytest.mark.slow
def test_ml25m_shape_is_fast_and_lean() -> None:
    dims = parse_shape("ml-25m")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        syn = generate(*dims, seed=0)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 60, f"generation took {elapsed:.1f} s"
    assert peak < 4 * 2**30, f"peak {peak / 2**30:.2f} GiB"
    data = syn.data
    assert len(data) == 25000095 and data.n_users == 162541 and data.n_items == 59047
    key = data.users.astype(np.int64) * data.n_items + data.items
    assert np.all(np.diff(key) > 0)
    assert np.bincount(data.items, minlength=data.n_items).min() >= 1
