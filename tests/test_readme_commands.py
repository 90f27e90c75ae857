"""Every command in README.md's code blocks is exercised: by a named test, by .ci/run, or (docker commands,
CI has no engine) checked statically against docker-compose.yml here.

A command added to the README without an entry below fails :func:`test_every_readme_command_is_accounted_for`.
"""

from __future__ import annotations

import ast
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer

from movierec.cli import app
from tests.compose_model import COMPOSE_FILE, REPO, load_compose, validate_compose, volume_mounts
from tests.readme import readme_commands

E2E = "tests/test_compose_e2e.py::test_compose_flow_load_train_serve_retrain_hot_swap"
DOCKER = "docker: checked by test_docker_commands_match_the_compose_files (no engine in CI)"
BENCH = "benchmark: run by hand, minutes long (bench/ prints its tables and writes bench/out/)"

#: README command -> what exercises it: test node ids ("path::function"), ".ci/run", DOCKER or BENCH.
EXERCISED: dict[str, list[str]] = {
    "make up": [
        "tests/test_readme_commands.py::test_make_up_runs_movierec_up_on_the_shared_data",
        "tests/test_cli_up.py::test_up_synthetic_loads_trains_and_serves",
    ],
    "make test": [".ci/run"],
    "curl 'localhost:8000/users/1/recommendations?k=10&similarity=dot'": [E2E],
    "curl -X POST localhost:8000/predict -H 'content-type: application/json' "
    """-d '{"user_id": 1, "movie_id": 318}'""": [E2E],
    "curl 'localhost:8000/movies/1/similar?k=10&similarity=cosine'": [E2E],
    'curl -X POST localhost:8000/users/1/ratings -H "X-API-Key: $MOVIEREC_API_KEY" '
    "-H 'content-type: application/json' "
    """-d '{"movie_id": 50, "rating": 4.5}'""": [E2E],
    "cp docker/env.example .env": [
        "tests/test_readme_commands.py::test_env_example_copy",
        "tests/test_docker.py::test_env_example_documents_every_variable_with_the_compose_defaults",
    ],
    "docker compose up": [DOCKER, E2E],
    "docker compose -f docker-compose.yml -f docker-compose.cpu.yml up": [
        DOCKER,
        "tests/test_docker.py::test_cpu_override_validates_and_only_drops_the_gpu_reservation",
    ],
    "docker compose run --rm trainer": [DOCKER, E2E],
    "docker compose run --rm trainer --epochs 40 --dim 32": [DOCKER],
    "docker compose cp api:/artifacts ./artifacts-copy": [DOCKER],
    "docker compose down": [DOCKER],
    "movierec train --data PATH --split random|leave-last|ml100k-fold|none --dim 64 --epochs 25 --out artifacts": [
        "tests/test_mf.py::test_cli_train_then_evaluate_and_bad_data_writes_nothing",
    ],
    "movierec train --config train.toml": ["tests/test_mf.py::test_config_file_and_precedence"],
    "movierec train --from-db": ["tests/test_store.py::test_cli_db_load_then_train_from_db", E2E],
    "movierec evaluate artifacts --data PATH": [
        "tests/test_mf.py::test_cli_train_then_evaluate_and_bad_data_writes_nothing",
    ],
    "movierec synth --shape ml-1m --out /tmp/ml1m-synth": ["tests/test_readme_commands.py::test_synth_command"],
    "movierec report artifacts": ["tests/test_report.py::test_movierec_report_redraws_from_the_artifact_folder"],
    "movierec sweep configs/ablation-embedding.toml": [
        "tests/test_sweep.py::test_example_config_is_the_embedding_ablation_on_the_shared_ml100k",
        "tests/test_sweep.py::test_ablation_writes_one_row_per_run_and_every_plot",
        "tests/test_sweep.py::test_killed_sweep_resumes_without_repeating_a_run",
    ],
    "movierec sweep configs/ablation-gravity.toml": [
        "tests/test_sweep.py::test_example_gravity_config_varies_lambda_g_on_the_shared_ml100k",
        "tests/test_sweep.py::test_ablation_writes_one_row_per_run_and_every_plot",
    ],
    "movierec db upgrade": ["tests/test_store.py::test_cli_db_upgrade_reads_the_environment"],
    "movierec db load --data PATH": ["tests/test_store.py::test_cli_db_load_then_train_from_db"],
    "movierec db load --dataset NAME --if-empty": [
        "tests/test_cli_db_if_empty.py::test_if_empty_loads_an_empty_store_then_leaves_a_filled_one_alone",
        E2E,
    ],
    "movierec serve --port 8000 --workers 2": [
        "tests/test_service_uvicorn.py::test_movierec_serve_answers_over_real_http",
        E2E,  # MOVIEREC_WORKERS=2
    ],
    "movierec up [--data PATH | --dataset NAME | --synthetic]": [
        "tests/test_cli_up.py::test_up_synthetic_loads_trains_and_serves",
        "tests/test_cli_up.py::test_up_offline_without_data_says_how_to_point_at_local_data",
    ],
    "python bench/bench_mf.py": [BENCH],
    "python bench/bench_mf.py --only speed": [BENCH],
    "python bench/bench_retrieval.py": [BENCH],
    "python bench/bench_service.py": [BENCH],
    "python bench/bench_load.py": [BENCH],
    "python bench/bench_models.py --speed": [BENCH],
    "python bench/bench_peers.py": [BENCH],
}


def test_every_readme_command_is_accounted_for():
    commands = readme_commands()
    missing = [c for c in commands if c not in EXERCISED]
    assert not missing, f"README commands that nothing exercises (add a test and an entry to EXERCISED): {missing}"
    stale = [c for c in EXERCISED if c not in commands]
    assert not stale, f"entries for commands the README no longer has: {stale}"


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_the_named_tests_exist():
    for command, evidence in EXERCISED.items():
        assert evidence, command
        for item in evidence:
            if item == ".ci/run":
                assert command in (REPO / ".ci/run").read_text(), f".ci/run does not run {command!r}"
            elif item in (DOCKER, BENCH):
                assert command.startswith("docker compose " if item == DOCKER else "python bench/"), command
                if item == BENCH:
                    assert (REPO / command.split()[1]).is_file(), command
            else:
                path, _, name = item.partition("::")
                assert name in _functions(REPO / path), f"{command!r}: {item} does not exist"


# ------------------------------------------------------------------------------------------------------------
# docker compose commands: the files, services, paths and flags they name exist


def _train_command() -> Any:  # typer's click Command (typer may vendor click)
    group = typer.main.get_command(app)
    return group.commands["train"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith("docker ")])
def test_docker_commands_match_the_compose_files(command):
    argv = shlex.split(command)
    assert argv[:2] == ["docker", "compose"], command
    rest, files = argv[2:], []
    while rest and rest[0] in ("-f", "--file"):
        files.append(REPO / rest[1])
        rest = rest[2:]
    for path in files:
        assert path.is_file(), f"{command}: {path.name} does not exist"
    model = load_compose(*(files or [COMPOSE_FILE]))
    validate_compose(model)
    services = model["services"]
    sub, args = rest[0], rest[1:]
    if sub in ("up", "down"):
        assert all(a in ("-d", "--detach", "-v", "--volumes", "--build") for a in args), command
    elif sub == "run":
        assert args[0] == "--rm", command
        service, extra = args[1], args[2:]
        assert service in services, command
        assert services[service]["entrypoint"] == ["/opt/movierec/docker/trainer-entrypoint.sh"]
        # extra arguments reach `movierec train` (the entry point's exec ... "$@"): they must parse there
        if extra:
            _train_command().make_context("train", list(extra))
    elif sub == "cp":
        source, dest = args
        service, _, path = source.partition(":")
        assert service in services, command
        assert path in [target for _, target, _ in volume_mounts(services[service])], command
        assert not dest.startswith("/"), command
    else:
        raise AssertionError(f"{command}: no static check for `docker compose {sub}`")


def test_train_flags_that_do_not_exist_are_refused():
    with pytest.raises(Exception, match="No such option: --epoch"):
        _train_command().make_context("train", ["--epoch", "40"])


# ------------------------------------------------------------------------------------------------------------
# commands run here as written


def test_make_up_runs_movierec_up_on_the_shared_data():
    """`make up` = set up .venv, then `movierec up --data <shared ml-latest-small>` (tested in test_cli_up)."""
    # --no-print-directory: under `make test` (CI) this make is a sub-make, which would print "Entering ..."
    res = subprocess.run(["make", "--no-print-directory", "-n", "up"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last == ".venv/bin/movierec up --data ../shared/data/movielens/ml-latest-small", res.stdout
    assert (REPO / "../shared/data/movielens/ml-latest-small/ratings.csv").resolve().is_file()


def test_synth_command(tmp_path):
    argv = shlex.split("movierec synth --shape ml-1m --out /tmp/ml1m-synth")
    assert argv[:4] == ["movierec", "synth", "--shape", "ml-1m"]
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, [*argv[1:-1], str(tmp_path / "ml1m-synth")])
    assert res.exit_code == 0, res.output
    assert "wrote 1000209 ratings (6040 users x 3706 movies)" in " ".join(res.output.split())


def test_env_example_copy(tmp_path):
    res = subprocess.run(["cp", str(REPO / "docker/env.example"), str(tmp_path / ".env")], timeout=30)
    assert res.returncode == 0
    dotenv = dict(
        line.split("=", 1)
        for line in (tmp_path / ".env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    validate_compose(load_compose(COMPOSE_FILE, env=dotenv))
