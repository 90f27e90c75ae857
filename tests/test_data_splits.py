"""Seeded splits: sizes, partitions, shared id maps, temporal order, and the official ml-100k folds."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.shared_data import shared_movielens
from trainer.data.dataset import DataError, RatingScale, RatingsData
from trainer.data.movielens import load_movielens
from trainer.data.splits import leave_last_n, ml100k_fold, random_holdout, validation_split


def make_data(users: list[int], items: list[int], timestamps: list[int] | None = None) -> RatingsData:
    n = len(users)
    n_users, n_items = max(users) + 1, max(items) + 1
    return RatingsData(
        users=np.asarray(users, dtype=np.int32),
        items=np.asarray(items, dtype=np.int32),
        ratings=np.arange(n, dtype=np.float32) % 5 + 1,
        timestamps=np.asarray(timestamps if timestamps is not None else [0] * n, dtype=np.int64),
        user_ids=np.arange(100, 100 + n_users, dtype=np.int64),
        item_ids=np.arange(200, 200 + n_items, dtype=np.int64),
        item_titles=np.array([f"M{i}" for i in range(n_items)]),
        item_years=np.zeros(n_items, dtype=np.int16),
        item_genres=np.zeros((n_items, 0), dtype=np.uint8),
        genre_names=(),
        scale=RatingScale(1.0, 5.0, 1.0),
        has_timestamps=timestamps is not None,
        source="test",
    )


def rows(data: RatingsData) -> set[tuple[int, int, int]]:
    return set(zip(data.users.tolist(), data.items.tolist(), data.timestamps.tolist(), strict=True))


# ----------------------------------------------------------------------------------------- random holdout


def test_random_holdout_partitions_and_is_seeded() -> None:
    n = 1000
    data = make_data([i % 37 for i in range(n)], list(range(n)), list(range(n)))
    train, test = random_holdout(data, 0.2, seed=7)
    assert (len(train), len(test)) == (800, 200)
    assert rows(train) | rows(test) == rows(data) and not rows(train) & rows(test)
    assert train.user_ids is data.user_ids and test.item_ids is data.item_ids  # shared id maps
    assert np.all(np.diff(test.items) > 0)  # original row order kept
    again_train, again_test = random_holdout(data, 0.2, seed=7)
    assert again_test.fingerprint() == test.fingerprint() and again_train.fingerprint() == train.fingerprint()
    assert random_holdout(data, 0.2, seed=8)[1].fingerprint() != test.fingerprint()
    assert len(random_holdout(data, 0.0015, seed=1)[1]) == 2  # rounds to the nearest row
    v_train, v_valid = validation_split(data, 0.2, seed=7)
    assert v_valid.fingerprint() == test.fingerprint() and v_train.fingerprint() == train.fingerprint()
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="test_fraction"):
            random_holdout(data, bad, seed=0)


# ---------------------------------------------------------------------------------------- leave last n


def test_leave_last_n_known_answer() -> None:
    #            user: 0  0  0  0  1  1  2
    data = make_data([0, 0, 0, 0, 1, 1, 2], [0, 1, 2, 3, 0, 1, 0], [40, 10, 30, 20, 5, 6, 1])
    train, test = leave_last_n(data, 2)
    # user 0: times 40 and 30 are the last two; user 1 has exactly 2 (<= n) and user 2 one: all in train.
    assert sorted(zip(test.users.tolist(), test.items.tolist(), strict=True)) == [(0, 0), (0, 2)]
    assert len(train) == 5 and rows(train) | rows(test) == rows(data)
    assert train.item_ids is data.item_ids
    _, test1 = leave_last_n(data, 1)
    assert list(zip(test1.users.tolist(), test1.items.tolist(), strict=True)) == [(0, 0), (1, 1)]


def test_leave_last_n_breaks_ties_by_seeded_random_order() -> None:
    # Items 0..5 all rated at the same second: which one is "last" must not follow file order.
    data = make_data([0] * 6 + [1, 1], [0, 1, 2, 3, 4, 5, 0, 1], [9] * 6 + [1, 2])
    picks = {int(leave_last_n(data, 1, seed=s)[1].items[0]) for s in range(40)}
    assert len(picks) >= 4  # different seeds pick different tied ratings
    first = leave_last_n(data, 2, seed=3)[1]
    assert leave_last_n(data, 2, seed=3)[1].fingerprint() == first.fingerprint()


def test_leave_last_n_refuses_without_timestamps() -> None:
    data = make_data([0, 0, 1], [0, 1, 0])
    with pytest.raises(DataError, match="needs timestamps"):
        leave_last_n(data, 1)
    with pytest.raises(ValueError, match="at least 1"):
        leave_last_n(replace(data, has_timestamps=True), 0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4)), min_size=1, max_size=60),
    st.integers(1, 4),
    st.integers(0, 2**16),
)
def test_leave_last_n_matches_a_per_user_loop(pairs: list[tuple[int, int]], n: int, seed: int) -> None:
    users = [u for u, _ in pairs]
    times = [t for _, t in pairs]
    data = make_data(users, list(range(len(pairs))), times)
    _, test = leave_last_n(data, n, seed=seed)
    tie = np.random.default_rng(seed).permutation(len(pairs))
    expected: set[int] = set()
    for u in set(users):
        mine = sorted((times[r], tie[r], r) for r in range(len(pairs)) if users[r] == u)
        if len(mine) > n:
            expected |= {r for *_, r in mine[-n:]}
    assert set(test.items.tolist()) == expected  # items are row numbers here


# ------------------------------------------------------------------------------------------- ml-100k folds


def write_tiny_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True)
    data = [(1, 10, 4, 100), (1, 20, 3, 101), (2, 10, 5, 102), (2, 30, 1, 103), (3, 20, 2, 104)]
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in data))
    (folder / "u1.base").write_text("1\t10\t4\t100\n2\t30\t1\t103\n3\t20\t2\t104\n")
    (folder / "u1.test").write_text("2\t10\t5\t102\n1\t20\t3\t101\n")
    return folder


def test_ml100k_fold_maps_onto_full_codes(tmp_path: Path) -> None:
    folder = write_tiny_ml100k(tmp_path / "ml-100k")
    data = load_movielens(folder)
    train, test = ml100k_fold(folder, 1)
    assert train.user_ids.tolist() == [1, 2, 3] and train.item_ids.tolist() == [10, 20, 30]
    assert list(zip(train.users.tolist(), train.items.tolist(), strict=True)) == [(0, 0), (1, 2), (2, 1)]
    assert list(zip(test.users.tolist(), test.items.tolist(), strict=True)) == [(0, 1), (1, 0)]
    assert test.ratings.tolist() == [3.0, 5.0]
    # Same answer from a zip and with a preloaded dataset (whose id arrays are then shared).
    zip_path = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    ztrain, ztest = ml100k_fold(zip_path, "1", data)
    assert ztrain.fingerprint() == train.fingerprint() and ztest.fingerprint() == test.fingerprint()
    assert ztest.user_ids is data.user_ids


def test_ml100k_fold_rejects_foreign_rows_and_bad_k(tmp_path: Path) -> None:
    folder = write_tiny_ml100k(tmp_path / "ml-100k")
    (folder / "u1.test").write_text("2\t10\t5\t102\n1\t30\t3\t101\n")
    with pytest.raises(DataError, match=r"u1\.test line 2: rating of user 1 for movie 30 is not in u\.data"):
        ml100k_fold(folder, 1)
    (folder / "u1.test").write_text("2\t10\t4\t102\n")
    with pytest.raises(DataError, match=r"u1\.test line 1: rating 4 differs from u\.data \(5\)"):
        ml100k_fold(folder, 1)
    (folder / "u1.test").write_text("9\t10\t4\t102\n")
    with pytest.raises(DataError, match=r"u1\.test line 1: user id 9 is not in u\.data"):
        ml100k_fold(folder, 1)
    with pytest.raises(DataError, match=r"u2\.base is missing"):
        ml100k_fold(folder, 2)
    for bad in (0, 6, "c"):
        with pytest.raises(ValueError, match="fold must be one of"):
            ml100k_fold(folder, bad)


@pytest.fixture(scope="module")
def real_ml100k() -> tuple[Path, RatingsData]:
    folder = shared_movielens() / "ml-100k"
    return folder, load_movielens(folder)


def test_real_ml100k_folds_partition_u_data(real_ml100k: tuple[Path, RatingsData]) -> None:
    folder, data = real_ml100k
    all_rows = np.arange(len(data))
    key = data.users.astype(np.int64) * data.n_items + data.items
    seen_test = []
    for k in range(1, 6):
        train, test = ml100k_fold(folder, k, data)
        assert (len(train), len(test)) == (80000, 20000)
        assert train.user_ids is data.user_ids and test.item_ids is data.item_ids
        train_key = train.users.astype(np.int64) * data.n_items + train.items
        test_key = test.users.astype(np.int64) * data.n_items + test.items
        assert np.array_equal(np.sort(np.concatenate([train_key, test_key])), np.sort(key))
        seen_test.append(test_key)
    union = np.concatenate(seen_test)
    assert len(np.unique(union)) == len(all_rows) == 100000  # u1..u5.test: disjoint, cover u.data


def test_real_ml100k_fold_a_has_ten_test_ratings_per_user(real_ml100k: tuple[Path, RatingsData]) -> None:
    folder, data = real_ml100k
    train, test = ml100k_fold(folder, "a", data)
    assert (len(train), len(test)) == (90570, 9430)
    assert np.bincount(test.users, minlength=data.n_users).tolist() == [10] * 943
