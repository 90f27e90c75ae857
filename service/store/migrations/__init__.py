"""The store's Alembic migrations, run programmatically: no ``alembic.ini`` is needed anywhere.

This folder is the Alembic environment (``env.py``, ``script.py.mako``, ``versions/``) and ships inside the
package, so :func:`upgrade` works from an installed wheel as well as from a checkout.  Migrations are the
only code that creates or alters tables.

For the ``alembic`` command itself (e.g. ``alembic revision`` when the schema changes)::

    python -c "from service.store.migrations import alembic_config; from alembic import command; \\
        command.revision(alembic_config('sqlite:///dev.db'), 'describe the change', rev_id='0002')"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, column, func, inspect, select, table
from sqlalchemy.engine import URL

from service.store.database import StoreError, make_engine, mask_url, normalize_url

#: Folder of the Alembic environment (this package).
MIGRATIONS_DIR = Path(__file__).resolve().parent

_VERSION_TABLE = table("alembic_version", column("version_num"))

# Any fixed 64-bit number: serialises concurrent `upgrade` calls on PostgreSQL (processes starting at once).
_PG_MIGRATION_LOCK = 0x6D6F76696572


def alembic_config(url: str | URL | None = None) -> Any:
    """An Alembic ``Config`` for the packaged migrations; ``url`` for use without :func:`upgrade`."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # configparser interpolates '%': URL-encoded passwords must be escaped.
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).render_as_string(False).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision the packaged migrations define."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StoreError(f"no migrations in {MIGRATIONS_DIR / 'versions'}")
    return head


def _engine_for(target: str | URL | Engine) -> tuple[Engine, bool]:
    if isinstance(target, Engine):
        return target, False
    return make_engine(target), True


def upgrade(database_url: str | URL | Engine, revision: str = "head") -> str | None:
    """Migrate the database to ``revision`` (default head); returns the revision it is at afterwards.

    Accepts a URL (an engine is made and disposed of) or an existing engine.  Idempotent: on a database
    already at head nothing changes.  On PostgreSQL the migrations run in one transaction under an advisory
    lock, so several processes may call this at start-up.
    """
    from alembic import command

    engine, owned = _engine_for(database_url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return current_revision(engine)
    finally:
        if owned:
            engine.dispose()


def current_revision(database_url: str | URL | Engine) -> str | None:
    """The Alembic revision the database is at; None when it was never migrated."""
    engine, owned = _engine_for(database_url)
    try:
        with engine.connect() as conn:
            # Read Alembic's table directly: MigrationContext would log two INFO lines on every check.
            if not inspect(conn).has_table(_VERSION_TABLE.name):
                return None
            versions = conn.execute(select(_VERSION_TABLE.c.version_num)).scalars().all()
    finally:
        if owned:
            engine.dispose()
    if len(versions) > 1:
        raise StoreError(f"database {mask_url(engine.url)} has several Alembic heads: {', '.join(sorted(versions))}")
    return versions[0] if versions else None


def require_schema(engine: Engine) -> None:
    """Raise :class:`StoreError` unless the database is migrated to head (the message says how to fix it).

    A SQLite file that does not exist is reported as such rather than created empty by the check.
    """
    db = engine.url.database
    if engine.dialect.name == "sqlite" and db not in (None, "", ":memory:") and not Path(db).exists():
        raise StoreError(f"database file {db} does not exist; create it with `movierec db upgrade` or `db load`")
    at = current_revision(engine)
    head = head_revision()
    if at != head:
        state = "has no movierec schema" if at is None else f"is at revision {at}, not {head}"
        raise StoreError(f"database {mask_url(engine.url)} {state}; run `movierec db upgrade` on it first")


__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "require_schema", "upgrade"]
