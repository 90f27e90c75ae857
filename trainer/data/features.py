"""Item features derived from MovieLens metadata: release years from titles and multi-hot genres.

GroupLens has no year column; the year lives in the title ("Heat (1995)") and is missing, padded
("Babylon 5 (1994 )") or a range for series ("Death Note: Desu nôto (2006–2007)") often enough that a
naive ``title[-5:-1]`` silently produces garbage.  Everything here returns 0 / no genre for what it cannot
parse instead of raising, because metadata quirks must never stop a training run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

#: The genre string MovieLens uses for movies without genres; it is not a genre.
NO_GENRES = "(no genres listed)"

#: The 18 genres every MovieLens release since ml-1m uses (ml-1m spells "Children's"; ml-20m+ add IMAX).
MOVIELENS_GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
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

# A year in parentheses, optionally padded or a range ("(1995)", "(1994 )", "(1995–)", "(2006-2007)"),
# followed only by further parenthesised remarks such as ml-100k's "(V)" and whitespace.  The greedy
# ``^(.*)`` makes the *last* such year win ("1984 (1956)" -> 1956).
_YEAR_RE = re.compile(r"^(.*)\(\s*(\d{4})\s*(?:[-–—]\s*(?:\d{4})?\s*)?\)((?:\s*\([^()]*\))*)\s*$", re.DOTALL)
_MIN_YEAR = 1800
_MAX_YEAR = 2199


def parse_year(title: str) -> int:
    """The release year at the end of a MovieLens title, 0 when there is none.

    Years outside 1800..2199 are treated as not-a-year (a title such as "Cube 2 (0000)" would otherwise
    poison year-based features with an absurd value).
    """
    match = _YEAR_RE.match(title) if isinstance(title, str) else None
    if match is None:
        return 0
    year = int(match.group(2))
    return year if _MIN_YEAR <= year <= _MAX_YEAR else 0


def parse_years(titles: Sequence[str]) -> np.ndarray:
    """Vectorised :func:`parse_year`: int16 array, 0 where a title has no year.

    Uses pandas' regex extraction so that 60k titles (ml-25m) take milliseconds, not a Python loop.
    """
    if len(titles) == 0:
        return np.zeros(0, dtype=np.int16)
    series = pd.Series(np.asarray(titles, dtype=object), dtype=object)
    extracted = series.str.extract(_YEAR_RE, expand=True)[1]
    # np.array copies: pandas (copy-on-write) may hand out a read-only view.
    years = np.array(pd.to_numeric(extracted, errors="coerce").fillna(0), dtype=np.int64)
    years[(years < _MIN_YEAR) | (years > _MAX_YEAR)] = 0
    return years.astype(np.int16)


def strip_year(title: str) -> str:
    """The title without its year suffix ("Heat (1995)" -> "Heat"); unchanged when there is no year.

    Trailing remarks after the year are kept ("Land Before Time III (1995) (V)" ->
    "Land Before Time III (V)") because they distinguish releases; only the year is redundant once it
    is in ``item_years``.
    """
    match = _YEAR_RE.match(title)
    if match is None or parse_year(title) == 0:
        return title.strip()
    head, tail = match.group(1).rstrip(), match.group(3).strip()
    return f"{head} {tail}" if tail else head


def genres_multi_hot(genre_strings: Sequence[str], sep: str = "|") -> tuple[np.ndarray, tuple[str, ...]]:
    """Multi-hot genre matrix (n, g) uint8 and the genre names, sorted, for '|'-joined genre strings.

    "(no genres listed)", empty strings and missing values give an all-zero row, so "no genre" is never
    mistaken for a genre of its own by a model.  Names are sorted so that the column order depends only on
    the set of genres, not on which movie happened to come first.
    """
    n = len(genre_strings)
    if n == 0:
        return np.zeros((0, 0), dtype=np.uint8), ()
    series = pd.Series(np.asarray(genre_strings, dtype=object), dtype=object)
    series = series.where(series.notna(), "").astype(str).str.strip()
    series = series.mask(series == NO_GENRES, "")
    # Each distinct genre string is split once: a catalogue has far fewer combinations than movies.
    codes, uniques = pd.factorize(series, sort=False)
    split = [[g.strip() for g in s.split(sep) if g.strip() and g.strip() != NO_GENRES] for s in uniques]
    names = tuple(sorted({g for parts in split for g in parts}))
    column = {name: j for j, name in enumerate(names)}
    table = np.zeros((len(uniques), len(names)), dtype=np.uint8)
    for row, parts in enumerate(split):
        for g in parts:
            table[row, column[g]] = 1
    return table[codes], names
