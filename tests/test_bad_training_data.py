"""`movierec train` on damaged input: it must stop with a non-zero exit and one line naming the file (and
the line, where the damage has one), and publish nothing.

tests/test_data_validate.py checks the readers' messages one value at a time; this checks the whole
command on the damage that happens to real files (a copy cut short, a zip that did not finish
downloading, a spreadsheet saved with another separator or encoding, an editor that broke a quote),
including what the command leaves behind: a half-trained model must never become a version the
service could load.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from movierec import cli
from tests.test_data_movielens import write_ml1m, write_ml100k, zip_folder
from trainer.data.synth import generate, write_movielens


@pytest.fixture(scope="module")
def good_release(tmp_path_factory) -> Path:
    """A small, valid ml-latest-layout release (ratings.csv + movies.csv) that each case damages a copy of."""
    folder = tmp_path_factory.mktemp("good") / "ml-latest-small"
    write_movielens(generate(30, 20, 300, rank=2, noise=0.3, seed=1).data, folder)
    return folder


@pytest.fixture(autouse=True)
def wide_error_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The error line unwrapped (rich wraps at 80 columns, which would split paths mid-assertion)."""
    monkeypatch.setattr(cli.err_console, "width", 10_000)


def copy_of(release: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(release, tmp_path / release.name))


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


# --- damage: each takes the good release and a scratch folder, and returns (the --data path, the file the
# message must name, the line it must name or None when the damage has no line)


def truncated_mid_row(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    """A copy cut short inside a row, after the rating: the last row has three fields."""
    d = copy_of(good, tmp)
    rows = lines_of(d / "ratings.csv")
    cut = rows[60][: rows[60].rindex(",")]
    (d / "ratings.csv").write_text("\n".join([*rows[:60], cut]))
    return d, d / "ratings.csv", 61


def truncated_mid_rating(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    """Cut inside the rating: '4.' reads as a number, so the row is short of its timestamp."""
    d = copy_of(good, tmp)
    rows = lines_of(d / "ratings.csv")
    user, movie, rating, _ = rows[41].split(",")
    (d / "ratings.csv").write_text("\n".join([*rows[:41], f"{user},{movie},{rating[:2]}"]))
    return d, d / "ratings.csv", 42


def truncated_u_data(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    d = write_ml100k(tmp / "ml-100k")
    data = (d / "u.data").read_bytes()
    (d / "u.data").write_bytes(data[: data.index(b"\n", 40) + 4])  # three rows, and 3 bytes of the fourth
    return d, d / "u.data", 4


def truncated_zip(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    """A download that stopped half way: no central directory, so not a zip at all."""
    z = zip_folder(good, tmp / "ml-latest-small.zip")
    data = z.read_bytes()
    z.write_bytes(data[: len(data) // 2])
    return z, z, None


def zip_with_corrupt_member(good: Path, tmp: Path) -> tuple[Path, str, int | None]:
    """The central directory is intact but ratings.csv's compressed bytes are damaged."""
    z = zip_folder(good, tmp / "ml-latest-small.zip")
    data = bytearray(z.read_bytes())
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo("ml-latest-small/ratings.csv")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # the member's data
    data[start + 100 : start + 140] = bytes(40)
    z.write_bytes(bytes(data))
    return z, f"{z}:ml-latest-small/ratings.csv", None


def zip_without_ratings_member(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    src = write_ml1m(tmp / "src" / "ml-1m")
    z = tmp / "ml-1m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for name in ("movies.dat", "users.dat"):  # ratings.dat is the member that went missing
            zf.write(src / name, f"ml-1m/{name}")
    return z, z, None


def empty_zip_file(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    z = tmp / "ml-latest-small.zip"
    z.write_bytes(b"")
    return z, z, None


def dat_with_tabs(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    """ml-1m ratings.dat re-saved with tabs instead of '::'."""
    d = write_ml1m(tmp / "ml-1m")
    (d / "ratings.dat").write_text((d / "ratings.dat").read_text().replace("::", "\t"))
    return d, d / "ratings.dat", 1


def csv_with_some_semicolon_rows(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    """Rows appended by another tool with ';': the header says ','."""
    d = copy_of(good, tmp)
    rows = lines_of(d / "ratings.csv")
    (d / "ratings.csv").write_text("\n".join([*rows, "7;3;4.0;964982703", "7;4;3.5;964982704"]) + "\n")
    return d, d / "ratings.csv", len(rows) + 1


def movies_csv_with_semicolons(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    d = copy_of(good, tmp)
    (d / "movies.csv").write_text((d / "movies.csv").read_text().replace(",", ";"))
    return d, d / "movies.csv", 1


def ratings_csv_in_utf16(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    """Saved as 'Unicode' by a spreadsheet: UTF-16 with a byte order mark."""
    d = copy_of(good, tmp)
    (d / "ratings.csv").write_bytes((d / "ratings.csv").read_text().encode("utf-16"))
    return d, d / "ratings.csv", 1


def movies_csv_mixed_encodings(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    """UTF-8 titles with one row pasted in from a latin-1 source."""
    d = copy_of(good, tmp)
    rows = (d / "movies.csv").read_bytes().splitlines(keepends=True)
    rows[2] = "2,Amélie (2001),Comedy\n".encode()
    rows[5] = "5,Misérables (1995),Drama\n".encode("latin-1")
    (d / "movies.csv").write_bytes(b"".join(rows))
    return d, d / "movies.csv", 6


def u_data_latin1_byte(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    d = write_ml100k(tmp / "ml-100k")
    (d / "u.data").write_bytes((d / "u.data").read_bytes() + b"4\t1\xe90\t3\t881250950\n")
    return d, d / "u.data", 6


def id_past_int64(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    d = copy_of(good, tmp)
    rows = lines_of(d / "ratings.csv")
    (d / "ratings.csv").write_text("\n".join([*rows, f"{10**23},1,3.0,964982703"]) + "\n")
    return d, d / "ratings.csv", len(rows) + 1


def negative_id(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    """The service takes ids 0..2^63-1 only: a negative one would train a user nobody can ask about."""
    d = copy_of(good, tmp)
    rows = lines_of(d / "ratings.csv")
    (d / "ratings.csv").write_text("\n".join([*rows[:10], "3,-7,4.0,964982703", *rows[10:]]) + "\n")
    return d, d / "ratings.csv", 11


def unclosed_quote_in_movies(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    """An opened, never closed quote: the parser swallows the next line into the title."""
    d = copy_of(good, tmp)
    rows = lines_of(d / "movies.csv")
    movie_id, title, genres = rows[2].split(",")
    rows[2] = f'{movie_id},"{title.strip(chr(34))},{genres}'
    (d / "movies.csv").write_text("\n".join(rows) + "\n")
    return d, d / "movies.csv", 3


def nul_bytes_in_a_row(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    """A block of NUL bytes inside a row (a crash while the file was written)."""
    d = copy_of(good, tmp)
    rows = lines_of(d / "ratings.csv")
    user, movie, rating, ts = rows[20].split(",")
    rows[20] = f"{user},{movie},{rating}\x00\x00\x00\x00,{ts}"
    (d / "ratings.csv").write_text("\n".join(rows) + "\n")
    return d, d / "ratings.csv", 21


def binary_garbage(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    d = copy_of(good, tmp)
    (d / "ratings.csv").write_bytes(bytes(range(128, 256)) * 40)
    return d, d / "ratings.csv", 1


def header_missing(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    d = copy_of(good, tmp)
    (d / "ratings.csv").write_text("\n".join(lines_of(d / "ratings.csv")[1:]) + "\n")
    return d, d / "ratings.csv", 1


def plain_csv_truncated(good: Path, tmp: Path) -> tuple[Path, Path, int | None]:
    """`--data some.csv` (the generic reader), cut inside its last row."""
    path = tmp / "ratings_export.csv"
    path.write_text("user,item,rating\nalice,m1,4\nbob,m2,3\nbob,m")
    return path, path, 4


DAMAGE: list[Callable[[Path, Path], tuple[Path, Path | str, int | None]]] = [
    truncated_mid_row,
    truncated_mid_rating,
    truncated_u_data,
    truncated_zip,
    zip_with_corrupt_member,
    zip_without_ratings_member,
    empty_zip_file,
    dat_with_tabs,
    csv_with_some_semicolon_rows,
    movies_csv_with_semicolons,
    ratings_csv_in_utf16,
    movies_csv_mixed_encodings,
    u_data_latin1_byte,
    id_past_int64,
    negative_id,
    unclosed_quote_in_movies,
    nul_bytes_in_a_row,
    binary_garbage,
    header_missing,
    plain_csv_truncated,
]


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_train_refuses_damaged_input_and_publishes_nothing(good_release, tmp_path, damage):
    scratch = tmp_path / "data"
    scratch.mkdir()
    data, named, line = damage(good_release, scratch)
    out = tmp_path / "artifacts"
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--dim", "4", "--split", "none"]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), f"crashed instead of reporting: {res.exception!r}"
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, res.output
    message = errors[0]
    where = f"{named} line {line}:" if line is not None else f"{named}:"
    assert where in message, message
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_the_good_release_trains(good_release, tmp_path):
    """The control: the undamaged copy publishes a version, so each refusal above is the damage's."""
    data = copy_of(good_release, tmp_path)
    out = tmp_path / "artifacts"
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--dim", "4", "--split", "none"]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 0, res.output
    assert [p for p in out.iterdir() if p.is_dir()], "no version folder published"
