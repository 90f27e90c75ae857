"""Reading delimited ratings files with exact, line-numbered error messages.

Every loader goes through :func:`read_ratings`.  The strategy is "fast path, slow diagnosis": pandas' C
parser reads the whole file with strict dtypes (a few seconds for ml-25m), and a vectorised pass checks the
values.  Only when either step fails do we re-read the file line by line in Python to find the *first*
offending line and say exactly what is wrong with it (``ratings.csv line 17: expected 4 fields, found 3``).
The slow scan costs a minute on 25M rows, but only on input that is broken anyway, and a message that names
the line is what makes a broken file fixable.

Helpers for the small metadata files (u.item, movies.dat, ...) and for dropping duplicate ratings live here
too so that all rules about what is valid sit in one module.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pandas as pd

from trainer.data.dataset import DataError, RatingScale

logger = logging.getLogger(__name__)

#: Absolute tolerance for "rating lies on the scale's step grid" (floats like 3.4999999 from exports).
GRID_TOLERANCE = 1e-6

#: Separators of CSV-like files where '"' quotes a field; MovieLens' tab, '|' and '::' files have no quoting.
_QUOTING_SEPARATORS = (",", ";")

IdKind = Literal["int", "auto"]
TimestampKind = Literal["int", "flexible"]


@dataclass(frozen=True)
class FileRef:
    """A file to read: the name used in error messages and a way to open it as bytes.

    Loaders read plain files and members of GroupLens zips alike; this indirection lets the readers below
    re-open a file for the slow diagnostic scan without knowing where it lives.
    """

    name: str
    opener: Callable[[], IO[bytes]]

    @classmethod
    def from_path(cls, path: str | Path) -> FileRef:
        p = Path(path)
        return cls(str(p), lambda: open(p, "rb"))  # the caller closes it

    def open(self) -> IO[bytes]:
        try:
            return self.opener()
        except FileNotFoundError as exc:
            raise DataError(f"{self.name}: file not found") from exc
        except OSError as exc:
            raise DataError(f"{self.name}: cannot be read ({exc})") from exc


@dataclass(frozen=True)
class RatingsLayout:
    """Where the fields of a ratings file are: separator, header, field count and field positions.

    ``sep`` may be the two-character MovieLens separator ``"::"``; it is read with pandas' C parser by
    splitting on ``":"`` and checking that every second column is empty, which is about 20x faster than
    ``sep="::", engine="python"`` (10M rows of ml-10m: 3 s instead of a minute).
    """

    sep: str
    header: bool
    n_fields: int
    user: int
    item: int
    rating: int
    timestamp: int | None
    item_label: str = "movie id"
    user_label: str = "user id"
    encoding: str = "utf-8"


@dataclass(frozen=True)
class RawRatings:
    """Validated rating rows with external ids (int64, or str objects when ``auto`` ids are not integers)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray | None


def _physical(layout: RatingsLayout, field: int) -> int:
    """Column index of a field in the pandas frame (every field is followed by an empty one for '::')."""
    return 2 * field if layout.sep == "::" else field


def read_ratings(
    ref: FileRef,
    layout: RatingsLayout,
    scale: RatingScale,
    ids: IdKind = "int",
    timestamps: TimestampKind = "int",
) -> RawRatings:
    """Read and validate a ratings file; raise :class:`DataError` naming file and line on bad input.

    Checks: field count, integer (``ids="int"``) or non-empty (``"auto"``) ids, ratings that are finite
    numbers on ``scale`` (range and step grid), integer timestamps (``"flexible"`` also accepts float
    seconds and ISO dates, for CSVs from other tools), decodable text, and at least one row.
    Duplicates are not checked here: they need codes, see :func:`drop_duplicate_pairs`.
    """
    try:
        frame = _fast_read(ref, layout, ids, timestamps)
    except DataError:
        raise
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OverflowError, csv.Error) as exc:
        logger.info("%s: fast parse failed (%s); scanning for the first bad line", ref.name, exc)
        scan_ratings(ref, layout, scale, ids, timestamps)
        raise DataError(f"{ref.name}: cannot be parsed ({exc})") from exc
    if frame is None:
        raise DataError(f"{ref.name}: no ratings (the file has no data rows)")
    problem = _check_frame(frame, layout, scale, ids)
    if problem is not None:
        logger.info("%s: %s; scanning for the first bad line", ref.name, problem)
        scan_ratings(ref, layout, scale, ids, timestamps)
        raise DataError(f"{ref.name}: {problem}")
    users = _ids_array(frame[_physical(layout, layout.user)], ids)
    items = _ids_array(frame[_physical(layout, layout.item)], ids)
    ratings = frame[_physical(layout, layout.rating)].to_numpy(dtype=np.float64)
    ts: np.ndarray | None = None
    if layout.timestamp is not None:
        column = frame[_physical(layout, layout.timestamp)]
        ts = _timestamps_array(column)
        if ts is None:
            scan_ratings(ref, layout, scale, ids, timestamps)
            raise DataError(f"{ref.name}: timestamps are not integers, numbers or dates")
    return RawRatings(users, items, ratings, ts)


def _fast_read(
    ref: FileRef, layout: RatingsLayout, ids: IdKind, timestamps: TimestampKind
) -> pd.DataFrame | None:
    """pandas C-parser read with strict dtypes; None when the file has no data rows."""
    dtype: dict[int, str] = {_physical(layout, layout.rating): "float64"}
    if layout.timestamp is not None:
        dtype[_physical(layout, layout.timestamp)] = "int64"
    for f in (layout.user, layout.item):
        dtype[_physical(layout, f)] = "int64"
    if layout.sep == "::":
        for j in range(layout.n_fields - 1):
            dtype[2 * j + 1] = "float64"  # the empty column between the two ':' characters
    attempts: list[dict[int, str]] = [dtype]
    if ids == "auto":
        attempts.append(
            {**dtype, _physical(layout, layout.user): "str", _physical(layout, layout.item): "str"}
        )
    if timestamps == "flexible" and layout.timestamp is not None:
        attempts += [{**d, _physical(layout, layout.timestamp): "str"} for d in list(attempts)]
    last_error: Exception | None = None
    for attempt in attempts:
        try:
            return _read_frame(ref, layout, attempt)
        except (ValueError, OverflowError) as exc:
            if isinstance(exc, (pd.errors.ParserError, UnicodeDecodeError)):
                raise
            last_error = exc
    assert last_error is not None
    raise last_error


def _read_frame(ref: FileRef, layout: RatingsLayout, dtype: dict[int, str]) -> pd.DataFrame | None:
    sep = ":" if layout.sep == "::" else layout.sep
    with ref.open() as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        try:
            return pd.read_csv(
                fh,
                sep=sep,
                header=None,
                skiprows=1 if layout.header else 0,
                dtype=dtype,
                engine="c",
                encoding=layout.encoding,
                quoting=csv.QUOTE_MINIMAL if sep in _QUOTING_SEPARATORS else csv.QUOTE_NONE,
                keep_default_na=False,
                na_values=[""],
                skip_blank_lines=True,
            )
        except pd.errors.EmptyDataError:
            return None


def _check_frame(frame: pd.DataFrame, layout: RatingsLayout, scale: RatingScale, ids: IdKind) -> str | None:
    """Vectorised value checks; a short description of the first problem kind, or None when all is well."""
    if len(frame) == 0:
        return "no ratings (the file has no data rows)"
    expected = 2 * layout.n_fields - 1 if layout.sep == "::" else layout.n_fields
    if frame.shape[1] != expected:
        return f"expected {layout.n_fields} fields, found a row with more or fewer"
    if layout.sep == "::":
        gaps = frame.iloc[:, 1::2]
        if gaps.notna().to_numpy().any():
            return "a row does not use '::' as separator"
    for f, label in ((layout.user, layout.user_label), (layout.item, layout.item_label)):
        col = frame[_physical(layout, f)]
        if col.isna().any():
            return f"a {label} is missing"
        if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
            if (col.astype(str).str.strip() == "").any():
                return f"a {label} is empty"
        elif ids == "int" and pd.api.types.is_integer_dtype(col.dtype) and (col < 0).any():
            return f"a {label} is negative"
    ratings = frame[_physical(layout, layout.rating)].to_numpy(dtype=np.float64)
    bad = rating_problems(ratings, scale)
    if bad.any():
        return f"rating {ratings[np.argmax(bad)]!r} is not valid on the scale {_scale_text(scale)}"
    if layout.timestamp is not None and frame[_physical(layout, layout.timestamp)].isna().any():
        return "a timestamp is missing"
    return None


def rating_problems(ratings: np.ndarray, scale: RatingScale) -> np.ndarray:
    """Boolean mask of ratings that are NaN/inf, outside ``[low, high]`` or off the step grid."""
    r = np.asarray(ratings, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        steps = (r - scale.low) / scale.step
        off_grid = np.abs(r - (scale.low + np.round(steps) * scale.step)) > GRID_TOLERANCE
        out = (r < scale.low - GRID_TOLERANCE) | (r > scale.high + GRID_TOLERANCE)
    return ~np.isfinite(r) | off_grid | out


def _scale_text(scale: RatingScale) -> str:
    return f"{scale.low:g}..{scale.high:g} step {scale.step:g}"


def _ids_array(column: pd.Series, ids: IdKind) -> np.ndarray:
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64)
    values = column.astype(str).str.strip()
    if ids == "auto" and values.str.fullmatch(r"[+-]?\d{1,18}").all():
        return values.astype(np.int64).to_numpy()
    return values.to_numpy(dtype=object)


def _timestamps_array(column: pd.Series) -> np.ndarray | None:
    """int64 seconds from integer, float or ISO-date timestamps; None if some cannot be converted."""
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64)
    numeric = pd.to_numeric(column, errors="coerce")
    if numeric.notna().all():
        return np.floor(numeric.to_numpy(dtype=np.float64)).astype(np.int64)
    try:
        dates = pd.to_datetime(column, utc=True, errors="coerce", format="ISO8601")
    except (ValueError, TypeError):
        return None
    if dates.isna().any():
        return None
    return (dates.astype("datetime64[s, UTC]").astype("int64")).to_numpy(dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------
# Slow scan: find and describe the first bad line.


def decoded_lines(raw: IO[bytes], name: str, encoding: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without line terminator) for each physical line.

    Decoding line by line is what lets an encoding error name its line; ``\\r\\n`` (the CRLF that
    ml-latest-small ships) and ``\\n`` endings are both accepted.
    """
    for lineno, line in enumerate(raw, start=1):
        try:
            text = line.decode(encoding)
        except UnicodeDecodeError as exc:
            bad = line[exc.start : exc.start + 1]
            raise DataError(
                f"{name} line {lineno}: not valid {encoding} text "
                f"(byte 0x{bad.hex()} at column {exc.start + 1})"
            ) from exc
        if lineno == 1 and text.startswith("\ufeff"):
            text = text[1:]
        yield lineno, text.rstrip("\r\n")


def _records(ref: FileRef, sep: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank record, quotes honoured for ','-separated files."""
    with ref.open() as raw:
        lines = decoded_lines(raw, ref.name, encoding)
        if sep in _QUOTING_SEPARATORS:
            numbered = _LineTracker(lines)
            reader = csv.reader(numbered, delimiter=sep, strict=False)
            for fields in reader:
                start = numbered.first_line_of_record()
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                yield start, fields
        else:
            for lineno, text in lines:
                if not text.strip():
                    continue
                yield lineno, text.split(sep)


class _LineTracker:
    """Feeds lines to ``csv.reader`` and remembers where the current record started.

    A quoted field may span lines; the record is reported at the line where it starts, which is where an
    editor should jump to.
    """

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self._lines = lines
        self._pending_start: int | None = None
        self._current = 0
        self._record_start = 0

    def __iter__(self) -> _LineTracker:
        return self

    def __next__(self) -> str:
        lineno, text = next(self._lines)
        if self._pending_start is None:
            self._pending_start = lineno
        self._current = lineno
        return text + "\n"

    @property
    def current_line(self) -> int:
        """The last line handed to the reader: where the record just read ends."""
        return self._current

    def first_line_of_record(self) -> int:
        start = self._pending_start if self._pending_start is not None else self._current
        self._pending_start = None
        return start


def scan_ratings(
    ref: FileRef,
    layout: RatingsLayout,
    scale: RatingScale,
    ids: IdKind = "int",
    timestamps: TimestampKind = "int",
) -> None:
    """Raise :class:`DataError` for the first bad line of a ratings file; return if none is found."""
    checks: list[tuple[int, Callable[[str], str | None]]] = [
        (layout.user, _id_check(layout.user_label, ids)),
        (layout.item, _id_check(layout.item_label, ids)),
        (layout.rating, lambda s: _rating_check(s, scale)),
    ]
    if layout.timestamp is not None:
        checks.append(
            (layout.timestamp, _int_timestamp_check if timestamps == "int" else _flex_timestamp_check)
        )
    n_rows = 0
    skip_header = layout.header
    for lineno, fields in _records(ref, layout.sep, layout.encoding):
        if skip_header:
            skip_header = False
            continue
        n_rows += 1
        if len(fields) != layout.n_fields:
            raise DataError(
                f"{ref.name} line {lineno}: expected {layout.n_fields} fields, found {len(fields)}"
            )
        for position, check in checks:
            problem = check(fields[position])
            if problem is not None:
                raise DataError(f"{ref.name} line {lineno}: {problem}")
    if n_rows == 0:
        raise DataError(f"{ref.name}: no ratings (the file has no data rows)")


#: Integer ids must fit the artifact's int64 id arrays and be reachable through the service, whose
#: paths and bodies take ids in 0..2^63-1: a negative id would train a user nobody can ask about.
ID_MAX = 2**63 - 1


def _id_check(label: str, ids: IdKind) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if not value.strip():
            return f"{label} is missing"
        if ids == "int":
            try:
                number = int(value)
            except ValueError:
                return f"{label} {value!r} is not an integer"
            if not 0 <= number <= ID_MAX:
                return f"{label} {value.strip()} is out of range (ids are integers from 0 to 2^63-1)"
        return None

    return check


def _rating_check(value: str, scale: RatingScale) -> str | None:
    try:
        r = float(value)
    except ValueError:
        return f"rating {value!r} is not a number"
    if not math.isfinite(r):
        return f"rating {value!r} is not a number"
    if rating_problems(np.array([r]), scale)[0]:
        if scale.low - GRID_TOLERANCE <= r <= scale.high + GRID_TOLERANCE:
            grid = f"is not a multiple of {scale.step:g} on the scale {_scale_text(scale)}"
            return f"rating {value.strip()} {grid}"
        return f"rating {value.strip()} is outside the scale {_scale_text(scale)}"
    return None


def _int_timestamp_check(value: str) -> str | None:
    try:
        int(value)
    except ValueError:
        return f"timestamp {value!r} is not an integer"
    return None


def _flex_timestamp_check(value: str) -> str | None:
    try:
        float(value)
        if math.isfinite(float(value)):
            return None
    except ValueError:
        pass
    try:
        datetime.fromisoformat(value.strip())
        return None
    except ValueError:
        return f"timestamp {value!r} is not a number of seconds or an ISO date"


# ----------------------------------------------------------------------------------------------------------
# Small metadata files.


def read_text(ref: FileRef, encodings: Sequence[str] = ("utf-8",)) -> tuple[str, str]:
    """The whole file decoded with the first encoding that works, and that encoding.

    GroupLens ships some metadata as ISO-8859-1 (u.item, ml-1m movies.dat) and some as UTF-8, so loaders
    pass ``("utf-8", "latin-1")`` there; with a single encoding the error names the first bad line.
    """
    with ref.open() as fh:
        data = fh.read()
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding != encodings[0]:
            logger.debug("%s: not %s; read as %s", ref.name, encodings[0], encoding)
        return text.removeprefix("\ufeff"), encoding
    for _ in decoded_lines(io.BytesIO(data), ref.name, encodings[0]):
        pass
    raise DataError(f"{ref.name}: not valid {encodings[0]} text")  # pragma: no cover - loop raises first


def split_lines(
    ref: FileRef,
    sep: str,
    min_fields: int,
    max_fields: int | None = None,
    encodings: Sequence[str] = ("utf-8",),
) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a small separator file (u.item, u.user, users.dat, movies.dat).

    Plain ``str.split`` rather than a CSV parser because these formats have no quoting: a '"' in a
    u.item title is part of the title.
    """
    text, _ = read_text(ref, encodings)
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) < min_fields or (max_fields is not None and len(fields) > max_fields):
            want = str(min_fields) if max_fields == min_fields else f"at least {min_fields}"
            if max_fields is not None and max_fields != min_fields:
                want = f"{min_fields} to {max_fields}"
            raise DataError(f"{ref.name} line {lineno}: expected {want} fields, found {len(fields)}")
        rows.append((lineno, fields))
    return rows


def parse_int(ref: FileRef, lineno: int, label: str, value: str) -> int:
    """``int(value)`` or a DataError naming file, line and value."""
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{ref.name} line {lineno}: {label} {value!r} is not an integer") from None


def read_csv_table(ref: FileRef, encoding: str = "utf-8") -> pd.DataFrame:
    """A headed CSV (movies.csv, items.csv) as strings, with quoting honoured and NA-like text kept.

    ``keep_default_na=False`` matters: a movie titled "NA" or "null" must stay a title.  The header is read
    as a data row so that rows with extra fields are an error rather than silently becoming an index.
    pandas cannot tell a short row from an empty field, so when any field is empty the (small) file is
    scanned for short rows before empties become "".  On a parse or encoding failure the scan reports the
    first bad line.
    """
    try:
        with ref.open() as fh:
            frame = pd.read_csv(
                fh,
                header=None,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                engine="c",
                encoding="utf-8-sig" if encoding == "utf-8" else encoding,
                skip_blank_lines=True,
            )
    except pd.errors.EmptyDataError:
        raise DataError(f"{ref.name}: empty file (expected a header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        _scan_table(ref, encoding)
        raise DataError(f"{ref.name}: cannot be parsed ({exc})") from exc
    if frame.isna().to_numpy().any():
        _scan_table(ref, encoding)
        frame = frame.fillna("")
    if frame.apply(lambda column: column.str.contains("\n|\r", regex=True)).to_numpy().any():
        # A quote opened and never closed swallows the following lines into one field (one long title,
        # the next movies lost) without any parse error; no id, title or genre list spans lines.
        _scan_multiline_records(ref, encoding)
    header = [str(c).strip() for c in frame.iloc[0].tolist()]
    body = frame.iloc[1:].reset_index(drop=True)
    body.columns = header
    return body


def _scan_multiline_records(ref: FileRef, encoding: str) -> None:
    """Raise DataError at the first record whose quoted field runs past the end of its line."""
    with ref.open() as raw:
        tracker = _LineTracker(decoded_lines(raw, ref.name, encoding))
        for _ in csv.reader(tracker, strict=False):
            start, end = tracker.first_line_of_record(), tracker.current_line
            if end != start:
                raise DataError(
                    f"{ref.name} line {start}: a quoted field runs on to line {end} (a '\"' is not closed)"
                )


def _scan_table(ref: FileRef, encoding: str) -> None:
    """Raise DataError for the first line whose field count differs from the header's."""
    n_fields: int | None = None
    for lineno, fields in _records(ref, ",", encoding):
        if n_fields is None:
            n_fields = len(fields)
        elif len(fields) != n_fields:
            raise DataError(f"{ref.name} line {lineno}: expected {n_fields} fields, found {len(fields)}")


# ----------------------------------------------------------------------------------------------------------
# Duplicates.


def drop_duplicate_pairs(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, n_items: int, name: str
) -> tuple[np.ndarray | None, int]:
    """Rows to keep so that each (user, item) pair appears once: the latest by timestamp (ties: last row).

    Returns ``(None, 0)`` when there are no duplicates, which is checked in O(n) for files sorted by
    (user, item) as GroupLens ships them, so the common case costs nothing on ml-25m.
    """
    n = len(users)
    if n < 2:
        return None, 0
    key = users.astype(np.int64) * np.int64(max(n_items, 1)) + items.astype(np.int64)
    if bool(np.all(key[1:] > key[:-1])):
        return None, 0
    sorted_key = np.sort(key)
    if not bool(np.any(sorted_key[1:] == sorted_key[:-1])):
        return None, 0
    order = np.lexsort((np.arange(n), timestamps, key))
    key_sorted = key[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = key_sorted[1:] != key_sorted[:-1]
    keep = np.sort(order[last])
    dropped = n - len(keep)
    n_pairs = int(np.unique(key_sorted[~last]).size)
    logger.warning(
        "%s: dropped %d duplicate ratings of %d (user, movie) pairs, keeping the latest of each",
        name,
        dropped,
        n_pairs,
    )
    return keep, dropped
