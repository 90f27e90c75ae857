"""`movierec db load --if-empty`: the compose trainer's "load MovieLens when the store is empty" step."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from movierec.cli import app
from movierec.cli_db import stored_ratings
from trainer.data.synth import generate, write_movielens


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    syn = generate(40, 30, 600, seed=3)
    return write_movielens(syn.data, tmp_path_factory.mktemp("synth") / "ml"), len(syn.data)


def test_if_empty_loads_an_empty_store_then_leaves_a_filled_one_alone(db_url, data_dir, tmp_path, monkeypatch):
    import trainer.data.download as download

    def no_network(url, timeout):  # a skipped load must not even try to download
        raise AssertionError(f"--if-empty on a filled store tried to download {url}")

    monkeypatch.setattr(download, "_urlopen", no_network)
    monkeypatch.delenv("MOVIEREC_DATA", raising=False)
    path, n = data_dir
    runner = CliRunner()
    assert stored_ratings(db_url) == 0  # no schema yet: empty

    res = runner.invoke(app, ["db", "load", "--if-empty", "--data", str(path), "--database-url", db_url])
    assert res.exit_code == 0, res.output
    assert f"{n} ratings" in _flat(res.output) and "added" in res.output
    assert stored_ratings(db_url) == n

    # Filled: neither the data (a path that does not exist) nor the download (a dataset name) is touched.
    for source in (["--data", str(tmp_path / "does-not-exist")], ["--dataset", "ml-latest-small"]):
        res = runner.invoke(app, ["db", "load", "--if-empty", *source, "--database-url", db_url])
        assert res.exit_code == 0, res.output
        assert f"already holds {n} ratings" in _flat(res.output) and "nothing loaded" in res.output
    assert stored_ratings(db_url) == n


def test_if_empty_loads_a_migrated_but_empty_store(db_url, data_dir):
    path, n = data_dir
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade", "--database-url", db_url]).exit_code == 0
    assert stored_ratings(db_url) == 0
    res = runner.invoke(app, ["db", "load", "--if-empty", "--data", str(path), "--database-url", db_url])
    assert res.exit_code == 0, res.output
    assert stored_ratings(db_url) == n


def test_if_empty_reads_the_environment_and_fails_cleanly(tmp_path, data_dir):
    path, n = data_dir
    db = tmp_path / "env.db"
    assert stored_ratings(f"sqlite:///{db}") == 0
    assert not db.exists(), "counting must not create the SQLite file"
    env = {"MOVIEREC_DATABASE_URL": f"sqlite:///{db}", "MOVIEREC_DATA": str(path)}
    res = CliRunner().invoke(app, ["db", "load", "--if-empty"], env=env)
    assert res.exit_code == 0, res.output
    assert stored_ratings(f"sqlite:///{db}") == n
    res = CliRunner().invoke(app, ["db", "load", "--if-empty", "--database-url", "mysql://u@h/db"])
    assert res.exit_code == 2 and "unsupported database URL" in _flat(res.output)
