"""Biased MF: planted-structure recovery, artifact round trip, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from movierec import artifacts
from movierec.cli import app
from trainer.config import load_settings
from trainer.data.synth import generate, write_movielens
from trainer.models.mf import MFModel, MFParams
from trainer.pipeline import train
from trainer.training import OptimConfig


@pytest.fixture(scope="module")
def planted():
    return generate(300, 200, 30000, rank=4, noise=0.2, seed=3)


def test_mf_recovers_planted_structure_near_noise_floor(planted):
    data = planted.data
    rng = np.random.default_rng(0)
    test_mask = rng.random(len(data)) < 0.1
    tr, te = data.subset(~test_mask), data.subset(test_mask)
    params = MFParams(dim=16, optim=OptimConfig(epochs=40, l2=0.02, lr=1e-2, batch_size=1024, patience=0))
    model = MFModel(params, torch.device("cpu"), torch.Generator().manual_seed(0))
    model.fit(tr)
    pred = model.predict(te.users, te.items)
    rmse = float(np.sqrt(np.mean((pred - te.ratings) ** 2)))
    # floor: the error of the noise-free truth (noise + rounding to the half-star grid)
    floor = float(np.sqrt(np.mean((np.clip(planted.expected(te.users, te.items), 0.5, 5) - te.ratings) ** 2)))
    mean_rmse = float(np.sqrt(np.mean((tr.ratings.mean() - te.ratings) ** 2)))
    assert rmse < floor * 1.25, (rmse, floor)
    assert rmse < 0.6 * mean_rmse


def test_artifact_round_trip_matches_torch_prediction(tmp_path, planted):
    out = tmp_path / "synth"
    write_movielens(planted.data, out)
    settings = load_settings(
        None, data=out, artifacts_dir=tmp_path / "art", epochs=3, dim=8, side_features=("genre", "year")
    )
    result = train(settings)
    art = artifacts.load_version(tmp_path / "art")
    assert art.path == result.version_dir
    u = np.arange(art.n_users).repeat(3)[:5000]
    i = np.random.default_rng(1).integers(0, art.n_items, len(u))
    np.testing.assert_allclose(artifacts.predict(art, u, i), result.model.predict(u, i), atol=1e-5)
    assert art.manifest.metrics["test"]["model"]["rmse"] < art.manifest.metrics["test"]["global_mean"]["rmse"]


def test_cli_train_then_evaluate_and_bad_data_writes_nothing(tmp_path, planted):
    out = tmp_path / "synth"
    write_movielens(planted.data, out)
    runner = CliRunner()
    art = tmp_path / "art"
    mj = tmp_path / "metrics.json"
    args = ["train", "--data", str(out), "--out", str(art), "--epochs", "2", "--dim", "8", "--metrics-json", str(mj)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "test metrics" in res.output and "published" in res.output
    table = json.loads(mj.read_text())["test"]
    assert {"model", "global_mean", "global_median", "biases_only", "popularity"} <= set(table)
    assert {"rmse", "mae", "accuracy", "f1_weighted", "recall@10", "ndcg@20", "hr@20"} <= set(table["model"])
    first = artifacts.latest_version(art)
    res = runner.invoke(app, ["evaluate", str(art), "--data", str(out)])
    assert res.exit_code == 0, res.output
    assert "training: True" in " ".join(res.output.split())

    bad = tmp_path / "bad.csv"
    bad.write_text("userId,movieId,rating,timestamp\n1,2,4.0,10\n1,3,9.0,11\n")
    res = runner.invoke(app, ["train", "--data", str(bad), "--out", str(art), "--epochs", "1"])
    assert res.exit_code != 0
    assert "bad.csv line 3" in " ".join(res.output.split())
    assert artifacts.latest_version(art) == first and len(artifacts.list_versions(art)) == 1


def test_config_file_and_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\ndim = 12\nepochs = 7\nlr = 0.02\n")
    monkeypatch.setenv("MOVIEREC_EPOCHS", "9")
    s = load_settings(cfg, lr=0.03)
    assert (s.dim, s.epochs, s.lr) == (12, 9, 0.03)
    from trainer.config import ConfigError

    with pytest.raises(ConfigError, match="dimm"):
        load_settings(None, dimm=3)


@pytest.mark.parametrize(
    ("requested", "n", "expected"),
    [
        (0, 80_000, 1024),  # ml-100k / ml-latest-small: the tuned batch
        (0, 900_000, 4096),  # ml-1m: about 256 steps per epoch
        (0, 22_500_000, 65536),  # ml-25m: capped
        (0, 10, 1024),
        (512, 900_000, 512),  # an explicit size always wins
    ],
)
def test_auto_batch_size(requested, n, expected):
    from trainer.training import resolve_batch_size

    assert resolve_batch_size(requested, n) == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_matches_cpu_quality(planted):
    data = planted.data
    mask = np.random.default_rng(0).random(len(data)) < 0.1
    tr, te = data.subset(~mask), data.subset(mask)
    rmses = {}
    for dev, amp in (("cpu", False), ("cuda", False), ("cuda", True)):
        params = MFParams(dim=16, optim=OptimConfig(epochs=30, l2=0.02, lr=1e-2, batch_size=1024, patience=0, amp=amp))
        model = MFModel(params, torch.device(dev), torch.Generator().manual_seed(0))
        model.fit(tr)
        assert next(model.module.parameters()).device.type == dev
        rmses[(dev, amp)] = float(np.sqrt(np.mean((model.predict(te.users, te.items) - te.ratings) ** 2)))
    assert abs(rmses[("cuda", False)] - rmses[("cpu", False)]) < 0.02, rmses
    assert abs(rmses[("cuda", True)] - rmses[("cpu", False)]) < 0.05, rmses
