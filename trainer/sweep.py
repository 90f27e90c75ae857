"""Hyper-parameter sweeps and ablations: many :func:`trainer.pipeline.train` runs, one JSON line each.

A sweep config is a TOML (or YAML) file with three tables::

    [base]                 # TrainSettings overrides shared by every run (any field, as in `train --config`)
    data = "../shared/data/movielens/ml-100k"   # relative paths are relative to this file's folder
    split = "ml100k-fold"
    [ablate]               # one field at a time around [base]: the baseline, then each other value
    dim = [8, 16, 32, 64, 128, 256]
    output = ["sigmoid", "linear"]
    # or, instead of [ablate]:
    [grid]                 # the cartesian product of every list (each combination once)
    lr = [1e-3, 5e-3]
    l2 = [0.05, 0.15]

``[ablate]`` is what an ablation study reports: each field's effect with everything else at the base
values (the baseline run is shared by every field, so it runs once). ``[grid]`` is for interactions. A
config holds one of the two; keys are TrainSettings field names (``dim``, ``batch_size``, ``lr``, ``l2``,
``biases``, ``output`` = sigmoid | linear, ``init``, ``side_features`` = [] | ["genre"] | ...).

Every run appends one JSON line to ``OUT/runs.jsonl`` and flushes and fsyncs it before the next run starts,
so a sweep killed at any point keeps every finished run. The run id is a hash of the run's effective
settings (machine-specific fields such as ``device`` left out), so a restarted sweep skips what is already
in the file: no run is ever repeated, and a half-written last line (a crash mid-write) is dropped and its
run redone. Plots (matplotlib, no display needed) and ``summary.md`` are redrawn from the file at the end.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from trainer.config import ConfigError, TrainSettings, load_settings

log = logging.getLogger(__name__)

RUNS_FILE = "runs.jsonl"
SUMMARY_FILE = "summary.md"
#: Settings that say where or how a run executes, not what it computes: left out of the run id so a
#: sweep resumed on another machine (or with another cache) still recognises its finished runs.
NOT_IN_RUN_ID = frozenset({"device", "cache_dir", "artifacts_dir", "database_url"})
MODES = ("ablate", "grid")
#: The settings that decide a run's train/test split: runs sharing them share one loaded split.
SPLIT_FIELDS = ("data", "dataset", "split", "fold", "test_fraction", "leave_last", "seed", "from_db")


class SweepError(ConfigError):
    """A sweep config or results file that cannot be used; the message names the file (and field)."""


@dataclass(frozen=True)
class PlannedRun:
    """One run of the sweep: its settings, what it varies from the base, and its stable id."""

    run_id: str
    varied: dict[str, Any]
    settings: TrainSettings
    identity: dict[str, Any]


@dataclass
class SweepPlan:
    config: Path
    mode: str
    base: dict[str, Any]
    fields: dict[str, list[Any]]  # the varied fields and their values, in config order
    runs: list[PlannedRun]
    base_settings: TrainSettings
    base_identity: dict[str, Any]  # the base's effective settings, as in each row's "settings"


@dataclass
class SweepResult:
    out_dir: Path
    plan: SweepPlan
    rows: list[dict[str, Any]]  # every planned run's row, in plan order
    ran: list[str] = field(default_factory=list)  # run ids trained by this call
    skipped: list[str] = field(default_factory=list)  # run ids already in runs.jsonl
    plots: list[Path] = field(default_factory=list)
    summary: Path | None = None


# ------------------------------------------------------------------------------------------------------------
# config


def read_sweep_config(path: Path) -> tuple[str, dict[str, Any], dict[str, list[Any]]]:
    """Parse and check a sweep file's shape: (mode, base overrides, varied fields -> values)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep config {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            raw: Any = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text) or {}
        else:
            raise SweepError(f"sweep config {path}: unsupported extension (use .toml, .yaml or .yml)")
    except SweepError:
        raise
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise SweepError(f"sweep config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise SweepError(f"sweep config {path}: expected tables [base] and [ablate] or [grid] at the top level")
    unknown = sorted(set(raw) - {"base", *MODES})
    if unknown:
        raise SweepError(f"sweep config {path}: unknown table(s) {unknown}; expected [base] and [ablate] or [grid]")
    present = [m for m in MODES if m in raw]
    if len(present) != 1:
        raise SweepError(
            f"sweep config {path}: needs exactly one of [ablate] (one field at a time) or [grid] (all combinations)"
            + (", not both" if present else "")
        )
    mode = present[0]
    known = set(TrainSettings.model_fields)
    tables: dict[str, dict[str, Any]] = {}
    for name in ("base", mode):
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise SweepError(f"sweep config {path}: [{name}] must be a table of settings")
        table = {str(k).replace("-", "_"): v for k, v in table.items()}
        bad = sorted(k for k in table if k not in known)
        if bad:
            raise SweepError(
                f"sweep config {path}: [{name}] names unknown setting(s) {bad} (fields of TrainSettings, "
                "as `movierec train --config` takes them)"
            )
        tables[name] = table
    fields: dict[str, list[Any]] = {}
    for key, values in tables[mode].items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"sweep config {path}: [{mode}] {key} must be a non-empty list of values")
        fields[key] = values
    if not fields:
        raise SweepError(f"sweep config {path}: [{mode}] varies nothing")
    return mode, tables["base"], fields


def _resolve_paths(values: dict[str, Any], root: Path) -> dict[str, Any]:
    """``data`` relative to the config's folder, so the sweep runs the same from any working directory."""
    if values.get("data") is not None and not Path(values["data"]).expanduser().is_absolute():
        # lexical, not resolve(): a symlinked data folder (CI's ../shared) must keep the path as written
        return {**values, "data": os.path.normpath(os.path.abspath(root / Path(values["data"])))}
    return values


def _identity(settings: TrainSettings, root: Path) -> dict[str, Any]:
    """The settings that define what a run computes, as JSON; ``data`` relative to the config's folder."""
    values = settings.model_dump(mode="json", exclude=set(NOT_IN_RUN_ID))
    if values.get("data"):
        data = os.path.normpath(os.path.abspath(Path(values["data"])))
        values["data"] = Path(os.path.relpath(data, os.path.normpath(os.path.abspath(root)))).as_posix()
    return values


def run_id(identity: dict[str, Any]) -> str:
    """A stable 12-hex-digit id: the same settings give the same id on any machine and in any run order."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _settings(config: Path, values: dict[str, Any], varied: dict[str, Any]) -> TrainSettings:
    try:
        return load_settings(None, **_resolve_paths(values, config.parent))
    except ConfigError as exc:
        what = f"run {_label(varied)}" if varied else "[base]"
        raise SweepError(f"sweep config {config}: {what}: {exc}") from exc


def plan_sweep(config: Path) -> SweepPlan:
    """Every run the config asks for, each validated (a bad value fails before any training) and deduplicated."""
    config = Path(config)
    mode, base, fields = read_sweep_config(config)
    base_settings = _settings(config, base, {})
    base_identity = _identity(base_settings, config.parent)
    combos: list[dict[str, Any]]
    if mode == "grid":
        keys = list(fields)
        combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*fields.values())]
    else:
        combos = [{}] + [{key: value} for key, values in fields.items() for value in values]
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    for varied in combos:
        settings = _settings(config, {**base, **varied}, varied)
        identity = _identity(settings, config.parent)
        rid = run_id(identity)
        if rid in seen:  # e.g. an ablation value equal to the base value: that is the baseline run
            continue
        seen.add(rid)
        if mode == "ablate":  # name only what differs from the baseline (the shared baseline varies nothing)
            varied = {k: v for k, v in varied.items() if identity.get(k) != base_identity.get(k)}
        runs.append(PlannedRun(rid, varied, settings, identity))
    return SweepPlan(config, mode, base, fields, runs, base_settings, base_identity)


def default_out_dir(config: Path) -> Path:
    """``sweeps/<config stem>/`` beside the config file."""
    return Path(config).parent / "sweeps" / Path(config).stem


# ------------------------------------------------------------------------------------------------------------
# the results file


def read_runs(path: Path) -> list[dict[str, Any]]:
    """Rows of a runs file; a half-written last line (a crash mid-write) is cut off the file and ignored.

    A bad line anywhere else is not a crash artefact (lines are fsynced one by one), so it is an error
    naming the line rather than something to skip silently.
    """
    if not path.is_file():
        return []
    blob = path.read_bytes()
    complete, _, partial = blob.rpartition(b"\n")
    if partial.strip():
        log.warning("%s: dropping a half-written last line (an interrupted write); its run is redone", path)
        with path.open("r+b") as fh:  # so the next append starts on a line of its own
            fh.truncate(len(complete) + 1 if complete or blob.startswith(b"\n") else 0)
            fh.flush()
            os.fsync(fh.fileno())
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(complete.split(b"\n") if complete else [], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "run_id" not in row:
                raise ValueError("no run_id")
        except ValueError as exc:
            raise SweepError(f"{path}:{number}: not a run row ({exc}); fix or remove the line") from exc
        rows.append(row)
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One line, flushed and fsynced: once this returns, the run survives a kill or a power cut."""
    line = json.dumps(_finite(row), sort_keys=False, separators=(",", ":"), allow_nan=False) + "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def _finite(value: Any) -> Any:
    """NaN and infinities as null: strict JSON, readable by any tool (softmax has no train RMSE, say)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------------------
# running


def run_one(planned: PlannedRun, split_cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one run through the pipeline (nothing published) and return its row.

    Test metrics are those of the model the pipeline keeps (the best validation epoch's weights when early
    stopping is on). Train RMSE is that model re-scored on the whole training split (including the share
    held out for early stopping), so ``rmse_gap`` = test RMSE - train RMSE is the generalisation gap the
    model ends with, not the running average the epoch loop logs while weights change.
    """
    from trainer.evaluation import rating_metrics
    from trainer.pipeline import load_data, split_data, train

    settings = planned.settings
    t0 = time.perf_counter()
    result = train(settings, publish=False)
    wall = time.perf_counter() - t0
    metrics = result.metrics
    key = _json({k: planned.identity.get(k) for k in SPLIT_FIELDS})
    cache = split_cache if split_cache is not None else {}
    if key not in cache:
        data, path = load_data(settings)
        cache.clear()  # one split at a time: a sweep over folds should not hold them all
        cache[key] = split_data(data, path, settings)[0]
    seen = cache[key]
    train_row = rating_metrics(seen.ratings, result.model.predict(seen.users, seen.items))
    test = metrics.get("test", {}).get("model", {})
    history = metrics["history"]
    valid = [e["valid_rmse"] for e in history if e.get("valid_rmse") is not None]
    row: dict[str, Any] = {
        "neighbours": probe_neighbours(result.model, seen),
        "run_id": planned.run_id,
        "status": "ok",
        "varied": planned.varied,
        "test_rmse": test.get("rmse"),
        "test_mae": test.get("mae"),
        "test_accuracy": test.get("accuracy"),
        "best_valid_rmse": min(valid) if valid else None,
        "train_rmse": train_row["rmse"],
        "train_accuracy": train_row["accuracy"],
        "rmse_gap": test["rmse"] - train_row["rmse"] if "rmse" in test else None,
        "best_epoch": metrics["best_epoch"],
        "epochs_run": metrics["epochs_run"],
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "test": test,
        "history": history,
        "settings": planned.identity,
        "finished_at": _now(),
    }
    return row


PROBE_ITEMS = 10  # the most-rated training movies whose neighbours each run records
PROBE_K = 10


def probe_neighbours(model: Any, seen: Any) -> dict[str, list[list[int]]] | None:
    """Top-10 neighbours (item codes) of the most-rated training movies, by dot product and by cosine of
    the exported movie vectors: what a regulariser (gravity's lambda_g, L2, the embedding size) does to
    "similar movies" shows as how much these lists change across a sweep. None for kinds without plain
    movie vectors (sequence exports an ONNX graph; its export is too costly to run per sweep run)."""
    if getattr(model, "kind", None) == "sequence":
        return None
    v = np.asarray(model.export().arrays["item_factors"], dtype=np.float64)
    counts = np.bincount(np.asarray(seen.items), minlength=len(v))
    probes = np.argsort(-counts, kind="stable")[:PROBE_ITEMS]
    out: dict[str, list[list[int]]] = {"probes": [[int(p)] for p in probes]}
    norms = np.linalg.norm(v, axis=1)
    for name in ("dot", "cosine"):
        lists = []
        for p in probes:
            scores = v @ v[p]
            if name == "cosine":
                scores = scores / np.maximum(norms * norms[p], 1e-12)
            scores[p] = -np.inf
            lists.append([int(c) for c in np.argsort(-scores, kind="stable")[:PROBE_K]])
        out[name] = lists
    return out


def neighbour_overlap(a: dict[str, Any] | None, b: dict[str, Any] | None, name: str) -> float | None:
    """Mean Jaccard overlap of two runs' neighbour lists (same probes), or None when either lacks them."""
    if not a or not b or a.get("probes") != b.get("probes"):
        return None
    pairs = zip(a[name], b[name], strict=True)
    return float(np.mean([len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in pairs]))


def run_sweep(
    config: Path,
    out_dir: Path | None = None,
    on_run: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Run every planned run not yet in ``OUT/runs.jsonl``, then redraw the plots and the summary.

    ``on_run(done, total, row)`` is called after each run is safely on disk. A run whose training diverges
    (non-finite loss) is recorded with ``status = "failed"`` and not retried: it would diverge again.
    """
    plan = plan_sweep(config)
    out = Path(out_dir) if out_dir is not None else default_out_dir(config)
    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / RUNS_FILE
    done = {row["run_id"]: row for row in read_runs(runs_path)}
    planned_ids = [p.run_id for p in plan.runs]
    stale = sorted(set(done) - set(planned_ids))
    if stale:
        log.info("%s: %d row(s) from runs this config no longer plans are kept but not reported", runs_path, len(stale))
    result = SweepResult(out, plan, rows=[], skipped=[r for r in planned_ids if r in done])
    todo = [p for p in plan.runs if p.run_id not in done]
    log.info("sweep %s: %d runs (%s), %d already done, %d to run -> %s",
             config, len(plan.runs), plan.mode, len(result.skipped), len(todo), out)  # fmt: skip
    split_cache: dict[str, Any] = {}
    for planned in todo:
        log.info("run %s: %s", planned.run_id, _label(planned.varied) or "baseline")
        try:
            row = run_one(planned, split_cache)
        except FloatingPointError as exc:
            row = {"run_id": planned.run_id, "status": "failed", "varied": planned.varied, "error": str(exc),
                   "settings": planned.identity, "finished_at": _now()}  # fmt: skip
        append_row(runs_path, row)
        done[planned.run_id] = row
        result.ran.append(planned.run_id)
        if on_run is not None:
            on_run(len(result.skipped) + len(result.ran), len(plan.runs), row)
    result.rows = [done[r] for r in planned_ids if r in done]
    result.plots = draw_plots(plan, result.rows, out)
    result.summary = write_summary(plan, result.rows, out, result.plots)
    return result


# ------------------------------------------------------------------------------------------------------------
# reporting


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _value_label(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return "+".join(map(str, value)) or "none"
    return str(value)


def _label(varied: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value_label(v)}" for k, v in varied.items())


@dataclass
class _Group:
    label: str
    rows: list[dict[str, Any]]

    def best(self) -> dict[str, Any]:
        """The group's run with the lowest test RMSE (the one its line and gap bar show)."""
        return min(self.rows, key=lambda r: r["test_rmse"])


def _groups(plan: SweepPlan, rows: Iterable[dict[str, Any]], key: str) -> list[_Group]:
    """Runs by their value of ``key``, in the config's order of values.

    Ablation: the runs varying ``key`` plus the baseline (marked "(base)"). Grid: every run, each value's
    bars showing the best run over the other fields' values.
    """
    ok = [r for r in rows if r.get("status") == "ok" and r.get("test_rmse") is not None]
    if plan.mode == "ablate":
        ok = [r for r in ok if set(r["varied"]) <= {key}]
    base_value = _json(plan.base_identity.get(key))
    order = [_json(v) for v in plan.fields[key]]
    if plan.mode == "ablate" and base_value not in order:
        order.insert(0, base_value)
    by_value: dict[str, list[dict[str, Any]]] = {}
    for row in ok:
        by_value.setdefault(_json(row["settings"].get(key)), []).append(row)
    groups = []
    for value in sorted(by_value, key=lambda v: order.index(v) if v in order else len(order)):
        label = _value_label(json.loads(value))
        if plan.mode == "ablate" and value == base_value:
            label += " (base)"
        groups.append(_Group(label, by_value[value]))
    return groups


def draw_plots(plan: SweepPlan, rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Per varied field: bars of test accuracy, test RMSE and the RMSE gap, and per-epoch curves.

    The per-epoch curves are test half-star accuracy when the runs set ``track_test`` (the pipeline then
    scores the test split after every epoch), else validation RMSE (train RMSE without a validation split).
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display, Agg canvas by default

    written: list[Path] = []
    for key in plan.fields:
        groups = _groups(plan, rows, key)
        if not groups:
            continue
        labels = [g.label for g in groups]
        suffix = "" if plan.mode == "ablate" else " (best over the other grid fields)"
        bars = [
            ("accuracy", "test half-star accuracy", [max(r["test_accuracy"] for r in g.rows) for g in groups]),
            ("rmse", "test RMSE", [g.best()["test_rmse"] for g in groups]),
            ("gap", "test RMSE - train RMSE", [g.best()["rmse_gap"] for g in groups]),
        ]
        for name, ylabel, values in bars:
            fig = Figure(figsize=(max(4.0, 0.9 * len(groups) + 2), 3.6), layout="constrained")
            ax = fig.add_subplot()
            drawn = ax.bar(range(len(groups)), values, color="tab:blue")
            ax.bar_label(drawn, fmt="%.4f", fontsize=7)
            ax.set_xticks(
                range(len(groups)),
                labels,
                rotation=30 if len(groups) > 5 else 0,
                ha="right" if len(groups) > 5 else "center",
            )
            ax.set_xlabel(key)
            ax.set_ylabel(ylabel)
            if name != "gap":  # differences are what matter; a zero baseline would flatten them
                low, high = min(values), max(values)
                pad = max((high - low) * 0.5, abs(high) * 0.01, 1e-3)
                ax.set_ylim(low - pad, high + pad)
            ax.set_title(f"{ylabel} by {key}{suffix}", fontsize=9)
            path = out / f"{key}-{name}.png"
            fig.savefig(path, dpi=110)
            written.append(path)

        reference = next((g.best() for g in groups if g.label.endswith("(base)")), groups[0].best())
        overlaps = {
            name: [neighbour_overlap(reference.get("neighbours"), g.best().get("neighbours"), name) for g in groups]
            for name in ("dot", "cosine")
        }
        if all(x is not None for xs in overlaps.values() for x in xs):
            fig = Figure(figsize=(max(4.0, 0.9 * len(groups) + 2), 3.6), layout="constrained")
            ax = fig.add_subplot()
            width = 0.4
            for j, name in enumerate(("dot", "cosine")):
                drawn = ax.bar([i + (j - 0.5) * width for i in range(len(groups))], overlaps[name], width, label=name)
                ax.bar_label(drawn, fmt="%.2f", fontsize=7)
            ax.set_xticks(range(len(groups)), labels)
            ax.set_ylim(0, 1.1)
            ax.set_xlabel(key)
            ax.set_ylabel(f"top-{PROBE_K} neighbour overlap (Jaccard)")
            ax.set_title(f"similar movies vs {reference['varied'] and _value_label(reference['settings'].get(key)) or 'base'}"
                         f": the {PROBE_ITEMS} most-rated movies, by {key}", fontsize=9)  # fmt: skip
            ax.legend(fontsize=7)
            path = out / f"{key}-neighbours.png"
            fig.savefig(path, dpi=110)
            written.append(path)

        fig = Figure(figsize=(6.0, 3.8), layout="constrained")
        ax = fig.add_subplot()

        def everywhere(name: str) -> bool:
            return all(any(e.get(name) is not None for e in g.best()["history"]) for g in groups)

        # test accuracy per epoch when the runs tracked it (``track_test = true``), else validation RMSE
        metric = next((m for m in ("test_accuracy", "valid_rmse") if everywhere(m)), "train_rmse")
        metric_labels = {"test_accuracy": ("test half-star accuracy", "test accuracy"),
                         "valid_rmse": ("validation RMSE", "validation RMSE"),
                         "train_rmse": ("train RMSE (running, no validation split)", "train RMSE")}  # fmt: skip
        for group in groups:
            hist = [e for e in group.best()["history"] if e.get(metric) is not None]
            ax.plot([e["epoch"] for e in hist], [e[metric] for e in hist], marker=".", label=group.label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric_labels[metric][0])
        ax.set_title(f"per-epoch {metric_labels[metric][1]} by {key}{suffix}", fontsize=9)
        ax.legend(title=key, fontsize=7)
        path = out / f"{key}-epochs.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written


def _fmt(value: Any, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_summary(plan: SweepPlan, rows: list[dict[str, Any]], out: Path, plots: list[Path]) -> Path:
    """``summary.md``: what was swept, one table row per run, the failed runs, and the plots."""
    lines = [
        f"# Sweep {plan.config.stem}",
        "",
        f"Config `{plan.config}`, mode **{plan.mode}** "
        f"({'one field at a time around the base' if plan.mode == 'ablate' else 'every combination'}); "
        f"{len(rows)} of {len(plan.runs)} runs done. Base: `{_json(plan.base)}`.",
        "",
        "Test metrics are the kept model's (best validation epoch when early stopping is on); gap = test RMSE - "
        "train RMSE (train RMSE re-scored on the whole training split).",
        "",
        "| run | varied | test RMSE | test MAE | test acc | best valid RMSE | train RMSE | gap | epochs (best) "
        "| train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.get("status") != "ok":
            continue
        lines.append(
            f"| `{row['run_id']}` | {_label(row['varied']) or 'baseline'} | {_fmt(row['test_rmse'])} | "
            f"{_fmt(row['test_mae'])} | {_fmt(row['test_accuracy'])} | {_fmt(row['best_valid_rmse'])} | "
            f"{_fmt(row['train_rmse'])} | {_fmt(row['rmse_gap'])} | {row['epochs_run']} ({row['best_epoch']}) | "
            f"{_fmt(row['train_seconds'], 1)} |"
        )
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        lines += ["", "Failed runs (not retried on resume):", ""]
        lines += [f"- `{r['run_id']}` {_label(r['varied'])}: {r.get('error')}" for r in failed]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    path = out / SUMMARY_FILE
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
