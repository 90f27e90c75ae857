"""`movierec serve` as a real uvicorn process: real sockets, real HTTP, the three main endpoints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from movierec import artifacts
from tests.test_service_api import trained  # noqa: F401  (module-scoped fixture: a trained artifact)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server process, killing it if it has not exited within 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_movierec_serve_answers_over_real_http(tmp_path, trained):  # noqa: F811
    _, art_dir = trained
    art = artifacts.load_version(art_dir)
    port = free_port()
    env = {**os.environ, "MOVIEREC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    cmd = [sys.executable, "-m", "movierec.cli", "serve", "--port", str(port), "--artifacts-dir", str(art_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        u, m = int(art.user_ids[0]), int(art.item_ids[0])
        recs = httpx.get(f"{base}/users/{u}/recommendations", params={"k": 5})
        assert recs.status_code == 200 and len(recs.json()["items"]) == 5
        code = 0
        scores = art.item_factors @ art.user_factors[code] + art.item_bias
        scores[art.rated_items(code)] = -np.inf
        assert [i["movie_id"] for i in recs.json()["items"]] == [int(art.item_ids[c]) for c in np.argsort(-scores)[:5]]
        pred = httpx.post(f"{base}/predict", json={"user_id": u, "movie_id": m})
        assert pred.status_code == 200
        assert pred.json()["predictions"][0]["rating"] == pytest.approx(float(artifacts.predict(art, 0, 0)), abs=1e-6)
        sim = httpx.get(f"{base}/movies/{m}/similar", params={"k": 3})
        assert sim.status_code == 200 and m not in [i["movie_id"] for i in sim.json()["items"]]
        assert httpx.get(f"{base}/users/{u}/recommendations", params={"k": 0}).status_code == 422
    finally:
        proc.terminate()
        proc.wait(timeout=10)
