"""Fault injection: the ratings store (PostgreSQL) goes away while the service runs, then comes back.

What must hold while the store is down: reads (recommendations, predictions, similar movies) keep
answering 200 from the model in memory, writes get a 503 with ``Retry-After`` and a JSON ``detail``,
``/ready`` says 503 ``store: unreachable`` and ``/health`` stays 200; no request hangs for more than
a few seconds, whether the server refuses connections or swallows them (a blackhole). After the store
returns, writes succeed again without a restart and nothing written before the outage is lost.

Two ways to take the store down:

* :class:`CuttableProxy`, a TCP proxy in this process between a real ``movierec serve`` (uvicorn
  subprocess) and PostgreSQL: it can cut every connection and refuse new ones, swallow new ones
  without ever answering (blackhole), and forward again. Only this test's connections are affected.
* Stopping and restarting the real cluster with ``pg_ctlcluster`` (``postgres``-marked; always
  restarted in a ``finally`` and waited for, so no later test sees it down).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from movierec import artifacts
from service.app import create_app
from tests.conftest import postgres_admin_url
from tests.test_service_api import make_settings, trained  # noqa: F401  (module-scoped fixture)
from tests.test_service_uvicorn import free_port, stop, wait_ready

API_KEY = "test-key"
WRITE_HEADERS = {"X-API-Key": API_KEY}
#: No request may take longer than this while the store is down (the connect timeout is well below it).
HANG_BUDGET_S = 5.0
#: Once the store is known to be down, reads must not wait on it at all.
FAST_S = 0.5


class CuttableProxy:
    """A TCP proxy from a local port to ``target`` that a test can cut, blackhole and restore.

    Threads, not asyncio: the test drives it from synchronous code while a server in another process
    talks through it. ``cut()`` closes every open connection and closes the listening socket, so a new
    connection is refused at once (what a crashed server looks like); ``blackhole()`` cuts too but then
    accepts new connections and never forwards a byte (a partitioned or frozen server: only a connect
    timeout ends the client's wait); ``restore()`` forwards again on the same port.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._mode = "forward"
        self._accept_thread: threading.Thread | None = None
        self._listen()

    # ------------------------------------------------------------------------------------------ control

    def cut(self) -> None:
        """Close every connection and stop listening: new connections are refused."""
        with self._lock:
            self._mode = "refuse"
        self._close_listener()
        self._close_connections()

    def blackhole(self) -> None:
        """Close every connection, then accept new ones and never answer them."""
        self.cut()
        with self._lock:
            self._mode = "blackhole"
        self._listen()

    def restore(self) -> None:
        """Forward again (open connections from blackhole mode are closed: they never got an answer)."""
        self._close_listener()
        self._close_connections()
        with self._lock:
            self._mode = "forward"
        self._listen()

    def close(self) -> None:
        with self._lock:
            self._mode = "refuse"
        self._close_listener()
        self._close_connections()

    # ---------------------------------------------------------------------------------------- internals

    def _listen(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        with self._lock:
            self._listener = s
        self._accept_thread = threading.Thread(target=self._accept, args=(s,), daemon=True, name="proxy-accept")
        self._accept_thread.start()

    def _close_listener(self) -> None:
        with self._lock:
            s, self._listener = self._listener, None
        if s is not None:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            s.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
            self._accept_thread = None

    def _close_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _track(self, *socks: socket.socket) -> bool:
        with self._lock:
            if self._mode == "refuse":
                return False
            self._conns.update(socks)
            return True

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed
            with self._lock:
                mode = self._mode
            if mode == "blackhole":
                if not self._track(client):
                    client.close()
                continue  # held open, never read from or answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # the real server is down: the client sees its connection closed
                continue
            upstream.settimeout(None)
            if not self._track(client, upstream):
                client.close()
                upstream.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True, name="proxy-pump").start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        """Copy bytes both ways until either side closes (or the test cuts the pair)."""
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket the test closed meanwhile
            return
        finally:
            for s in (a, b):
                with self._lock:
                    self._conns.discard(s)
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


# -------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pg_store(postgres_url: str, trained) -> str:  # noqa: F811
    """This module's PostgreSQL database, migrated and holding the training data."""
    from service.store.database import make_engine
    from service.store.migrations import upgrade
    from trainer.data.movielens import load_dataset
    from trainer.data.store import load_into_store

    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    try:
        load_into_store(load_dataset(trained[0]), engine)
    finally:
        engine.dispose()
    return postgres_url


@pytest.fixture
def art(trained) -> artifacts.ModelArtifact:  # noqa: F811
    return artifacts.load_version(trained[1])


def via_port(url: str, port: int) -> str:
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def unrated_movie(art: artifacts.ModelArtifact, user_code: int, nth: int = 0) -> int:
    rated = set(art.rated_items(user_code).tolist())
    return int(art.item_ids[[c for c in range(art.n_items) if c not in rated][nth]])


# --------------------------------------------------------------------------------------------- checks


Get = Callable[..., httpx.Response]


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    t0 = time.perf_counter()
    r = call()
    return r, time.perf_counter() - t0


def check_reads_from_memory(c: httpx.Client | TestClient, art: artifacts.ModelArtifact, budget: float) -> None:
    """Recommendations, predictions and similar movies answer 200 from the model, each within ``budget``."""
    u, m = int(art.user_ids[3]), int(art.item_ids[5])
    for call in (
        lambda: c.get(f"/users/{u}/recommendations", params={"k": 5}),
        lambda: c.post("/predict", json={"user_id": u, "movie_id": m}),
        lambda: c.get(f"/movies/{m}/similar", params={"k": 4}),
    ):
        r, took = timed(call)
        assert r.status_code == 200, r.text
        assert took < budget, f"{r.request.url} took {took:.2f}s with the store down"
        body = r.json()
        assert body["model_version"] == art.version
        assert len(body.get("items", body.get("predictions", []))) >= 1
    assert c.get(f"/users/{u}/recommendations", params={"k": 5}).json()["strategy"] == "model"
    pred = c.post("/predict", json={"user_id": u, "movie_id": m}).json()["predictions"][0]
    assert pred["rating"] == pytest.approx(float(artifacts.predict(art, 3, 5)), abs=1e-6)


def check_store_down(c: httpx.Client | TestClient, art: artifacts.ModelArtifact, user_id: int, movie_id: int) -> None:
    """Writes 503 with Retry-After and a JSON detail; /ready 503 unreachable; /health 200; reads 200."""
    r, took = timed(lambda: c.post(f"/users/{user_id}/ratings", json={"movie_id": movie_id, "rating": 2.5},
                                   headers=WRITE_HEADERS))  # fmt: skip
    assert r.status_code == 503, r.text
    assert took < HANG_BUDGET_S, f"a write took {took:.2f}s with the store down"
    assert int(r.headers["retry-after"]) > 0
    assert isinstance(r.json()["detail"], str) and "store" in r.json()["detail"]
    ready, took = timed(lambda: c.get("/ready"))
    assert ready.status_code == 503 and took < HANG_BUDGET_S
    assert ready.json() == {"ready": False, "model_version": art.version, "store": "unreachable"}
    health, took = timed(lambda: c.get("/health"))
    assert health.status_code == 200 and health.json() == {"status": "ok"} and took < FAST_S
    check_reads_from_memory(c, art, FAST_S)


def check_recovered(c: httpx.Client | TestClient, user_id: int, before: dict[int, float], new_movie: int,
                    timeout: float = 30.0) -> float:  # fmt: skip
    """Writes succeed again by themselves (polled), and every rating written before the outage is there.

    Returns how long after the store came back the first write succeeded.
    """
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while True:
        r = c.post(f"/users/{user_id}/ratings", json={"movie_id": new_movie, "rating": 4.0}, headers=WRITE_HEADERS)
        if r.status_code in (200, 201):
            break
        assert r.status_code == 503, r.text
        assert time.perf_counter() < deadline, f"writes still fail {timeout}s after the store came back"
        time.sleep(0.2)
    recovered_after = time.perf_counter() - t0
    assert c.get("/ready").status_code == 200
    stored = {row["movie_id"]: row["rating"] for row in c.get(f"/users/{user_id}/ratings").json()["ratings"]}
    for movie, rating in before.items():
        assert stored.get(movie) == rating, f"the rating of movie {movie} written before the outage is gone"
    assert stored[new_movie] == 4.0
    # the store reads are back too: the movies just rated leave the user's recommendations
    recs = [i["movie_id"] for i in c.get(f"/users/{user_id}/recommendations", params={"k": 50}).json()["items"]]
    assert not set(before) & set(recs) and new_movie not in recs
    return recovered_after


# ------------------------------------------------------------------------------------------------ tests


@contextlib.contextmanager
def serve(art_dir: Path, db_url: str, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``movierec serve`` on a free port (log to a file: a full pipe would stall the server)."""
    port = free_port()
    env = {
        **os.environ,
        "MOVIEREC_DATABASE_URL": db_url,
        "MOVIEREC_API_KEY": API_KEY,
        "MOVIEREC_RELOAD_INTERVAL_S": "0",
        "MOVIEREC_LOG_LEVEL": "warning",
    }
    cmd = [sys.executable, "-m", "movierec.cli", "serve", "--port", str(port), "--artifacts-dir", str(art_dir)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, proc
    finally:
        stop(proc)


@pytest.mark.postgres
@pytest.mark.slow
def test_store_cut_and_blackholed_through_a_proxy(tmp_path, trained, pg_store, art):  # noqa: F811
    """A real server behind a proxy: cut (refused), restored, blackholed (connect timeout), restored."""
    pg = make_url(pg_store)
    proxy = CuttableProxy((pg.host or "127.0.0.1", pg.port or 5432))
    log = tmp_path / "serve.log"
    user_code = 11
    user_id = int(art.user_ids[user_code])
    movies = [unrated_movie(art, user_code, n) for n in range(4)]
    try:
        with (
            serve(trained[1], via_port(pg_store, proxy.port), log) as (base, proc),
            httpx.Client(base_url=base, timeout=30) as c,
        ):
            r = c.post(f"/users/{user_id}/ratings", json={"movie_id": movies[0], "rating": 5.0}, headers=WRITE_HEADERS)
            assert r.status_code == 201, r.text
            before = {movies[0]: 5.0}

            proxy.cut()
            check_store_down(c, art, user_id, movies[1])
            proxy.restore()
            check_recovered(c, user_id, before, movies[1])
            before[movies[1]] = 4.0

            proxy.blackhole()
            # The first request to notice pays at most the connect timeout; none waits longer.
            first, took = timed(lambda: c.get(f"/users/{user_id}/recommendations", params={"k": 5}))
            assert first.status_code == 200, first.text
            assert took < HANG_BUDGET_S, f"recommendations took {took:.2f}s with the store blackholed"
            check_store_down(c, art, user_id, movies[2])
            proxy.restore()
            check_recovered(c, user_id, before, movies[2])
            assert proc.poll() is None  # the same process throughout: no restart
    except BaseException:
        sys.stderr.write(f"--- movierec serve log ---\n{log.read_text() if log.exists() else ''}\n")
        raise
    finally:
        proxy.close()


def _pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
    if action == "stop":
        cmd += ["-m", "fast"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def _wait_for_postgres(url: str, timeout: float = 60.0) -> None:
    """Poll until a connection succeeds; raises after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        engine = create_engine(url, connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except SQLAlchemyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        finally:
            engine.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_real_cluster_stopped_and_restarted(tmp_path, trained, pg_store, art, postgres_admin: Engine):  # noqa: F811
    """The real PostgreSQL cluster stops (fast shutdown: every connection dropped) and starts again.

    Stops the server for every client on this machine for a few seconds: the cluster is restarted in a
    ``finally`` and waited for, and the session's admin engine is given fresh connections.
    """
    if not os.path.isdir("/etc/postgresql"):
        pytest.fail("no local PostgreSQL cluster (/etc/postgresql) to stop and restart", pytrace=False)
    user_code = 17
    user_id = int(art.user_ids[user_code])
    movies = [unrated_movie(art, user_code, n) for n in range(3)]
    settings = make_settings(trained[1], pg_store, api_key=API_KEY)
    with TestClient(create_app(settings)) as c:
        r = c.post(f"/users/{user_id}/ratings", json={"movie_id": movies[0], "rating": 1.5}, headers=WRITE_HEADERS)
        assert r.status_code == 201, r.text
        before = {movies[0]: 1.5}
        _pg_ctl("stop")
        try:
            check_store_down(c, art, user_id, movies[1])
        finally:
            _pg_ctl("start")
            _wait_for_postgres(postgres_admin_url())
            postgres_admin.dispose()  # its pooled connections died with the server
        check_recovered(c, user_id, before, movies[1])
        np.testing.assert_equal(c.get("/model").json()["version"], art.version)
