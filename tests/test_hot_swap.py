"""Zero-downtime model updates under load: a real ``movierec serve`` swaps versions while clients hammer it.

Client threads send recommendations, predictions and similar-movie requests without pause while the test
publishes 10 new versions one after another (each with its factors scaled differently, so a response
computed with one version's arrays but labelled with another's name would be caught) and, halfway, one
corrupt version. Every response must be a 200 with a valid body whose prediction is exactly what the
version it names predicts; every good version must be served; the corrupt one never, while ``GET
/model`` reports why it was refused and the previous version keeps serving.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from movierec import artifacts
from tests.test_service_api import trained  # noqa: F401  (module-scoped fixture: a trained artifact)
from tests.test_service_uvicorn import free_port, stop, wait_ready

N_VERSIONS = 10
N_CLIENTS = 6
K = 5


class Hammer:
    """Client threads sending the three hot requests in a loop; records every outcome."""

    def __init__(self, base: str, pairs: list[tuple[int, int]], expected: dict[str, dict[tuple[int, int], float]]):
        self.base = base
        self.pairs = pairs
        self.expected = expected  # version -> (user id, movie id) -> predicted rating; filled as versions appear
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.seen: Counter[str] = Counter()
        self.requests = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(N_CLIENTS)]

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def _fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as c:
            n = worker
            while not self.stop.is_set():
                u, m = self.pairs[n % len(self.pairs)]
                kind = n % 3
                n += 1
                try:
                    if kind == 0:
                        r = c.get(f"/users/{u}/recommendations", params={"k": K})
                    elif kind == 1:
                        r = c.post("/predict", json={"user_id": u, "movie_id": m})
                    else:
                        r = c.get(f"/movies/{m}/similar", params={"k": K})
                except httpx.HTTPError as e:
                    self._fail(f"{type(e).__name__}: {e}")
                    continue
                problem = self._check(r, kind, u, m)
                with self.lock:
                    self.requests += 1
                    if problem is not None:
                        self.failures.append(f"{r.request.method} {r.request.url}: {problem}")
                    else:
                        self.seen[r.json()["model_version"]] += 1

    def _check(self, r: httpx.Response, kind: int, u: int, m: int) -> str | None:
        if r.status_code != 200:
            return f"status {r.status_code}: {r.text[:200]}"
        try:
            body = r.json()
        except ValueError:
            return f"not JSON: {r.text[:200]}"
        version = body.get("model_version")
        if version not in self.expected:
            return f"unknown model_version {version!r}"
        if kind == 1:
            got = body["predictions"][0]["rating"]
            want = self.expected[version][(u, m)]
            if abs(got - want) > 1e-5:
                return f"rating {got} is not what {version} predicts ({want})"
            return None
        items = body.get("items")
        if not isinstance(items, list) or len(items) != K:
            return f"expected {K} items, got {items!r:.200}"
        if kind == 2 and m in [i["movie_id"] for i in items]:
            return "the movie itself is among its similar movies"
        return None


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_versions_swap_under_load_without_a_failed_request(tmp_path: Path, trained) -> None:  # noqa: F811
    root = tmp_path / "artifacts"
    shutil.copytree(trained[1], root)
    first = artifacts.load_version(root)
    draft = first.manifest.draft()
    rng = np.random.default_rng(0)
    users = [u for u in range(first.n_users) if first.n_items - len(first.rated_items(u)) >= K]
    codes = [(int(rng.choice(users)), int(rng.integers(first.n_items))) for _ in range(12)]
    pairs = [(int(first.user_ids[u]), int(first.item_ids[i])) for u, i in codes]

    def predictions(art: artifacts.ModelArtifact) -> dict[tuple[int, int], float]:
        return {p: float(artifacts.predict(art, u, i)) for p, (u, i) in zip(pairs, codes, strict=True)}

    expected = {first.version: predictions(first)}
    port = free_port()
    env = {
        **os.environ,
        "MOVIEREC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "MOVIEREC_RELOAD_INTERVAL_S": "0.2",
        "MOVIEREC_LOG_LEVEL": "warning",
    }
    cmd = [sys.executable, "-m", "movierec.cli", "serve", "--port", str(port), "--artifacts-dir", str(root)]
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    published: list[str] = []
    corrupt = None
    try:
        wait_ready(base, proc)
        with httpx.Client(base_url=base, timeout=10) as admin, Hammer(base, pairs, expected) as hammer:

            def model() -> dict:
                return admin.get("/model").json()

            wait_for(lambda: hammer.seen[first.version] > 0, 15, "the first version to be served")
            for n in range(1, N_VERSIONS + 1):
                arrays = dict(first.arrays)
                scale = np.float32(1.0 + 0.03 * n * (-1) ** n)  # alternately larger and smaller factors
                arrays["user_factors"] = (first.user_factors * scale).astype(np.float32)
                arrays["item_bias"] = (first.item_bias + np.float32(0.01 * n)).astype(np.float32)
                folder = artifacts.publish(root, draft, arrays, make_latest=False)
                # the expected answers are known before any client can see the version
                expected[folder.name] = predictions(artifacts.load_version(folder))
                artifacts.set_latest(root, folder.name, kind=draft.model_kind)
                artifacts.set_latest(root, folder.name)
                published.append(folder.name)
                wait_for(lambda v=folder.name: model()["version"] == v, 15, f"{folder.name} to be loaded")
                wait_for(lambda v=folder.name: hammer.seen[v] > 0, 15, f"a response from {folder.name}")

                if n == N_VERSIONS // 2:  # a corrupt version: refused, the one serving now keeps serving
                    serving = folder.name
                    bad = artifacts.publish(root, draft, arrays, make_latest=False)
                    (bad / "item_factors.npy").write_bytes(b"garbage")  # before any pointer names it
                    corrupt = bad.name
                    artifacts.set_latest(root, corrupt, kind=draft.model_kind)
                    artifacts.set_latest(root, corrupt)
                    wait_for(lambda: model()["last_reload_error"] is not None, 15, "the corrupt version's refusal")
                    info = model()
                    assert info["version"] == serving
                    assert corrupt in info["last_reload_error"] and "checksum" in info["last_reload_error"]
                    served_before = hammer.seen[serving]
                    wait_for(lambda s=serving, b=served_before: hammer.seen[s] > b + 50, 15, "more requests")
            time.sleep(0.5)  # a little load on the last version too
        assert proc.poll() is None, "the server died"
    except BaseException:
        sys.stderr.write(f"--- movierec serve log ---\n{log.read_text()}\n")
        raise
    finally:
        stop(proc)

    assert len(published) == N_VERSIONS
    assert hammer.failures == [], f"{len(hammer.failures)} failed of {hammer.requests}: {hammer.failures[:10]}"
    assert all(hammer.seen[v] > 0 for v in [first.version, *published]), hammer.seen
    assert corrupt is not None and hammer.seen[corrupt] == 0
    assert set(hammer.seen) == {first.version, *published}
    assert hammer.requests > 200
