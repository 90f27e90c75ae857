"""Sustained mixed load: errors, latency percentiles, resident memory and written data under 256 connections.

    python bench/bench_load.py                                   # 60 s at 256 connections, 1 then 2 workers
    python bench/bench_load.py --duration 5 --connections 64 --workers 1

One real `movierec serve` process (uvicorn) per worker count, on artifacts trained here on synthetic
ml-1m-shaped data with the data in a SQLite store (``bench_service.prepare``; each run gets its own copy of
the store), driven by one wrk run (``-t2 --timeout 10s``, so a slow answer counts as latency, not as an
error) whose Lua ``request()`` draws, per request, a random known user / movie and an endpoint:

    55% GET  /users/{u}/recommendations?k=10      20% POST /predict {"user_id": u, "movie_id": m}
    20% GET  /movies/{m}/similar?k=10              5% POST /users/{u}/ratings {"movie_id": m, "rating": r}

Writes carry the API key (``MOVIEREC_API_KEY`` is set to a random token for the server, sent as
``X-API-Key``), a rating on the half-star scale and a unique marker timestamp, so each accepted write can be
looked up in the store afterwards.

Reported per worker count:
- first a warm-up (``--warmup``, 30 s) of the same mix at the same concurrency, which fills the
  service's per-user recommendation lists, store connections and threads; its requests and errors are
  reported apart, its writes are checked in the store with the window's;
- requests, req/s, p50/p95/p99/max latency over the measured window (wrk's histogram);
- socket errors by kind (connect/read/write/timeout, from wrk) and non-2xx responses by endpoint and by
  status. wrk's ``response()`` is not told which request an answer belongs to, so the endpoint is read
  from the body: every 2xx body has its endpoint's shape; an error body (``{"detail": ...}``) is put
  under its endpoint only when nothing else could have answered it (401/403 and a 422 on the "rating"
  field: writes only), else under "unknown", with the counts by status and a few bodies beside;
- resident memory (VmRSS summed over the uvicorn master and all its descendants, sampled every second):
  at the start of the measured window (after the warm-up run; with ``--warmup 0``, after its first 10 s or
  1/6), at the end, the max, and the growth; "flat" = growth under 5% (a verdict, not a failure);
- data: store rows before/after; each write answered 2xx must be in the store afterwards (its pair
  present with one of the marker timestamps sent for it and the matching rating; a later write to the
  same pair may replace it), and the rows added must be exactly the new pairs that our writes created.

Writes bench/out/load.json (and the wrk Lua script of the last run, bench/out/load.lua).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_service  # noqa: E402

KINDS = ("recommendations", "predict", "similar", "rate")
MIX = {"recommendations": 0.55, "predict": 0.20, "similar": 0.20, "rate": 0.05}
WARMUP_TS_OFFSET = 100_000_000_000  # the warm-up run's markers: above any thread of the window's
TS_BASE = 3_000_000_000_000  # marker timestamps (real ones are ~1.7e9): thread t, write n -> base + t*1e9 + n
FLAT_PCT = 5.0

LUA = r"""
local users = {%(users)s}
local movies = {%(movies)s}
local api_key = "%(api_key)s"
local out_path = "%(out_path)s"
local p_rec, p_pred, p_sim = %(p_rec)f, %(p_pred)f, %(p_sim)f
local kinds = {"recommendations", "predict", "similar", "rate", "unknown"}
local threads = {}

setup = function(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

init = function(args)
  math.randomseed(%(seed)d + 7919 * tid)
  sent, ok, bad, by_status, samples = {}, {}, {}, {}, {}
  for _, k in ipairs(kinds) do sent[k] = 0; ok[k] = 0; bad[k] = 0 end
  responses, seq = 0, 0
  writes_sent, writes_ok = {}, {}
end

local json_headers = {["Content-Type"] = "application/json"}
local write_headers = {["Content-Type"] = "application/json", ["X-API-Key"] = api_key}

request = function()
  local u = users[math.random(#users)]
  local m = movies[math.random(#movies)]
  local x = math.random()
  if x < p_rec then
    sent.recommendations = sent.recommendations + 1
    return wrk.format("GET", "/users/" .. u .. "/recommendations?k=10")
  elseif x < p_rec + p_pred then
    sent.predict = sent.predict + 1
    return wrk.format("POST", "/predict", json_headers, '{"user_id": ' .. u .. ', "movie_id": ' .. m .. '}')
  elseif x < p_rec + p_pred + p_sim then
    sent.similar = sent.similar + 1
    return wrk.format("GET", "/movies/" .. m .. "/similar?k=10")
  end
  sent.rate = sent.rate + 1
  seq = seq + 1
  local ts = string.format("%%.0f", %(ts_base)d + tid * 1e9 + seq)
  local r = string.format("%%.1f", math.random(10) * 0.5)
  table.insert(writes_sent, u .. " " .. m .. " " .. r .. " " .. ts)
  return wrk.format("POST", "/users/" .. u .. "/ratings", write_headers,
    '{"movie_id": ' .. m .. ', "rating": ' .. r .. ', "timestamp": ' .. ts .. '}')
end

-- which endpoint answered: 2xx bodies by their shape (a rating echoes user, movie and timestamp)
local rated = '^%%s*{%%s*"user_id"%%s*:%%s*(%%d+)%%s*,%%s*"movie_id"%%s*:%%s*(%%d+)%%s*,'
  .. '.-"timestamp"%%s*:%%s*(%%d+)'
local function kind_ok(body)
  local u, m, ts = body:match(rated)
  if u then return "rate", u .. " " .. m .. " " .. ts end
  if body:find('^%%s*{%%s*"user_id"%%s*:%%s*%%d+%%s*,%%s*"model_version"') then return "recommendations" end
  if body:find('^%%s*{%%s*"movie_id"') then return "similar" end
  if body:find('"predictions"', 1, true) then return "predict" end
  return "unknown"
end

-- (401/403: only writes need the key; 422 naming the "rating" field: only the write body has one;
-- anything else, e.g. 503 store unreachable or 500, could be more than one endpoint's)
local function kind_err(status, body)
  if status == 401 or status == 403 then return "rate" end
  if status == 422 and body:find('"loc"%%s*:%%s*%%[%%s*"rating"') then return "rate" end
  return "unknown"
end

response = function(status, headers, body)
  responses = responses + 1
  if status >= 200 and status < 300 then
    local k, w = kind_ok(body)
    ok[k] = ok[k] + 1
    if w then table.insert(writes_ok, w .. " " .. status) end
  else
    local k = kind_err(status, body)
    bad[k] = bad[k] + 1
    local s = tostring(status)
    by_status[s] = (by_status[s] or 0) + 1
    if #samples < 5 then table.insert(samples, s .. " " .. body:sub(1, 200)) end
  end
end

local function jstr(s)
  return '"' .. s:gsub('[%%c"\\]', function(c) return string.format("\\u%%04x", c:byte()) end) .. '"'
end

local function jmap(t)
  local parts = {}
  for k, v in pairs(t) do table.insert(parts, jstr(k) .. ": " .. v) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

done = function(summary, latency, requests)
  local agg = {sent = {}, ok = {}, bad = {}, by_status = {}}
  for _, k in ipairs(kinds) do agg.sent[k] = 0; agg.ok[k] = 0; agg.bad[k] = 0 end
  local samples_all, responses_all = {}, 0
  local ws = io.open(out_path .. ".writes_sent", "w")
  local wo = io.open(out_path .. ".writes_ok", "w")
  for _, t in ipairs(threads) do
    for _, name in ipairs({"sent", "ok", "bad"}) do
      for k, v in pairs(t:get(name)) do agg[name][k] = agg[name][k] + v end
    end
    for k, v in pairs(t:get("by_status")) do agg.by_status[k] = (agg.by_status[k] or 0) + v end
    for _, s in ipairs(t:get("samples")) do if #samples_all < 5 then table.insert(samples_all, jstr(s)) end end
    responses_all = responses_all + t:get("responses")
    for _, line in ipairs(t:get("writes_sent")) do ws:write(line, "\n") end
    for _, line in ipairs(t:get("writes_ok")) do wo:write(line, "\n") end
  end
  ws:close()
  wo:close()
  local e = summary.errors
  local f = io.open(out_path, "w")
  f:write(string.format('{"requests": %%d, "responses_seen": %%d, "seconds": %%f, '
    .. '"p50_ms": %%f, "p95_ms": %%f, "p99_ms": %%f, "max_ms": %%f, '
    .. '"socket_errors": {"connect": %%d, "read": %%d, "write": %%d, "timeout": %%d}, "wrk_status_errors": %%d, '
    .. '"sent": %%s, "ok": %%s, "non2xx": %%s, "non2xx_by_status": %%s, "non2xx_samples": [%%s]}',
    summary.requests, responses_all, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    e.connect, e.read, e.write, e.timeout, e.status,
    jmap(agg.sent), jmap(agg.ok), jmap(agg.bad), jmap(agg.by_status), table.concat(samples_all, ", ")))
  f:close()
end
"""


# ------------------------------------------------------------------------------------------------------------
# resident memory of the server's process tree


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    return out


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mib(pid: int) -> tuple[float, int]:
    """VmRSS summed over ``pid`` and its descendants (MiB), and how many processes that was."""
    pids = _descendants(pid)
    return sum(_rss_kib(p) for p in pids) / 1024, len(pids)


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float, int]] = []  # (seconds since start, MiB, processes)
        self._stop_event = threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        while True:
            mib, n = tree_rss_mib(self.pid)
            self.samples.append((time.perf_counter() - t0, mib, n))
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def rss_summary(samples: list[tuple[float, float, int]], warmup_s: float) -> dict[str, Any]:
    warm = next((s for s in samples if s[0] >= warmup_s), samples[-1])
    end = samples[-1]
    growth = end[1] - warm[1]
    pct = 100 * growth / warm[1] if warm[1] else 0.0
    return {
        "warmup_s": warmup_s,
        "warm_mib": warm[1],
        "end_mib": end[1],
        "max_mib": max(s[1] for s in samples),
        "growth_mib": growth,
        "growth_pct": pct,
        "flat": pct < FLAT_PCT,
        "processes": end[2],
        "samples": [[round(t, 2), round(m, 1)] for t, m, _ in samples],
    }


# ------------------------------------------------------------------------------------------------------------
# data check


def count_ratings(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return int(c.execute("SELECT count(*) FROM ratings").fetchone()[0])


def data_check(db: Path, template: Path, before: int, prefix: Path) -> dict[str, Any]:
    """Every write answered 2xx is in the store; rows added = the new pairs our writes created."""
    sent: dict[int, tuple[int, int, float]] = {}  # marker timestamp -> (user, movie, rating)
    for line in Path(f"{prefix}.writes_sent").read_text().splitlines():
        u, m, r, ts = line.split()
        sent[int(ts)] = (int(u), int(m), float(r))
    accepted = [tuple(int(x) for x in line.split()) for line in Path(f"{prefix}.writes_ok").read_text().splitlines()]
    pairs_ok = {(u, m) for u, m, _, _ in accepted}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        after = int(c.execute("SELECT count(*) FROM ratings").fetchone()[0])
        ours = {
            (u, m): (float(r), int(ts))
            for u, m, r, ts in c.execute(
                "SELECT user_id, movie_id, rating, timestamp FROM ratings WHERE timestamp >= ?", (TS_BASE,)
            )
        }
        c.execute("ATTACH DATABASE ? AS old", (f"file:{template}?mode=ro",))
        new_pairs = int(
            c.execute(
                "SELECT count(*) FROM ratings r WHERE r.timestamp >= ? AND NOT EXISTS "
                "(SELECT 1 FROM old.ratings o WHERE o.user_id = r.user_id AND o.movie_id = r.movie_id)",
                (TS_BASE,),
            ).fetchone()[0]
        )
    # a stored marker row must be a write we sent, for that pair, with that rating
    mismatched = sum(1 for pair, (r, ts) in ours.items() if ts not in sent or sent[ts] != (*pair, r))
    lost = sorted(p for p in pairs_ok if p not in ours)
    created = sum(1 for *_, status in accepted if status == 201)
    return {
        "rows_before": before,
        "rows_after": after,
        "rows_added": after - before,
        "writes_sent": len(sent),
        "writes_accepted": len(accepted),
        "accepted_201": created,
        "accepted_200": len(accepted) - created,
        "pairs_accepted": len(pairs_ok),
        "pairs_stored": len(pairs_ok) - len(lost),
        "data_lost": len(lost),
        "lost_examples": lost[:5],
        "stored_rows_not_matching_a_sent_write": mismatched,
        "new_pairs_in_store": new_pairs,
        # every row added is a new pair one of our writes created (201s; plus writes still unanswered at the end)
        "rows_added_ok": after - before == new_pairs and created <= new_pairs <= created + len(sent) - len(accepted),
    }


# ------------------------------------------------------------------------------------------------------------


def run_case(
    art_dir: Path, template: Path, users: list[int], movies: list[int], workers: int, a: argparse.Namespace
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"movierec-load-w{workers}-"))
    try:
        db = work / "store.db"
        shutil.copyfile(template, db)
        before = count_ratings(db)
        api_key = secrets.token_urlsafe(24)
        proc, base, startup = bench_service.start_server(
            art_dir, f"sqlite:///{db}", workers, {"MOVIEREC_API_KEY": api_key}
        )
        prefix = work / "result"
        script = LUA % {
            "users": ",".join(map(str, users)),
            "movies": ",".join(map(str, movies)),
            "api_key": api_key,
            "out_path": str(prefix),
            "p_rec": MIX["recommendations"],
            "p_pred": MIX["predict"],
            "p_sim": MIX["similar"],
            "seed": a.seed,
            "ts_base": TS_BASE,
        }
        lua = work / "load.lua"
        lua.write_text(script)
        cmd = ["wrk", f"-t{a.threads}", f"-c{a.connections}", f"-d{a.duration}s", "--timeout", "10s",
               "-s", str(lua), base]  # fmt: skip
        warmup: dict[str, Any] | None = None
        try:
            idle_mib, _ = tree_rss_mib(proc.pid)
            if a.warmup > 0:
                # The same mix before the measured window: the per-user recommendation lists
                # (service/candidates.py), the store's connections and the worker threads fill here, so the
                # window's RSS shows growth, not warming. Its writes carry markers of their own (a later
                # base) and are checked in the store with the window's.
                wlua = work / "warmup.lua"
                wlua.write_text(LUA % {
                    **{"users": ",".join(map(str, users)), "movies": ",".join(map(str, movies))},
                    "api_key": api_key, "out_path": str(work / "warmup"), "seed": a.seed + 1,
                    "ts_base": TS_BASE + WARMUP_TS_OFFSET, "p_rec": MIX["recommendations"],
                    "p_pred": MIX["predict"], "p_sim": MIX["similar"],
                })  # fmt: skip
                wcmd = ["wrk", f"-t{a.threads}", f"-c{a.connections}", f"-d{a.warmup}s", "--timeout", "10s",
                        "-s", str(wlua), base]  # fmt: skip
                subprocess.run(wcmd, capture_output=True, text=True, check=True)
                warmup = json.loads((work / "warmup").read_text())
            sampler = RssSampler(proc.pid)
            sampler.start()
            res = subprocess.run(cmd, capture_output=True, text=True)
            time.sleep(1.0)  # requests still in flight when wrk stopped finish; one more sample after them
            sampler.stop()
            if res.returncode != 0:
                raise RuntimeError(f"wrk failed ({res.returncode}): {res.stderr or res.stdout}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        r = json.loads(prefix.read_text())
        wrk_len = [s for s in sampler.samples if s[0] <= a.duration + 0.5] or sampler.samples
        r["rps"] = r["requests"] / r["seconds"]
        r["rss"] = {"idle_mib": idle_mib, **rss_summary(wrk_len, 0.0 if a.warmup > 0 else min(10.0, a.duration / 6))}
        r["warmup"] = {"seconds": a.warmup, "requests": warmup["requests"], "socket_errors": warmup["socket_errors"],
                       "p99_ms": warmup["p99_ms"]} if warmup else None  # fmt: skip
        r["rss"]["after_mib"] = sampler.samples[-1][1]
        if warmup is not None:  # the warm-up's writes count too: every accepted one must be in the store
            for suffix in (".writes_sent", ".writes_ok"):
                extra = Path(f"{work / 'warmup'}{suffix}")
                if extra.exists():
                    with open(f"{prefix}{suffix}", "a") as f:
                        f.write(extra.read_text())
        r["data"] = data_check(db, template, before, prefix)
        shutil.copyfile(lua, Path(a.out).parent / "load.lua")
        return {"workers": workers, "connections": a.connections, "threads": a.threads, "duration_s": a.duration,
                "process_start_to_ready_s": startup, "wrk": shlex.join(cmd[:-3] + ["bench/out/load.lua", base]),
                **r}  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_case(c: dict[str, Any]) -> None:
    e, d, m = c["socket_errors"], c["data"], c["rss"]
    non2xx = sum(c["non2xx"].values())
    print(f"\n{c['workers']} worker(s), {c['connections']} connections, {c['duration_s']} s "
          f"(process start to ready {c['process_start_to_ready_s']:.1f} s)")  # fmt: skip
    print(f"  requests {c['requests']}  req/s {c['rps']:.0f}  p50 {c['p50_ms']:.1f} ms  p95 {c['p95_ms']:.1f} ms  "
          f"p99 {c['p99_ms']:.1f} ms  max {c['max_ms']:.0f} ms")  # fmt: skip
    if c.get("warmup"):
        w = c["warmup"]
        print(f"  warm-up: {w['seconds']} s of the same mix, {w['requests']} requests, "
              f"socket errors {w['socket_errors']}")  # fmt: skip
    print(f"  socket errors: connect {e['connect']}  read {e['read']}  write {e['write']}  timeout (>10 s) "
          f"{e['timeout']}")  # fmt: skip
    print(f"  {'endpoint':<18}{'sent':>9}{'2xx':>9}{'non-2xx':>9}")
    for k in (*KINDS, "unknown"):
        if k != "unknown" or c["ok"].get(k) or c["non2xx"].get(k):
            print(f"  {k:<18}{c['sent'].get(k, 0):>9}{c['ok'].get(k, 0):>9}{c['non2xx'].get(k, 0):>9}")
    if non2xx:
        print(f"  non-2xx by status: {c['non2xx_by_status']}; e.g. {c['non2xx_samples'][:2]}")
    unanswered = sum(c["sent"].values()) - c["responses_seen"]
    print(f"  unanswered when wrk stopped: {unanswered}")
    print(f"  RSS MiB ({m['processes']} processes): idle {m['idle_mib']:.0f}  after warm-up ({m['warmup_s']:.0f} s) "
          f"{m['warm_mib']:.0f}  end {m['end_mib']:.0f}  max {m['max_mib']:.0f}  growth {m['growth_mib']:+.1f} MiB "
          f"({m['growth_pct']:+.1f}%): {'flat' if m['flat'] else 'NOT flat'} (< {FLAT_PCT:.0f}%)")  # fmt: skip
    print(f"  writes: sent {d['writes_sent']}  accepted {d['writes_accepted']} ({d['accepted_201']} created, "
          f"{d['accepted_200']} replaced)  distinct pairs accepted {d['pairs_accepted']}  stored {d['pairs_stored']}"
          f"  data lost: {d['data_lost']}")  # fmt: skip
    print(f"  store rows {d['rows_before']} -> {d['rows_after']} (+{d['rows_added']}; new pairs of ours in the store "
          f"{d['new_pairs_in_store']}: {'ok' if d['rows_added_ok'] else 'MISMATCH'}); stored rows not matching a "
          f"sent write: {d['stored_rows_not_matching_a_sent_write']}")  # fmt: skip
    errors = sum(e.values()) + non2xx
    print(f"  verdict: errors {errors}, p99 {c['p99_ms']:.1f} ms, RSS {'flat' if m['flat'] else 'growing'}, "
          f"data lost {d['data_lost']}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=60, help="seconds of load per worker count")
    ap.add_argument("--connections", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=30, help="seconds of the read mix before the measured window")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--workers", default="1,2", help="comma-separated uvicorn worker counts, one run each")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="bench/out/load.json")
    a = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    worker_counts = [int(w) for w in a.workers.split(",") if w.strip()]
    command = shlex.join(["python", "bench/bench_load.py", "--duration", str(a.duration), "--warmup", str(a.warmup),
                          "--connections", str(a.connections), "--threads", str(a.threads), "--workers", a.workers,
                          "--seed", str(a.seed)])  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="movierec-load-"))
    cases = []
    try:
        t0 = time.perf_counter()
        art_dir, url, users, movies = bench_service.prepare("ml1m", work)
        print(f"trained ml-1m-shaped artifacts and filled the store in {time.perf_counter() - t0:.0f} s")
        template = Path(url.removeprefix("sqlite:///"))
        for w in worker_counts:
            cases.append(run_case(art_dir, template, [int(x) for x in users], [int(x) for x in movies], w, a))
            print_case(cases[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(a.out).write_text(json.dumps({"command": command, "mix": MIX, "runs": cases}, indent=2))
    print(f"\nreproduce: {command}\nwrote {a.out}")


if __name__ == "__main__":
    main()
