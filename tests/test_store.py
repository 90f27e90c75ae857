"""The SQL store on SQLite and on the real PostgreSQL: migrations, queries, loading and reading back, CLI.

Every test that takes ``db_url`` (tests/conftest.py) runs on both back ends.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import BigInteger, Engine, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from typer.testing import CliRunner

from movierec import artifacts
from movierec.cli import app
from service.store import repository
from service.store.database import StoreError, make_engine, mask_url, normalize_url, ping, session_factory
from service.store.migrations import alembic_config, current_revision, head_revision, upgrade
from service.store.models import Base, Movie, Rating
from tests.shared_data import shared_movielens
from trainer.data.dataset import DataError, RatingScale, RatingsData
from trainer.data.movielens import load_dataset, load_ratings_csv
from trainer.data.store import genre_strings, infer_scale, load_into_store, read_from_store
from trainer.data.synth import generate, write_movielens


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a migrated, empty store."""
    upgrade(db_url)
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture(scope="module")
def small() -> RatingsData:
    """A small half-star synthetic dataset (ids 1.., titles with years, genres)."""
    return generate(60, 40, 900, rank=3, noise=0.3, seed=7).data


def _rows(data: RatingsData) -> set[tuple[int, int, float, int]]:
    return set(
        zip(
            np.asarray(data.user_ids)[data.users].tolist(),
            np.asarray(data.item_ids)[data.items].tolist(),
            data.ratings.astype(np.float64).tolist(),
            data.timestamps.tolist(),
            strict=True,
        )
    )


def _movies(data: RatingsData) -> dict[int, tuple[str, int, frozenset[str]]]:
    genres = genre_strings(data.item_genres, data.genre_names)
    return {
        int(m): (str(t), int(y), frozenset(g.split("|")) - {""})
        for m, t, y, g in zip(data.item_ids, data.item_titles, data.item_years, genres, strict=True)
    }


def _add_movies(sessions: sessionmaker[Session], *ids: int) -> None:
    with sessions() as s:
        s.add_all(Movie(movie_id=m, title=f"Movie {m} (1999)", year=1999, genres="Comedy|Drama") for m in ids)
        s.commit()


# ----------------------------------------------------------------------------------------------------------
# Engines and migrations.


def test_make_engine_normalizes_urls_and_tunes_sqlite(tmp_path):
    assert normalize_url("postgresql://u:pw@h:5432/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    for bad in ("mysql://u@h/db", "postgresql+psycopg2://u@h/db", "not a url"):
        with pytest.raises(StoreError, match="sqlite:///"):
            normalize_url(bad)
    assert mask_url("postgresql://u:hunter2@h/db") == "postgresql://u:***@h/db"

    eng = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert ping(eng)
    finally:
        eng.dispose()
    mem = make_engine("sqlite://")
    assert isinstance(mem.pool, StaticPool)  # one connection: every session sees the same in-memory database
    mem.dispose()


def test_ping_is_false_when_the_server_is_unreachable():
    eng = make_engine("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2")
    assert eng.pool.__class__.__name__ != "StaticPool" and eng.dialect.driver == "psycopg"
    assert ping(eng) is False
    eng.dispose()


def test_migrations_create_the_schema_and_are_idempotent(db_url):
    assert current_revision(db_url) is None
    assert upgrade(db_url) == head_revision() == "0001"
    eng = make_engine(db_url)
    try:
        insp = inspect(eng)
        assert {"movies", "ratings", "alembic_version"} <= set(insp.get_table_names())
        assert insp.get_pk_constraint("movies")["constrained_columns"] == ["movie_id"]
        assert insp.get_pk_constraint("ratings")["constrained_columns"] == ["user_id", "movie_id"]
        (fk,) = insp.get_foreign_keys("ratings")
        assert (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"]) == (
            ["movie_id"],
            "movies",
            ["movie_id"],
        )
        assert {(ix["name"], tuple(ix["column_names"])) for ix in insp.get_indexes("ratings")} >= {
            ("ix_ratings_movie_id", ("movie_id",))
        }
        movies = {c["name"]: c for c in insp.get_columns("movies")}
        ratings = {c["name"]: c for c in insp.get_columns("ratings")}
        assert movies["year"]["nullable"] and not movies["title"]["nullable"] and not movies["genres"]["nullable"]
        for col in ("user_id", "movie_id", "timestamp"):
            assert isinstance(ratings[col]["type"], BigInteger) and not ratings[col]["nullable"]
        assert isinstance(movies["movie_id"]["type"], BigInteger)
        # The ORM models describe exactly what the migrations built.
        with eng.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
        # Upgrading again is a no-op that keeps the data.
        with session_factory(eng)() as s:
            s.add(Movie(movie_id=1, title="Heat (1995)"))
            s.commit()
        assert upgrade(db_url) == "0001"
        with session_factory(eng)() as s:
            movie = repository.get_movie(s, 1)
            assert movie is not None and (movie.title, movie.year, movie.genres) == ("Heat (1995)", None, "")
    finally:
        eng.dispose()


# ----------------------------------------------------------------------------------------------------------
# Repository.


def test_upsert_replaces_and_reports_creation(sessions):
    _add_movies(sessions, 10, 20, 30)
    with sessions() as s:
        row, created = repository.upsert_rating(s, 7, 20, 4.0, 1_000)
        assert created and (row.user_id, row.movie_id, row.rating, row.timestamp) == (7, 20, 4.0, 1_000)
        assert isinstance(row.rating, float)
        row, created = repository.upsert_rating(s, 7, 20, 2.5, 1_500)
        assert not created and (row.rating, row.timestamp) == (2.5, 1_500)
        assert repository.count_ratings(s) == 1
        repository.upsert_rating(s, 7, 10, 5.0, 1_500)
        repository.upsert_rating(s, 7, 30, 3.0, 900)
        repository.upsert_rating(s, 8, 30, 1.0, 100)
    with sessions() as s:  # a new session sees what the upserts committed
        assert repository.count_ratings(s) == 4 and repository.count_movies(s) == 3
        assert repository.user_exists(s, 7) and repository.user_exists(s, 8) and not repository.user_exists(s, 9)
        assert repository.user_rated_movie_ids(s, 7) == [10, 20, 30]
        assert repository.user_rated_movie_ids(s, 9) == []
        ordered = [(r.movie_id, r.timestamp, r.rating) for r in repository.user_ratings(s, 7)]
        assert ordered == [(30, 900, 3.0), (10, 1_500, 5.0), (20, 1_500, 2.5)]  # by time, then movie id
        movie = repository.get_movie(s, 10)
        assert movie is not None and movie.genre_list() == ["Comedy", "Drama"] and movie.year == 1999
        assert repository.get_movie(s, 11) is None


def test_upsert_of_an_unknown_movie_is_refused_and_leaves_the_session_usable(sessions):
    _add_movies(sessions, 1)
    with sessions() as s:
        with pytest.raises(repository.UnknownMovieError, match="movie 999"):
            repository.upsert_rating(s, 1, 999, 3.0, 5)
        assert repository.upsert_rating(s, 1, 1, 3.0, 5)[1]
        assert repository.count_ratings(s) == 1


def test_concurrent_upserts_from_threads(sessions):
    """The API writes from several threads: nothing is lost, and exactly one writer creates a shared row."""
    _add_movies(sessions, *range(1, 21))
    created_shared: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(user: int) -> None:
        try:
            with sessions() as s:
                for movie in range(1, 21):
                    repository.upsert_rating(s, user, movie, 3.0, movie)
                _, created = repository.upsert_rating(s, 1_000, 1, float(user % 5 + 1), user)
                with lock:
                    created_shared.append(created)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(u,)) for u in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(created_shared) == [False] * 7 + [True]
    with sessions() as s:
        assert repository.count_ratings(s) == 8 * 20 + 1


# ----------------------------------------------------------------------------------------------------------
# Loading MovieLens and reading it back.


def test_ml100k_load_is_exact_idempotent_and_reads_back(engine):
    data = load_dataset(shared_movielens() / "ml-100k")
    report = load_into_store(data, engine)
    assert (report.movies_added, report.ratings_added, report.ratings_skipped) == (1682, 100_000, 0)
    with session_factory(engine)() as s:
        assert repository.count_movies(s) == data.n_items == 1682
        assert repository.count_ratings(s) == len(data) == 100_000
        code = int(np.searchsorted(data.user_ids, 196))
        expected = sorted(data.item_ids[data.items[data.users == code]].tolist())
        assert repository.user_exists(s, 196) and repository.user_rated_movie_ids(s, 196) == expected
    again = load_into_store(data, engine)
    assert (again.movies_added, again.ratings_added, again.ratings_skipped) == (0, 0, 100_000)

    back = read_from_store(engine)
    assert len(back) == len(data) and back.n_users == data.n_users and back.n_items == data.n_items
    assert _rows(back) == _rows(data)
    np.testing.assert_array_equal(back.user_ids, data.user_ids)
    np.testing.assert_array_equal(back.item_ids, data.item_ids)
    assert back.user_ids.dtype == np.int64 and back.item_ids.dtype == np.int64
    assert back.users.dtype == np.int32 and back.ratings.dtype == np.float32 and back.item_years.dtype == np.int16
    assert _movies(back) == _movies(data)  # titles, years and genre sets per movie
    used = data.item_genres.any(axis=0)
    assert set(back.genre_names) == {g for g, u in zip(data.genre_names, used, strict=True) if u}
    assert back.scale == RatingScale(1.0, 5.0, 1.0) == data.scale
    assert back.has_timestamps and back.duplicates_dropped == 0
    assert read_from_store(engine).fingerprint() == back.fingerprint()  # deterministic row order


def test_half_star_round_trip_and_scale(engine, small):
    report = load_into_store(small, engine, chunk_rows=128)  # several batches
    assert (report.movies_added, report.ratings_added) == (small.n_items, len(small))
    back = read_from_store(engine)
    assert _rows(back) == _rows(small) and _movies(back) == _movies(small)
    assert back.scale == RatingScale(0.5, 5.0, 0.5)
    # An explicit scale is checked like the file readers check theirs.
    with pytest.raises(DataError, match="not on the scale 1..5 step 1"):
        read_from_store(engine, scale=RatingScale(1.0, 5.0, 1.0))
    assert read_from_store(engine, scale=RatingScale(0.5, 5.0, 0.5)).scale.step == 0.5


def test_infer_scale():
    assert infer_scale(np.array([1.0, 5.0, 3.0])) == RatingScale(1.0, 5.0, 1.0)
    assert infer_scale(np.array([1.0, 4.5])) == RatingScale(0.5, 5.0, 0.5)
    assert infer_scale(np.array([0.0, 4.0])) == RatingScale(0.5, 5.0, 0.5)


def test_a_partial_overlap_adds_only_the_new_rows(engine, small):
    half = small.subset(np.arange(len(small)) % 2 == 0)
    first = load_into_store(half, engine)
    assert first.ratings_added == len(half)
    second = load_into_store(small, engine)
    assert (second.ratings_added, second.ratings_skipped) == (len(small) - len(half), len(half))
    assert _rows(read_from_store(engine)) == _rows(small)


def test_empty_store_is_a_clean_error_with_the_password_masked(db_url):
    url = db_url
    if db_url.startswith("postgresql"):
        url = make_url(db_url).set(password="s3cret-pw").render_as_string(hide_password=False)  # trust auth
    upgrade(url)
    eng = make_engine(url)
    try:
        with pytest.raises(DataError, match="has no ratings") as info:
            read_from_store(eng)
        message = str(info.value)
        assert "s3cret-pw" not in message and mask_url(url) in message
        if url != db_url:
            assert "***" in message
    finally:
        eng.dispose()


def test_store_without_schema_is_refused(db_url, small):
    eng = make_engine(db_url)
    try:
        with pytest.raises(StoreError, match="movierec db upgrade"):
            read_from_store(eng)
        with pytest.raises(StoreError, match="movierec db upgrade"):
            load_into_store(small, eng)
    finally:
        eng.dispose()


def test_string_ids_are_refused(engine, tmp_path):
    csv = tmp_path / "ratings.csv"
    csv.write_text("user,item,rating,timestamp\nalice,m1,4.0,10\nbob,m1,3.5,11\n")
    data = load_ratings_csv(csv)
    assert data.user_ids.dtype.kind == "U"
    with pytest.raises(DataError, match="not integers.*BigInteger"):
        load_into_store(data, engine)
    with session_factory(engine)() as s:
        assert repository.count_ratings(s) == 0 and repository.count_movies(s) == 0
        assert s.scalars(select(Rating)).first() is None


def test_sqlite_read_of_a_missing_file_does_not_create_it(tmp_path):
    path = tmp_path / "missing.db"
    eng = make_engine(f"sqlite:///{path}")
    with pytest.raises(StoreError, match="does not exist"):
        read_from_store(eng)
    eng.dispose()
    assert not path.exists()


# ----------------------------------------------------------------------------------------------------------
# Command line.


def _flat(text_: str) -> str:
    return " ".join(text_.split())


def test_cli_db_load_then_train_from_db(db_url, tmp_path, small):
    runner = CliRunner()
    data_dir = write_movielens(small, tmp_path / "synth")
    res = runner.invoke(app, ["db", "upgrade", "--database-url", db_url])
    assert res.exit_code == 0, res.output
    assert "revision 0001" in _flat(res.output)

    res = runner.invoke(app, ["db", "load", "--data", str(data_dir), "--database-url", db_url])
    assert res.exit_code == 0, res.output
    assert f"added {small.n_items} movies" in _flat(res.output) and f"{len(small)} ratings" in _flat(res.output)
    res = runner.invoke(app, ["db", "load", "--data", str(data_dir), "--database-url", db_url])
    assert res.exit_code == 0, res.output
    assert f"0 ratings ({len(small)} already there)" in _flat(res.output)

    art = tmp_path / "art"
    args = ["train", "--from-db", "--database-url", db_url, "--out", str(art), "--epochs", "2", "--dim", "4"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "published" in res.output
    loaded = artifacts.load_version(art)
    assert loaded.manifest.dataset.n_ratings == len(small)
    assert loaded.manifest.dataset.source.startswith("database ")
    assert sorted(np.asarray(loaded.item_ids).tolist()) == sorted(np.asarray(small.item_ids).tolist())

    res = runner.invoke(app, [*args[:4], "--split", "ml100k-fold", "--out", str(art)])
    assert res.exit_code == 2 and "cannot run on --from-db" in _flat(res.output)
    assert len(artifacts.list_versions(art)) == 1


def test_cli_train_from_an_empty_store_fails_cleanly(db_url, tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade", "--database-url", db_url]).exit_code == 0
    art = tmp_path / "art"
    res = runner.invoke(app, ["train", "--from-db", "--database-url", db_url, "--out", str(art), "--epochs", "1"])
    assert res.exit_code == 2, res.output
    flat = _flat(res.output)
    assert "error:" in flat and "has no ratings" in flat and "Traceback" not in flat
    assert not art.exists() or not artifacts.list_versions(art)


def test_cli_db_load_bad_data_touches_no_database(tmp_path, monkeypatch):
    monkeypatch.delenv("MOVIEREC_DATA", raising=False)
    runner = CliRunner()
    bad = tmp_path / "bad.csv"
    bad.write_text("userId,movieId,rating,timestamp\n1,2,4.0,10\n1,3,9.0,11\n")
    db = tmp_path / "store.db"
    url = f"sqlite:///{db}"
    res = runner.invoke(app, ["db", "load", "--data", str(bad), "--database-url", url])
    assert res.exit_code == 2 and "error:" in res.output and "bad.csv line 3" in _flat(res.output)
    res = runner.invoke(app, ["db", "load", "--database-url", url])
    assert res.exit_code == 2 and "no data given" in _flat(res.output)
    res = runner.invoke(app, ["db", "load", "--data", str(tmp_path / "nope"), "--database-url", url])
    assert res.exit_code == 2 and "no such file" in _flat(res.output)
    assert not db.exists()
    res = runner.invoke(app, ["db", "upgrade", "--database-url", "mysql://u@h/db"])
    assert res.exit_code == 2 and "unsupported database URL" in _flat(res.output)


def test_cli_db_upgrade_reads_the_environment(tmp_path):
    db = tmp_path / "env.db"
    res = CliRunner().invoke(app, ["db", "upgrade"], env={"MOVIEREC_DATABASE_URL": f"sqlite:///{db}"})
    assert res.exit_code == 0, res.output
    assert db.exists() and current_revision(f"sqlite:///{db}") == "0001"


def test_unreachable_postgres_is_a_clean_cli_error():
    url = "postgresql://postgres:pw@127.0.0.1:1/postgres?connect_timeout=2"
    res = CliRunner().invoke(app, ["db", "upgrade", "--database-url", url])
    assert res.exit_code == 2 and "error:" in res.output
    assert "pw@" not in res.output and "***" in res.output


def test_store_package_stays_free_of_torch_and_pandas():
    code = (
        "import sys, service.store, service.store.repository, service.store.migrations; "
        "bad = [m for m in ('torch', 'pandas') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_migrations_render_offline_sql():
    """`alembic upgrade --sql` works too (a DBA can review or apply the DDL by hand)."""
    cfg = alembic_config("postgresql://postgres@127.0.0.1/x")
    buf = io.StringIO()
    cfg.output_buffer = buf
    command.upgrade(cfg, "head", sql=True)
    sql = buf.getvalue()
    assert "CREATE TABLE movies" in sql and "CREATE TABLE ratings" in sql and "ix_ratings_movie_id" in sql
