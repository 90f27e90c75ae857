"""The service's SQL store (SQLAlchemy 2 + Alembic): movies and the ratings users add through the API.

* :mod:`service.store.models`: the ``movies`` and ``ratings`` tables.
* :mod:`service.store.database`: engines for SQLite and PostgreSQL, sessions, ``ping``.
* :mod:`service.store.migrations`: the Alembic environment and ``upgrade`` / ``current_revision``.
* :mod:`service.store.repository`: the queries the API runs.

The trainer fills the store from MovieLens files and reads it back (``trainer.data.store``); this package
itself never imports torch or pandas.
"""

from service.store.database import StoreError, make_engine, mask_url, ping, session_factory
from service.store.migrations import current_revision, head_revision, upgrade
from service.store.models import Base, Movie, Rating

__all__ = [
    "Base",
    "Movie",
    "Rating",
    "StoreError",
    "current_revision",
    "head_revision",
    "make_engine",
    "mask_url",
    "ping",
    "session_factory",
    "upgrade",
]
