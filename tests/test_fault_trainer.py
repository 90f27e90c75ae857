"""Fault injection: ``movierec train`` killed with SIGKILL during training and at points inside publish.

After every kill the previously published version must still be what is served: ``latest`` and
``latest-<kind>`` unchanged, :func:`artifacts.load_version` loads and validates it, nothing partial is
ever picked by :func:`artifacts.latest_version` or listed by :func:`artifacts.list_versions`, a service
started on the root serves it, and the next normal ``movierec train`` publishes a new version over
whatever the kill left behind (a crashed publish's ``.tmp-*`` folder is removed by a later publish once
it is an hour old, so leftovers do not pile up).

The trainer runs as a real subprocess through a small wrapper: the real CLI (``movierec.cli.main``) with,
at most, one function of the publish path replaced by ``os.kill(os.getpid(), SIGKILL)``, so the kill
lands at an exact point (a timed kill would land there by chance only). The "during training" kill comes
from outside, after the wrapper reports the first finished epoch.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from movierec import artifacts
from service.app import create_app
from service.config import ServiceSettings
from trainer.data.synth import generate, write_movielens

REPO = Path(__file__).resolve().parent.parent
KIND = "mf"

# Runs the real CLI with argv from the command line; KILL_AT picks the injected fault:
#   epoch       report each finished epoch on stderr ("EPOCH n"); the test kills from outside
#   arrays      SIGKILL once 3 array files are written into the temporary folder (before the manifest,
#               the rename and any pointer)
#   rename      SIGKILL at the first pointer switch: the version folder is renamed into place, no pointer moved
#   pointers    SIGKILL between the kind's pointer and the global one (latest-<kind> moved, latest not)
WRAPPER = """
import os, signal, sys
from movierec import artifacts, progress

point = os.environ.get("KILL_AT", "")


def die():
    sys.stderr.write(f"KILLING at {point}\\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


if point == "epoch":
    real_update = progress.EpochProgress.update

    def update(self, m):
        real_update(self, m)
        sys.stderr.write(f"EPOCH {m.epoch}\\n")
        sys.stderr.flush()

    progress.EpochProgress.update = update
elif point == "arrays":
    real_write = artifacts._write_array_durably
    written = []

    def write(path, arr):
        real_write(path, arr)
        written.append(path)
        if len(written) == 3:
            die()

    artifacts._write_array_durably = write
elif point in ("rename", "pointers"):
    real_set_latest = artifacts.set_latest
    calls = []

    def set_latest(root, version, kind=None):
        calls.append(kind)
        if (point == "rename" and len(calls) == 1) or (point == "pointers" and len(calls) == 2):
            die()
        real_set_latest(root, version, kind)

    artifacts.set_latest = set_latest

from movierec.cli import main

sys.argv = ["movierec", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fault-data")
    write_movielens(generate(150, 100, 6000, rank=4, noise=0.3, seed=11).data, out)
    return out


def train_cmd(wrapper: Path, data: Path, root: Path, epochs: int) -> list[str]:
    return [sys.executable, str(wrapper), "train", "--data", str(data), "--out", str(root), "--model", KIND,
            "--dim", "8", "--epochs", str(epochs), "--split", "none", "--patience", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    """(wrapper script, artifacts root with one version published by a normal `movierec train` run)."""
    base = tmp_path_factory.mktemp("fault-trainer")
    wrapper = base / "train_wrapper.py"
    wrapper.write_text(WRAPPER)
    root = base / "artifacts"
    run = subprocess.run(train_cmd(wrapper, data_dir, root, 2), cwd=REPO, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return wrapper, root


@pytest.fixture
def root(tmp_path: Path, published: tuple[Path, Path]) -> Path:
    """A private copy of the published root: each test kills a trainer on its own."""
    copy = tmp_path / "artifacts"
    shutil.copytree(published[1], copy)
    return copy


def pointer(root: Path, kind: str | None = None) -> str:
    return (root / artifacts.pointer_name(kind)).read_text().strip()


def assert_serves(root: Path, version: str, tmp_path: Path) -> None:
    """Pointers, loader and a freshly started service all agree on ``version``."""
    assert pointer(root) == version and pointer(root, KIND) == version
    assert artifacts.latest_version(root).name == version
    assert artifacts.latest_version(root, KIND).name == version
    loaded = artifacts.load_version(root)  # loads and validates every checksum and array
    assert loaded.version == version
    for name in artifacts.list_versions(root):  # anything listed as a version is complete
        artifacts.load_version(root / name)
    settings = ServiceSettings(artifacts_dir=root, database_url=f"sqlite:///{tmp_path / 'store.db'}",
                               reload_interval_s=0)  # fmt: skip
    from service.store.migrations import upgrade

    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        info = c.get("/model").json()
        assert info["version"] == version and info["last_reload_error"] is None
        user = int(loaded.user_ids[0])
        r = c.get(f"/users/{user}/recommendations", params={"k": 3})
        assert r.status_code == 200 and r.json()["model_version"] == version


def run_killed(wrapper: Path, data: Path, root: Path, point: str, epochs: int = 2) -> str:
    """Run the wrapped trainer with the fault at ``point``; it must die by SIGKILL. Returns its stderr."""
    env = {**os.environ, "KILL_AT": point}
    run = subprocess.run(train_cmd(wrapper, data, root, epochs), cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == -signal.SIGKILL, f"exit {run.returncode}, expected SIGKILL:\n{run.stderr[-3000:]}"
    assert f"KILLING at {point}" in run.stderr
    return run.stderr


def train_normally(wrapper: Path, data: Path, root: Path) -> str:
    """A following normal `movierec train` run; returns the version it published."""
    run = subprocess.run(train_cmd(wrapper, data, root, 2), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    new = pointer(root)
    assert pointer(root, KIND) == new
    return new


def leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.startswith("."))


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.mark.slow
def test_killed_during_training(tmp_path: Path, root: Path, published, data_dir: Path) -> None:
    wrapper = published[0]
    before = pointer(root)
    versions = artifacts.list_versions(root)
    env = {**os.environ, "KILL_AT": "epoch"}
    proc = subprocess.Popen(train_cmd(wrapper, data_dir, root, 500), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:  # blocks until the first epoch is done (or the process ends)
            lines.append(line)
            if line.startswith("EPOCH 1"):
                break
        else:
            raise AssertionError("the trainer ended before reporting an epoch:\n" + "".join(lines[-50:]))
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert artifacts.list_versions(root) == versions and not leftovers(root)  # nothing was being written
    assert_serves(root, before, tmp_path)
    new = train_normally(wrapper, data_dir, root)
    assert new != before
    assert_serves(root, new, tmp_path)


@pytest.mark.slow
def test_killed_while_writing_arrays(tmp_path: Path, root: Path, published, data_dir: Path) -> None:
    wrapper = published[0]
    before = pointer(root)
    versions = artifacts.list_versions(root)
    run_killed(wrapper, data_dir, root, "arrays")
    debris = leftovers(root)
    assert len(debris) == 1 and debris[0].name.startswith(".tmp-") and debris[0].is_dir()
    assert len(list(debris[0].glob("*.npy"))) == 3 and not (debris[0] / "manifest.json").exists()
    assert artifacts.list_versions(root) == versions  # the half-written folder is never a version
    assert_serves(root, before, tmp_path)

    # The next publish ignores a fresh leftover (it could be a publish running elsewhere right now) ...
    new = train_normally(wrapper, data_dir, root)
    assert new != before and leftovers(root) == debris
    assert_serves(root, new, tmp_path)
    # ... and removes it once it is over an hour old: killed runs do not pile up model-sized folders.
    age(debris[0], 2 * 3600)
    newer = train_normally(wrapper, data_dir, root)
    assert newer != new and leftovers(root) == []
    assert_serves(root, newer, tmp_path)


@pytest.mark.slow
def test_killed_after_rename_before_pointers(tmp_path: Path, root: Path, published, data_dir: Path) -> None:
    wrapper = published[0]
    before = pointer(root)
    versions = artifacts.list_versions(root)
    run_killed(wrapper, data_dir, root, "rename")
    # A complete version folder now exists but no pointer names it: it is not served.
    orphan = sorted(set(artifacts.list_versions(root)) - set(versions))
    assert len(orphan) == 1 and orphan[0] > before
    artifacts.load_version(root / orphan[0])
    assert not leftovers(root)
    assert_serves(root, before, tmp_path)
    new = train_normally(wrapper, data_dir, root)
    assert new not in (before, orphan[0])
    assert_serves(root, new, tmp_path)


@pytest.mark.slow
def test_killed_between_the_kind_and_global_pointers(tmp_path: Path, root: Path, published, data_dir: Path) -> None:
    """The one kill that does change what is served: ``latest-mf`` already names the new, complete
    version (and the service, which follows the per-kind pointers, serves it) while ``latest`` still
    names the old one. Both are complete and load; the next publish brings them together again."""
    wrapper = published[0]
    before = pointer(root)
    run_killed(wrapper, data_dir, root, "pointers")
    half = pointer(root, KIND)
    assert half != before and pointer(root) == before
    assert artifacts.load_version(root).version == before
    assert artifacts.load_version(root / half).version == half
    assert not leftovers(root)
    new = train_normally(wrapper, data_dir, root)
    assert new not in (before, half)
    assert_serves(root, new, tmp_path)
