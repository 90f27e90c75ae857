"""Malformed input must fail with a DataError that names the file, the 1-based line and the value."""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trainer.data.dataset import DataError, RatingScale
from trainer.data.movielens import load_movielens, load_ratings_csv
from trainer.data.validate import drop_duplicate_pairs, rating_problems

HEADER = "userId,movieId,rating,timestamp"
GOOD = ["1,10,4.0,100", "1,20,3.5,101", "2,10,5.0,102"]
MOVIES = "movieId,title,genres\n10,Heat (1995),Action\n20,Up (2009),Animation\n"


def release(tmp_path: Path, rows: list[str], movies: str | bytes = MOVIES, newline: str = "\n") -> Path:
    """An ml-latest-layout folder with the given ratings rows (after the header)."""
    folder = tmp_path / "ml-latest-small"
    folder.mkdir(exist_ok=True)
    (folder / "ratings.csv").write_bytes(newline.join([HEADER, *rows, ""]).encode("utf-8"))
    (folder / "movies.csv").write_bytes(movies if isinstance(movies, bytes) else movies.encode())
    return folder


def error_of(path: Path) -> str:
    with pytest.raises(DataError) as info:
        load_movielens(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("2,20,4.0", "expected 4 fields, found 3"),
        ("2,20,4.0,103,9", "expected 4 fields, found 5"),
        ("2,20,abc,103", "rating 'abc' is not a number"),
        ("2,20,,103", "rating '' is not a number"),
        ("2,20,nan,103", "rating 'nan' is not a number"),
        ("2,20,7.0,103", "rating 7.0 is outside the scale 0.5..5 step 0.5"),
        ("2,20,0,103", "rating 0 is outside the scale 0.5..5 step 0.5"),
        ("2,20,3.25,103", "rating 3.25 is not a multiple of 0.5 on the scale 0.5..5 step 0.5"),
        (",20,4.0,103", "user id is missing"),
        ("2,x20,4.0,103", "movie id 'x20' is not an integer"),
        ("2.5,20,4.0,103", "user id '2.5' is not an integer"),
        ("2,20,4.0,soon", "timestamp 'soon' is not an integer"),
        ("2,20,4.0,", "timestamp '' is not an integer"),
    ],
)
def test_bad_row_names_file_line_and_value(tmp_path: Path, bad_row: str, message: str) -> None:
    folder = release(tmp_path, [*GOOD, bad_row, "3,10,1.0,104"])
    # Header is line 1, so the fourth data row is line 5.
    assert error_of(folder) == f"{folder / 'ratings.csv'} line 5: {message}"


def test_first_row_with_extra_fields_is_not_taken_as_an_index(tmp_path: Path) -> None:
    folder = release(tmp_path, ["1,10,4.0,100,7", "1,20,3.5,101,8"])
    assert error_of(folder).endswith("ratings.csv line 2: expected 4 fields, found 5")


def test_line_numbers_count_blank_lines_and_crlf(tmp_path: Path) -> None:
    folder = release(tmp_path, ["1,10,4.0,100", "", "1,20,3.5,101", "", "2,10,9,102"], newline="\r\n")
    assert error_of(folder).endswith("ratings.csv line 6: rating 9 is outside the scale 0.5..5 step 0.5")
    # Blank lines alone are fine (pandas and the scan agree on skipping them).
    folder = release(tmp_path, ["1,10,4.0,100", "", "1,20,3.5,101", ""], newline="\r\n")
    assert len(load_movielens(folder)) == 2


def test_grid_tolerance_is_one_millionth() -> None:
    scale = RatingScale(0.5, 5.0, 0.5)
    ratings = np.array([3.5, 3.5000005, 3.49999, 5.0000005, 5.001, 0.5, 0.4999995, np.nan, np.inf])
    assert rating_problems(ratings, scale).tolist() == [
        False,
        False,
        True,
        False,
        True,
        False,
        False,
        True,
        True,
    ]
    whole = RatingScale(1.0, 5.0, 1.0)
    assert rating_problems(np.array([1.0, 1.5, 5.0, 6.0]), whole).tolist() == [False, True, False, True]


def test_ml100k_tab_file_errors(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t10\t4\t100\n2\t10\t3\n")
    assert error_of(folder) == f"{folder / 'u.data'} line 2: expected 4 fields, found 3"
    (folder / "u.data").write_text("1\t10\t4\t100\n2\t10\t3.5\t101\n")
    assert error_of(folder).endswith(
        "u.data line 2: rating 3.5 is not a multiple of 1 on the scale 1..5 step 1"
    )
    (folder / "u.data").write_text("1 10 4 100\n")
    assert error_of(folder).endswith("u.data line 1: expected 4 fields, found 1")


def test_dat_separator_errors(tmp_path: Path) -> None:
    folder = tmp_path / "ml-10M100K"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::10::4::100\n1::20::3.5::101\n2:10::5::102\n")
    assert error_of(folder) == f"{folder / 'ratings.dat'} line 3: expected 4 fields, found 3"
    # Right field count but a single ':' inside a field: still caught (the gap columns must be empty).
    (folder / "ratings.dat").write_text("1::10::4::100\n1:7::20::3.5::101\n")
    assert error_of(folder).endswith("ratings.dat line 2: user id '1:7' is not an integer")
    (folder / "ratings.dat").write_text("1::10::4::100\n2::20::4::101::9\n")
    assert error_of(folder).endswith("ratings.dat line 2: expected 4 fields, found 5")


def test_errors_inside_a_zip_name_the_member(tmp_path: Path) -> None:
    zip_path = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t10\t4\t100\n1\t11\tfive\t100\n")
    assert error_of(zip_path) == f"{zip_path}:ml-100k/u.data line 2: rating 'five' is not a number"


def test_empty_ratings(tmp_path: Path) -> None:
    folder = release(tmp_path, [])
    assert error_of(folder) == f"{folder / 'ratings.csv'}: no ratings (the file has no data rows)"
    (folder / "ratings.csv").write_text("")
    assert "ratings.csv: empty file" in error_of(folder)
    ml100k = tmp_path / "ml-100k"
    ml100k.mkdir()
    (ml100k / "u.data").write_text("\n\n")
    assert error_of(ml100k) == f"{ml100k / 'u.data'}: no ratings (the file has no data rows)"


def test_non_utf8_bytes(tmp_path: Path) -> None:
    folder = release(tmp_path, GOOD)
    (folder / "ratings.csv").write_bytes(b"userId,movieId,rating,timestamp\n1,10,4.0,100\n1,2\xe90,4.0,1\n")
    assert error_of(folder).endswith("ratings.csv line 3: not valid utf-8 text (byte 0xe9 at column 4)")
    # movies.csv is UTF-8 as GroupLens ships it: a latin-1 byte there is an error, with its line.
    folder = release(
        tmp_path, GOOD, movies=b"movieId,title,genres\n10,Heat (1995),Action\n20,Mis\xe9rables,Drama\n"
    )
    assert error_of(folder).endswith("movies.csv line 3: not valid utf-8 text (byte 0xe9 at column 7)")


def test_movies_csv_errors(tmp_path: Path) -> None:
    folder = release(
        tmp_path, GOOD, movies="movieId,title,genres\n10,Heat (1995),Action\nabc,Up (2009),Drama\n"
    )
    assert error_of(folder).endswith("movies.csv line 3: movie id 'abc' is not an integer")
    folder = release(tmp_path, GOOD, movies='movieId,title,genres\n10,"Heat, (1995)",Action,extra\n')
    assert error_of(folder).endswith("movies.csv line 2: expected 3 fields, found 4")
    folder = release(tmp_path, GOOD, movies="movieId,title,genres\n10,Heat (1995),Action\n20,Up (2009)\n")
    assert error_of(folder).endswith("movies.csv line 3: expected 3 fields, found 2")
    # NA-like titles stay titles.
    folder = release(tmp_path, GOOD, movies="movieId,title,genres\n10,NA,Action\n20,null,\n")
    assert load_movielens(folder).item_titles.tolist() == ["NA", "null"]


def test_u_item_errors(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t10\t4\t100\n")
    flags = "|".join(["0"] * 19)
    (folder / "u.item").write_text(f"10|Heat (1995)|||x|{flags}\n11|Short|x\n")
    assert error_of(folder) == f"{folder / 'u.item'} line 2: expected 24 fields, found 3"
    (folder / "u.item").write_text(f"10|Heat (1995)|||x|{flags[:-1]}2\n")
    assert error_of(folder).endswith("u.item line 1: genre flag '2' for Western is not 0 or 1")


def test_duplicates_keep_latest_and_are_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [
        "1,10,1.0,300",  # latest of (1, 10): kept
        "1,10,2.0,100",
        "1,20,3.0,100",
        "1,10,3.0,200",
        "2,10,4.0,50",  # (2, 10) twice with the same time: the later row wins
        "2,10,4.5,50",
    ]
    folder = release(tmp_path, rows)
    with caplog.at_level(logging.WARNING):
        data = load_movielens(folder)
    assert data.duplicates_dropped == 3
    assert data.users.tolist() == [0, 0, 1]
    assert data.items.tolist() == [0, 1, 0]
    assert data.ratings.tolist() == [1.0, 3.0, 4.5]
    assert data.timestamps.tolist() == [300, 100, 50]
    assert re.search(r"dropped 3 duplicate ratings of 2 \(user, movie\) pairs", caplog.text)


def test_drop_duplicate_pairs_fast_path_for_sorted_files() -> None:
    users = np.array([0, 0, 1, 2], dtype=np.int32)
    items = np.array([0, 1, 1, 0], dtype=np.int32)
    keep, dropped = drop_duplicate_pairs(users, items, np.zeros(4, dtype=np.int64), 2, "x")
    assert keep is None and dropped == 0
    keep, dropped = drop_duplicate_pairs(
        users[::-1].copy(), items[::-1].copy(), np.zeros(4, np.int64), 2, "x"
    )
    assert keep is None and dropped == 0  # unsorted but unique


def test_csv_with_string_ids_reports_missing_ids(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\nalice,m1,4\n,m2,3\n")
    with pytest.raises(DataError, match=re.escape(f"{path} line 3: user id is missing")):
        load_ratings_csv(path)
    path.write_text("user,item,rating,ts\nalice,m1,4,yesterday\n")
    with pytest.raises(
        DataError, match="line 2: timestamp 'yesterday' is not a number of seconds or an ISO date"
    ):
        load_ratings_csv(path)
