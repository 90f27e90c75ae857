"""Service retrieval benchmark (FAISS): per-query latency, filter strategies, HNSW recall; table + JSON.

    python bench/bench_retrieval.py                       # ml-1m (3,706 movies) and ml-25m (62,000) shapes
    python bench/bench_retrieval.py --only ml-1m --queries 500
    options: --dim 64 --queries 2000 --ef 16,32,64,128,256 --out bench/out/retrieval.json

Catalogues are random but shaped like trained MF factors: a low-rank part (a few dominant taste
directions) plus isotropic noise, norms growing with a popularity-like log-normal, biases ~N(0, 0.3);
users likewise. Every query is timed on its own (``recommend`` end to end: argument checks, the
eligibility mask, the FAISS search, re-scoring and sorting) with FAISS on one OpenMP thread
(``configure_faiss_threads(1)``, what the API process uses), and p50/p99 reported over ``--queries``
users. Cases: no filter; a user with 2,000 (and, for the big catalogue, 20,000) rated movies excluded,
with each filter strategy ("auto" = the default, "subset", "selector" = bitmap, "overfetch"); genre-like
allowed masks (18 fixed masks of ~10 %, and of ~1 %, each query picking one), alone and with 2,000
excluded; HNSW at several efSearch values with recall@10 against the exact flat answer. The raw-FAISS
row "selector Not(Batch)" times the hash-set selector the bitmap replaced, on the same queries.
"exact_fallbacks" in the JSON counts queries answered by the exact numpy pass (near-ties at the cut-off).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402

from service import retrieval  # noqa: E402
from service.retrieval import ItemIndex, configure_faiss_threads  # noqa: E402

CATALOGUES = {"ml-1m": 3_706, "ml-25m": 62_000}
EXCLUDES = {"ml-1m": (2_000,), "ml-25m": (2_000, 20_000)}


def factors(rng: np.random.Generator, n: int, dim: int, rank: int = 12) -> np.ndarray:
    basis = rng.normal(0, 1, (rank, dim)) / np.sqrt(rank)
    low = rng.normal(0, 0.5, (n, rank)) @ basis
    scale = np.exp(rng.normal(0, 0.3, (n, 1)))  # popular movies / active users: longer vectors
    return ((low + rng.normal(0, 0.12, (n, dim))) * scale).astype(np.float32)


def timed(fn, queries: list) -> tuple[np.ndarray, list]:
    out, times = [], np.empty(len(queries))
    for q in queries[:20]:  # warm-up
        fn(*q)
    for j, q in enumerate(queries):
        t0 = time.perf_counter_ns()
        out.append(fn(*q))
        times[j] = (time.perf_counter_ns() - t0) / 1e3
    return times, out


def stats(times: np.ndarray) -> dict[str, float]:
    return {
        "p50_us": float(np.percentile(times, 50)),
        "p99_us": float(np.percentile(times, 99)),
        "mean_us": float(times.mean()),
    }


def recall_at(exact: list, approx: list, k: int = 10) -> float:
    hits = sum(len(np.intersect1d(a.codes[:k], b.codes[:k])) for a, b in zip(exact, approx, strict=True))
    return hits / sum(min(k, len(a.codes)) for a in exact)


def bench_catalogue(name: str, n: int, dim: int, n_queries: int, efs: list[int], seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    item_f = factors(rng, n, dim)
    item_b = rng.normal(0, 0.3, n).astype(np.float32)
    users = factors(rng, n_queries, dim)
    k = 10
    result: dict[str, Any] = {"n_items": n, "dim": dim, "queries": n_queries, "k": k, "cases": [], "hnsw": []}

    t0 = time.perf_counter()
    flat = ItemIndex(item_f, item_b)
    result["build_flat_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hnsw = ItemIndex(item_f, item_b, kind="hnsw")
    result["build_hnsw_s"] = time.perf_counter() - t0  # both graphs (dot and cosine) plus the flat ones
    result["hnsw_params"] = {"M": 32, "efConstruction": 200}
    configure_faiss_threads(1)

    exact_calls = {"n": 0}
    real_exact = ItemIndex._exact

    def counting_exact(self, *a, **kw):
        exact_calls["n"] += 1
        return real_exact(self, *a, **kw)

    ItemIndex._exact = counting_exact  # type: ignore[method-assign]

    def case(label: str, strategy: str, fn, queries: list) -> list:
        exact_calls["n"] = 0
        times, out = timed(fn, queries)
        row = {"case": label, "strategy": strategy, **stats(times), "exact_fallbacks": exact_calls["n"]}
        result["cases"].append(row)
        print(f"  {name:7} {label:34} {strategy:20} p50 {row['p50_us']:9.1f} us  p99 {row['p99_us']:9.1f} us")
        return out

    plain = [(u,) for u in users]
    for sim in ("dot", "cosine"):
        case(f"no filter ({sim})", "-", lambda u, s=sim: flat.recommend(u, k, s), plain)

    strategies = {s: ItemIndex(item_f, item_b, filter_strategy=s) for s in ("auto", "subset", "selector", "overfetch")}
    dot_index = flat._spaces["dot"].flat  # raw FAISS, for the record: the hash-set selector
    for n_ex in EXCLUDES[name]:
        excl = [(u, np.sort(rng.choice(n, n_ex, replace=False))) for u in users]
        outs = []
        for strategy, index in strategies.items():
            fn = lambda u, e, ix=index: ix.recommend(u, k, "dot", exclude=e)  # noqa: E731
            outs.append(case(f"exclude {n_ex:,} (dot)", strategy, fn, excl))
        assert all(np.array_equal(x.codes, y.codes) for o in outs[1:] for x, y in zip(outs[0], o, strict=True))

        def raw_batch(u, e):
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(e.astype(np.int64)))
            q = np.append(u, 1.0).astype(np.float32)[None, :]
            return dot_index.search(q, k, params=faiss.SearchParameters(sel=sel))

        case(f"exclude {n_ex:,} (dot, raw faiss k=10)", "selector Not(Batch)", raw_batch, excl)

    # genre-like filters: 18 fixed masks (as genres are), each query picks one
    for share in (0.10, 0.01):
        genres = [rng.random(n) < share for _ in range(18)]
        picks = rng.integers(0, 18, len(users))
        allowed = [(u, genres[g]) for u, g in zip(users, picks, strict=True)]
        rated = [np.sort(rng.choice(n, min(2_000, n // 2), replace=False)) for _ in users]
        mixed = [(u, genres[g], e) for u, g, e in zip(users, picks, rated, strict=True)]
        for strategy in ("auto", "subset", "selector"):
            index = strategies[strategy]
            fn = lambda u, m, ix=index: ix.recommend(u, k, "dot", allowed=m)  # noqa: E731
            case(f"allowed ~{share:.0%} (dot)", strategy, fn, allowed)
            fn = lambda u, m, e, ix=index: ix.recommend(u, k, "dot", exclude=e, allowed=m)  # noqa: E731
            case(f"allowed ~{share:.0%} + exclude 2,000 (dot)", strategy, fn, mixed)

    ItemIndex._exact = real_exact  # type: ignore[method-assign]

    # HNSW: latency and recall@10 against the exact flat answer, at several efSearch values
    for sim in ("dot", "cosine"):
        exact = [flat.recommend(u, k, sim) for u in users]
        times, _ = timed(lambda u, s=sim: flat.recommend(u, k, s), plain)
        result["hnsw"].append({"sim": sim, "index": "flat", "ef_search": None, "recall@10": 1.0, **stats(times)})
        for ef in efs:
            index = ItemIndex.__new__(ItemIndex)
            index.__dict__.update(hnsw.__dict__)  # same graphs, another per-call efSearch
            index.hnsw_ef_search = ef
            times, approx = timed(lambda u, s=sim, ix=index: ix.recommend(u, k, s), plain)
            row = {"sim": sim, "index": "hnsw", "ef_search": ef, "recall@10": recall_at(exact, approx), **stats(times)}
            result["hnsw"].append(row)
            print(
                f"  {name:7} hnsw {sim:6} efSearch {ef:4}  recall@10 {row['recall@10']:.4f}  "
                f"p50 {row['p50_us']:8.1f} us  p99 {row['p99_us']:8.1f} us"
            )
        # filtered HNSW (selector) vs filtered flat
        excl = [(u, np.sort(rng.choice(n, 2_000, replace=False))) for u in users]
        ex_flat = [flat.recommend(u, k, sim, exclude=e) for u, e in excl]
        times, approx = timed(lambda u, e, s=sim: hnsw.recommend(u, k, s, exclude=e), excl)
        result["hnsw"].append(
            {"sim": sim, "index": "hnsw", "ef_search": hnsw.hnsw_ef_search, "filter": "exclude 2,000",
             "recall@10": recall_at(ex_flat, approx), **stats(times)}
        )  # fmt: skip
    return result


def print_table(results: dict[str, Any]) -> None:
    print()
    print(f"{'catalogue':9} {'case':36} {'strategy':20} {'p50 us':>9} {'p99 us':>9}")
    for name, r in results.items():
        print(f"{name:9} build: flat {r['build_flat_s']:.3f} s, hnsw (2 graphs + flat) {r['build_hnsw_s']:.1f} s")
        for row in r["cases"]:
            print(f"{name:9} {row['case']:36} {row['strategy']:20} {row['p50_us']:9.1f} {row['p99_us']:9.1f}")
        for row in r["hnsw"]:
            label = f"{row['index']} {row['sim']}" + (f" ef={row['ef_search']}" if row["ef_search"] else "")
            label += f" [{row['filter']}]" if "filter" in row else ""
            strat = f"recall@10 {row['recall@10']:.4f}"
            print(f"{name:9} {label:36} {strat:20} {row['p50_us']:9.1f} {row['p99_us']:9.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=sorted(CATALOGUES), action="append")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--ef", default="16,32,64,128,256")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "retrieval.json")
    args = p.parse_args()
    efs = [int(x) for x in args.ef.split(",") if x]
    results = {}
    for name in args.only or list(CATALOGUES):
        print(f"{name}: {CATALOGUES[name]:,} movies x {args.dim}")
        results[name] = bench_catalogue(name, CATALOGUES[name], args.dim, args.queries, efs, args.seed)
    print_table(results)
    meta = {
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "search_threads": 1,
        "default_filter_strategy": retrieval.ItemIndex.__init__.__kwdefaults__["filter_strategy"],
        "slack": retrieval._SLACK,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "catalogues": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
