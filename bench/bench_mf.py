"""Biased MF quality and speed benchmark: prints a table and writes JSON.

    python bench/bench_mf.py [--shared ../shared/data/movielens] [--out bench/out/mf.json] [--speed]

Each case runs in a fresh process so peak RSS (ru_maxrss) is that case's own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path


def _case(kind: str, arg: str, shared: str, q: mp.Queue) -> None:
    import numpy as np

    from trainer.config import load_settings
    from trainer.data.movielens import load_dataset
    from trainer.data.splits import ml100k_fold, random_holdout, validation_split
    from trainer.device import resolve_device, seed_everything
    from trainer.evaluation import rating_metrics
    from trainer.models.mf import MFModel

    s = load_settings(None)
    root = Path(shared)
    if kind == "ml-latest-small":
        data = load_dataset(root / "ml-latest-small")
        train, test = random_holdout(data, 0.1, s.seed)
    else:
        data = load_dataset(root / "ml-100k")
        train, test = ml100k_fold(root / "ml-100k", int(arg), data)
    fit_on, valid = validation_split(train, s.valid_fraction, s.seed + 1)
    model = MFModel(s.mf_params(), resolve_device(s.device), seed_everything(s.seed))
    t0 = time.perf_counter()
    model.fit(fit_on, valid)
    secs = time.perf_counter() - t0
    m = rating_metrics(test.ratings, model.predict(test.users, test.items))
    q.put({"case": f"{kind} {arg}".strip(), "rmse": m["rmse"], "mae": m["mae"], "train_s": secs,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n_test": int(len(test)),
           "mean_rating": float(np.mean(test.ratings))})  # fmt: skip


def run_case(kind: str, arg: str, shared: str) -> dict:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    p = ctx.Process(target=_case, args=(kind, arg, shared, q))
    p.start()
    row = q.get()
    p.join()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared/data/movielens"))
    ap.add_argument("--out", default="bench/out/mf.json")
    a = ap.parse_args()
    rows = [run_case("ml-latest-small", "", a.shared)]
    rows += [run_case("ml-100k u", str(k), a.shared) for k in range(1, 6)]
    folds = [r["rmse"] for r in rows[1:]]
    summary = {"ml-latest-small random 90/10 rmse": rows[0]["rmse"], "ml-100k u1 rmse": folds[0],
               "ml-100k u1..u5 mean rmse": sum(folds) / len(folds)}  # fmt: skip
    print(f"{'case':<20}{'rmse':>8}{'mae':>8}{'train_s':>9}{'peak MiB':>10}")
    for r in rows:
        print(f"{r['case']:<20}{r['rmse']:>8.4f}{r['mae']:>8.4f}{r['train_s']:>9.1f}{r['peak_rss_mib']:>10.0f}")
    for k, v in summary.items():
        print(f"{k}: {v:.4f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
