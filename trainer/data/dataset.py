"""The in-memory ratings table every reader produces and every model consumes.

Readers map external ids (whatever the source file uses) to contiguous int32 codes once; every later
stage (splits, models, evaluation, artifacts) works on codes and carries the id arrays along so that
artifacts can map back. Splits keep the id maps of the full dataset, so a train and a test subset share
codes and a model trained on one can score the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd


class DataError(ValueError):
    """Raised for input that cannot be turned into a valid ratings table.

    The message always names the file (and line, where there is one) so that the CLI can print it as is.
    """


@dataclass(frozen=True)
class RatingScale:
    """The range of valid ratings; ``step`` is the granularity (1.0 for ml-100k/1m, 0.5 for later)."""

    low: float = 0.5
    high: float = 5.0
    step: float = 0.5


@dataclass(frozen=True, eq=False)
class RatingsData:
    """Ratings as parallel arrays of codes plus the metadata needed to go back to external ids.

    Attributes:
        users, items: int32 codes, ``0 <= users < n_users``.
        ratings: float32 ratings.
        timestamps: int64 seconds since the epoch; all zero when the source has none
            (``has_timestamps`` is then False and temporal splits refuse to run).
        user_ids, item_ids: external ids in code order (int64 when every id is an integer, else str).
        item_titles: str array, "" when unknown.  item_years: int16, 0 when unknown.
        item_genres: uint8 multi-hot (n_items, len(genre_names)).
        user_features: optional per-user table indexed by code (ml-100k/ml-1m ship gender, age,
            occupation); None for sources without it.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_titles: np.ndarray
    item_years: np.ndarray
    item_genres: np.ndarray
    genre_names: tuple[str, ...]
    scale: RatingScale = field(default_factory=RatingScale)
    has_timestamps: bool = True
    user_features: pd.DataFrame | None = None
    source: str = ""
    duplicates_dropped: int = 0

    @property
    def n_users(self) -> int:
        return int(len(self.user_ids))

    @property
    def n_items(self) -> int:
        return int(len(self.item_ids))

    def __len__(self) -> int:
        return int(len(self.ratings))

    def subset(self, index: np.ndarray) -> RatingsData:
        """Rows selected by a boolean mask or an index array; id maps and metadata are shared."""
        return replace(
            self,
            users=self.users[index],
            items=self.items[index],
            ratings=self.ratings[index],
            timestamps=self.timestamps[index],
        )

    def fingerprint(self) -> str:
        """sha256 over the rating rows and id maps: two runs on the same data agree, any change differs."""
        h = hashlib.sha256()
        for arr in (self.users, self.items, self.ratings, self.timestamps):
            h.update(np.ascontiguousarray(arr).tobytes())
        for ids in (self.user_ids, self.item_ids):
            h.update(np.asarray(ids).astype(str).astype("U").tobytes())
        return h.hexdigest()

    def user_item_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """Each user's rated items as CSR (indptr of length n_users + 1, sorted item codes)."""
        order = np.lexsort((self.items, self.users))
        counts = np.bincount(self.users, minlength=self.n_users)
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return indptr, self.items[order].astype(np.int32)
