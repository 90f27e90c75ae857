"""Alembic environment for the movierec store.

Run through :func:`service.store.database.upgrade`, which hands over an open connection in
``config.attributes["connection"]`` (inside its transaction); with no connection, the URL comes from the
``sqlalchemy.url`` option (``alembic_config(url)``), online or, with ``--sql``, as offline SQL output.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from service.store.database import make_engine
from service.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs: object) -> None:
    context.configure(target_metadata=target_metadata, compare_type=True, **kwargs)


def run_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url: use service.store.database.upgrade(url)")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
