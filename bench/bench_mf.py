"""Biased MF quality and speed benchmark: prints a table and writes JSON.

    python bench/bench_mf.py                      # quality (real MovieLens) and speed (synthetic)
    python bench/bench_mf.py --only quality       # ml-latest-small 90/10 and ml-100k u1..u5
    python bench/bench_mf.py --only speed         # synthetic ml-1m (full default run) and ml-25m (epochs)
    options: --shared ../shared/data/movielens --out bench/out/mf.json --ml25m-epochs 2 --device auto

Every case trains with the default settings (``trainer.config.TrainSettings``) and runs in a fresh
process, so its peak RSS (ru_maxrss) is its own. The ml-25m case runs a fixed number of epochs (no
early stopping) because it only measures throughput and memory.
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

SHAPES = {"ml-1m": (6040, 3706, 1_000_209), "ml-25m": (162_541, 59_047, 25_000_095)}


def _quality_case(kind: str, fold: str, shared: str, device: str) -> dict[str, Any]:
    import numpy as np

    from trainer.config import load_settings
    from trainer.data.movielens import load_dataset
    from trainer.data.splits import ml100k_fold, random_holdout, validation_split
    from trainer.device import describe, resolve_device, seed_everything
    from trainer.evaluation import rating_metrics
    from trainer.models.mf import MFModel

    s = load_settings(None)
    root = Path(shared)
    if kind == "ml-latest-small":
        data = load_dataset(root / "ml-latest-small")
        train, test = random_holdout(data, 0.1, s.seed)
    else:
        data = load_dataset(root / "ml-100k")
        train, test = ml100k_fold(root / "ml-100k", int(fold), data)
    fit_on, valid = validation_split(train, s.valid_fraction, s.seed + 1)
    dev = resolve_device(device)
    model = MFModel(s.mf_params(), dev, seed_everything(s.seed))
    t0 = time.perf_counter()
    history = model.fit(fit_on, valid)
    secs = time.perf_counter() - t0
    m = rating_metrics(test.ratings, model.predict(test.users, test.items))
    return {"case": f"{kind} {'u' + fold if fold else 'random 90/10'}", "rmse": m["rmse"], "mae": m["mae"],
            "train_s": secs, "epochs": len(history.epochs), "peak_rss_mib": peak_rss_mib(),
            "n_train": len(fit_on), "n_test": int(len(test)), "mean_rating": float(np.mean(test.ratings)),
            "device": describe(dev)}  # fmt: skip


def _speed_case(shape: str, epochs: int | None, device: str) -> dict[str, Any]:
    import numpy as np

    from trainer.config import load_settings
    from trainer.data.splits import random_holdout, validation_split
    from trainer.data.synth import generate
    from trainer.device import describe, resolve_device, seed_everything
    from trainer.evaluation import rating_metrics
    from trainer.models.mf import MFModel
    from trainer.training import resolve_batch_size

    n_users, n_items, n_ratings = SHAPES[shape]
    t0 = time.perf_counter()
    syn = generate(n_users, n_items, n_ratings, seed=0)
    gen_s = time.perf_counter() - t0
    overrides = {} if epochs is None else {"epochs": epochs, "patience": 0}
    s = load_settings(None, **overrides)
    train, test = random_holdout(syn.data, 0.1, s.seed)
    fit_on, valid = validation_split(train, s.valid_fraction, s.seed + 1)
    dev = resolve_device(device)
    model = MFModel(s.mf_params(), dev, seed_everything(s.seed))
    t0 = time.perf_counter()
    history = model.fit(fit_on, valid)
    secs = time.perf_counter() - t0
    epoch_s = [e.seconds for e in history.epochs]
    m = rating_metrics(test.ratings, model.predict(test.users, test.items))
    truth = np.clip(syn.expected(test.users, test.items), syn.data.scale.low, syn.data.scale.high)
    floor = float(np.sqrt(np.mean((truth - test.ratings) ** 2)))
    return {"case": f"synthetic {shape}", "n_train": len(fit_on), "batch_size": resolve_batch_size(
                s.batch_size, len(fit_on)), "epochs": len(history.epochs), "epoch_s_median": statistics.median(
                epoch_s), "epoch_s_max": max(epoch_s), "train_s": secs,
            "ratings_per_s": len(fit_on) * len(history.epochs) / secs, "rmse": m["rmse"],
            "noise_floor_rmse": floor, "generate_s": gen_s, "peak_rss_mib": peak_rss_mib(),
            "device": describe(dev)}  # fmt: skip


def _run(q: mp.Queue, fn_name: str, args: tuple) -> None:  # type: ignore[type-arg]
    q.put(globals()[fn_name](*args))


def in_fresh_process(fn_name: str, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    p = ctx.Process(target=_run, args=(q, fn_name, args))
    p.start()
    row = q.get()
    p.join()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared/data/movielens"))
    ap.add_argument("--out", default="bench/out/mf.json")
    ap.add_argument("--only", choices=["quality", "speed"], default=None)
    ap.add_argument("--ml25m-epochs", type=int, default=2)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    result: dict[str, Any] = {}
    if a.only in (None, "quality"):
        rows = [in_fresh_process("_quality_case", "ml-latest-small", "", a.shared, a.device)]
        rows += [in_fresh_process("_quality_case", "ml-100k", str(k), a.shared, a.device) for k in range(1, 6)]
        folds = [r["rmse"] for r in rows[1:]]
        result["quality"] = rows
        result["quality_summary"] = {
            "ml-latest-small random 90/10 rmse": rows[0]["rmse"],
            "ml-100k u1 rmse": folds[0],
            "ml-100k u1..u5 mean rmse": sum(folds) / len(folds),
        }
        print(f"{'quality case':<32}{'rmse':>8}{'mae':>8}{'epochs':>7}{'train_s':>9}{'peak MiB':>10}")
        for r in rows:
            print(f"{r['case']:<32}{r['rmse']:>8.4f}{r['mae']:>8.4f}{r['epochs']:>7}{r['train_s']:>9.1f}"
                  f"{r['peak_rss_mib']:>10.0f}")  # fmt: skip
        for k, v in result["quality_summary"].items():
            print(f"  {k}: {v:.4f}")
    if a.only in (None, "speed"):
        rows = [in_fresh_process("_speed_case", "ml-1m", None, a.device),
                in_fresh_process("_speed_case", "ml-25m", a.ml25m_epochs, a.device)]  # fmt: skip
        result["speed"] = rows
        print(f"\n{'speed case (' + rows[0]['device'] + ')':<32}{'batch':>7}{'epochs':>7}{'epoch_s':>9}"
              f"{'train_s':>9}{'ratings/s':>12}{'rmse':>8}{'floor':>8}{'peak MiB':>10}")  # fmt: skip
        for r in rows:
            print(f"{r['case']:<32}{r['batch_size']:>7}{r['epochs']:>7}{r['epoch_s_median']:>9.2f}"
                  f"{r['train_s']:>9.1f}{r['ratings_per_s']:>12,.0f}{r['rmse']:>8.4f}{r['noise_floor_rmse']:>8.4f}"
                  f"{r['peak_rss_mib']:>10.0f}")  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
