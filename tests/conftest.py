"""Shared fixtures: databases for the SQL store, on SQLite and on the real PostgreSQL server.

``db_url`` is parametrized over both back ends, so a test that takes it runs twice; the PostgreSQL run
carries the ``postgres`` marker.  Each test gets an empty database (no schema: run
``service.store.migrations.upgrade`` first): a fresh SQLite file, or the test module's own PostgreSQL
database with its ``public`` schema wiped.  PostgreSQL being down is a failure that says how to start it,
never a skip: the store must be tested on the server it runs on in production.

The admin URL is ``$MOVIEREC_TEST_POSTGRES_URL`` (default: user postgres on 127.0.0.1:5432, trust auth).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

POSTGRES_ENV = "MOVIEREC_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def postgres_admin_url() -> str:
    """The maintenance database URL the test databases are created from (psycopg 3 driver)."""
    url = make_url(os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def _autocommit_engine(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the PostgreSQL maintenance database; fails the test if the server is down."""
    url = postgres_admin_url()
    engine = _autocommit_engine(url)
    reason = None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
    if reason is not None:  # outside the except block: the report is the message, not a chained traceback
        engine.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {make_url(url).render_as_string(hide_password=True)} ({reason}). "
            f"Start it with `{START_POSTGRES}`, or set {POSTGRES_ENV} to a server where user postgres may "
            "create databases.",
            pytrace=False,
        )
    yield engine
    engine.dispose()


def _drop_database(admin: Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        conn.execute(text(f"DROP DATABASE IF EXISTS {admin.dialect.identifier_preparer.quote(name)}"))


@pytest.fixture(scope="module")
def postgres_url(request: pytest.FixtureRequest, postgres_admin: Engine) -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this test module, dropped afterwards."""
    module = re.sub(r"[^a-z0-9]+", "_", request.module.__name__.rsplit(".", 1)[-1].lower())[:30]
    name = f"movierec_{module}_{uuid.uuid4().hex[:10]}"
    # Identifiers cannot be bound parameters; the name is ours, made of [a-z0-9_], and quoted anyway.
    with postgres_admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {postgres_admin.dialect.identifier_preparer.quote(name)}"))
    try:
        yield make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        _drop_database(postgres_admin, name)


def reset_postgres(url: str) -> None:
    """Empty a test database: drop and recreate its ``public`` schema (tables, alembic_version, all)."""
    engine = _autocommit_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database (no schema yet) on each back end: a new SQLite file, or a wiped PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    reset_postgres(url)
    return url
