"""Train/test splits of a :class:`RatingsData`, all seeded and reproducible.

Every split returns ``(train, test)`` built with :meth:`RatingsData.subset`, so both halves keep the id maps
of the full dataset: a model trained on ``train`` can score ``test`` code for code, and artifacts map back to
the same external ids whatever the split.  Rows keep their original order within each half.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.data.dataset import DataError, RatingsData
from trainer.data.movielens import _open_release, load_movielens
from trainer.data.validate import FileRef, RatingsLayout, RawRatings, read_ratings

_ML100K_FOLDS = ("1", "2", "3", "4", "5", "a", "b")


def random_holdout(data: RatingsData, test_fraction: float, seed: int) -> tuple[RatingsData, RatingsData]:
    """A uniformly random ``test_fraction`` of the rows (rounded to the nearest row) as test.

    Not stratified by user on purpose: it is the classic "random 80/20" protocol that published RMSE numbers
    on MovieLens use, and a user with few ratings may end up entirely in test (cold for the model).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = len(data)
    n_test = int(round(n * test_fraction))
    rng = np.random.default_rng(seed)
    test = np.zeros(n, dtype=bool)
    test[rng.permutation(n)[:n_test]] = True
    return data.subset(~test), data.subset(test)


def stratified_user_split(data: RatingsData, fraction: float, seed: int) -> tuple[RatingsData, RatingsData]:
    """Each user's ratings split at random: ``floor((1 - fraction) * n)`` to train, the rest to test.

    ``fraction`` is the share held out per user (0.25 for the "stratified 75/25" protocol of Microsoft
    Recommenders' ``python_stratified_split(ratio=0.75)``, whose per-user rounding this follows), so every
    user with at least two ratings is in both halves and top-K metrics can rank every user. Vectorised: one
    lexsort by (user, random key) plus group ranks.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    size = len(data)
    key = np.random.default_rng(seed).permutation(size)
    order = np.lexsort((key, data.users))
    counts = np.bincount(data.users, minlength=data.n_users).astype(np.int64)
    starts = np.cumsum(counts) - counts
    users_sorted = data.users[order]
    position = np.arange(size, dtype=np.int64) - starts[users_sorted]
    n_train = np.floor((1.0 - fraction) * counts + 1e-9).astype(np.int64)
    test = np.zeros(size, dtype=bool)
    test[order] = position >= n_train[users_sorted]
    return data.subset(~test), data.subset(test)


def validation_split(train: RatingsData, fraction: float, seed: int) -> tuple[RatingsData, RatingsData]:
    """Carve an early-stopping validation set out of a training set: :func:`random_holdout` by another name.

    Kept as its own function so call sites say what the split is for, and so the protocol for validation
    can change later without touching the test protocol.
    """
    return random_holdout(train, fraction, seed)


def leave_last_n(data: RatingsData, n: int, seed: int = 0) -> tuple[RatingsData, RatingsData]:
    """Each user's last ``n`` ratings by timestamp go to test; users with ``<= n`` ratings stay in train.

    This is the temporal protocol for top-N evaluation: predict what a user rates next from what they rated
    before.  Ties in timestamp (MovieLens users often rate many movies in the same second) are broken by a
    random order drawn from ``seed``, not by file order, which GroupLens sorts by movie id and would bias
    the test set towards high ids.  Vectorised: one lexsort plus group ranks, no per-user loop.
    """
    if not data.has_timestamps:
        raise DataError(
            f"{data.source or 'dataset'}: leave-last-n needs timestamps and this dataset has none; "
            "use a random holdout instead"
        )
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    size = len(data)
    tie = np.random.default_rng(seed).permutation(size)
    order = np.lexsort((tie, data.timestamps, data.users))
    counts = np.bincount(data.users, minlength=data.n_users).astype(np.int64)
    starts = np.cumsum(counts) - counts
    users_sorted = data.users[order]
    position = np.arange(size, dtype=np.int64) - starts[users_sorted]
    from_end = counts[users_sorted] - 1 - position
    test = np.zeros(size, dtype=bool)
    test[order] = (from_end < n) & (counts[users_sorted] > n)
    return data.subset(~test), data.subset(test)


def ml100k_fold(
    folder_or_zip: str | Path, k: int | str, data: RatingsData | None = None
) -> tuple[RatingsData, RatingsData]:
    """The official ml-100k split ``u{k}.base`` / ``u{k}.test`` (k in 1..5, 'a' or 'b').

    The fold files are mapped onto the codes of the full ``u.data`` load (pass it as ``data`` to avoid
    reloading), so all folds share one id map and results are comparable across folds.  A fold row that is
    not in ``u.data`` with the same rating is a :class:`DataError`: such a copy is not the official split.
    """
    fold = str(k).strip().lower()
    if fold not in _ML100K_FOLDS:
        raise ValueError(f"ml-100k fold must be one of {', '.join(_ML100K_FOLDS)}, got {k!r}")
    if data is None:
        data = load_movielens(folder_or_zip)
    if data.user_ids.dtype.kind != "i" or data.item_ids.dtype.kind != "i":
        raise DataError(f"{data.source}: not an ml-100k load (ids are not integers)")
    layout = RatingsLayout(sep="\t", header=False, n_fields=4, user=0, item=1, rating=2, timestamp=3)
    halves: list[RatingsData] = []
    with _open_release(folder_or_zip) as release:
        if release.kind != "ml-100k":
            raise DataError(f"{folder_or_zip}: not an ml-100k release (no u.data)")
        for part in ("base", "test"):
            name = f"u{fold}.{part}"
            if not release.has(name):
                raise DataError(f"{folder_or_zip}: {name} is missing")
            ref = release.ref(name)
            raw = read_ratings(ref, layout, data.scale)
            halves.append(data.subset(_rows_of(data, raw, ref)))
    train, test = halves
    return train, test


def _rows_of(data: RatingsData, raw: RawRatings, ref: FileRef) -> np.ndarray:
    """Row indices of ``data`` holding the (user, item) pairs of ``raw``, checked to carry equal ratings."""
    user_codes = _lookup(data.user_ids, raw.users, ref, "user id")
    item_codes = _lookup(data.item_ids, raw.items, ref, "movie id")
    n_items = np.int64(max(data.n_items, 1))
    data_keys = data.users.astype(np.int64) * n_items + data.items
    order = np.argsort(data_keys, kind="stable")
    sorted_keys = data_keys[order]
    keys = user_codes.astype(np.int64) * n_items + item_codes
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    found = sorted_keys[at] == keys
    if not found.all():
        row = int(np.argmin(found))
        raise DataError(
            f"{ref.name} line {row + 1}: rating of user {raw.users[row]} for movie {raw.items[row]} "
            "is not in u.data"
        )
    rows = order[at]
    same = np.abs(data.ratings[rows].astype(np.float64) - raw.ratings) < 1e-6
    if not same.all():
        row = int(np.argmin(same))
        raise DataError(
            f"{ref.name} line {row + 1}: rating {raw.ratings[row]:g} differs from u.data "
            f"({float(data.ratings[rows[row]]):g})"
        )
    if len(np.unique(rows)) != len(rows):
        raise DataError(f"{ref.name}: repeats a (user, movie) pair")
    return np.sort(rows)


def _lookup(ids: np.ndarray, values: np.ndarray, ref: FileRef, label: str) -> np.ndarray:
    """Codes of external ids via binary search in the ascending id map; unknown ids are a DataError."""
    at = np.minimum(np.searchsorted(ids, values), len(ids) - 1)
    ok = ids[at] == values
    if not ok.all():
        row = int(np.argmin(ok))
        raise DataError(f"{ref.name} line {row + 1}: {label} {values[row]} is not in u.data")
    return at.astype(np.int32)
