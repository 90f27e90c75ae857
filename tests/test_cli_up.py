"""`movierec up`: the README's one command for the main job, from nothing to serving."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from typer.testing import CliRunner

from movierec.cli import app
from tests.test_service_uvicorn import free_port, wait_ready


def test_up_offline_without_data_says_how_to_point_at_local_data(tmp_path, monkeypatch):
    import trainer.data.download as download

    def offline(url, timeout):  # what urlopen raises on a machine without network
        raise download.urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download, "_urlopen", offline)
    monkeypatch.delenv("MOVIEREC_DATA", raising=False)
    monkeypatch.setenv("MOVIEREC_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(
        app, ["up", "--artifacts-dir", str(tmp_path / "art"), "--database-url", f"sqlite:///{tmp_path}/s.db"]
    )
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "--data PATH" in text and "MOVIEREC_DATA" in text and "--synthetic" in text
    assert not (tmp_path / "art").exists()


@pytest.mark.slow
def test_up_synthetic_loads_trains_and_serves(tmp_path):
    port = free_port()
    env = {**os.environ, "MOVIEREC_CACHE_DIR": str(tmp_path / "cache"), "MOVIEREC_EPOCHS": "3"}
    env.pop("MOVIEREC_DATA", None)
    db = f"sqlite:///{tmp_path / 'store.db'}"
    cmd = [sys.executable, "-m", "movierec.cli", "up", "--synthetic", "--port", str(port),
           "--artifacts-dir", str(tmp_path / "art"), "--database-url", db]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout=180)
        info = httpx.get(f"{base}/model").json()
        assert info["model_kind"] == "mf" and info["dataset"]["n_ratings"] == 100_000
        recs = httpx.get(f"{base}/users/1/recommendations", params={"k": 5})
        assert recs.status_code == 200 and len(recs.json()["items"]) == 5
        ratings = httpx.get(f"{base}/users/1/ratings").json()["ratings"]
        assert ratings, "the store was loaded with the data"
        assert not {r["movie_id"] for r in ratings} & {i["movie_id"] for i in recs.json()["items"]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # exactly one model was trained and published
    from movierec import artifacts

    versions = artifacts.list_versions(tmp_path / "art")
    assert len(versions) == 1
    assert (tmp_path / "art" / "reports" / versions[0] / "report.html").is_file()  # and its training report
