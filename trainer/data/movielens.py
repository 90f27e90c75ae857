"""Loading MovieLens releases, as GroupLens ships them, and other ratings CSVs into :class:`RatingsData`.

GroupLens has used three layouts over the years and the trainer accepts all of them, as a folder or as the
original ``.zip`` (read in place, never extracted):

* ml-100k: ``u.data`` (tab-separated), ``u.item`` ('|', ISO-8859-1, 19 genre flags named by ``u.genre``),
  ``u.user`` (id|age|gender|occupation|zip).  Ratings 1..5.
* ml-1m, ml-10m (folder ``ml-10M100K``): ``ratings.dat`` / ``movies.dat`` with ``::`` separators, plus
  ``users.dat`` for ml-1m only.  ml-1m is ISO-8859-1 and rates 1..5; ml-10m is UTF-8 and rates in half stars.
* ml-20m, ml-25m, ml-latest, ml-latest-small: ``ratings.csv`` and ``movies.csv`` with headers, titles quoted
  when they contain commas.  Half-star ratings.

Codes are assigned in ascending external-id order and only to users and movies that have at least one
rating, so that two loads of the same files always agree and no model wastes parameters on movies nobody
rated.  Titles are kept exactly as shipped (with the year); ``item_years`` holds the parsed year.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.data.dataset import DataError, RatingScale, RatingsData
from trainer.data.features import genres_multi_hot, parse_years
from trainer.data.validate import (
    FileRef,
    RatingsLayout,
    RawRatings,
    decoded_lines,
    drop_duplicate_pairs,
    parse_int,
    read_csv_table,
    read_ratings,
    split_lines,
)

logger = logging.getLogger(__name__)

#: ml-100k's genres in u.genre order, used when a copy lacks u.genre.
ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

#: The file that identifies each layout, in the order they are looked for.
_MARKERS = ("u.data", "ratings.dat", "ratings.csv")

#: Whole-star releases; every other release rates in half stars.
_WHOLE_STAR = RatingScale(1.0, 5.0, 1.0)
_HALF_STAR = RatingScale(0.5, 5.0, 0.5)

# Column aliases (compared after lower-casing and dropping everything but letters and digits).
_USER_ALIASES = ("user", "userid")
_ITEM_ALIASES = ("item", "itemid", "movie", "movieid")
_RATING_ALIASES = ("rating", "score")
_TIMESTAMP_ALIASES = ("timestamp", "time", "ts")
_META_ID_ALIASES = ("movieid", "movie", "itemid", "item", "id")
_TITLE_ALIASES = ("title", "name", "movietitle")
_GENRE_ALIASES = ("genres", "genre")

_ENCODINGS_UTF8_FIRST = ("utf-8", "latin-1")

_LAYOUT_NAMES = {"ml-100k": "ml-100k", "ml-1m": "ml-1m", "ml-10m": "ml-10m", "csv": "movielens csv"}


@dataclass(frozen=True)
class _ItemMeta:
    """Movie metadata as read from a movies file, before it is aligned with the rated movies."""

    ids: np.ndarray
    titles: np.ndarray
    genres: np.ndarray
    genre_names: tuple[str, ...]


class _Release:
    """A MovieLens release in a folder or a zip: finds the files and opens them for the readers."""

    def __init__(self, path: Path, zf: zipfile.ZipFile | None, root: str, label: str) -> None:
        self.path = path
        self._zip = zf
        self._root = root
        self.label = label
        self._members = set(zf.namelist()) if zf is not None else set()

    def _member(self, name: str) -> str:
        return f"{self._root}/{name}" if self._root else name

    def has(self, name: str) -> bool:
        if self._zip is not None:
            return self._member(name) in self._members
        return (Path(self._root) / name).is_file()

    def ref(self, name: str) -> FileRef:
        if self._zip is not None:
            member, zf = self._member(name), self._zip
            return FileRef(f"{self.path}:{member}", lambda: zf.open(member))
        return FileRef.from_path(Path(self._root) / name)

    @property
    def kind(self) -> str:
        """'ml-100k', 'ml-1m', 'ml-10m' or 'csv' (the ml-20m / ml-25m / ml-latest layout)."""
        if self.has("u.data"):
            return "ml-100k"
        if self.has("ratings.dat"):
            return "ml-1m" if self.has("users.dat") else "ml-10m"
        return "csv"


@contextlib.contextmanager
def _open_release(path: str | Path) -> Iterator[_Release]:
    """Locate the release files under ``path`` (the folder itself or its single ml-* subfolder, or a zip)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise DataError(f"{p}: not a folder or a .zip (expected a MovieLens release)")
        with zipfile.ZipFile(p) as zf:
            root = _zip_root(p, zf)
            label = root.rsplit("/", 1)[-1] if root else p.stem
            try:
                yield _Release(p, zf, root, label)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                # A damaged download: the central directory reads but a member's data does not inflate
                # (or fails its CRC). Without this the reader's zlib error escaped as a traceback.
                where = _first_corrupt_member(zf)
                raise DataError(
                    f"{p}{':' + where if where else ''}: corrupt zip member ({exc}); download the release again"
                ) from exc
        return
    root_dir = _folder_root(p)
    yield _Release(p, None, str(root_dir), root_dir.name)


def _first_corrupt_member(zf: zipfile.ZipFile) -> str | None:
    """The first member whose data cannot be read back intact, for the error message only (it inflates
    every member, so it runs after a failure, never on the good path)."""
    for info in zf.infolist():
        try:
            with zf.open(info) as fh:
                while fh.read(1 << 20):
                    pass
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
            return info.filename
    return None


def _zip_root(path: Path, zf: zipfile.ZipFile) -> str:
    found: list[tuple[int, int, str]] = []
    for name in zf.namelist():
        parts = name.split("/")
        if parts[0] == "__MACOSX" or parts[-1] not in _MARKERS or len(parts) > 2:
            continue
        found.append((len(parts), _MARKERS.index(parts[-1]), "/".join(parts[:-1])))
    if not found:
        raise DataError(
            f"{path}: no MovieLens ratings file in the zip (expected {', '.join(_MARKERS)} at the top level "
            "or in one top-level folder)"
        )
    found.sort()
    roots = {r for depth, _, r in found if depth == found[0][0]}
    if len(roots) > 1:
        raise DataError(f"{path}: several MovieLens releases in one zip ({', '.join(sorted(roots))})")
    return found[0][2]


def _folder_root(path: Path) -> Path:
    if any((path / m).is_file() for m in _MARKERS):
        return path
    candidates = sorted(d for d in path.iterdir() if d.is_dir() and any((d / m).is_file() for m in _MARKERS))
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        names = ", ".join(d.name for d in candidates)
        raise DataError(f"{path}: several MovieLens releases ({names}); point at one of them")
    present = "" if not (path / "movies.dat").is_file() else " (movies.dat is there but ratings.dat is not)"
    raise DataError(
        f"{path}: no MovieLens ratings file found; expected one of {', '.join(_MARKERS)}{present}"
    )


def default_scale(kind: str) -> RatingScale:
    """The rating scale a release uses: whole stars for ml-100k and ml-1m, half stars for the others."""
    return _WHOLE_STAR if kind in ("ml-100k", "ml-1m") else _HALF_STAR


def load_movielens(path: str | Path, scale: RatingScale | None = None) -> RatingsData:
    """Load a MovieLens release from a folder or a GroupLens ``.zip``, detecting its layout.

    ``scale`` overrides the release's rating scale (whole stars for ml-100k/ml-1m, half stars otherwise);
    ratings off that scale are a :class:`DataError`, since they mean the files are not what they claim.
    """
    with _open_release(path) as release:
        kind = release.kind
        scale = scale or default_scale(kind)
        if kind == "ml-100k":
            layout = RatingsLayout(sep="\t", header=False, n_fields=4, user=0, item=1, rating=2, timestamp=3)
            raw = read_ratings(release.ref("u.data"), layout, scale)
            items = _read_ml100k_items(release) if release.has("u.item") else None
            users = _read_ml100k_users(release) if release.has("u.user") else None
        elif kind in ("ml-1m", "ml-10m"):
            layout = RatingsLayout(sep="::", header=False, n_fields=4, user=0, item=1, rating=2, timestamp=3)
            raw = read_ratings(release.ref("ratings.dat"), layout, scale)
            items = _read_movies_dat(release.ref("movies.dat")) if release.has("movies.dat") else None
            users = _read_users_dat(release.ref("users.dat")) if release.has("users.dat") else None
        else:
            ref = release.ref("ratings.csv")
            layout = _csv_layout(ref, require_timestamp=False)
            raw = read_ratings(ref, layout, scale)
            items = (
                _read_items_csv(release.ref("movies.csv"), int_ids=True)
                if release.has("movies.csv")
                else None
            )
            users = None
        # The folder name says which release it is (ml-25m vs ml-latest share a layout); else the layout.
        label = release.label if release.label.lower().startswith("ml-") else _LAYOUT_NAMES[kind]
        ratings_name = {"ml-100k": "u.data", "csv": "ratings.csv"}.get(kind, "ratings.dat")
        return _assemble(
            raw,
            items,
            users,
            scale,
            source=f"{label} ({release.path})",
            dup_name=release.ref(ratings_name).name,
            has_timestamps=raw.timestamps is not None,
        )


def load_ratings_csv(
    ratings_path: str | Path,
    items_path: str | Path | None = None,
    scale: RatingScale | None = None,
) -> RatingsData:
    """Load any ratings CSV whose header names user, item, rating and (optionally) timestamp columns.

    Column names are matched case-insensitively, ignoring '_' (user/userId/user_id, item/movie/movieId/...,
    rating/score, timestamp/time/ts); the separator is sniffed from the header (',', tab, ';' or '|').
    Ids stay int64 when every id is an integer, otherwise they are strings.  Without a timestamp column all
    timestamps are 0 and ``has_timestamps`` is False, so temporal splits refuse instead of splitting on noise.
    ``items_path`` is an optional CSV with an id column and title / genres ('|'-separated) columns.
    """
    scale = scale or RatingScale()
    ref = FileRef.from_path(ratings_path)
    layout = _csv_layout(ref, require_timestamp=False)
    raw = read_ratings(ref, layout, scale, ids="auto", timestamps="flexible")
    items = None
    if items_path is not None:
        items = _read_items_csv(FileRef.from_path(items_path), int_ids=False)
        items = _align_id_kind(items, raw.items)
    has_ts = raw.timestamps is not None
    return _assemble(
        raw,
        items,
        None,
        scale,
        source=f"ratings csv ({ratings_path})",
        dup_name=ref.name,
        has_timestamps=has_ts,
    )


def load_dataset(path: str | Path) -> RatingsData:
    """Load whatever ``path`` is: a MovieLens folder or zip, or a ratings ``.csv`` file.

    For a CSV, a ``movies.csv`` or ``items.csv`` beside it supplies titles and genres.  A path to a
    MovieLens ratings file itself (u.data, ratings.dat) loads its whole release.
    """
    p = Path(path).expanduser()
    if p.is_dir() or p.suffix.lower() == ".zip":
        return load_movielens(p)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.name in ("u.data", "ratings.dat"):
        return load_movielens(p.parent)
    if p.suffix.lower() in (".csv", ".tsv", ".txt"):
        beside = [
            p.parent / n
            for n in ("movies.csv", "items.csv")
            if (p.parent / n).is_file() and p.parent / n != p
        ]
        return load_ratings_csv(p, beside[0] if beside else None)
    raise DataError(f"{p}: unsupported data file (expected a MovieLens folder or .zip, or a ratings .csv)")


# ----------------------------------------------------------------------------------------------------------
# Headers and metadata readers.


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _read_header(ref: FileRef) -> tuple[list[str], str]:
    with ref.open() as fh:
        first = fh.readline()
    if not first.strip():
        raise DataError(f"{ref.name}: empty file (expected a header row)")
    (_, line), *_ = list(decoded_lines(io.BytesIO(first), ref.name, "utf-8"))
    sep = max((",", "\t", ";", "|"), key=line.count)
    fields = next(csv.reader([line], delimiter=sep))
    return [f.strip() for f in fields], sep


def _find_column(
    header: list[str], aliases: tuple[str, ...], what: str, ref: FileRef, required: bool
) -> int | None:
    normalized = [_norm(h) for h in header]
    hits = [j for j, h in enumerate(normalized) if h in aliases]
    if len(hits) > 1:
        names = ", ".join(header[j] for j in hits)
        raise DataError(f"{ref.name} line 1: several {what} columns ({names})")
    if not hits:
        if required:
            raise DataError(
                f"{ref.name} line 1: no {what} column in header {header!r} "
                f"(expected one of {', '.join(aliases)})"
            )
        return None
    return hits[0]


def _csv_layout(ref: FileRef, require_timestamp: bool) -> RatingsLayout:
    header, sep = _read_header(ref)
    user = _find_column(header, _USER_ALIASES, "user", ref, True)
    item = _find_column(header, _ITEM_ALIASES, "item", ref, True)
    rating = _find_column(header, _RATING_ALIASES, "rating", ref, True)
    ts = _find_column(header, _TIMESTAMP_ALIASES, "timestamp", ref, require_timestamp)
    assert user is not None and item is not None and rating is not None
    return RatingsLayout(
        sep=sep,
        header=True,
        n_fields=len(header),
        user=user,
        item=item,
        rating=rating,
        timestamp=ts,
        item_label="item id" if "item" in _norm(header[item]) else "movie id",
    )


def _read_items_csv(ref: FileRef, int_ids: bool) -> _ItemMeta:
    """movies.csv / items.csv: id, title and '|'-joined genres columns (title and genres optional)."""
    frame = read_csv_table(ref)
    header = list(frame.columns)
    id_col = _find_column(header, _META_ID_ALIASES, "movie id", ref, True)
    title_col = _find_column(header, _TITLE_ALIASES, "title", ref, False)
    genre_col = _find_column(header, _GENRE_ALIASES, "genres", ref, False)
    raw_ids = frame.iloc[:, id_col].astype(str).str.strip()
    is_int = raw_ids.str.fullmatch(r"[+-]?\d{1,18}")
    if int_ids and not is_int.all():
        row = int(np.argmin(is_int.to_numpy()))
        raise DataError(f"{ref.name} line {row + 2}: movie id {raw_ids.iloc[row]!r} is not an integer")
    ids = raw_ids.astype(np.int64).to_numpy() if is_int.all() else raw_ids.to_numpy(dtype=object)
    titles = (
        frame.iloc[:, title_col].to_numpy(dtype=object) if title_col is not None else np.full(len(frame), "")
    )
    if genre_col is not None:
        genres, names = genres_multi_hot(frame.iloc[:, genre_col].tolist())
    else:
        genres, names = np.zeros((len(frame), 0), dtype=np.uint8), ()
    return _ItemMeta(ids, np.asarray(titles, dtype=object), genres, names)


def _align_id_kind(items: _ItemMeta, rated: np.ndarray) -> _ItemMeta:
    """Make metadata ids comparable with rating ids (both int64, or both str)."""
    if rated.dtype == object and items.ids.dtype != object:
        return _ItemMeta(items.ids.astype(str).astype(object), items.titles, items.genres, items.genre_names)
    if rated.dtype != object and items.ids.dtype == object:
        numeric = pd.to_numeric(pd.Series(items.ids), errors="coerce")
        keep = numeric.notna().to_numpy()
        ids = numeric[keep].to_numpy(dtype=np.int64)
        return _ItemMeta(ids, items.titles[keep], items.genres[keep], items.genre_names)
    return items


def _read_ml100k_items(release: _Release) -> _ItemMeta:
    names = ML100K_GENRES
    if release.has("u.genre"):
        gref = release.ref("u.genre")
        pairs = [(parse_int(gref, n, "genre index", f[1]), f[0]) for n, f in split_lines(gref, "|", 2, 2)]
        names = tuple(name for _, name in sorted(pairs))
    ref = release.ref("u.item")
    n_fields = 5 + len(names)
    rows = split_lines(ref, "|", n_fields, n_fields, encodings=_ENCODINGS_UTF8_FIRST)
    ids = np.empty(len(rows), dtype=np.int64)
    titles = np.empty(len(rows), dtype=object)
    flags = np.zeros((len(rows), len(names)), dtype=np.uint8)
    for k, (lineno, fields) in enumerate(rows):
        ids[k] = parse_int(ref, lineno, "movie id", fields[0])
        titles[k] = fields[1]
        for j, flag in enumerate(fields[5:]):
            if flag.strip() not in ("0", "1"):
                raise DataError(f"{ref.name} line {lineno}: genre flag {flag!r} for {names[j]} is not 0 or 1")
            flags[k, j] = flag.strip() == "1"
    return _ItemMeta(ids, titles, flags, names)


def _read_ml100k_users(release: _Release) -> pd.DataFrame:
    ref = release.ref("u.user")
    rows = split_lines(ref, "|", 5, 5, encodings=_ENCODINGS_UTF8_FIRST)
    return pd.DataFrame(
        {
            "gender": [f[2] for _, f in rows],
            "age": [parse_int(ref, n, "age", f[1]) for n, f in rows],
            "occupation": [f[3] for _, f in rows],
        },
        index=pd.Index([parse_int(ref, n, "user id", f[0]) for n, f in rows], dtype=np.int64),
    )


def _read_movies_dat(ref: FileRef) -> _ItemMeta:
    rows = split_lines(ref, "::", 3, None, encodings=_ENCODINGS_UTF8_FIRST)
    ids = np.array([parse_int(ref, n, "movie id", f[0]) for n, f in rows], dtype=np.int64)
    titles = np.array(["::".join(f[1:-1]) for _, f in rows], dtype=object)
    genres, names = genres_multi_hot([f[-1] for _, f in rows])
    return _ItemMeta(ids, titles, genres, names)


def _read_users_dat(ref: FileRef) -> pd.DataFrame:
    rows = split_lines(ref, "::", 5, 5, encodings=_ENCODINGS_UTF8_FIRST)
    return pd.DataFrame(
        {
            "gender": [f[1] for _, f in rows],
            "age": [parse_int(ref, n, "age", f[2]) for n, f in rows],
            "occupation": [parse_int(ref, n, "occupation", f[3]) for n, f in rows],
        },
        index=pd.Index([parse_int(ref, n, "user id", f[0]) for n, f in rows], dtype=np.int64),
    )


# ----------------------------------------------------------------------------------------------------------
# Assembly.


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 codes in ascending external-id order, and the external ids in code order."""
    codes, uniques = pd.factorize(values, sort=True)
    if values.dtype == object:
        ids = np.asarray([str(u) for u in uniques], dtype=str)
    else:
        ids = np.asarray(uniques, dtype=np.int64)
    return codes.astype(np.int32), ids


def _assemble(
    raw: RawRatings,
    items: _ItemMeta | None,
    users: pd.DataFrame | None,
    scale: RatingScale,
    source: str,
    dup_name: str,
    has_timestamps: bool = True,
) -> RatingsData:
    user_codes, user_ids = _codes(raw.users)
    item_codes, item_ids = _codes(raw.items)
    ratings = raw.ratings
    timestamps = raw.timestamps if raw.timestamps is not None else np.zeros(len(ratings), dtype=np.int64)
    keep, dropped = drop_duplicate_pairs(user_codes, item_codes, timestamps, len(item_ids), dup_name)
    if keep is not None:
        user_codes, item_codes = user_codes[keep], item_codes[keep]
        ratings, timestamps = ratings[keep], timestamps[keep]

    if items is not None and len(items.ids) == 0:
        items = None
    if items is not None:
        meta_index = pd.Index(items.ids)
        if meta_index.has_duplicates:
            first = ~meta_index.duplicated(keep="first")
            logger.warning(
                "%s: %d repeated movie ids in the movies file; keeping the first of each",
                source,
                int((~first).sum()),
            )
            items = _ItemMeta(items.ids[first], items.titles[first], items.genres[first], items.genre_names)
            meta_index = pd.Index(items.ids)
        pos = meta_index.get_indexer(item_ids)
        missing = pos < 0
        if missing.any():
            logger.warning(
                "%s: %d rated movies have no metadata; they get empty titles and no genres",
                source,
                int(missing.sum()),
            )
        safe = np.where(missing, 0, pos)
        titles_list = [("" if m else str(t)) for t, m in zip(items.titles[safe], missing, strict=True)]
        genres = items.genres[safe] if len(items.ids) else np.zeros((len(item_ids), 0), dtype=np.uint8)
        genres[missing] = 0
        genre_names = items.genre_names
    else:
        titles_list = [""] * len(item_ids)
        genres = np.zeros((len(item_ids), 0), dtype=np.uint8)
        genre_names = ()
    titles = np.asarray(titles_list, dtype=str) if titles_list else np.zeros(0, dtype="<U1")

    user_features = None
    if users is not None:
        user_features = _align_users(users, user_ids, source)

    return RatingsData(
        users=user_codes,
        items=item_codes,
        ratings=ratings.astype(np.float32),
        timestamps=timestamps.astype(np.int64),
        user_ids=user_ids,
        item_ids=item_ids,
        item_titles=titles,
        item_years=parse_years(titles_list),
        item_genres=np.ascontiguousarray(genres, dtype=np.uint8),
        genre_names=tuple(genre_names),
        scale=scale,
        has_timestamps=has_timestamps,
        user_features=user_features,
        source=source,
        duplicates_dropped=int(dropped),
    )


def _align_users(users: pd.DataFrame, user_ids: np.ndarray, source: str) -> pd.DataFrame:
    """Per-user table indexed by user code; users missing from the users file get ''/-1 placeholders."""
    users = users[~users.index.duplicated(keep="first")]
    aligned = users.reindex(pd.Index(user_ids))
    missing = aligned["gender"].isna().to_numpy()
    if missing.any():
        logger.warning("%s: %d rating users are not in the users file", source, int(missing.sum()))
    out = pd.DataFrame(index=pd.RangeIndex(len(user_ids), name="user"))
    out["gender"] = aligned["gender"].fillna("").astype(str).to_numpy()
    out["age"] = aligned["age"].fillna(-1).astype(np.int64).to_numpy()
    occupation = aligned["occupation"]
    if pd.api.types.is_numeric_dtype(users["occupation"].dtype):
        out["occupation"] = occupation.fillna(-1).astype(np.int64).to_numpy()
    else:
        out["occupation"] = occupation.fillna("").astype(str).to_numpy()
    return out
