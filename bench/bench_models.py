"""Quality of every model kind on the same splits: prints a table and writes bench/out/models.json.

    python bench/bench_models.py                                  # every kind, every split below
    python bench/bench_models.py --kinds mf,als --splits ml100k-u  # a subset
    python bench/bench_models.py --speed                          # mf vs als training time, synthetic ml-1m

Splits: ml-100k official u1..u5 folds ("ml100k-u") and per-user temporal leave-last-one-out
("ml100k-llo"); ml-latest-small seeded random 90/10 ("small-random") and leave-last-one-out
("small-llo"). Each (kind, split) trains with the kind's default settings through the same pipeline as
`movierec train` (trainer.pipeline.train, publish off), in a fresh process so peak RSS is its own.
Columns: RMSE, MAE, half-star accuracy, Recall@20, NDCG@20 (relevant = held-out rating >= 4, training
ratings excluded), training seconds, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path
from typing import Any

from peak_rss import peak_rss_mib  # the bench folder is on sys.path when these run as scripts

KINDS = ("mf", "als", "bpmf", "gravity", "softmax", "sequence")
SHARED = Path(__file__).resolve().parents[2] / "shared/data/movielens"
SPLITS: dict[str, list[dict[str, Any]]] = {
    "ml100k-u": [{"data": "ml-100k", "split": "ml100k-fold", "fold": str(k)} for k in range(1, 6)],
    "ml100k-llo": [{"data": "ml-100k", "split": "leave-last", "leave_last": 1}],
    "small-random": [{"data": "ml-latest-small", "split": "random", "test_fraction": 0.1}],
    "small-llo": [{"data": "ml-latest-small", "split": "leave-last", "leave_last": 1}],
}


def _case(kind: str, spec: dict[str, Any], shared: str, q: mp.Queue) -> None:  # type: ignore[type-arg]
    import torch

    from trainer.config import load_settings
    from trainer.pipeline import train

    torch.set_num_threads(1)  # one thread per run: timings comparable across kinds on a shared machine
    overrides = {**spec, "data": Path(shared) / spec["data"], "model": kind}
    result = train(load_settings(None, **overrides), publish=False)
    row = result.metrics["test"]["model"]
    q.put({"rmse": row["rmse"], "mae": row["mae"], "accuracy": row["accuracy"], "recall@20": row["recall@20"],
           "ndcg@20": row["ndcg@20"], "train_s": result.train_seconds,
           "peak_rss_mib": peak_rss_mib()})  # fmt: skip


def _speed(kind: str, q: mp.Queue) -> None:  # type: ignore[type-arg]
    import torch

    from trainer.config import load_settings
    from trainer.data.splits import random_holdout, validation_split
    from trainer.data.synth import generate
    from trainer.evaluation import rating_metrics
    from trainer.pipeline import build_model

    torch.set_num_threads(2)
    syn = generate(6040, 3706, 1_000_209, seed=0)
    s = load_settings(None, model=kind)
    train, test = random_holdout(syn.data, 0.1, s.seed)
    fit_on, valid = validation_split(train, s.valid_fraction, s.seed + 1)
    model = build_model(s)
    t0 = time.perf_counter()
    history = model.fit(fit_on, valid)
    secs = time.perf_counter() - t0
    rmse = rating_metrics(test.ratings, model.predict(test.users, test.items))["rmse"]
    q.put({"kind": kind, "train_s": secs, "epochs": len(history.epochs), "rmse": rmse})


def fresh(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    row = q.get()
    p.join()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--splits", default=",".join(SPLITS))
    ap.add_argument("--shared", default=str(SHARED))
    ap.add_argument("--speed", action="store_true", help="also time mf vs als on synthetic ml-1m")
    ap.add_argument("--out", default="bench/out/models.json")
    a = ap.parse_args()
    kinds = [k for k in a.kinds.split(",") if k]
    rows: list[dict[str, Any]] = []
    cols = ["rmse", "mae", "accuracy", "recall@20", "ndcg@20", "train_s", "peak_rss_mib"]
    print(f"{'split':<14}{'model':<10}" + "".join(f"{c:>13}" for c in cols), flush=True)
    for split in [s for s in a.splits.split(",") if s]:
        for kind in kinds:
            runs = [fresh(_case, kind, spec, a.shared) for spec in SPLITS[split]]
            row = {"split": split, "model": kind, "runs": runs}
            row.update({c: statistics.fmean(r[c] for r in runs) for c in cols})
            row["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
            rows.append(row)
            print(f"{split:<14}{kind:<10}" + "".join(f"{row[c]:>13.4f}" for c in cols), flush=True)
    result: dict[str, Any] = {"rows": rows}
    if a.speed:
        speed = [fresh(_speed, k) for k in ("mf", "als")]
        result["speed_ml1m"] = speed
        print("\nsynthetic ml-1m, default settings, 2 threads (same run):")
        for r in speed:
            print(f"  {r['kind']:<6} {r['train_s']:7.1f} s  {r['epochs']:3d} epochs  test RMSE {r['rmse']:.4f}")
        print(f"  als is {speed[0]['train_s'] / speed[1]['train_s']:.1f}x faster than mf")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
