"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema (schemathesis).

Hand-written tests check the answers we thought of; this checks the contract on inputs nobody thought
of: for every documented operation, schema-valid (positive) and schema-violating (negative) requests
must never get a 5xx, and every response must match what ``/openapi.json`` promises (a documented
status code, its content type, its body schema). Clients are generated from that document, so an
undocumented 422 body shape is a client bug waiting to happen.

Runs on SQLite with a model trained on planted data (the ``trained`` fixture), through the app's ASGI
interface with its lifespan, so requests go through routing, middleware and error handlers exactly as
under uvicorn. Generation is derandomized: a failure reproduces on every run and every machine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python import asgi as schemathesis_asgi

from service.app import create_app
from tests.test_service_api import make_settings, trained  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

API_KEY = "test-key"
# Generated cases per operation and mode: 7 operations with inputs x 2 modes x 200, plus one request for
# each of the 3 without = 2,803 requests, ~35 s of CPU (~70 s wall on the shared 2-core CI machine).
EXAMPLES_PER_MODE = 200
MIN_REQUESTS = 2000
# Every response: no 5xx, a documented status code, its documented content type and body schema. Negative
# cases (schema-violating requests) must also be refused with a 4xx (negative_data_rejection).
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class CountingApp:
    """The app behind a pure ASGI wrapper that counts the HTTP requests that actually reached it, so the
    test can prove the fuzzing did the volume it claims (a strategy that silently generates nothing, or a
    filter that rejects everything, would otherwise pass)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.total = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.total += 1
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def fuzz_target(trained, tmp_path_factory) -> Iterator[tuple[schemathesis.BaseSchema, CountingApp]]:  # noqa: F811
    """The schema as the app serves it, and the counting app the generated requests go to (lifespan
    started once: the model and the SQLite store holding the training data)."""
    from service.store.database import make_engine
    from service.store.migrations import upgrade
    from trainer.data.movielens import load_dataset
    from trainer.data.store import load_into_store

    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'store.db'}"
    upgrade(url)
    engine = make_engine(url)
    load_into_store(load_dataset(trained[0]), engine)
    engine.dispose()
    app = CountingApp(create_app(make_settings(trained[1], url, max_k=50, max_batch=50, api_key=API_KEY)))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        yield schema, app
    finally:
        schemathesis_asgi.shutdown_lifespans()  # closes the engine and stops the holder, as at server exit


def _fuzz(operation: Any, mode: GenerationMode) -> None:
    """Run ``EXAMPLES_PER_MODE`` generated cases of one operation; the first failing check raises with a
    reproducible request (schemathesis prints it as a curl command)."""
    checks = CONFORMANCE + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

    @settings(
        max_examples=EXAMPLES_PER_MODE,
        derandomize=True,  # same cases on every run: CI failures reproduce locally
        database=None,  # nothing replayed from earlier runs: the run is a function of the code alone
        deadline=None,  # timing belongs to the benchmarks, not to a correctness check
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),  # large schemas generate slowly; that is not a failure
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=checks)

    run()


def test_every_operation_conforms_to_its_schema(fuzz_target, record_property) -> None:
    schema, app = fuzz_target
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = sorted(op.label for op in operations)
    # the whole public API is fuzzed: a route dropped from the schema would silently escape
    for expected in (
        "GET /users/{user_id}/recommendations",
        "POST /predict",
        "GET /movies/{movie_id}",
        "GET /movies/{movie_id}/similar",
        "GET /users/{user_id}/ratings",
        "POST /users/{user_id}/ratings",
        "GET /health",
        "GET /ready",
        "GET /model",
    ):
        assert expected in labels, labels
    failures: list[str] = []
    made: dict[str, int] = {}
    for operation in operations:
        for mode in _modes(operation):
            before = app.total
            try:
                _fuzz(operation, mode)
            except (Exception, BaseExceptionGroup) as e:  # keep going: one report lists every failing operation
                failures.append(f"{operation.label} [{mode.value}]: {type(e).__name__}: {e}")
            made[f"{operation.label} [{mode.value}]"] = app.total - before
    for label, n in made.items():  # the volume, in CI's JUnit report
        record_property(f"requests {label}", n)
    record_property("requests total", sum(made.values()))
    assert not failures, "\n\n".join(failures)
    assert all(made.values()), f"an operation made no request: {made}"
    total = sum(made.values())
    assert total >= MIN_REQUESTS, f"only {total} requests were generated: {made}"


def _modes(operation: Any) -> tuple[GenerationMode, ...]:
    """Negative cases need an input to violate; an operation without any (``/health``) has none."""
    inputs = (operation.path_parameters, operation.query, operation.headers, operation.cookies, operation.body)
    if any(len(p.items) for p in inputs):
        return (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    return (GenerationMode.POSITIVE,)
