"""Loading every MovieLens layout (tiny files written here, and the real files in shared/), plus features."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.shared_data import shared_movielens
from trainer.data.dataset import DataError, RatingScale
from trainer.data.features import genres_multi_hot, parse_year, parse_years, strip_year
from trainer.data.movielens import ML100K_GENRES, load_dataset, load_movielens, load_ratings_csv

# ---------------------------------------------------------------------------------------------- features


@pytest.mark.parametrize(
    ("title", "year", "stripped"),
    [
        ("Heat (1995)", 1995, "Heat"),
        ("Babylon 5 (1994 )", 1994, "Babylon 5"),
        ("Two Friends (1986) ", 1986, "Two Friends"),
        ("Babylon 5", 0, "Babylon 5"),
        ("Death Note: Desu nôto (2006–2007)", 2006, "Death Note: Desu nôto"),
        ("Fargo (1996–)", 1996, "Fargo"),
        ("1984 (1956)", 1956, "1984"),
        ("Land Before Time III (1995) (V)", 1995, "Land Before Time III (V)"),
        ("American President, The (1995)", 1995, "American President, The"),
        ("unknown", 0, "unknown"),
        ("Broken (0000)", 0, "Broken (0000)"),
        ("", 0, ""),
    ],
)
def test_parse_year_and_strip_year(title: str, year: int, stripped: str) -> None:
    assert parse_year(title) == year
    assert strip_year(title) == stripped


def test_parse_years_is_int16_and_matches_scalar_version() -> None:
    titles = ["Heat (1995)", "Babylon 5", "Fargo (1996–)", "X (2003) "]
    years = parse_years(titles)
    assert years.dtype == np.int16
    assert years.tolist() == [1995, 0, 1996, 2003] == [parse_year(t) for t in titles]
    assert parse_years([]).shape == (0,)


def test_genres_multi_hot_sorts_names_and_ignores_no_genres() -> None:
    matrix, names = genres_multi_hot(["Drama|Comedy", "(no genres listed)", "", "Action", "Comedy"])
    assert names == ("Action", "Comedy", "Drama")
    assert matrix.dtype == np.uint8
    assert matrix.tolist() == [[0, 1, 1], [0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]]
    matrix, names = genres_multi_hot(["A;B"], sep=";")
    assert names == ("A", "B") and matrix.tolist() == [[1, 1]]


# ------------------------------------------------------------------------------------- tiny release files

# (user, movie, rating, timestamp) in file order; users 1..3, movies 10/20/30 rated, 40 not rated.
RATINGS = [(3, 10, 4, 881250949), (1, 10, 5, 874965758), (1, 20, 3, 876893171), (2, 30, 1, 878542960),
           (3, 20, 2, 886397596)]  # fmt: skip
# Codes in ascending id order: users 1,2,3 -> 0,1,2; movies 10,20,30 -> 0,1,2.
USER_CODES = [2, 0, 0, 1, 2]
ITEM_CODES = [0, 0, 1, 2, 1]


def write_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS))
    (folder / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(ML100K_GENRES)) + "\n")

    def flags(*genres: str) -> str:
        return "|".join("1" if g in genres else "0" for g in ML100K_GENRES)

    kids = flags("Animation", "Children's", "Comedy")
    items = [
        f"10|Toy Story (1995)|01-Jan-1995||http://x|{kids}",
        f"20|Misérables, Les (1995)|01-Jan-1995||http://x|{flags('Drama')}",
        f"30|unknown||||{flags('unknown')}",
        f"40|Never Rated (1990)|01-Jan-1990||http://x|{flags('Action')}",
    ]
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    (folder / "u.user").write_text(
        "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n4|9|F|x|1\n"
    )
    return folder


def write_ml1m(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in RATINGS))
    movies = "10::Toy Story (1995)::Animation|Children's|Comedy\n20::Misérables, Les (1995)::Drama|Musical\n"
    movies += "30::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    return folder


def write_ml10m(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = [(u, i, r - 0.5 if k % 2 else r, t) for k, (u, i, r, t) in enumerate(RATINGS)]
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in rows))
    movies = (
        "10::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance\n20::Heat (1995)::Action\n"
    )
    movies += "30::Babylon 5::Sci-Fi\n"
    (folder / "movies.dat").write_text(movies, encoding="utf-8")
    return folder


def write_ml_latest(folder: Path) -> Path:
    folder.mkdir(parents=True)
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r - 0.5:.1f},{t}" for u, i, r, t in RATINGS]
    (folder / "ratings.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    movies = [
        "movieId,title,genres",
        '10,"American President, The (1995)",Comedy|Drama|Romance',
        "20,Babylon 5 (1994 ),Sci-Fi",
        '30,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",(no genres listed)',
        "40,Never Rated (2000),Western",
    ]
    (folder / "movies.csv").write_bytes(("\r\n".join(movies) + "\r\n").encode("utf-8"))
    return folder


def zip_folder(folder: Path, zip_path: Path) -> Path:
    """A zip as GroupLens ships it: every file under one top-level folder, with a directory entry."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{folder.name}/", "")
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{folder.name}/{f.name}")
    return zip_path


def assert_rows(data, ratings: list[float]) -> None:
    assert data.users.dtype == np.int32 and data.items.dtype == np.int32
    assert data.ratings.dtype == np.float32 and data.timestamps.dtype == np.int64
    assert data.users.tolist() == USER_CODES
    assert data.items.tolist() == ITEM_CODES
    assert data.ratings.tolist() == ratings
    assert data.timestamps.tolist() == [t for *_, t in RATINGS]
    assert data.user_ids.tolist() == [1, 2, 3] and data.user_ids.dtype == np.int64
    assert data.item_ids.tolist() == [10, 20, 30] and data.item_ids.dtype == np.int64
    assert data.has_timestamps and data.duplicates_dropped == 0
    assert data.item_titles.dtype.kind == "U"
    assert data.item_years.dtype == np.int16 and data.item_genres.dtype == np.uint8


def test_ml100k_folder(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path / "ml-100k")
    data = load_movielens(folder)
    assert_rows(data, [4, 5, 3, 1, 2])
    assert data.scale == RatingScale(1.0, 5.0, 1.0)
    assert data.item_titles.tolist() == ["Toy Story (1995)", "Misérables, Les (1995)", "unknown"]
    assert data.item_years.tolist() == [1995, 1995, 0]
    assert data.genre_names == ML100K_GENRES  # u.genre order, as shipped
    assert data.item_genres.shape == (3, 19)
    named = [[data.genre_names[j] for j in np.flatnonzero(row)] for row in data.item_genres]
    assert named == [["Animation", "Children's", "Comedy"], ["Drama"], ["unknown"]]
    features = data.user_features
    assert features is not None and features.index.tolist() == [0, 1, 2]
    assert features["gender"].tolist() == ["M", "F", "M"]
    assert features["age"].tolist() == [24, 53, 23]
    assert features["occupation"].tolist() == ["technician", "other", "writer"]
    assert data.source == f"ml-100k ({folder})"


def test_ml1m_dat_with_latin1_titles(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    data = load_movielens(folder)
    assert_rows(data, [4, 5, 3, 1, 2])
    assert data.scale == RatingScale(1.0, 5.0, 1.0)
    assert data.item_titles.tolist() == [
        "Toy Story (1995)",
        "Misérables, Les (1995)",
        "Star Wars: Episode IV - A New Hope (1977)",
    ]
    assert data.genre_names == ("Action", "Animation", "Children's", "Comedy", "Drama", "Musical", "Sci-Fi")
    assert data.item_genres.tolist() == [[0, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0], [1, 0, 0, 0, 0, 0, 1]]
    features = data.user_features
    assert features is not None
    assert features["gender"].tolist() == ["F", "M", "M"]
    assert features["age"].tolist() == [1, 56, 25]
    assert features["occupation"].tolist() == [10, 16, 15]  # integer codes, as ml-1m ships them
    assert data.source.startswith("ml-1m (")


def test_ml10m_half_stars_utf8_no_users(tmp_path: Path) -> None:
    folder = write_ml10m(tmp_path / "ml-10M100K")
    data = load_movielens(folder)
    assert_rows(data, [4, 4.5, 3, 0.5, 2])
    assert data.scale == RatingScale(0.5, 5.0, 0.5)
    assert data.user_features is None
    assert data.item_titles[0] == "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
    assert data.item_years.tolist() == [2001, 1995, 0]
    assert data.source.startswith("ml-10M100K (")


def test_ml_latest_csv_crlf_quoted_titles(tmp_path: Path) -> None:
    folder = write_ml_latest(tmp_path / "ml-latest-small")
    data = load_movielens(folder)
    assert_rows(data, [3.5, 4.5, 2.5, 0.5, 1.5])
    assert data.item_titles.tolist() == [
        "American President, The (1995)",
        "Babylon 5 (1994 )",
        "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
    ]
    assert data.item_years.tolist() == [1995, 1994, 1995]
    # Names come from the whole movies file (Western only on the unrated movie 40) so columns are stable.
    assert data.genre_names == ("Comedy", "Drama", "Romance", "Sci-Fi", "Western")
    assert data.item_genres.tolist() == [[1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]]
    assert data.user_features is None


def test_ml_latest_layout_without_timestamps(tmp_path: Path) -> None:
    folder = tmp_path / "ml-export"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating\n1,10,4.0\n2,10,0.5\n")
    data = load_movielens(folder)
    assert not data.has_timestamps and data.timestamps.tolist() == [0, 0]
    assert data.item_titles.tolist() == [""]  # no movies.csv: empty titles, no genres
    assert data.item_genres.shape == (1, 0) and data.genre_names == ()


@pytest.mark.parametrize("writer", [write_ml100k, write_ml1m, write_ml10m, write_ml_latest])
def test_zip_with_top_level_folder_equals_folder(tmp_path: Path, writer) -> None:
    folder = writer(tmp_path / "release" / "ml-x")
    zipped = zip_folder(folder, tmp_path / "ml-x.zip")
    from_folder, from_zip = load_movielens(folder), load_movielens(zipped)
    assert from_zip.fingerprint() == from_folder.fingerprint()
    assert from_zip.item_titles.tolist() == from_folder.item_titles.tolist()
    assert np.array_equal(from_zip.item_genres, from_folder.item_genres)
    assert from_zip.source == f"ml-x ({zipped})"
    # The parent folder of a single release is accepted too.
    assert load_movielens(tmp_path / "release").fingerprint() == from_folder.fingerprint()


def test_flat_zip_and_macosx_junk(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path / "ml-100k")
    zip_path = tmp_path / "flat.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f.name)
            zf.writestr(f"__MACOSX/._{f.name}", b"\x00\x05")
    data = load_movielens(zip_path)
    assert data.users.tolist() == USER_CODES
    assert data.source == f"ml-100k ({zip_path})"  # named by the detected layout when the name is not ml-*


def test_not_a_release(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MovieLens ratings file found"):
        load_movielens(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file or folder"):
        load_movielens(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a folder or a .zip"):
        load_movielens(tmp_path / "notes.txt")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("deep/er/u.data", "1\t1\t1\t1\n")
    with pytest.raises(DataError, match="no MovieLens ratings file in the zip"):
        load_movielens(tmp_path / "other.zip")


def test_scale_override_is_validated(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path / "ml-100k")
    scale = RatingScale(0.5, 5.0, 0.5)
    assert load_movielens(folder, scale=scale).scale == scale
    with pytest.raises(DataError, match=r"u\.data line 1: rating 4 is outside the scale 1\.\.3"):
        load_movielens(folder, scale=RatingScale(1.0, 3.0, 1.0))


# ------------------------------------------------------------------------------------------ generic CSV


def test_load_ratings_csv_aliases_string_ids_and_items(tmp_path: Path) -> None:
    ratings = tmp_path / "r.csv"
    ratings.write_text("Score,ITEM_ID,user_id,ts\n4.5,m2,alice,100\n3,m1,bob,50\n5,m1,alice,70\n")
    items = tmp_path / "items.csv"
    items.write_text(
        'item,name,genre\nm1,"Heat, the movie (1995)",Action|Crime\nm2,Plain,\nm9,Unrated,Drama\n'
    )
    data = load_ratings_csv(ratings, items)
    assert data.user_ids.tolist() == ["alice", "bob"] and data.user_ids.dtype.kind == "U"
    assert data.item_ids.tolist() == ["m1", "m2"]
    assert data.users.tolist() == [0, 1, 0]
    assert data.items.tolist() == [1, 0, 0]
    assert data.ratings.tolist() == [4.5, 3.0, 5.0]
    assert data.timestamps.tolist() == [100, 50, 70] and data.has_timestamps
    assert data.item_titles.tolist() == ["Heat, the movie (1995)", "Plain"]
    assert data.item_years.tolist() == [1995, 0]
    assert data.genre_names == ("Action", "Crime", "Drama")
    assert data.item_genres.tolist() == [[1, 1, 0], [0, 0, 0]]


def test_load_ratings_csv_without_timestamps_and_int_ids(tmp_path: Path) -> None:
    ratings = tmp_path / "r.tsv"
    ratings.write_text("user\tmovie\trating\n7\t3\t2.5\n5\t3\t4\n")
    data = load_ratings_csv(ratings)
    assert data.user_ids.dtype == np.int64 and data.user_ids.tolist() == [5, 7]
    assert data.users.tolist() == [1, 0]
    assert not data.has_timestamps and data.timestamps.tolist() == [0, 0]
    assert data.item_titles.tolist() == [""] and data.item_genres.shape == (1, 0)


def test_load_ratings_csv_float_and_iso_timestamps(tmp_path: Path) -> None:
    ratings = tmp_path / "r.csv"
    ratings.write_text("user,item,rating,time\n1,2,3,2020-01-01T00:00:10Z\n1,3,4,1970-01-02\n")
    assert load_ratings_csv(ratings).timestamps.tolist() == [1577836810, 86400]
    ratings.write_text("user,item,rating,time\n1,2,3,10.7\n1,3,4,5\n")
    assert load_ratings_csv(ratings).timestamps.tolist() == [10, 5]


def test_load_ratings_csv_header_problems(tmp_path: Path) -> None:
    ratings = tmp_path / "r.csv"
    ratings.write_text("who,what,rating\n1,2,3\n")
    with pytest.raises(DataError, match=r"r\.csv line 1: no user column"):
        load_ratings_csv(ratings)
    ratings.write_text("user,userId,item,rating\n1,1,2,3\n")
    with pytest.raises(DataError, match="several user columns"):
        load_ratings_csv(ratings)


def test_load_dataset_dispatch(tmp_path: Path) -> None:
    folder = write_ml_latest(tmp_path / "ml-latest-small")
    zipped = zip_folder(folder, tmp_path / "ml-latest-small.zip")
    expected = load_movielens(folder).fingerprint()
    assert load_dataset(folder).fingerprint() == expected
    assert load_dataset(zipped).fingerprint() == expected
    # A ratings CSV on its own picks up movies.csv beside it.
    from_csv = load_dataset(folder / "ratings.csv")
    assert from_csv.fingerprint() == expected
    assert from_csv.item_titles.tolist() == load_movielens(folder).item_titles.tolist()
    assert from_csv.source.startswith("ratings csv")
    ml100k = write_ml100k(tmp_path / "ml-100k")
    assert load_dataset(ml100k / "u.data").users.tolist() == USER_CODES
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="unsupported data file"):
        load_dataset(tmp_path / "x.parquet")


# -------------------------------------------------------------------------------------------- real data


def test_real_ml_latest_small_matches_manifest() -> None:
    data = load_movielens(shared_movielens() / "ml-latest-small")
    assert (len(data), data.n_users, data.n_items) == (100836, 610, 9724)
    assert round(float(data.ratings.astype(np.float64).mean()), 6) == 3.501557
    values, counts = np.unique(data.ratings, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == {
        0.5: 1370, 1.0: 2811, 1.5: 1791, 2.0: 7551, 2.5: 5550,
        3.0: 20047, 3.5: 13136, 4.0: 26818, 4.5: 8551, 5.0: 13211,
    }  # fmt: skip
    assert data.user_ids.tolist() == list(range(1, 611))
    assert data.duplicates_dropped == 0 and data.scale == RatingScale(0.5, 5.0, 0.5)
    assert (data.item_titles != "").all()  # every rated movie is in movies.csv
    toy = int(np.searchsorted(data.item_ids, 1))
    assert data.item_titles[toy] == "Toy Story (1995)" and data.item_years[toy] == 1995
    assert [data.genre_names[j] for j in np.flatnonzero(data.item_genres[toy])] == [
        "Adventure", "Animation", "Children", "Comedy", "Fantasy",
    ]  # fmt: skip
    # Timestamps run from 1996-03-29 to 2018-09-24 UTC.
    assert 828057600 <= data.timestamps.min() < 828144000
    assert 1537747200 <= data.timestamps.max() < 1537833600


def test_real_ml100k_matches_manifest() -> None:
    data = load_movielens(shared_movielens() / "ml-100k")
    assert (len(data), data.n_users, data.n_items) == (100000, 943, 1682)
    assert round(float(data.ratings.astype(np.float64).mean()), 5) == 3.52986
    assert np.bincount(data.ratings.astype(np.int64), minlength=6)[1:].tolist() == [
        6110,
        11370,
        27145,
        34174,
        21201,
    ]
    assert data.user_ids.tolist() == list(range(1, 944)) and data.item_ids.tolist() == list(range(1, 1683))
    assert np.bincount(data.users).min() >= 20
    # u.data ends with "12\t203\t3\t879959583".
    assert (data.user_ids[data.users[-1]], data.item_ids[data.items[-1]], data.ratings[-1]) == (12, 203, 3.0)
    assert data.timestamps[-1] == 879959583
    assert 874713600 <= data.timestamps.min() and data.timestamps.max() < 893289600  # 1997-09-20..1998-04-22
    assert data.genre_names == ML100K_GENRES and data.item_genres.shape == (1682, 19)
    assert data.item_titles[0] == "Toy Story (1995)"
    assert data.user_features is not None and len(data.user_features) == 943
    assert data.user_features.loc[0].tolist() == ["M", 24, "technician"]  # u.user line 1: 1|24|M|technician


def test_real_ml1m_metadata_with_synthetic_ratings(tmp_path: Path) -> None:
    """ml-1m ships here without ratings.dat: load its real latin-1 movies.dat and users.dat around a stub."""
    real = shared_movielens() / "ml-1m"
    with pytest.raises(DataError, match="movies.dat is there but ratings.dat is not"):
        load_movielens(real)
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    for name in ("movies.dat", "users.dat"):
        (folder / name).write_bytes((real / name).read_bytes())
    (folder / "ratings.dat").write_text("6040::73::5::978300760\n1::3952::1::978300761\n1::1::3::978300762\n")
    data = load_movielens(folder)
    assert data.item_ids.tolist() == [1, 73, 3952]
    assert data.item_titles.tolist()[:2] == ["Toy Story (1995)", "Misérables, Les (1995)"]
    assert data.user_features is not None
    assert data.user_features["gender"].tolist() == ["F", "M"]  # users 1 and 6040
    assert data.user_features["age"].tolist()[0] == 1
