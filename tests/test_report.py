"""The training report: `movierec train` draws it beside the published version, `movierec report` redraws it
from the artifact folder alone, and the service serves the served version's page at GET /model/report."""

from __future__ import annotations

import base64
import logging
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from movierec import artifacts, cli, report
from movierec.report_files import REPORT_HTML, TEST_PREDICTIONS, report_dir, report_html
from service.app import create_app
from service.config import ServiceSettings
from trainer.config import load_settings
from trainer.data.synth import generate, write_movielens
from trainer.pipeline import train


def _settings(data_dir, art_dir, **kw):
    """A few seconds of MF training with a validation split (so both curves exist) and a test split."""
    kw = {"epochs": 3, "dim": 8, "split": "random", "valid_fraction": 0.1, "patience": 5, **kw}
    return load_settings(None, data=data_dir, artifacts_dir=art_dir, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A published version (titles and genres from the synthetic MovieLens writer) and its artifacts root."""
    base = tmp_path_factory.mktemp("report")
    data_dir = base / "data"
    write_movielens(generate(80, 60, 2500, rank=4, noise=0.3, seed=11).data, data_dir)
    art_dir = base / "artifacts"
    result = train(_settings(data_dir, art_dir))
    return data_dir, art_dir, result.version_dir


def _assert_full_report(version_dir) -> str:
    """Every figure is a readable, non-empty PNG and the page embeds each one byte for byte."""
    out = report_dir(version_dir)
    page = (out / REPORT_HTML).read_text(encoding="utf-8")
    for name in report.FIGURE_FILES.values():
        png = (out / name).read_bytes()
        assert len(png) > 0, name
        with Image.open(out / name) as img:
            img.verify()
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.size[0] > 0 and img.size[1] > 0, name
        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page, f"{name} is not embedded"
    return page


def test_train_writes_the_report_beside_the_version(trained):
    _, art_dir, version_dir = trained
    page = _assert_full_report(version_dir)
    art = artifacts.load_version(version_dir)  # the version itself is untouched and still loads
    assert sorted(p.name for p in version_dir.iterdir()) == sorted(
        ["manifest.json", *(spec.file for spec in art.manifest.arrays.values())]
    )
    assert report_dir(version_dir) == art_dir / "reports" / art.version
    assert artifacts.list_versions(art_dir) == [art.version]  # the reports folder is never taken for a version

    # the metrics table: the model and every baseline of the manifest, with the model's RMSE
    test = art.manifest.metrics["test"]
    assert {"model", "global_mean", "biases_only", "popularity"} <= set(test)
    for name in test:
        assert f"<td>{name}</td>" in page
    assert f"{test['model']['rmse']:.4f}" in page
    # neighbours of the 4 most-rated movies (no well-known titles in synthetic data), 10 by each measure
    counts = art.arrays["item_rating_count"]
    for code in np.lexsort((np.arange(art.n_items), -counts))[:4]:
        assert f"<h3>{art.item_titles[code]} " in page
    assert page.count("<div class='neighbours'>") == 4
    first = report.top_neighbours(art.item_factors, int(np.argmax(counts)), 10, cosine=True)
    assert f"<td>{art.item_titles[first[0][0]]}</td><td class='num'>{first[0][1]:.3f}</td>" in page


def test_saved_test_histograms_count_every_test_rating(trained):
    _, _, version_dir = trained
    import json

    hist = json.loads((report_dir(version_dir) / TEST_PREDICTIONS).read_text())
    n_test = artifacts.load_version(version_dir).manifest.metrics["n_test"]
    assert hist["n"] == n_test
    assert sum(hist["true"]["counts"]) == n_test and sum(hist["predicted"]["counts"]) == n_test


def test_movierec_report_redraws_from_the_artifact_folder(trained):
    _, art_dir, version_dir = trained
    out = report_dir(version_dir)
    for name in [REPORT_HTML, *report.FIGURE_FILES.values()]:
        (out / name).unlink()
    res = CliRunner().invoke(cli.app, ["report", str(art_dir)])  # an artifacts root: its latest version
    assert res.exit_code == 0, res.output
    _assert_full_report(version_dir)
    before = (out / REPORT_HTML).stat().st_mtime_ns
    res = CliRunner().invoke(cli.app, ["report", str(version_dir)])  # a version folder
    assert res.exit_code == 0, res.output
    assert (out / REPORT_HTML).stat().st_mtime_ns >= before
    _assert_full_report(version_dir)


def test_movierec_report_fails_clearly_on_a_folder_that_is_no_artifact(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    res = CliRunner().invoke(cli.app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    said = " ".join(res.output.split())
    assert said.startswith("error: cannot draw the report:"), said
    assert "neither a version folder" in said
    assert not (tmp_path / "reports").exists()


def test_a_report_that_cannot_be_drawn_fails_the_command_not_the_training(trained, tmp_path, monkeypatch, caplog):
    data_dir, art_dir, version_dir = trained

    def broken(*args, **kwargs):
        raise RuntimeError("the plotting library is on fire")

    monkeypatch.setattr(report, "loss_figure", broken)
    caplog.set_level(logging.WARNING)
    result = train(_settings(data_dir, tmp_path / "art", epochs=1))
    assert result.version_dir is not None
    assert artifacts.latest_version(tmp_path / "art") == result.version_dir  # published and served anyway
    assert "could not draw the training report" in caplog.text and "on fire" in caplog.text
    assert not report_html(result.version_dir).exists()

    res = CliRunner().invoke(cli.app, ["report", str(result.version_dir)])
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())
    assert "cannot draw the report" in said and "on fire" in said and result.version_dir.name in said


def test_service_serves_the_report_of_the_served_version(trained, tmp_path):
    _, art_dir, version_dir = trained
    settings = ServiceSettings(
        artifacts_dir=art_dir, database_url=f"sqlite:///{tmp_path / 's.db'}", reload_interval_s=0
    )
    with TestClient(create_app(settings)) as c:
        r = c.get("/model/report")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/html")
        assert r.content == report_html(version_dir).read_bytes()
        assert "img-src data:" in r.headers["content-security-policy"]  # the embedded PNGs may display
        assert c.get("/model/report", params={"model": "mf"}).status_code == 200
        assert c.get("/model/report", params={"model": "als"}).status_code == 422  # not loaded

    # the same version served from a root without its report: a JSON 404 naming the version
    bare = tmp_path / "bare"
    shutil.copytree(version_dir, bare / version_dir.name)
    artifacts.set_latest(bare, version_dir.name)
    settings = ServiceSettings(artifacts_dir=bare, database_url=f"sqlite:///{tmp_path / 't.db'}", reload_interval_s=0)
    with TestClient(create_app(settings)) as c:
        r = c.get("/model/report")
        assert r.status_code == 404 and r.headers["content-type"] == "application/json"
        assert version_dir.name in r.json()["detail"] and "no training report" in r.json()["detail"]


def test_showcase_prefers_well_known_titles_then_the_most_rated():
    titles = np.array(["Toy Story 2 (1999)", "Fargo (1996)", "Obscure (2001)", "Toy Story (1995)", "Hit (2000)"])
    counts = np.array([50, 10, 1, 80, 500])
    # Toy Story: the most rated of its prefix matches; Fargo; then the most rated of the rest
    assert report.showcase_movies(titles, counts) == [3, 1, 4, 0]


def test_top_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(30, 5)).astype(np.float32)
    for cosine in (False, True):
        got = report.top_neighbours(v, 7, 10, cosine)
        w = v.astype(np.float64)
        scores = w @ w[7]
        if cosine:
            scores /= np.linalg.norm(w, axis=1) * np.linalg.norm(w[7])
        expected = [int(c) for c in np.argsort(-scores) if c != 7][:10]
        assert [c for c, _ in got] == expected
        assert np.allclose([s for _, s in got], scores[expected])
