"""Surprise's SVD and SVD++ beside our models on the same splits, in the same run: writes bench/RESULTS.md.

    python bench/bench_peers.py                                   # everything below (needs `pip install -e .[peers]`)
    python bench/bench_peers.py --kinds mf,als,bpmf --splits ml100k-u --svdpp-splits ml100k-u   # a subset

Splits (bench_models.SPLITS): ml-100k official u1..u5 folds ("ml100k-u", Surprise reads u{k}.base/u{k}.test
with its own Reader) and ml-latest-small seeded random 90/10 ("small-random": the split our pipeline makes,
trainer.pipeline.split_data with split=random, test_fraction=0.1 and the default seed, exported to Surprise
with Dataset.load_from_df + build_full_trainset and a testset list, so both sides see the same rows).
Surprise's SVD and SVDpp run with their default hyperparameters (random_state pinned to our seed); our kinds
run through bench_models._case (trainer.pipeline.train, publish off, default settings). Every case runs in a
fresh process (bench_models.fresh) for its own peak RSS, single-threaded (Surprise is; torch is set to 1).
Columns: RMSE, MAE, fit seconds, peak RSS, fit time over Surprise SVD's on the same split. Surprise's
published README table sits beside the measured one. On a machine with CUDA the GPU section runs bench_mf's
synthetic ml-1m / ml-25m speed cases; without one it says so and names the command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_mf  # noqa: E402
import bench_models  # noqa: E402
from peak_rss import peak_rss_mib  # noqa: E402

PEER_SPLITS = ("ml100k-u", "small-random")
PEERS = ("svd", "svdpp")
PEER_NAMES = {"svd": "Surprise SVD", "svdpp": "Surprise SVD++"}
SURPRISE_README = "https://github.com/NicolasHug/Surprise/blob/master/README.md#benchmarks"
SURPRISE_BENCH = "https://github.com/NicolasHug/Surprise/blob/master/examples/benchmark.py"
# Surprise 1.1.5's README (also its PyPI page, https://pypi.org/project/scikit-surprise/1.1.5/), "Benchmarks":
# mean RMSE/MAE and total time (fit + test, all 5 folds) of a 5-fold KFold(random_state=0) cross-validation
# over the whole u.data / ratings.dat, default parameters, random_state=0, "a laptop with an intel i5 11th Gen
# 2.60GHz". Copied by hand; only the rows this file compares against.
PUBLISHED = [
    ("ml-100k", "SVD", 0.934, 0.737, "0:00:06"),
    ("ml-100k", "SVD++ (cache_ratings=False)", 0.919, 0.721, "0:01:39"),
    ("ml-100k", "SVD++ (cache_ratings=True)", 0.919, 0.721, "0:01:22"),
    ("ml-100k", "Baseline (BaselineOnly)", 0.944, 0.748, "0:00:02"),
    ("ml-1m", "SVD", 0.873, 0.686, "0:01:07"),
    ("ml-1m", "SVD++ (cache_ratings=False)", 0.862, 0.672, "0:41:06"),
    ("ml-1m", "SVD++ (cache_ratings=True)", 0.862, 0.672, "0:34:55"),
    ("ml-1m", "Baseline (BaselineOnly)", 0.909, 0.719, "0:00:19"),
]


def _surprise_case(algo: str, spec: dict[str, Any], shared: str, export: str, seed: int, q: Any) -> None:
    """One Surprise fit and test in this (fresh) process: only surprise, numpy and pandas are imported."""
    import numpy as np
    from surprise import SVD, Dataset, Reader, SVDpp, accuracy
    from surprise.model_selection import PredefinedKFold

    t0 = time.perf_counter()
    if spec["split"] == "ml100k-fold":
        folder = Path(shared) / spec["data"]
        reader = Reader("ml-100k")  # user item rating timestamp, tab-separated, scale 1..5
        data = Dataset.load_from_folds(
            [(str(folder / f"u{spec['fold']}.base"), str(folder / f"u{spec['fold']}.test"))], reader
        )
        trainset, testset = next(PredefinedKFold().split(data))
    else:
        import pandas as pd

        with np.load(export, allow_pickle=False) as z:
            train = pd.DataFrame({"user": z["train_user"], "item": z["train_item"], "rating": z["train_rating"]})
            testset = list(
                zip(z["test_user"].tolist(), z["test_item"].tolist(), z["test_rating"].tolist(), strict=True)
            )
            scale = (float(z["scale"][0]), float(z["scale"][1]))
        trainset = Dataset.load_from_df(train, Reader(rating_scale=scale)).build_full_trainset()
    load_s = time.perf_counter() - t0
    model = SVD(random_state=seed) if algo == "svd" else SVDpp(random_state=seed)
    t0 = time.perf_counter()
    model.fit(trainset)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = model.test(testset)
    test_s = time.perf_counter() - t0
    q.put({"rmse": accuracy.rmse(preds, verbose=False), "mae": accuracy.mae(preds, verbose=False),
           "train_s": fit_s, "test_s": test_s, "load_s": load_s, "n_train": trainset.n_ratings,
           "n_test": len(testset), "peak_rss_mib": peak_rss_mib()})  # fmt: skip


def _our_split(spec: dict[str, Any], shared: str) -> tuple[Any, Any]:
    """(train, test) exactly as trainer.pipeline.train makes them for these settings (before early stopping)."""
    from trainer.config import load_settings
    from trainer.pipeline import load_data, split_data

    s = load_settings(None, **{**spec, "data": Path(shared) / spec["data"]})
    data, path = load_data(s)
    return split_data(data, path, s)


def _export(spec: dict[str, Any], shared: str, out: Path) -> dict[str, Any]:
    """Write our pipeline's random split as raw (external id) arrays for Surprise; returns its sizes."""
    import numpy as np

    seen, test = _our_split(spec, shared)
    arrays = {"scale": np.array([seen.scale.low, seen.scale.high])}
    for name, part in (("train", seen), ("test", test)):
        arrays[f"{name}_user"] = np.asarray(part.user_ids)[part.users].astype(str)
        arrays[f"{name}_item"] = np.asarray(part.item_ids)[part.items].astype(str)
        arrays[f"{name}_rating"] = part.ratings.astype(np.float64)
    np.savez(out, **arrays)
    return {"n_train": len(seen), "n_test": len(test), "test_rating_sum": float(test.ratings.sum())}


def _check_fold(spec: dict[str, Any], shared: str) -> dict[str, Any]:
    """Our pipeline's ml100k-fold (train, test) sizes, to check Surprise read the same rows."""
    seen, test = _our_split(spec, shared)
    return {"n_train": len(seen), "n_test": len(test)}


def _prepare(spec: dict[str, Any], shared: str, path: str, q: Any) -> None:
    """In a fresh process, so the parent stays light (no torch, no pandas): where peak_rss falls back to
    ru_maxrss (not Linux), a spawned child's peak starts from its parent's."""
    q.put(_export(spec, shared, Path(path)) if spec["split"] == "random" else _check_fold(spec, shared))


def _versions(q: Any) -> None:
    import numpy
    import surprise
    import torch

    from trainer.config import load_settings

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    q.put(
        {
            "seed": load_settings(None).seed,
            "numpy": numpy.__version__,
            "torch": str(torch.__version__),
            "surprise": surprise.__version__,
            "cuda": cuda,
        }
    )


def _machine() -> dict[str, Any]:
    model = "unknown"
    mem_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 1024**2
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": cpus, "cpu_model": model, "mem_gib": mem_gib, "python": platform.python_version(),
            "platform": platform.platform(), **bench_models.fresh(_versions)}  # fmt: skip


def _pause_while(lock: str | None) -> None:
    while lock and Path(lock).exists():
        time.sleep(30)


def _summarise(split: str, model: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"split": split, "model": model, "runs": runs}
    for c in ("rmse", "mae", "train_s"):
        row[c] = statistics.fmean(r[c] for r in runs)
    row["rmse_sd"] = statistics.stdev(r["rmse"] for r in runs) if len(runs) > 1 else 0.0
    row["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    if "test_s" in runs[0]:
        row["fit_plus_test_total_s"] = sum(r["train_s"] + r["test_s"] for r in runs)
    return row


SPLIT_TITLES = {
    "ml100k-u": "ml-100k, official u1..u5 folds (mean of 5; RMSE ± sd across folds)",
    "small-random": "ml-latest-small, seeded random 90/10 (our pipeline's split, exported to Surprise)",
}


def _markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    mem = f", {m['mem_gib']:.0f} GiB RAM" if m["mem_gib"] else ""
    out = [
        f"Generated by `{result['command']}` on {result['date']}",
        f"on {m['cpus']} CPU(s), {m['cpu_model']}{mem} ({m['platform']}; Python {m['python']}, numpy {m['numpy']},"
        f" torch {m['torch']}, scikit-surprise {m['surprise']}). Total run: {result['wall_s'] / 60:.1f} min.",
        "",
        "# Peers: Surprise SVD / SVD++ beside movierec's models",
        "",
        *([] if result.get("complete") else ["**Partial: the run had not finished when this was written.**", ""]),
        "Everything in the measured tables ran in this one run, on this machine, each (model, fold) in a fresh",
        "process (peak RSS is its own: our cases import torch, Surprise's only surprise/numpy/pandas), one thread",
        "each (Surprise's Cython SGD is single-threaded; our cases set `torch.set_num_threads(1)`).",
        "",
        "- **Surprise**: `SVD()` defaults: n_factors=100, n_epochs=20, lr_all=0.005, reg_all=0.02, biased,",
        "  init N(0, 0.1); `SVDpp()` defaults: n_factors=20, n_epochs=20, lr_all=0.007, reg_all=0.02,",
        "  cache_ratings=False. Only `random_state` is set (to our seed, 42). Trained on the whole training half.",
        "- **Ours**: each kind's default settings through `trainer.pipeline.train` (publish off), as",
        "  `bench/bench_models.py` runs them: 5% of the training half is held out for early stopping (Surprise",
        "  trains on all of it), and fit time includes those per-epoch validation passes.",
        "- **fit s**: the model's fit only (Surprise `algo.fit(trainset)`, ours `model.fit`), no data loading or",
        "  test scoring. **x SVD**: fit seconds over Surprise SVD's on the same split, same machine, same run.",
        "- The same rows: ml-100k folds are the GroupLens u{k}.base/u{k}.test files (Surprise reads them with",
        "  `Reader('ml-100k')`; row counts checked against our `ml100k_fold`); ml-latest-small is the split",
        "  `trainer.pipeline.split_data` makes (random, test_fraction=0.1, seed 42), exported by external id.",
        "",
    ]
    for split in result["splits"]:
        rows = [r for r in result["rows"] if r["split"] == split]
        if not rows:
            continue
        out += [f"## {SPLIT_TITLES.get(split, split)}", ""]
        out += ["| model | RMSE | MAE | fit s | peak RSS MiB | x SVD (time) |", "|:--|--:|--:|--:|--:|--:|"]
        for r in rows:
            sd = f" ± {r['rmse_sd']:.4f}" if len(r["runs"]) > 1 else ""
            ratio = f"{r['time_ratio_to_svd']:.2f}" if r.get("time_ratio_to_svd") is not None else "n/a"
            out.append(f"| {r['label']} | {r['rmse']:.4f}{sd} | {r['mae']:.4f} | {r['train_s']:.1f} |"
                       f" {r['peak_rss_mib']:.0f} | {ratio} |")  # fmt: skip
        out.append("")
        for note in result.get("notes", {}).get(split, []):
            out.append(f"- {note}")
        out.append("")
    out += [
        "## Published figures (Surprise's own benchmark, not measured here)",
        "",
        f'From the scikit-surprise {m["surprise"]} README, "Benchmarks" ({SURPRISE_README}; generated by',
        f"{SURPRISE_BENCH}). Protocol: 5-fold cross-validation with `KFold(random_state=0)` over the whole",
        "u.data / ratings.dat: random folds, **not** the official u1..u5 folds above (whose test sets are",
        "disjoint 20% slices too, but different ones), default parameters, `random_state=0`; Time is the total",
        '(fit + test) of all 5 folds on "a laptop with an intel i5 11th Gen 2.60GHz".',
        "",
        "| dataset | algorithm | RMSE | MAE | time, 5 folds |",
        "|:--|:--|--:|--:|--:|",
    ]
    for ds, algo, rmse, mae, t in PUBLISHED:
        out.append(f"| {ds} | {algo} | {rmse:.3f} | {mae:.3f} | {t} |")
    measured = {r["model"]: r for r in result["rows"] if r["split"] == "ml100k-u" and "fit_plus_test_total_s" in r}
    if measured:
        out += ["", "The same quantity measured here on u1..u5 (fit + test, all 5 folds, this machine):"]
        for key, r in measured.items():
            total = dt.timedelta(seconds=round(r["fit_plus_test_total_s"]))
            out.append(f"- {PEER_NAMES[key]}: RMSE {r['rmse']:.3f}, MAE {r['mae']:.3f}, {total}")
    out += ["", "## GPU timings", ""]
    gpu = result.get("gpu")
    if gpu:
        out += [f"Device: **{gpu['device']}**. Synthetic ratings shaped like ml-1m and ml-25m",
                "(`bench_mf._speed_case`: default MF settings; ml-1m trains to early stopping, ml-25m runs "
                f"{gpu['ml25m_epochs']} epochs).", "",
                "| case | batch | epochs | median epoch s | train s | ratings/s | RMSE | peak RSS MiB |",
                "|:--|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
        for r in gpu["rows"]:
            out.append(f"| {r['case']} | {r['batch_size']} | {r['epochs']} | {r['epoch_s_median']:.2f} |"
                       f" {r['train_s']:.1f} | {r['ratings_per_s']:,.0f} | {r['rmse']:.4f} |"
                       f" {r['peak_rss_mib']:.0f} |")  # fmt: skip
    else:
        out += [
            "Not measured here: no CUDA device was available to the run that generated this file. On a machine",
            "with one, `python bench/bench_peers.py` fills this section itself (synthetic ml-1m- and",
            "ml-25m-shaped MF epoch times, device named); the same numbers alone come from",
            "`python bench/bench_mf.py --only speed --device cuda` (bench/out/mf.json).",
        ]
    out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default=",".join(bench_models.KINDS), help="our model kinds")
    ap.add_argument("--splits", default=",".join(PEER_SPLITS))
    ap.add_argument("--svdpp-splits", default=",".join(PEER_SPLITS), help="splits SVD++ runs on (it is slow)")
    ap.add_argument("--shared", default=str(bench_models.SHARED))
    ap.add_argument("--gpu", choices=["auto", "off"], default="auto", help="auto: GPU section when CUDA is present")
    ap.add_argument("--ml25m-epochs", type=int, default=2)
    ap.add_argument("--pause-while", default=None, metavar="FILE",
                    help="wait between cases while FILE exists (a shared machine's quiet lock)")  # fmt: skip
    ap.add_argument("--out", default="bench/out/peers.json")
    ap.add_argument("--results", default="bench/RESULTS.md")
    a = ap.parse_args()
    try:
        import surprise  # noqa: F401
    except ImportError:
        sys.exit("scikit-surprise is not installed: pip install -e '.[peers]'")
    started = time.perf_counter()
    command = "python bench/bench_peers.py" + "".join(f" {x}" for x in sys.argv[1:])
    machine = _machine()
    seed = machine.pop("seed")
    result: dict[str, Any] = {"command": command, "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                              "machine": machine, "seed": seed, "rows": [], "notes": {}}  # fmt: skip
    splits = [s for s in a.splits.split(",") if s]
    result["splits"] = splits
    kinds = [k for k in a.kinds.split(",") if k]
    svdpp_splits = {s for s in a.svdpp_splits.split(",") if s}
    tmp = Path(tempfile.mkdtemp(prefix="bench_peers_"))
    print(f"{'split':<14}{'model':<16}{'rmse':>9}{'mae':>9}{'fit_s':>9}{'peak_MiB':>10}{'x_svd':>8}", flush=True)
    for split in splits:
        specs = bench_models.SPLITS[split]
        exports: list[str] = []
        checks: list[dict[str, Any]] = []
        for i, spec in enumerate(specs):
            path = tmp / f"{split}-{i}.npz"
            checks.append(bench_models.fresh(_prepare, spec, a.shared, str(path)))
            exports.append(str(path))
        peers = [p for p in PEERS if p != "svdpp" or split in svdpp_splits]
        svd_s: float | None = None
        for model in [*peers, *kinds]:
            runs = []
            for spec, export, check in zip(specs, exports, checks, strict=True):
                _pause_while(a.pause_while)
                if model in PEERS:
                    run = bench_models.fresh(_surprise_case, model, spec, a.shared, export, seed)
                    if (run["n_train"], run["n_test"]) != (check["n_train"], check["n_test"]):
                        sys.exit(f"{split} {spec}: Surprise saw {run['n_train']}/{run['n_test']} train/test rows,"
                                 f" our pipeline {check['n_train']}/{check['n_test']}: not the same split")  # fmt: skip
                else:
                    run = bench_models.fresh(bench_models._case, model, spec, a.shared)
                runs.append(run)
            row = _summarise(split, model, runs)
            row["label"] = PEER_NAMES.get(model, f"movierec {model}")
            if model == "svd":
                svd_s = row["train_s"]
            row["time_ratio_to_svd"] = row["train_s"] / svd_s if svd_s else None
            result["rows"].append(row)
            _write(result, a, started, done=False)
            ratio = f"{row['time_ratio_to_svd']:8.2f}" if svd_s else f"{'n/a':>8}"
            print(f"{split:<14}{model:<16}{row['rmse']:9.4f}{row['mae']:9.4f}{row['train_s']:9.1f}"
                  f"{row['peak_rss_mib']:10.0f}{ratio}", flush=True)  # fmt: skip
        notes = [f"Same rows on both sides: {checks[0]['n_train']:,} train / {checks[0]['n_test']:,} test"
                 + (" (u1; every fold checked)." if len(checks) > 1 else ".")]  # fmt: skip
        if "svdpp" not in peers:
            notes.append("SVD++ not run on this split (--svdpp-splits).")
        result["notes"][split] = notes
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    device = result["machine"]["cuda"] if a.gpu == "auto" else None
    if device:
        _pause_while(a.pause_while)
        rows = [bench_mf.in_fresh_process("_speed_case", "ml-1m", None, "cuda"),
                bench_mf.in_fresh_process("_speed_case", "ml-25m", a.ml25m_epochs, "cuda")]  # fmt: skip
        result["gpu"] = {"device": rows[0]["device"] or device, "ml25m_epochs": a.ml25m_epochs, "rows": rows}
        for r in rows:
            print(f"GPU {r['case']}: {r['epochs']} epochs, median epoch {r['epoch_s_median']:.2f} s ({r['device']})")
    _write(result, a, started, done=True)
    print(f"\nwrote {a.out} and {a.results} ({result['wall_s'] / 60:.1f} min)")


def _write(result: dict[str, Any], a: argparse.Namespace, started: float, done: bool) -> None:
    """Write both files; called after every row too, so a stopped run leaves what it measured (marked partial)."""
    result["wall_s"] = time.perf_counter() - started
    result["complete"] = done
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    Path(a.results).write_text(_markdown(result))


if __name__ == "__main__":
    main()
