"""`movierec sweep`: one fsynced JSON row per run, resume without repeating a run, plots and summary.

The data is a small planted-structure synthetic set and runs train 2 epochs, so each run takes well under
a second: what is tested is the bookkeeping (ids, resume, truncation, config errors) and that every plot
is a readable PNG, not model quality.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from movierec.cli import app
from trainer.data.synth import generate, write_movielens
from trainer.sweep import RUNS_FILE, SUMMARY_FILE, SweepError, plan_sweep, read_runs, run_sweep

REPO = Path(__file__).resolve().parents[1]

BASE = """
[base]
data = "data"
split = "random"
epochs = 2
dim = 8
patience = 1
device = "cpu"
seed = 3
track_test = true
"""


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with synthetic MovieLens data in data/ (a sweep config's relative `data` points there)."""
    root = tmp_path_factory.mktemp("sweep")
    write_movielens(generate(150, 80, 4000, seed=0).data, root / "data")
    return root


def _config(root: Path, name: str, body: str) -> Path:
    path = root / name
    path.write_text(body, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ablation(sweep_dir: Path):  # type: ignore[no-untyped-def]
    """A finished 4-run ablation: baseline (dim 8), dim=4, biases off, linear output."""
    config = _config(sweep_dir, "ablate.toml", BASE + '[ablate]\ndim = [4, 8]\nbiases = [false]\noutput = ["linear"]\n')
    return config, run_sweep(config)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_ablation_writes_one_row_per_run_and_every_plot(ablation):
    config, result = ablation
    out = config.parent / "sweeps" / "ablate"  # the default: sweeps/<config stem>/ beside the config
    assert result.out_dir == out
    rows = _lines(out / RUNS_FILE)
    # dim=8 is the base value: that run is the baseline, shared by every field, and runs once
    assert len(rows) == 4 and len({r["run_id"] for r in rows}) == 4
    assert sorted(json.dumps(r["varied"], sort_keys=True) for r in rows) == sorted(
        ["{}", '{"dim": 4}', '{"biases": false}', '{"output": "linear"}']
    )
    for row in rows:
        assert row["status"] == "ok"
        assert row["settings"]["dim"] == row["varied"].get("dim", 8)
        assert row["settings"]["data"] == "data"  # relative to the config: the same id from any checkout
        assert 0.0 < row["test_rmse"] < 3.0 and 0.0 < row["test_mae"] <= row["test_rmse"]
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["rmse_gap"] == pytest.approx(row["test_rmse"] - row["train_rmse"])
        assert row["best_valid_rmse"] == min(e["valid_rmse"] for e in row["history"])
        assert [e["epoch"] for e in row["history"]] == list(range(1, row["epochs_run"] + 1))
        # track_test: the test split scored after every epoch; the kept (best-epoch) model's final test
        # score is exactly that epoch's
        assert all(0.0 <= e["test_accuracy"] <= 1.0 and e["test_rmse"] > 0 for e in row["history"])
        best = row["history"][(row["best_epoch"] or row["epochs_run"]) - 1]
        assert best["test_rmse"] == pytest.approx(row["test_rmse"], abs=1e-6)
        assert row["train_seconds"] > 0
    assert result.ran == [r["run_id"] for r in rows] and result.skipped == []

    # neighbours: the 10 most-rated movies' top-10 lists by dot and cosine, recorded per run
    from trainer.sweep import neighbour_overlap

    base_row = next(r for r in rows if r["varied"] == {})
    for row in rows:
        nb = row["neighbours"]
        assert len(nb["probes"]) == 10 and all(len(x) == 10 for x in nb["dot"] + nb["cosine"])
        assert all(p[0] not in lst for p, lst in zip(nb["probes"], nb["dot"], strict=True))
    assert neighbour_overlap(base_row["neighbours"], base_row["neighbours"], "cosine") == 1.0
    other = next(r for r in rows if r["varied"] == {"dim": 4})
    assert 0.0 <= neighbour_overlap(base_row["neighbours"], other["neighbours"], "dot") < 1.0

    kinds = ("accuracy", "rmse", "gap", "epochs", "neighbours")
    expected = {f"{field}-{kind}.png" for field in ("dim", "biases", "output") for kind in kinds}
    assert {p.name for p in result.plots} == expected
    for name in expected:
        path = out / name
        assert path.stat().st_size > 1000, name
        with Image.open(path) as image:
            image.verify()
    summary = (out / SUMMARY_FILE).read_text(encoding="utf-8")
    assert all(f"`{r['run_id']}`" in summary for r in rows)
    assert "4 of 4 runs done" in summary and "dim=4" in summary and "biases=off" in summary


def test_grid_plans_every_combination_once(sweep_dir):
    config = _config(
        sweep_dir, "grid.toml", BASE + "[grid]\nlr = [0.001, 0.005]\nl2 = [0.05, 0.15]\nbatch_size = [256]\n"
    )
    plan = plan_sweep(config)
    assert plan.mode == "grid"
    assert sorted((r.varied["lr"], r.varied["l2"]) for r in plan.runs) == [
        (0.001, 0.05), (0.001, 0.15), (0.005, 0.05), (0.005, 0.15)
    ]  # fmt: skip
    assert all(r.settings.batch_size == 256 and r.settings.epochs == 2 for r in plan.runs)
    assert len({r.run_id for r in plan.runs}) == 4
    assert [r.run_id for r in plan_sweep(config).runs] == [r.run_id for r in plan.runs]  # stable ids


@pytest.mark.slow
def test_killed_sweep_resumes_without_repeating_a_run(sweep_dir, tmp_path):
    config = _config(
        sweep_dir, "resume.toml", BASE.replace("epochs = 2", "epochs = 4") + "[grid]\ndim = [2, 3, 4, 5, 6, 7]\n"
    )
    out = tmp_path / "out"
    runs = out / RUNS_FILE
    log = tmp_path / "sweep.log"  # a file, not a pipe: a full pipe would stall the sweep
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "movierec.cli", "sweep", str(config), "--out", str(out)],
            cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if runs.is_file() and runs.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the sweep ended before it could be killed:\n{log.read_text()[-3000:]}"
        proc.kill()  # SIGKILL: no cleanup, no atexit; whatever is on disk is all there is
    finally:
        proc.kill()
        proc.wait(timeout=30)
    finished = [r["run_id"] for r in read_runs(runs)]  # also cuts a line the kill left half-written
    assert 2 <= len(finished) < 6

    result = run_sweep(config, out)
    ids = [r["run_id"] for r in _lines(runs)]
    assert sorted(ids) == sorted({r.run_id for r in plan_sweep(config).runs})  # each planned run exactly once
    assert len(ids) == len(set(ids)) == 6
    assert result.skipped == finished and set(result.ran).isdisjoint(finished) and len(result.ran) == 6 - len(finished)

    again = run_sweep(config, out)  # nothing left: no training, the report is redrawn
    assert again.ran == [] and len(again.skipped) == 6 and len(_lines(runs)) == 6


def test_truncated_last_line_is_dropped_and_its_run_redone(ablation, tmp_path):
    config, first = ablation
    out = tmp_path / "copy"
    shutil.copytree(first.out_dir, out)
    runs = out / RUNS_FILE
    text = runs.read_text(encoding="utf-8")
    last = text.splitlines()[-1]
    runs.write_text(text[: len(text) - len(last) // 2 - 1], encoding="utf-8")  # a crash mid-write
    assert len(read_runs(runs)) == 3

    result = run_sweep(config, out)
    assert result.ran == [json.loads(last)["run_id"]] and len(result.skipped) == 3
    rows = _lines(runs)  # every line parses: the torn one was cut, not appended to
    assert [r["run_id"] for r in rows] == first.ran


def test_a_bad_line_before_the_last_is_an_error_naming_it(tmp_path):
    runs = tmp_path / RUNS_FILE
    runs.write_text('{"run_id": "a"}\nnot json\n{"run_id": "b"}\n', encoding="utf-8")
    with pytest.raises(SweepError, match=rf"{RUNS_FILE}:2: not a run row"):
        read_runs(runs)


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (BASE + "[grid]\ndimm = [8, 16]\n", ["[grid]", "dimm"]),
        (BASE.replace("epochs = 2", "epoch = 2") + "[ablate]\ndim = [8]\n", ["[base]", "epoch"]),
        (BASE + "[grids]\ndim = [8]\n", ["grids"]),
        (BASE + "[grid]\ndim = [8]\n[ablate]\nlr = [0.1]\n", ["not both"]),
        (BASE + "[ablate]\ndim = [8, 0]\n", ["dim=0", "greater than or equal to 1"]),
        (BASE + "[grid]\ndim = 8\n", ["dim must be a non-empty list"]),
    ],
)
def test_bad_config_fails_naming_the_file_and_the_field(tmp_path, body, names):
    config = _config(tmp_path, "bad.toml", body)
    with pytest.raises(SweepError) as caught:
        plan_sweep(config)
    assert str(config) in str(caught.value)
    for name in names:
        assert name in str(caught.value)
    res = CliRunner().invoke(app, ["sweep", str(config)])
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())
    assert "bad.toml" in said and names[-1] in said
    assert not (tmp_path / "sweeps").exists()  # nothing written before the config is known to be good


def test_example_config_is_the_embedding_ablation_on_the_shared_ml100k():
    """README's `movierec sweep configs/ablation-embedding.toml`: six dims on the official u1 fold.

    Running it takes 2 to 3 minutes (measured in the config's header), too long for the suite; the
    mechanics are exercised above on synthetic data, and this checks the checked-in plan and its data.
    """
    config = REPO / "configs/ablation-embedding.toml"
    plan = plan_sweep(config)
    assert plan.mode == "ablate" and list(plan.fields) == ["dim"]
    assert [r.settings.dim for r in plan.runs] == [64, 8, 16, 32, 128, 256]  # baseline first, once
    for run in plan.runs:
        assert run.settings.split == "ml100k-fold" and run.settings.fold == "1" and run.settings.model == "mf"
        assert run.identity["data"] == "../../shared/data/movielens/ml-100k"
    data = Path(plan.base_settings.data)  # type: ignore[arg-type]
    assert data.resolve() == (REPO.parent / "shared/data/movielens/ml-100k").resolve()
    assert (data / "u1.base").is_file() and (data / "u1.test").is_file()


def test_example_gravity_config_varies_lambda_g_on_the_shared_ml100k():
    """README's `movierec sweep configs/ablation-gravity.toml`: gravity's lambda_g from 0 to 100, baseline 1."""
    plan = plan_sweep(REPO / "configs/ablation-gravity.toml")
    assert plan.mode == "ablate" and list(plan.fields) == ["gravity_lambda_g"]
    assert [r.settings.gravity_lambda_g for r in plan.runs] == [1.0, 0.0, 0.1, 10.0, 100.0]
    assert all(r.settings.model == "gravity" and r.settings.track_test for r in plan.runs)
