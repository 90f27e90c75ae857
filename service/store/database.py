"""Engines, sessions and the health check of the store.

Two back ends: SQLite (a file, for a laptop or a single-node deployment) and PostgreSQL through psycopg 3.
URLs are given as users write them (``sqlite:///movierec.db``, ``postgresql://user:pw@host/db``) and
normalised here, so the rest of the code never cares which driver is behind them.

The schema belongs to Alembic: :func:`service.store.migrations.upgrade` runs the migrations to head,
programmatically (no ``alembic.ini`` needed), and is the only thing that creates or alters tables.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

logger = logging.getLogger(__name__)

#: How long a SQLite writer waits for another one's lock before "database is locked" (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Seconds a PostgreSQL connection attempt may take before failing (unless the URL sets connect_timeout).
#: The API reads the store inline on its event loop, so this bounds how long the first request after a
#: server stops answering (a partition, a frozen host: no "connection refused") can hold every request;
#: after that :class:`ConnectBreaker` fails connects at once. psycopg's minimum is 2 s.
PG_CONNECT_TIMEOUT_S = 3
#: libpq TCP options: a server that goes silent on an open connection is given up on in ~5 s, not minutes.
PG_TCP_OPTIONS: dict[str, int] = {
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 5000,
}  # fmt: skip
#: While a PostgreSQL server is unreachable, how often a background thread tries to connect again.
PG_PROBE_INTERVAL_S = 0.5


class StoreError(ValueError):
    """A database URL that cannot be used, or a store whose schema is missing; the message says which."""


def normalize_url(url: str | URL) -> URL:
    """The SQLAlchemy URL with the driver this project uses: pysqlite or psycopg 3.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``; ``sqlite://`` stays (pysqlite).
    Other schemes and drivers raise :class:`StoreError` naming the accepted forms.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError as exc:
        raise StoreError(
            f"database URL {mask_url(str(url))!r} cannot be parsed; expected sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB"
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return parsed
    raise StoreError(
        f"unsupported database URL {mask_url(parsed)!r}: use sqlite:///PATH, postgresql://... or "
        "postgresql+psycopg://..."
    )


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``url`` (see :func:`normalize_url`), tuned for a multi-threaded API process.

    SQLite: ``check_same_thread=False`` (connections move between the server's threads), WAL journal mode
    (readers never block the writer), a busy timeout so that concurrent writers wait instead of failing,
    and foreign keys enforced like on PostgreSQL.  An in-memory database uses one shared connection.
    PostgreSQL: ``pool_pre_ping`` so that connections the server dropped are replaced transparently, and
    a connect timeout so that an unreachable server fails fast.  ``kwargs`` go to ``create_engine``.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        options: dict[str, Any] = {"connect_args": connect_args}
        if memory:
            options["poolclass"] = StaticPool
        options.update(kwargs)
        engine = create_engine(parsed, **options)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    connect_args: dict[str, Any] = {} if "connect_timeout" in parsed.query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    # A server that stops answering on connections already open (a partition, a failover) would hold a
    # pooled connection's pre-ping until the kernel's TCP timeout (minutes): libpq's keepalives and
    # tcp_user_timeout bound that to seconds. URL parameters of the same names win.
    for key, value in PG_TCP_OPTIONS.items():
        if key not in parsed.query:
            connect_args[key] = value
    options = {"pool_pre_ping": True, "connect_args": connect_args}
    options.update(kwargs)
    engine = create_engine(parsed, **options)
    ConnectBreaker(engine, PG_PROBE_INTERVAL_S)
    return engine


class ConnectBreaker:
    """Fail new connections at once while the server is known to be unreachable; probe it in the background.

    Why: the API's store reads degrade to the model's data when the store is down, but each one would
    first wait for a connection attempt. "Connection refused" is instant, a server that does not answer
    at all (partition, frozen host) costs the whole connect timeout, and the recommendations' store read
    runs on the event loop (see ``service.api.store_access.rated_movie_ids``), so every request would
    stall behind it. Once an attempt fails, further attempts raise the driver's ``OperationalError`` at
    once (reads fall back, writes get their 503, ``/ready`` says unreachable) while one daemon thread
    tries a real connection every ``interval`` seconds; the first that succeeds closes the breaker and
    the pool connects normally again: the process recovers by itself, no restart.

    Installed on the engine's ``do_connect`` event (so every path through the pool is covered: the pooled
    reads, sessions, ``ping``); ``engine.dispose()`` stops the probe thread.
    """

    def __init__(self, engine: Engine, interval: float) -> None:
        self.engine = engine
        self.interval = interval
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._reason = ""
        self._stop = threading.Event()  # the current probe thread's; a new one per outage
        event.listen(engine, "do_connect", self._connect)
        event.listen(engine, "engine_disposed", self._disposed)

    @property
    def open(self) -> bool:
        """True while connections fail fast (the server was unreachable at the last attempt)."""
        return self._down_since is not None

    def _connect(self, dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        if self._down_since is not None:
            raise dialect.loaded_dbapi.OperationalError(
                f"store unreachable since {time.time() - self._down_since:.1f}s ago ({self._reason}); "
                f"reconnecting in the background every {self.interval:g}s"
            )
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError as e:
            self._trip(dialect, cargs, cparams, e)
            raise

    def _trip(self, dialect: Any, cargs: Any, cparams: dict[str, Any], error: Exception) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.time()
            self._reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self._stop = threading.Event()
            args = (dialect, cargs, dict(cparams), self._stop)
            threading.Thread(target=self._probe, args=args, name="store-reconnect", daemon=True).start()
        logger.warning(
            "database %s is unreachable (%s); failing connections fast, retrying every %gs",
            mask_url(self.engine.url), self._reason, self.interval,
        )  # fmt: skip

    def _probe(self, dialect: Any, cargs: Any, cparams: dict[str, Any], stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                conn = dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.Error:
                continue
            try:
                conn.close()
            except dialect.loaded_dbapi.Error:
                pass
            with self._lock:
                if stop.is_set():  # the engine was disposed meanwhile: that already reset the breaker
                    return
                since, self._down_since = self._down_since, None
            logger.warning(
                "database %s is reachable again after %.1fs", mask_url(self.engine.url), time.time() - (since or 0)
            )
            return

    def _disposed(self, _engine: Engine) -> None:
        """The pool was reset (at shutdown, usually): stop probing, and let the next connect try for real
        (a disposed engine stays usable, and must not stay stuck failing fast with no probe running)."""
        with self._lock:
            self._stop.set()
            self._down_since = None


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_MS)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; fsync at checkpoints only
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine`` whose objects stay readable after commit (``expire_on_commit=False``)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def ping(engine: Engine) -> bool:
    """True when the database answers ``SELECT 1``; False on any database error (for ``/ready``)."""
    try:
        with engine.connect() as conn:
            return conn.execute(select(1)).scalar() == 1
    except (SQLAlchemyError, OSError) as exc:
        logger.warning("database %s is not reachable: %s", mask_url(engine.url), exc)
        return False
