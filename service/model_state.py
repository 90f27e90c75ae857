"""The served model: one artifact version plus everything built from it once, at load.

A :class:`LoadedModel` is immutable after construction. The app holds one reference to the current one
and replaces that reference in a single assignment when a new version is loaded, so a request that
started on the old version finishes on it and nothing is ever half-swapped.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from movierec import artifacts
from movierec.artifacts import ModelArtifact
from service.candidates import CandidateCache
from service.config import ServiceSettings
from service.popularity import Popularity
from service.retrieval import ItemIndex

log = logging.getLogger(__name__)


_LUT_SLACK = 8
_LUT_MIN = 1 << 16
"""Non-negative integer ids whose maximum is below ``8 * n_ids + 65536`` get a dense lookup table (int64,
at most ~64 bytes per id plus 512 KiB): one indexing operation per batch and an O(1) single lookup,
instead of a binary search. MovieLens ids qualify (ml-25m: 62,423 movies, max id 209,171)."""


class IdMap:
    """External id -> row code, vectorised: a dense lookup table for compact non-negative integer ids,
    else sorted ids + searchsorted. No per-id Python for batches either way."""

    def __init__(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids)
        self._numeric = ids.dtype.kind in "iu"
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]
        self._lut: np.ndarray | None = None
        self._lut_list: list[int] = []
        n = len(ids)
        if self._numeric and n and int(self._sorted[0]) >= 0 and int(self._sorted[-1]) < _LUT_SLACK * n + _LUT_MIN:
            lut = np.full(int(self._sorted[-1]) + 1, -1, dtype=np.int64)
            lut[ids.astype(np.int64)] = np.arange(n, dtype=np.int64)  # ids are unique (artifact validation)
            lut.flags.writeable = False
            self._lut = lut
            self._lut_list = lut.tolist()  # single lookups: list indexing beats a numpy scalar round trip

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        if self._numeric:
            return values.astype(np.int64, copy=False)
        return values.astype(str)

    def codes(self, values: np.ndarray | list[int]) -> np.ndarray:
        """Codes of ``values`` (int64), -1 where the id is unknown."""
        v = np.asarray(values)
        lut = self._lut
        if lut is not None and v.dtype.kind in "iu":
            v = v.astype(np.int64, copy=False)
            if v.size == 0:
                return np.full(v.shape, -1, dtype=np.int64)
            if int(v.min()) >= 0 and int(v.max()) < len(lut):
                return lut[v]
            inside = (v >= 0) & (v < len(lut))
            out = np.full(v.shape, -1, dtype=np.int64)
            out[inside] = lut[v[inside]]
            return out
        v = self._prepare(v)
        if len(self._sorted) == 0 or v.size == 0:
            return np.full(v.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted, v)
        pos = np.minimum(pos, len(self._sorted) - 1)
        found = self._sorted[pos] == v
        return np.where(found, self._order[pos], -1).astype(np.int64)

    def code(self, value: int) -> int | None:
        if self._lut is not None and type(value) is int:  # the request path: a validated int id
            c = self._lut_list[value] if 0 <= value < len(self._lut_list) else -1
        else:
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
    # kind "sequence": the ONNX model (onnxruntime) that predicts ratings; its factors retrieve candidates
    scorer: Any = None
    # recommendation lists reused across requests (see service.candidates); empty for each new version
    candidates: CandidateCache = field(default_factory=lambda: CandidateCache(0, 0))
    # Per-movie JSON, rendered on first use (see movie_json); a list slot write is atomic, and two
    # requests racing to fill one slot write the same bytes.
    _movie_json: list[bytes | None] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_movie_json", [None] * self.artifact.n_items)

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

    def movie_json(self, code: int) -> bytes:
        """``movie_info(code)`` as the opening of a compact JSON object, without the closing brace:
        ``{"movie_id":1,"title":"...","year":1995,"genres":[...]`` (what the hot endpoints extend with
        their per-request fields, see :mod:`service.render`)."""
        frag = self._movie_json[code]
        if frag is None:
            frag = self._movie_json[code] = orjson.dumps(self.movie_info(code))[:-1]
        return frag

    @property
    def kind(self) -> str:
        return self.artifact.manifest.model_kind

    def predict_codes(self, user_codes: np.ndarray, item_codes: np.ndarray) -> np.ndarray:
        if self.scorer is not None:
            return np.asarray(self.scorer.predict(user_codes, item_codes), dtype=np.float64)
        return artifacts.predict(self.artifact, user_codes, item_codes)

    def fold_in(self, item_codes: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, float] | None:
        """A user vector and bias from a list of ratings against the fixed movie factors, with numpy alone:
        the ALS user step (``als``) or the tower over the user's bag (``softmax``); None for other kinds,
        which answer such users with popular movies."""
        art = self.artifact
        if self.kind == "als":
            from movierec.foldin import fold_in_from_artifact

            vector, bias = fold_in_from_artifact(art, item_codes, ratings)
            return np.asarray(vector, dtype=np.float32), float(bias)
        if self.kind == "softmax":
            from movierec import towers

            hp = art.manifest.hyperparameters
            vector = towers.embed_user(art.arrays, hp, item_codes, ratings)
            bias = towers.user_bias(art.arrays, hp, art.manifest.global_offset, vector, item_codes, ratings)
            return np.asarray(vector, dtype=np.float32), float(bias)
        return None

    def predict_vector(self, vector: np.ndarray, bias: float, item_codes: np.ndarray) -> np.ndarray:
        """The artifact's prediction formula for a folded-in user (vector, bias) and several movies."""
        art = self.artifact
        m = art.manifest
        raw = art.item_factors[item_codes].astype(np.float64) @ vector.astype(np.float64)
        raw += bias + art.item_bias[item_codes].astype(np.float64) + m.global_offset
        return artifacts.apply_output_transform(raw, m.output, m.rating_scale)

    def predict_user(self, user_code: int, item_codes: np.ndarray) -> np.ndarray:
        """:func:`movierec.artifacts.predict` for one user and several movies (float64, same formula and
        transform) without the reference's per-call argument checks: the codes come from the id maps and
        the index, so they are in range. Equal to the reference up to float64 rounding (~1e-16)."""
        if self.scorer is not None:
            return self.predict_codes(np.full(len(item_codes), user_code), np.asarray(item_codes))
        art = self.artifact
        m = art.manifest
        uf = art.user_factors[user_code].astype(np.float64)
        raw = art.item_factors[item_codes].astype(np.float64) @ uf
        raw += float(art.user_bias[user_code])
        raw += art.item_bias[item_codes].astype(np.float64)
        raw += m.global_offset
        if len(raw) > _SCALAR_TRANSFORM_MAX:
            return artifacts.apply_output_transform(raw, m.output, m.rating_scale)
        return np.asarray(_output_transform_scalars(raw.tolist(), m.output, m.rating_scale), dtype=np.float64)

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
        return _output_transform_scalars([raw], m.output, m.rating_scale)[0], strategy


_SCALAR_TRANSFORM_MAX = 32
"""Up to this many ratings (a page of recommendations), the output transform runs on Python floats: a
dozen numpy calls on a 10-element array cost ~8 us, the loop ~3 us."""


def _output_transform_scalars(
    raw: list[float], output: artifacts.OutputSpec, scale: artifacts.ScaleSpec
) -> list[float]:
    """:func:`movierec.artifacts.apply_output_transform` on Python floats, operation for operation (the
    same overflow-free sigmoid, then the clip); ``math.exp`` and numpy's ``exp`` may differ in the last
    bit."""
    lo, hi = scale.low, scale.high
    if output.transform != "sigmoid":
        return [min(max(x, lo), hi) for x in raw]
    base, span = output.low, output.high - output.low
    out = []
    for x in raw:
        e = math.exp(-abs(x))
        s = 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)
        out.append(min(max(base + span * s, lo), hi))
    return out


def _plain_id(value: object) -> int | str:
    return int(value) if isinstance(value, np.integer | int) else str(value)


def _sequence_scorer(art: ModelArtifact) -> Any:
    if "sequence_onnx" not in art.arrays:
        return None
    from movierec.sequence_runtime import SequenceScorer

    try:
        return SequenceScorer.from_artifact(art)
    except Exception as e:  # onnxruntime refuses the graph: the version is unusable, refuse it whole
        raise artifacts.ArtifactError(f"{art.path}: the sequence model (sequence_onnx) cannot be loaded: {e}") from e


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
    popularity = Popularity.from_artifact(art, settings.popularity_prior)
    names = art.genre_names
    genres = art.item_genres.astype(bool)
    genre_lists = [[names[j] for j in np.flatnonzero(row)] for row in genres]
    model = LoadedModel(
        artifact=art,
        index=index,
        users=IdMap(art.user_ids),
        items=IdMap(art.item_ids),
        popularity=popularity.scores,
        global_mean=popularity.global_mean,
        genre_columns={name.lower(): j for j, name in enumerate(names)},
        genre_lists=genre_lists,
        load_seconds=time.perf_counter() - t0,
        scorer=_sequence_scorer(art),
        # the cache matches the store's integer movie ids against the artifact's; other ids: no cache
        candidates=CandidateCache(
            settings.recommend_cache_size if np.asarray(art.item_ids).dtype.kind in "iu" else 0,
            settings.recommend_cache_depth,
        ),
    )
    log.info("model %s ready in %.2fs (%d users, %d movies)", art.version, model.load_seconds, art.n_users, art.n_items)
    return model
