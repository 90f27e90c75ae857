"""`docker compose up` without Docker: the compose services' own commands, environment and order, for real.

The test reads docker-compose.yml and the Dockerfile and runs what they say, in compose's order:

* ``db``: the real PostgreSQL at 127.0.0.1:5432 (a fresh database from conftest) stands in for the container;
  the services' ``db`` host is mapped to it.
* ``trainer``: its entry point (the docker/ script the Dockerfile copies to the image's path) with the image's
  ENV and the service's environment; named volumes become folders under tmp_path. The one deviation: the data
  is a small synthetic MovieLens-format set given as ``MOVIEREC_DATA`` (what an offline host would mount), so
  nothing is downloaded, and 3 epochs keep it quick.
* ``api``: its entry point with its environment (its port mapped to a free one on 127.0.0.1 rather than
  0.0.0.0 on all interfaces), healthy once the service's own healthcheck command passes; then real HTTP calls
  to the three main endpoints.
* ``docker compose run --rm trainer`` again: a new version, which the running API serves without a restart.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from movierec import artifacts
from tests.compose_model import (
    COMPOSE_FILE,
    DOCKERFILE,
    REPO,
    depends_on,
    environment,
    load_compose,
    parse_dockerfile,
    service_order,
    volume_mounts,
)
from tests.readme import readme_commands
from tests.test_service_uvicorn import free_port, stop
from trainer.data.synth import generate, write_movielens

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
API_KEY = "e2e-api-key-0123456789"  # MOVIEREC_API_KEY in the test's .env


class ComposeHost:
    """Maps one compose service's container view (paths, db host, port) onto this machine."""

    def __init__(self, model: dict, service: str, volumes_root: Path, db_host: str, db_port: int) -> None:
        self.model, self.name, self.svc = model, service, model["services"][service]
        self.stage = parse_dockerfile(DOCKERFILE)[self.svc["build"]["target"]]
        self.paths: dict[str, Path] = {}
        for source, target, _ in volume_mounts(self.svc):
            assert source in model["volumes"], f"{service}: {source} is not a named volume"
            self.paths[target] = volumes_root / source
            self.paths[target].mkdir(parents=True, exist_ok=True)
        # the image's docker/ scripts come from the repository's docker/ folder
        for sources, dest, flags in self.stage.copies():
            if "from" not in flags and dest.startswith("/opt/movierec/"):
                for src in sources:
                    self.paths[str(Path(dest) / Path(src).name)] = REPO / src
        self.db = ("@db:5432/", f"@{db_host}:{db_port}/")
        self.cwd = volumes_root.parent / f"home-{service}"  # the image's WORKDIR
        self.cwd.mkdir(parents=True, exist_ok=True)

    def path(self, value: str) -> str:
        for target in sorted(self.paths, key=len, reverse=True):
            if value == target or value.startswith(target.rstrip("/") + "/"):
                return str(self.paths[target]) + value[len(target) :]
        return value

    def command(self) -> list[str]:
        entrypoint = self.svc.get("entrypoint") or self.stage.exec_form("ENTRYPOINT") or []
        command = self.svc.get("command") or self.stage.exec_form("CMD") or []
        argv = [self.path(a) for a in [*entrypoint, *command]]
        assert Path(argv[0]).is_file(), f"{self.name}: {argv[0]} is not in the repository"
        return argv

    def healthcheck(self, image: bool = False) -> list[str]:
        """The service's healthcheck command, or with ``image`` the Dockerfile's HEALTHCHECK."""
        if image:
            test = self.stage.healthcheck() or []
        else:
            test = self.svc["healthcheck"]["test"]
            assert test[0] == "CMD", test
            test = test[1:]
        return [sys.executable if a == "python" else self.path(a) for a in test]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's movierec
        container = {k: v for k, v in self.stage.env().items() if k != "PATH"}  # the image's ENV, then compose's
        container.update(environment(self.svc))
        for key, value in container.items():
            env[key] = self.path(value).replace(*self.db)
        env.update(extra)
        return env


def run_service(host: ComposeHost, **extra: str) -> str:
    res = subprocess.run(
        host.command(), env=host.env(**extra), capture_output=True, text=True, timeout=300, cwd=host.cwd
    )
    output = res.stdout + res.stderr
    assert res.returncode == 0, f"{host.name} exited {res.returncode}:\n{output}"
    return " ".join(output.split())


def wait_healthy(host: ComposeHost, proc: subprocess.Popen, env: dict[str, str], log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{host.name} exited {proc.returncode}:\n{log.read_text()}")
        if subprocess.run(host.healthcheck(), env=env, capture_output=True, timeout=30).returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"{host.name} not healthy after {timeout}s:\n{log.read_text()}")


def test_compose_flow_load_train_serve_retrain_hot_swap(postgres_url, tmp_path):
    url = make_url(postgres_url)
    # what a .env would say; the db container's POSTGRES_* become the test server's user and fresh database
    dotenv = {
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "unused-with-trust-auth",
        "POSTGRES_DB": url.database or "",
        "MOVIEREC_API_KEY": API_KEY,  # writes need it (the README's rating curl sends it)
    }
    model = load_compose(COMPOSE_FILE, env=dotenv)
    assert environment(model["services"]["api"])["MOVIEREC_API_KEY"] == API_KEY
    assert service_order(model) == ["db", "trainer", "api"]
    assert depends_on(model["services"]["api"])["trainer"] == "service_completed_successfully"
    volumes = tmp_path / "volumes"
    trainer = ComposeHost(model, "trainer", volumes, url.host or "127.0.0.1", url.port or 5432)
    api = ComposeHost(model, "api", volumes, url.host or "127.0.0.1", url.port or 5432)
    artifacts_dir = trainer.paths["/artifacts"]
    assert api.paths["/artifacts"] == artifacts_dir  # one named volume, shared

    syn = generate(300, 400, 12_000, seed=7)  # ids 1..300 and 1..400: the README's users and movies exist
    data = write_movielens(syn.data, tmp_path / "local-movielens")
    trainer_extra = {"MOVIEREC_DATA": str(data), "MOVIEREC_EPOCHS": "3"}

    # trainer, first run: the store is empty, so it loads the data, then trains on the store and publishes
    out = run_service(trainer, **trainer_extra)
    assert f"added 400 movies (0 already there) and {len(syn.data)} ratings" in out, out
    assert "published" in out
    v1 = artifacts.latest_version(artifacts_dir).name
    assert artifacts.list_versions(artifacts_dir) == [v1]
    manifest = artifacts.load_version(artifacts_dir / v1).manifest
    assert manifest.dataset.source.startswith("database postgresql")
    assert manifest.dataset.n_ratings == len(syn.data)
    before = sorted((p.relative_to(artifacts_dir), p.stat().st_mtime_ns) for p in artifacts_dir.rglob("*"))

    # api: its command, healthy by its own healthcheck (/ready), then the three main endpoints over HTTP
    container_port = int(environment(api.svc)["MOVIEREC_PORT"])
    assert [p.split(":")[-1] for p in api.svc["ports"]] == [str(container_port)]
    port = free_port()
    env = api.env(MOVIEREC_PORT=str(port), MOVIEREC_HOST="127.0.0.1", MOVIEREC_RELOAD_INTERVAL_S="0.5")
    assert env["MOVIEREC_WORKERS"] == "2"
    log = tmp_path / "api.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(api.command(), env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=api.cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(api, proc, env, log, timeout=60)
        assert subprocess.run(api.healthcheck(image=True), env=env, timeout=30).returncode == 0  # /health

        art = artifacts.load_version(artifacts_dir / v1)
        user, movie = int(art.user_ids[0]), int(art.item_ids[0])
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/model").json()["version"] == v1
            recs = http.get(f"/users/{user}/recommendations", params={"k": 5})
            assert recs.status_code == 200, recs.text
            items = [i["movie_id"] for i in recs.json()["items"]]
            assert len(items) == 5 and not set(items) & {int(art.item_ids[c]) for c in art.rated_items(0)}
            pred = http.post("/predict", json={"user_id": user, "movie_id": movie})
            assert pred.status_code == 200, pred.text
            assert 0.5 <= pred.json()["predictions"][0]["rating"] <= 5.0
            sim = http.get(f"/movies/{movie}/similar", params={"k": 5})
            assert sim.status_code == 200, sim.text
            assert len(sim.json()["items"]) == 5 and movie not in [i["movie_id"] for i in sim.json()["items"]]

            # the README's curl commands, as written (localhost:8000 is the published port)
            curls = [c for c in readme_commands() if c.startswith("curl ")]
            assert len(curls) == 4
            for command in curls:
                argv = [a.replace("localhost:8000", f"127.0.0.1:{port}").replace("$MOVIEREC_API_KEY", API_KEY)
                        for a in shlex.split(command)]  # fmt: skip
                res = subprocess.run(["curl", "--fail", "-sS", "--max-time", "10", *argv[1:]], capture_output=True,
                                     text=True, timeout=30)  # fmt: skip
                assert res.returncode == 0, f"{command}: {res.stderr}{res.stdout}"
                assert res.stdout.startswith("{"), f"{command}: {res.stdout}"

            # the API wrote nothing into the (read-only in compose) artifacts volume
            after = sorted((p.relative_to(artifacts_dir), p.stat().st_mtime_ns) for p in artifacts_dir.rglob("*"))
            assert after == before

            # `docker compose run --rm trainer`: the store is not reloaded, a new version is published ...
            out = run_service(trainer, **trainer_extra)
            assert "ratings: nothing loaded (--if-empty)" in out, out  # (plus the one the README's curl posted)
            v2 = artifacts.latest_version(artifacts_dir).name
            assert v2 != v1 and artifacts.list_versions(artifacts_dir) == [v1, v2]
            d = syn.data  # ... trained on the store, the rating the README's curl posted (user 1, movie 50) included
            posted_new = not ((d.user_ids[d.users] == 1) & (d.item_ids[d.items] == 50)).any()
            assert artifacts.load_version(artifacts_dir / v2).manifest.dataset.n_ratings == len(d) + posted_new

            # ... and the running API (every worker) switches to it without a restart
            deadline, in_a_row = time.time() + 30, 0
            while in_a_row < 6:
                assert time.time() < deadline, f"API still serves {http.get('/model').json()}:\n{log.read_text()}"
                in_a_row = in_a_row + 1 if http.get("/model").json()["version"] == v2 else 0
                time.sleep(0.1 if in_a_row else 0.3)
            assert http.get(f"/users/{user}/recommendations", params={"k": 5}).status_code == 200
            assert proc.poll() is None, "the API was restarted or died"
    finally:
        stop(proc)
