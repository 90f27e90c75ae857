"""The served model: one artifact version plus everything built from it once, at load.

A :class:`LoadedModel` is immutable after construction. The app holds one reference to the current one
and replaces that reference in a single assignment when a new version is loaded, so a request that
started on the old version finishes on it and nothing is ever half-swapped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from movierec import artifacts
from movierec.artifacts import ModelArtifact
from service.config import ServiceSettings
from service.popularity import popular_scores
from service.retrieval import ItemIndex

log = logging.getLogger(__name__)


class IdMap:
    """External id -> row code, vectorised (sorted ids + searchsorted): no per-id Python for batches."""

    def __init__(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids)
        self._numeric = ids.dtype.kind in "iu"
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        if self._numeric:
            return values.astype(np.int64, copy=False)
        return values.astype(str)

    def codes(self, values: np.ndarray | list[int]) -> np.ndarray:
        """Codes of ``values`` (int64), -1 where the id is unknown."""
        v = self._prepare(np.asarray(values))
        if len(self._sorted) == 0 or v.size == 0:
            return np.full(v.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted, v)
        pos = np.minimum(pos, len(self._sorted) - 1)
        found = self._sorted[pos] == v
        return np.where(found, self._order[pos], -1).astype(np.int64)

    def code(self, value: int) -> int | None:
        c = int(self.codes(np.asarray([value]))[0])
        return None if c < 0 else c


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """An artifact with its indexes, id maps and popularity, ready to answer requests."""

    artifact: ModelArtifact
    index: ItemIndex
    users: IdMap
    items: IdMap
    popularity: np.ndarray  # damped mean rating per item code
    global_mean: float
    genre_columns: dict[str, int]
    genre_lists: list[list[str]]
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0

    @property
    def version(self) -> str:
        return self.artifact.version

    def genre_mask(self, genre: str) -> np.ndarray:
        """Boolean mask of movies carrying ``genre`` (KeyError when the catalogue has no such genre)."""
        return self.artifact.item_genres[:, self.genre_columns[genre.lower()]].astype(bool)

    def movie_info(self, code: int) -> dict[str, object]:
        art = self.artifact
        year = int(art.item_years[code])
        return {
            "movie_id": _plain_id(art.item_ids[code]),
            "title": str(art.item_titles[code]),
            "year": year if year > 0 else None,
            "genres": self.genre_lists[code],
        }

    def predict_codes(self, user_codes: np.ndarray, item_codes: np.ndarray) -> np.ndarray:
        return artifacts.predict(self.artifact, user_codes, item_codes)

    def fallback_rating(self, user_code: int | None, item_code: int | None) -> tuple[float, str]:
        """A documented prediction when the user or the movie is unknown to the model.

        movie known -> transform(movie bias + offset) ("movie_bias"); user known -> transform(user bias +
        offset) ("user_bias"); neither -> the training mean rating ("global_mean").
        """
        art = self.artifact
        m = art.manifest
        if item_code is not None:
            raw = float(art.item_bias[item_code]) + m.global_offset
            strategy = "movie_bias"
        elif user_code is not None:
            raw = float(art.user_bias[user_code]) + m.global_offset
            strategy = "user_bias"
        else:
            return float(np.clip(self.global_mean, m.rating_scale.low, m.rating_scale.high)), "global_mean"
        return float(artifacts.apply_output_transform(np.asarray([raw]), m.output, m.rating_scale)[0]), strategy


def _plain_id(value: object) -> int | str:
    return int(value) if isinstance(value, np.integer | int) else str(value)


def load_model(path: Path, settings: ServiceSettings) -> LoadedModel:
    """Load and fully validate a version (or an artifacts root's latest), then build its indexes.

    Raises :class:`movierec.artifacts.ArtifactError` (naming the folder) for anything invalid; nothing is
    returned half-built.
    """
    t0 = time.perf_counter()
    art = artifacts.load_version(path)
    index = ItemIndex.from_artifact(
        art,
        kind=settings.index,
        hnsw_m=settings.hnsw_m,
        hnsw_ef_search=settings.hnsw_ef_search,
        hnsw_ef_construction=settings.hnsw_ef_construction,
    )
    if "item_rating_count" in art.arrays and "item_rating_mean" in art.arrays:
        count = np.asarray(art.arrays["item_rating_count"], dtype=np.float64)
        mean = np.asarray(art.arrays["item_rating_mean"], dtype=np.float64)
    else:  # older artifacts: counts from the already-rated CSR, the movie-bias fallback as the mean
        count = np.bincount(art.arrays["rated_indices"], minlength=art.n_items).astype(np.float64)
        raw = art.item_bias.astype(np.float64) + art.manifest.global_offset
        mean = artifacts.apply_output_transform(raw, art.manifest.output, art.manifest.rating_scale)
    total = count.sum()
    global_mean = float((count * mean).sum() / total) if total > 0 else float(np.mean(mean))
    popularity = popular_scores(count, mean, settings.popularity_prior, global_mean)
    names = art.genre_names
    genres = art.item_genres.astype(bool)
    genre_lists = [[names[j] for j in np.flatnonzero(row)] for row in genres]
    model = LoadedModel(
        artifact=art,
        index=index,
        users=IdMap(art.user_ids),
        items=IdMap(art.item_ids),
        popularity=popularity,
        global_mean=global_mean,
        genre_columns={name.lower(): j for j, name in enumerate(names)},
        genre_lists=genre_lists,
        load_seconds=time.perf_counter() - t0,
    )
    log.info("model %s ready in %.2fs (%d users, %d movies)", art.version, model.load_seconds, art.n_users, art.n_items)
    return model
