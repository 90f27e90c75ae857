"""Moving ratings between :class:`RatingsData` and the service's SQL store (``service.store``).

:func:`load_into_store` imports a loaded MovieLens release (movies, then ratings) idempotently: rows whose
key is already there are skipped (``INSERT ... ON CONFLICT DO NOTHING``), so a second run adds nothing and
an interrupted one can simply be re-run.  :func:`read_from_store` reads the whole store back into a
:class:`RatingsData` with the same conventions as the file readers, so ``movierec train --from-db`` trains
on what the service has collected.

Uses numpy and pandas, never torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from service.store.database import StoreError, mask_url
from service.store.migrations import require_schema
from service.store.models import Movie, Rating
from trainer.data.dataset import DataError, RatingScale, RatingsData
from trainer.data.features import genres_multi_hot
from trainer.data.movielens import _HALF_STAR, _WHOLE_STAR, _assemble, _ItemMeta
from trainer.data.validate import RawRatings, rating_problems

logger = logging.getLogger(__name__)

#: Rows per INSERT batch (one round trip on PostgreSQL); memory stays bounded whatever the dataset size.
CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_into_store` did: rows inserted, and rows skipped because their key was there."""

    movies_added: int
    ratings_added: int
    ratings_skipped: int
    movies_skipped: int = 0
    seconds: float = 0.0


def _require_int_ids(data: RatingsData) -> None:
    for what, ids in (("user", data.user_ids), ("movie", data.item_ids)):
        arr = np.asarray(ids)
        if arr.dtype.kind not in "iu":
            sample = ", ".join(repr(str(v)) for v in arr[:3].tolist())
            raise DataError(
                f"{data.source}: {what} ids are not integers (e.g. {sample}); the store keys users and movies "
                "by integer (BigInteger) MovieLens ids, so this data cannot be loaded into it"
            )


def genre_strings(item_genres: np.ndarray, genre_names: Sequence[str]) -> list[str]:
    """'|'-joined genre names per movie from a multi-hot matrix ("" for a movie without genres)."""
    bad = [g for g in genre_names if "|" in g]
    if bad:
        raise DataError(f"genre names must not contain '|': {bad}")
    flags = np.asarray(item_genres, dtype=bool).reshape(len(item_genres), -1)
    if flags.shape[1] == 0 or flags.shape[0] == 0:
        return [""] * flags.shape[0]
    # Movies share few genre combinations: join each distinct row once.
    uniques, inverse = np.unique(flags, axis=0, return_inverse=True)
    joined = ["|".join(genre_names[j] for j in np.flatnonzero(row)) for row in uniques]
    return [joined[k] for k in np.asarray(inverse).reshape(-1).tolist()]


def _movie_columns(data: RatingsData) -> dict[str, list[Any]]:
    years = np.asarray(data.item_years, dtype=np.int64).tolist()
    return {
        "movie_id": np.asarray(data.item_ids, dtype=np.int64).tolist(),
        "title": np.asarray(data.item_titles).astype(str).tolist(),
        "year": [y or None for y in years],
        "genres": genre_strings(data.item_genres, data.genre_names),
    }


def _rating_columns(data: RatingsData) -> dict[str, np.ndarray]:
    """Rating rows with external ids, in (user, movie) order (appends to the primary key's B-tree)."""
    order = np.lexsort((data.items, data.users))
    return {
        "user_id": np.asarray(data.user_ids, dtype=np.int64)[data.users[order]],
        "movie_id": np.asarray(data.item_ids, dtype=np.int64)[data.items[order]],
        # float32 -> float64 would turn 3.3 into 3.299999952; ratings live on a coarse grid, so round.
        "rating": np.round(data.ratings[order].astype(np.float64), 6),
        "timestamp": np.asarray(data.timestamps, dtype=np.int64)[order],
    }


def _chunks(columns: dict[str, Any], size: int) -> Iterator[dict[str, list[Any]]]:
    n = len(next(iter(columns.values())))
    for start in range(0, n, size):
        yield {
            k: (v[start : start + size].tolist() if isinstance(v, np.ndarray) else v[start : start + size])
            for k, v in columns.items()
        }


_PRESERVE_ROWCOUNT = {"preserve_rowcount": True}


class _Inserter:
    """``INSERT ... ON CONFLICT DO NOTHING`` of column batches; returns how many rows were really inserted.

    SQLite: an executemany of one-row inserts (the sqlite3 module runs it in C and sums the rowcount).
    PostgreSQL: one ``INSERT ... SELECT FROM unnest(:col1, :col2, ...)`` per batch, each column bound as
    a single array parameter: a round trip per 50k rows instead of per row, and an exact rowcount (psycopg's
    executemany reports none).
    """

    def __init__(self, engine: Engine, table: Table) -> None:
        self.table = table
        self.dialect = engine.dialect.name
        if self.dialect == "sqlite":
            self.stmt: Any = sqlite.insert(table).on_conflict_do_nothing()
        elif self.dialect == "postgresql":
            names = [c.name for c in table.columns]
            params = [bindparam(n, type_=postgresql.ARRAY(table.c[n].type)) for n in names]
            incoming = func.unnest(*params).table_valued(*names).render_derived(name="incoming")
            self.stmt = (
                postgresql.insert(table)
                .from_select(names, select(*[incoming.c[n] for n in names]))
                .on_conflict_do_nothing()
            )
        else:
            raise StoreError(f"database {mask_url(engine.url)}: unsupported back end {self.dialect}")

    def __call__(self, conn: Connection, batch: dict[str, list[Any]]) -> int:
        n = len(next(iter(batch.values())))
        if n == 0:
            return 0
        if self.dialect == "sqlite":
            keys = list(batch)
            rows = [dict(zip(keys, values, strict=True)) for values in zip(*batch.values(), strict=True)]
            result = conn.execute(self.stmt, rows, execution_options=_PRESERVE_ROWCOUNT)
        else:
            result = conn.execute(self.stmt, batch, execution_options=_PRESERVE_ROWCOUNT)
        if result.rowcount < 0:
            raise StoreError(f"{self.dialect} did not report how many {self.table.name} rows were inserted")
        return int(result.rowcount)


def load_into_store(data: RatingsData, engine: Engine, chunk_rows: int = CHUNK_ROWS) -> LoadReport:
    """Import a dataset's movies and ratings (external ids) into the store, skipping rows already there.

    The database must be migrated (``movierec db upgrade``); everything happens in one transaction, so a
    failure leaves the store as it was.  Movies come first (ratings reference them): id, title, year (None
    when unknown) and genres joined with '|'.  A rating whose (user, movie) is already stored is skipped,
    not updated, and so is a movie whose id is there.  String ids are refused with a :class:`DataError`.
    """
    _require_int_ids(data)
    masked = mask_url(engine.url)
    t0 = time.perf_counter()
    movies: Table = Movie.__table__  # type: ignore[assignment]
    ratings: Table = Rating.__table__  # type: ignore[assignment]
    try:
        require_schema(engine)
        insert_movies, insert_ratings = _Inserter(engine, movies), _Inserter(engine, ratings)
        with engine.begin() as conn:
            movies_added = sum(insert_movies(conn, b) for b in _chunks(_movie_columns(data), chunk_rows))
            ratings_added = 0
            for k, batch in enumerate(_chunks(_rating_columns(data), chunk_rows)):
                ratings_added += insert_ratings(conn, batch)
                logger.debug("%s: ratings batch %d, %d added so far", masked, k, ratings_added)
    except SQLAlchemyError as exc:
        raise StoreError(f"database {masked}: load failed ({_reason(exc)})") from exc
    report = LoadReport(
        movies_added=movies_added,
        ratings_added=ratings_added,
        ratings_skipped=len(data) - ratings_added,
        movies_skipped=data.n_items - movies_added,
        seconds=time.perf_counter() - t0,
    )
    logger.info(
        "%s: added %d movies and %d ratings (%d ratings already there) in %.1fs",
        masked,
        report.movies_added,
        report.ratings_added,
        report.ratings_skipped,
        report.seconds,
    )
    return report


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's message without SQLAlchemy's statement dump (which can be megabytes of parameters)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def infer_scale(ratings: np.ndarray) -> RatingScale:
    """Whole stars 1..5 when every rating is an integer in 1..5 (ml-100k, ml-1m), else half stars 0.5..5."""
    r = np.asarray(ratings, dtype=np.float64)
    if len(r) and np.all(r == np.round(r)) and r.min() >= 1 and r.max() <= 5:
        return _WHOLE_STAR
    return _HALF_STAR


def read_from_store(engine: Engine, scale: RatingScale | None = None) -> RatingsData:
    """Every rating in the store, with its movies' metadata, as a :class:`RatingsData`.

    Same conventions as the file readers: codes in ascending external-id order over rated users and
    movies, int64 ids, titles as stored, years from the ``year`` column (0 when unknown), genres
    multi-hot with sorted ``genre_names``.  Rows come in (user, movie) order, so two reads of the same
    store give the same fingerprint.  ``scale`` defaults to the one the ratings imply
    (:func:`infer_scale`); ratings off it are a :class:`DataError`, as is an empty store.
    """
    masked = mask_url(engine.url)
    source = f"database {masked}"
    try:
        require_schema(engine)
        with engine.connect() as conn:
            rating_rows = conn.execute(
                select(Rating.user_id, Rating.movie_id, Rating.rating, Rating.timestamp).order_by(
                    Rating.user_id, Rating.movie_id
                )
            ).all()
            movie_rows = conn.execute(select(Movie.movie_id, Movie.title, Movie.year, Movie.genres)).all()
    except SQLAlchemyError as exc:
        raise StoreError(f"{source}: cannot be read ({_reason(exc)})") from exc
    if not rating_rows:
        raise DataError(f"{source} has no ratings; fill it with `movierec db load --data PATH` first")

    # Column-wise: pandas' from_records probes each Row object and is 10x slower on a million rows.
    n = len(rating_rows)
    user_col, movie_col, rating_col, stamp_col = zip(*rating_rows, strict=True)
    rating_rows = []
    users = np.fromiter(user_col, dtype=np.int64, count=n)
    items = np.fromiter(movie_col, dtype=np.int64, count=n)
    ratings = np.fromiter(rating_col, dtype=np.float64, count=n)
    stamps = np.fromiter(stamp_col, dtype=np.int64, count=n)
    del user_col, movie_col, rating_col, stamp_col
    scale = scale or infer_scale(ratings)
    bad = rating_problems(ratings, scale)
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(
            f"{source}: rating {ratings[k]!r} of user {users[k]} for movie {items[k]} is not on the scale "
            f"{scale.low:g}..{scale.high:g} step {scale.step:g} ({int(bad.sum())} such ratings)"
        )

    movies = pd.DataFrame([tuple(r) for r in movie_rows], columns=["movie_id", "title", "year", "genres"])
    genres, names = genres_multi_hot(movies["genres"].tolist())
    meta = _ItemMeta(
        ids=movies["movie_id"].to_numpy(dtype=np.int64),
        titles=movies["title"].to_numpy(dtype=object),
        genres=genres,
        genre_names=names,
    )
    raw = RawRatings(users=users, items=items, ratings=ratings, timestamps=stamps)
    data = _assemble(raw, meta, None, scale, source=source, dup_name=source, has_timestamps=bool(np.any(stamps != 0)))
    # The year column is the store's truth (the readers parse it from the title; the service may not).
    year_by_id = pd.Series(movies["year"].fillna(0).to_numpy(dtype=np.int64), index=movies["movie_id"])
    years = np.array(year_by_id.reindex(data.item_ids).fillna(0), dtype=np.int64)  # a writable copy
    years[(years < 0) | (years > np.iinfo(np.int16).max)] = 0
    return replace(data, item_years=years.astype(np.int16))
