"""Service load and start-up benchmark: prints tables and writes bench/out/service.json.

    python bench/bench_service.py                         # both datasets, 10 s per endpoint, 32 connections
    python bench/bench_service.py --only ml1m --duration 20 --connections 32 --workers 1
    python bench/bench_service.py --only startup          # start-up time and RSS, ml-1m and ml-25m shapes

Load: a real `movierec serve` process (uvicorn) on artifacts trained here (synthetic ml-1m-shaped data,
and ml-latest-small from ../shared/data/movielens) with the data loaded into a SQLite store, driven by
wrk (`apt-get install wrk`) with a Lua script that draws a random known user / movie per request. The
trivial endpoint (`/health`) is measured in the same run, on the same server, as the yardstick.
Recommendations are measured twice: as served (per-user lists and rated ids kept between requests, see
service/candidates.py; the 2 s warm-up fills them) and on a second server with both caches off.
Start-up: `load_model` (read + checksum + validate + build the FAISS indexes) timed in a fresh process,
with its peak RSS, on trained-shape random artifacts of the ml-1m size and of the ml-25m size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from peak_rss import peak_rss_mib  # the bench folder is on sys.path when these run as scripts

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared/data/movielens"

LUA = r"""
local ids = {%(ids)s}
local movies = {%(movies)s}
local mode = "%(mode)s"
math.randomseed(%(seed)d)
request = function()
  local u = ids[math.random(#ids)]
  local m = movies[math.random(#movies)]
  if mode == "recommendations" then
    return wrk.format("GET", "/users/" .. u .. "/recommendations?k=10")
  elseif mode == "similar" then
    return wrk.format("GET", "/movies/" .. m .. "/similar?k=10")
  elseif mode == "predict" then
    return wrk.format("POST", "/predict", {["Content-Type"] = "application/json"},
      '{"user_id": ' .. u .. ', "movie_id": ' .. m .. '}')
  else
    return wrk.format("GET", "/health")
  end
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  local fmt = 'RESULT {"requests": %%d, "seconds": %%f, "errors": %%d, '
    .. '"p50_ms": %%f, "p95_ms": %%f, "p99_ms": %%f}\n'
  io.write(string.format(fmt,
    summary.requests, summary.duration / 1e6, errors, latency:percentile(50) / 1e3, latency:percentile(95) / 1e3,
    latency:percentile(99) / 1e3))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(name: str, work: Path) -> tuple[Path, str, np.ndarray, np.ndarray]:
    """Train artifacts and fill a SQLite store for ``name``; returns (artifacts, db url, user ids, movie ids)."""
    from movierec import artifacts
    from service.store.database import make_engine
    from service.store.migrations import upgrade
    from trainer.config import load_settings
    from trainer.data.movielens import load_dataset
    from trainer.data.store import load_into_store
    from trainer.data.synth import generate, write_movielens
    from trainer.pipeline import train

    if name == "ml1m":
        data_dir = work / "ml1m-data"
        write_movielens(generate(6040, 3706, 1_000_209, seed=0).data, data_dir)
        epochs = 5
    else:
        data_dir = SHARED / "ml-latest-small"
        epochs = 25
    art_dir = work / f"{name}-artifacts"
    url = f"sqlite:///{work / (name + '.db')}"
    train(load_settings(None, data=data_dir, artifacts_dir=art_dir, epochs=epochs, split="none", patience=0))
    upgrade(url)
    engine = make_engine(url)
    load_into_store(load_dataset(data_dir), engine)
    engine.dispose()
    art = artifacts.load_version(art_dir)
    return art_dir, url, np.asarray(art.user_ids), np.asarray(art.item_ids)


def start_server(
    art_dir: Path, url: str, workers: int, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str, float]:
    import httpx

    port = free_port()
    env = {**os.environ, "MOVIEREC_DATABASE_URL": url, "MOVIEREC_RELOAD_INTERVAL_S": "0",
           "MOVIEREC_LOG_LEVEL": "warning", **(extra_env or {})}  # fmt: skip
    cmd = [sys.executable, "-m", "movierec.cli", "serve", "--port", str(port), "--artifacts-dir", str(art_dir),
           "--workers", str(workers)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return proc, base, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.05)


def run_wrk(base: str, mode: str, users: np.ndarray, movies: np.ndarray, seconds: int, conns: int) -> dict:
    rng = np.random.default_rng(0)
    script = LUA % {
        "ids": ",".join(str(int(x)) for x in rng.choice(users, min(2000, len(users)), replace=False)),
        "movies": ",".join(str(int(x)) for x in rng.choice(movies, min(2000, len(movies)), replace=False)),
        "mode": mode,
        "seed": 1,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", f.name, base],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(f.name)
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    r = json.loads(line[len("RESULT ") :])
    r["rps"] = r["requests"] / r["seconds"]
    return r


NO_CACHE = {"MOVIEREC_RECOMMEND_CACHE_SIZE": "0", "MOVIEREC_RATED_CACHE_SIZE": "0"}


def load_case(name: str, work: Path, seconds: int, conns: int, workers: int) -> dict[str, Any]:
    art_dir, url, users, movies = prepare(name, work)
    proc, base, startup = start_server(art_dir, url, workers)
    rows = {}
    try:
        for mode in ("trivial", "recommendations", "predict", "similar"):
            run_wrk(base, mode, users, movies, 2, conns)  # warm-up
            rows[mode] = run_wrk(base, mode, users, movies, seconds, conns)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # The same endpoint with the per-user list and rated-id caches off: every request searches the index
    # and reads the store (what the first request of each user, or of each new model version, costs).
    proc, base, _ = start_server(art_dir, url, workers, NO_CACHE)
    try:
        run_wrk(base, "recommendations", users, movies, 2, conns)
        rows["recommendations, no cache"] = run_wrk(base, "recommendations", users, movies, seconds, conns)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    for r in rows.values():
        r["vs_trivial"] = r["rps"] / rows["trivial"]["rps"]
    return {"dataset": name, "workers": workers, "connections": conns, "process_start_to_ready_s": startup,
            "endpoints": rows}  # fmt: skip


def _startup_child(root: str, q: mp.Queue) -> None:  # type: ignore[type-arg]
    from movierec import artifacts
    from service.config import ServiceSettings
    from service.model_state import load_model

    base_rss = peak_rss_mib()
    t0 = time.perf_counter()
    model = load_model(artifacts.latest_version(root), ServiceSettings(artifacts_dir=Path(root)))
    secs = time.perf_counter() - t0
    q.put({"load_s": secs, "peak_rss_mib": peak_rss_mib(), "rss_before_load_mib": base_rss,
           "version": model.version})  # fmt: skip


def _publish_random(root: Path, n_users: int, n_items: int, dim: int) -> None:
    """A trained-shape artifact (random factors, ~100 ratings per user) written through the real publisher."""
    from movierec import artifacts

    rng = np.random.default_rng(0)
    per_user = 100
    indices = np.sort(rng.integers(0, n_items, (n_users, per_user)), axis=1)
    dedup = [np.unique(row) for row in indices]
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum([len(r) for r in dedup], out=indptr[1:])
    genres = ["Action", "Comedy", "Drama", "Romance", "Thriller"]
    arrays = {
        "user_factors": rng.normal(0, 0.3, (n_users, dim)).astype(np.float32),
        "item_factors": rng.normal(0, 0.3, (n_items, dim)).astype(np.float32),
        "user_bias": rng.normal(0, 0.3, n_users).astype(np.float32),
        "item_bias": rng.normal(0, 0.3, n_items).astype(np.float32),
        "user_ids": np.arange(1, n_users + 1, dtype=np.int64),
        "item_ids": np.arange(1, n_items + 1, dtype=np.int64),
        "rated_indptr": indptr,
        "rated_indices": np.concatenate(dedup).astype(np.int32),
        "item_titles": np.asarray([f"Movie {i} ({1950 + i % 70})" for i in range(n_items)]),
        "item_years": (1950 + np.arange(n_items) % 70).astype(np.int16),
        "item_genres": (rng.random((n_items, len(genres))) < 0.3).astype(np.uint8),
        "item_rating_count": rng.integers(1, 500, n_items).astype(np.int64),
        "item_rating_mean": rng.uniform(1, 5, n_items).astype(np.float32),
    }
    draft = artifacts.ManifestDraft(
        model_kind="mf",
        dims=artifacts.Dims(n_users=n_users, n_items=n_items, dim=dim),
        rating_scale=artifacts.ScaleSpec(low=0.5, high=5.0, step=0.5),
        output=artifacts.OutputSpec(transform="sigmoid", low=0.0, high=5.5),
        global_offset=0.5,
        dataset=artifacts.DatasetInfo(
            source="random", fingerprint="0" * 64, n_ratings=int(indptr[-1]), n_users=n_users, n_items=n_items
        ),  # fmt: skip
        genre_names=genres,
    )
    artifacts.publish(root, draft, arrays)


def startup_case(shape: str) -> dict[str, Any]:
    """Publish a random trained-shape artifact here, then time its load in a fresh process."""
    n_users, n_items = {"ml1m": (6040, 3706), "ml25m": (160_000, 62_000)}[shape]
    root = Path(tempfile.mkdtemp(prefix=f"startup-{shape}-"))
    try:
        _publish_random(root, n_users, n_items, 64)
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        p = ctx.Process(target=_startup_child, args=(str(root), q))
        p.start()
        row = q.get()
        p.join()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"shape": shape, "n_users": n_users, "n_items": n_items, **row}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["ml1m", "ml-latest-small", "startup"], default=None)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="bench/out/service.json")
    a = ap.parse_args()
    if shutil.which("wrk") is None and a.only != "startup":
        sys.exit("wrk is needed for the load part: apt-get install wrk (or run with --only startup)")
    result: dict[str, Any] = {"load": [], "startup": []}
    work = Path(tempfile.mkdtemp(prefix="movierec-bench-"))
    try:
        for name in ("ml1m", "ml-latest-small"):
            if a.only in (None, name):
                result["load"].append(load_case(name, work, a.duration, a.connections, a.workers))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.only in (None, "startup"):
        result["startup"] = [startup_case("ml1m"), startup_case("ml25m")]
    for case in result["load"]:
        print(f"\n{case['dataset']}: {case['workers']} worker(s), {case['connections']} connections, "
              f"process start to ready {case['process_start_to_ready_s']:.2f}s")  # fmt: skip
        print(f"{'endpoint':<28}{'req/s':>10}{'vs trivial':>12}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for mode, r in case["endpoints"].items():
            print(f"{mode:<28}{r['rps']:>10.0f}{r['vs_trivial']:>11.0%}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}"
                  f"{r['p99_ms']:>9.2f}{r['errors']:>8}")  # fmt: skip
    if result["startup"]:
        print(f"\n{'start-up (load_model)':<24}{'users':>9}{'movies':>9}{'seconds':>9}{'peak MiB':>10}")
        for r in result["startup"]:
            print(f"{r['shape']:<24}{r['n_users']:>9}{r['n_items']:>9}{r['load_s']:>9.2f}{r['peak_rss_mib']:>10.0f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
