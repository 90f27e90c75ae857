"""``movierec db``: migrate the service's SQL store and load MovieLens into it.

Commands parse flags and call :mod:`service.store` and :mod:`trainer.data.store`; heavy imports happen
inside them so that ``movierec --help`` stays instant.  The database URL comes from ``--database-url``,
else ``MOVIEREC_DATABASE_URL``, else ``sqlite:///movierec.db`` (the service's default).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

db_app = typer.Typer(
    name="db",
    help="The service's SQL store: run its migrations and load MovieLens ratings into it.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

DATABASE_ENV = "MOVIEREC_DATABASE_URL"

DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar=DATABASE_ENV,
        show_envvar=True,
        help="SQLAlchemy URL: sqlite:///PATH or postgresql://USER@HOST/DB [default: sqlite:///movierec.db]",
    ),
]


def _fail(message: str) -> None:
    """The `movierec train` convention: a one-line "error: ..." on stderr and exit code 2."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def _url(database_url: str | None) -> str:
    if database_url:
        return database_url
    from service.config import DEFAULT_DATABASE_URL

    return DEFAULT_DATABASE_URL


def _db_error(url: str, exc: Exception) -> str:
    from service.store.database import mask_url

    orig = getattr(exc, "orig", None)
    reason = str(orig if orig is not None else exc).strip().splitlines()
    return f"database {mask_url(url)}: {reason[0] if reason else type(exc).__name__}"


@contextmanager
def _store_errors(url: str) -> Iterator[None]:
    """A store error (no schema, bad URL) or a driver error -> the CLI's ``error:`` line, exit 2."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.store.database import StoreError

    try:
        yield
    except StoreError as exc:
        _fail(str(exc))
    except SQLAlchemyError as exc:
        _fail(_db_error(url, exc))


def stored_ratings(url: str) -> int:
    """How many ratings the store at ``url`` holds: 0 for a database without the schema (or no SQLite file yet).

    Reads only: a missing SQLite file is not created and no migration runs.
    """
    from sqlalchemy import func, inspect, select

    from service.store.database import make_engine
    from service.store.models import Rating

    engine = make_engine(url)
    try:
        db = engine.url.database
        if engine.dialect.name == "sqlite" and db not in (None, "", ":memory:") and not Path(db).exists():
            return 0
        with engine.connect() as conn:
            if not inspect(conn).has_table(Rating.__tablename__):
                return 0
            return int(conn.scalar(select(func.count()).select_from(Rating)) or 0)
    finally:
        engine.dispose()


@db_app.callback()
def _db() -> None:
    # Alembic announces each of its plugins at INFO; the migrations it runs stay visible.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


@db_app.command("upgrade")
def upgrade_cmd(database_url: DatabaseUrlOpt = None) -> None:
    """Run the store's migrations up to the newest revision (a no-op when it is there already)."""

    from service.store.database import mask_url
    from service.store.migrations import upgrade

    url = _url(database_url)
    with _store_errors(url):
        revision = upgrade(url)
    console.print(f"database {mask_url(url)} is at revision [bold]{revision}[/] (head)")


@db_app.command("load")
def load_cmd(
    data: Annotated[Path | None, typer.Option(help="MovieLens folder or zip, or a ratings CSV [MOVIEREC_DATA]")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="MovieLens release to download and cache, e.g. ml-latest-small, ml-100k")
    ] = None,
    database_url: DatabaseUrlOpt = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="download cache [MOVIEREC_CACHE_DIR, default ~/.cache/movierec]")
    ] = None,
    if_empty: Annotated[
        bool,
        typer.Option(
            "--if-empty",
            help="do nothing (no download, no read) when the store already holds ratings; for one-shot jobs",
        ),
    ] = False,
) -> None:
    """Migrate the store, then add a MovieLens release's movies and ratings to it (rows already there are skipped)."""

    from service.store.database import make_engine, mask_url
    from service.store.migrations import upgrade
    from trainer.data.dataset import DataError
    from trainer.data.download import resolve_data
    from trainer.data.movielens import load_dataset
    from trainer.data.store import load_into_store

    url = _url(database_url)
    if if_empty:
        with _store_errors(url):
            stored = stored_ratings(url)
        if stored:
            console.print(f"{mask_url(url)} already holds {stored} ratings: nothing loaded (--if-empty)")
            return
    with _store_errors(url):
        try:
            # The files are read and validated before the database is touched: bad data leaves no trace.
            path = resolve_data(dataset, data, cache_dir)
            ratings = load_dataset(path)
            upgrade(url)
            engine = make_engine(url)
            try:
                report = load_into_store(ratings, engine)
            finally:
                engine.dispose()
        except (DataError, ValueError, FileNotFoundError) as exc:
            _fail(str(exc))
            return
    console.print(
        f"{ratings.source} -> {mask_url(url)}: added {report.movies_added} movies "
        f"({report.movies_skipped} already there) and {report.ratings_added} ratings "
        f"({report.ratings_skipped} already there) in {report.seconds:.1f}s"
    )
