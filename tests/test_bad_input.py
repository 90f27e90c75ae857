"""Hostile and broken input over real HTTP: a uvicorn server on a socket, requests from httpx.

Every case must be refused with a 4xx (never a 5xx, never a crash such as a RecursionError escaping the
JSON decoder) whose JSON ``detail`` names the offending field, or the problem for a body that cannot be
read at all, because that sentence is what a client developer or the on-call engineer sees first.

Real HTTP rather than the in-process ASGI client: the server's own parser and the body-size limit see
the bytes as sent (a ``Content-Length`` over the limit, a chunked upload with none), which the test
client would shortcut. Complements ``tests/test_service_api.py::test_errors_are_json_and_name_the_problem``
(the common cases, on both stores) and ``tests/test_fuzz_api.py`` (generated cases): these are the
specific inputs attackers and buggy clients send.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from movierec import artifacts
from service.app import create_app
from tests.test_service_api import make_settings, trained  # noqa: F401  (module-scoped fixture)
from tests.test_service_uvicorn import free_port

API_KEY = "test-key"
MAX_K = 50
MAX_BATCH = 5
MAX_BODY_BYTES = 1_000_000  # the service's default limit (ServiceSettings.max_body_bytes)
DEEP = 10_000  # nesting depth: far past CPython's JSON decoder recursion limit (~1,000 on a default stack)


@dataclass(frozen=True)
class Server:
    base: str
    art: artifacts.ModelArtifact
    user: int  # a user the model knows
    movie: int  # a movie the model knows


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory) -> Iterator[Server]:  # noqa: F811
    """The app under uvicorn in a thread (same process, real socket), on a SQLite store holding the
    training data: the store is not what these cases exercise, the request handling is."""
    from service.store.database import make_engine
    from service.store.migrations import upgrade
    from trainer.data.movielens import load_dataset
    from trainer.data.store import load_into_store

    url = f"sqlite:///{tmp_path_factory.mktemp('bad_input') / 'store.db'}"
    upgrade(url)
    engine = make_engine(url)
    load_into_store(load_dataset(trained[0]), engine)
    engine.dispose()
    settings = make_settings(trained[1], url, max_k=MAX_K, max_batch=MAX_BATCH, api_key=API_KEY)
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not uv.started:
        assert thread.is_alive() and time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    art = artifacts.load_version(trained[1])
    try:
        yield Server(f"http://127.0.0.1:{port}", art, int(art.user_ids[0]), int(art.item_ids[0]))
    finally:
        uv.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, headers={"X-API-Key": API_KEY}, timeout=30) as c:
        yield c


def raw_json(text: str) -> dict[str, Any]:
    """A body sent byte for byte as a JSON client would (httpx's json= refuses NaN and Infinity)."""
    return {"content": text.encode("utf-8"), "headers": {"content-type": "application/json"}}


def nested(depth: int, open_: str, close: str) -> dict[str, Any]:
    return raw_json(open_ * depth + close * depth)


# (method, path, request kwargs, expected status, what the detail must name). {u} and {m} are a user and a
# movie the model knows, so the only thing wrong with each request is the one bad input.
RATING = "/users/{u}/ratings"
RECS = "/users/{u}/recommendations"
SIMILAR = "/movies/{m}/similar"
ID_ROUTES = [("/users/{}/recommendations", "user_id"), ("/users/{}/ratings", "user_id"),
             ("/movies/{}", "movie_id"), ("/movies/{}/similar", "movie_id")]  # fmt: skip
BAD_IDS = ["-1", str(2**63), str(10**30), "1.5", "1e3", "0x10", "ten", "１２", "٣", "é", "🎬", "NaN"]

CASES: list[Any] = [
    # path ids: negative, past int64, not a base-10 ASCII integer (fullwidth and Arabic-Indic digits too)
    *[pytest.param("get", route.format(bad), {}, 422, field, id=f"path-{route.format(field)}-{bad}")
      for route, field in ID_ROUTES for bad in BAD_IDS],
    # k on both top-k routes
    *[pytest.param("get", path, {"params": {"k": k}}, 422, "k", id=f"k={k}-{path}")
      for path in (RECS, SIMILAR) for k in ("0", "-1", str(MAX_K + 1), "1.5", "ten", "", "１０", str(2**63))],
    # enumerations and names
    *[pytest.param("get", path, {"params": {"similarity": s}}, 422, "similarity", id=f"similarity={s!r}-{path}")
      for path in (RECS, SIMILAR) for s in ("euclid", "DOT", "", "cosine\x00")],
    *[pytest.param("get", path, {"params": {"model": "nope"}}, 422, "model", id=f"model=nope-{path}")
      for path in (RECS, SIMILAR)],
    pytest.param("post", "/predict", {"params": {"model": "nope"}, "json": {"user_id": 1, "movie_id": 1}}, 422,
                 "model", id="model=nope-predict"),
    pytest.param("get", SIMILAR, {"params": {"genre": "NoSuchGenre"}}, 422, "genre", id="genre-unknown-similar"),
    pytest.param("get", RECS, {"params": {"exclude_rated": "maybe"}}, 422, "exclude_rated", id="exclude_rated"),
    pytest.param("get", RECS, {"params": {"fallback": "always"}}, 422, "fallback", id="fallback"),
    pytest.param("post", "/predict", {"params": {"strict": "perhaps"}, "json": {"user_id": 1, "movie_id": 1}}, 422,
                 "strict", id="strict"),
    # bodies that are not JSON, or not a JSON object
    *[pytest.param("post", path, kwargs, 422, "body", id=f"{name}-{path}")
      for path in ("/predict", RATING)
      for name, kwargs in [
          ("malformed", raw_json("{not json")),
          ("truncated", raw_json('{"user_id": 1, "movie_id": 2')),
          ("truncated-string", raw_json('{"movie_id": 1, "rating": "4')),
          ("empty", raw_json("")),
          ("not-utf8", {"content": b'{"movie_id": 1, "rating": "\xff\xfe"}',
                        "headers": {"content-type": "application/json"}}),
          ("nested-lists", nested(DEEP, "[", "]")),
          ("nested-objects", nested(DEEP, '{"a":', "}")),
          ("top-level-array", raw_json("[]")),
          ("top-level-null", raw_json("null")),
          ("top-level-string", raw_json('"4.5"')),
          ("trailing-garbage", raw_json('{"user_id": 1, "movie_id": 1} x')),
      ]],
    # the wrong content type: the body is valid JSON, declared as something else (or not declared)
    *[pytest.param("post", "/predict", {"content": b'{"user_id": 1, "movie_id": 1}', "headers": headers}, 415,
                   "Content-Type", id=f"content-type-{name}")
      for name, headers in [("text", {"content-type": "text/plain"}), ("form", {"content-type":
                            "application/x-www-form-urlencoded"}), ("xml", {"content-type": "application/xml"})]],
    pytest.param("post", RATING, {"content": b'{"movie_id": 1, "rating": 4}', "headers": {"content-type":
                 "text/plain"}}, 415, "Content-Type", id="content-type-text-ratings"),
    # /predict: bounds of the batch, and ids of the wrong type or size
    pytest.param("post", "/predict", {"json": {"pairs": [{"user_id": 1, "movie_id": 1}] * (MAX_BATCH + 1)}}, 422,
                 "pairs", id="batch-over-max_batch"),
    pytest.param("post", "/predict", {"json": {"pairs": []}}, 422, "pairs", id="batch-empty"),
    pytest.param("post", "/predict", {"json": {"pairs": {"user_id": 1, "movie_id": 1}}}, 422, "pairs",
                 id="batch-not-a-list"),
    *[pytest.param("post", "/predict", {"json": {"user_id": bad, "movie_id": 1}}, 422, "user_id",
                   id=f"predict-user_id={bad!r}")
      for bad in (-1, 2**63, 10**30, 1.5, "1", True, None, [1])],
    pytest.param("post", "/predict", {"json": {"pairs": [{"user_id": 1, "movie_id": 2**64}]}}, 422, "movie_id",
                 id="predict-pair-movie_id-huge"),
    pytest.param("post", "/predict", {"json": {"user_id": 1, "movie_id": 1, "user": 2}}, 422, "user",
                 id="predict-unknown-field"),
    # ratings: off the scale, not finite, not a number; ids and timestamps of the wrong type or size
    *[pytest.param("post", RATING, raw_json(f'{{"movie_id": {{m}}, "rating": {bad}}}'), 422, "rating",
                   id=f"rating={bad}")
      for bad in ("5.5", "0", "1e308", "-1e308", "1e999", "NaN", "Infinity", "-Infinity", '"4"', "true", "null",
                  "[4]", '{"value": 4}')],
    *[pytest.param("post", RATING, {"json": {"movie_id": bad, "rating": 4}}, 422, "movie_id", id=f"movie_id={bad!r}")
      for bad in (-1, 2**63, 10**30, 1.5, "1", True)],
    *[pytest.param("post", RATING, {"json": {"movie_id": "{m}", "rating": 4, "timestamp": bad}}, 422, "timestamp",
                   id=f"timestamp={bad!r}")
      for bad in (-1, 2**62 + 1, "yesterday", 1.5)],
    pytest.param("post", RATING, {"json": {"movie_id": "{m}", "rating": 4, "comment": "great"}}, 422, "comment",
                 id="rating-unknown-field"),
]  # fmt: skip


def _fill(value: Any, server: Server) -> Any:
    """Put the known user and movie into a case: ``"{m}"`` as a JSON number, ``{u}``/``{m}`` in text."""
    if value == "{m}":
        return server.movie
    if isinstance(value, str):
        return value.replace("{u}", str(server.user)).replace("{m}", str(server.movie))
    if isinstance(value, bytes):
        return value.replace(b"{u}", str(server.user).encode()).replace(b"{m}", str(server.movie).encode())
    if isinstance(value, dict):
        return {k: _fill(v, server) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, server) for v in value]
    return value


def assert_names_the_problem(r: httpx.Response, status: int, names: str) -> None:
    assert r.status_code == status, f"{r.status_code}: {r.text[:500]}"
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["detail"], str) and names in body["detail"], body


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "names"), CASES)
def test_bad_input_is_a_4xx_naming_the_problem(http, server, method, path, kwargs, status, names):
    kwargs = dict(kwargs)
    if "json" in kwargs:
        kwargs["json"] = _fill(kwargs["json"], server)
    if "content" in kwargs:
        kwargs["content"] = _fill(kwargs["content"], server)
    r = http.request(method.upper(), _fill(path, server), **kwargs)
    assert_names_the_problem(r, status, names)
    if status == 422:
        # field errors are also listed one by one, with where they are, for programs to act on
        errors = r.json()["errors"]
        assert errors and all({"loc", "msg", "type"} <= set(e) for e in errors)


def test_the_cases_are_not_refused_for_another_reason(http, server):
    """The same requests with the bad part made good succeed: each case above fails for its bad input
    alone (not, say, a missing key or an unknown user)."""
    u, m = server.user, server.movie
    scale = server.art.manifest.rating_scale
    assert http.get(f"/users/{u}/recommendations", params={"k": MAX_K, "similarity": "cosine"}).status_code == 200
    assert http.get(f"/movies/{m}/similar", params={"k": MAX_K, "similarity": "dot"}).status_code == 200
    assert http.get(f"/users/{u}/ratings").status_code == 200
    assert http.get(f"/movies/{m}").status_code == 200
    pairs = [{"user_id": u, "movie_id": m}] * MAX_BATCH
    assert http.post("/predict", json={"pairs": pairs}, params={"strict": "false"}).status_code == 200
    assert http.post("/predict", json={"user_id": 2**63 - 1, "movie_id": m}).status_code == 200  # largest id
    ok = http.post(f"/users/{u}/ratings", json={"movie_id": m, "rating": scale.high, "timestamp": 2**62})
    assert ok.status_code in (200, 201), ok.text
    ok = http.post(f"/users/{u}/ratings", content=b'{"movie_id": %d, "rating": %s}' % (m, str(scale.low).encode()),
                   headers={"content-type": "application/json; charset=utf-8"})  # fmt: skip
    assert ok.status_code == 200, ok.text


def test_deep_nesting_does_not_hurt_the_server(http, server):
    """A body nested past the decoder's recursion limit is refused as invalid JSON, repeatedly, and the
    server answers normally afterwards (no worker left broken by a RecursionError)."""
    for _ in range(3):
        r = http.post("/predict", **nested(DEEP, "[", "]"))
        assert_names_the_problem(r, 422, "nested too deeply")
    assert http.post("/predict", json={"user_id": server.user, "movie_id": server.movie}).status_code == 200


@pytest.mark.parametrize("path", ["/predict", RATING])
def test_oversized_body_is_413_unread(http, server, path):
    """Over max_body_bytes: 413 naming the limit, from the declared Content-Length (nothing read)."""
    pair = b'{"user_id": 1, "movie_id": 1},'
    body = b'{"pairs": [' + pair * (MAX_BODY_BYTES // len(pair) + 1) + b'{"user_id": 1, "movie_id": 1}]}'
    assert len(body) > MAX_BODY_BYTES
    r = http.post(_fill(path, server), content=body, headers={"content-type": "application/json"})
    assert_names_the_problem(r, 413, "too large")
    assert str(MAX_BODY_BYTES) in r.json()["detail"]


def test_oversized_chunked_body_is_413(http):
    """No Content-Length (a chunked upload): the limit is enforced on the bytes as they arrive."""

    def chunks() -> Iterator[bytes]:
        yield b'{"pairs": ['
        for _ in range(MAX_BODY_BYTES // 60_000 + 2):
            yield b'{"user_id": 1, "movie_id": 1},' * 2_000  # 60,000 bytes
        yield b'{"user_id": 1, "movie_id": 1}]}'

    r = http.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert_names_the_problem(r, 413, "too large")


def test_openapi_documents_the_error_bodies_sent(http):
    """Every 422 in the schema is the ``Error`` shape these tests receive (FastAPI's default advertises a
    list under ``detail``), and every operation taking a body documents the 415 for a wrong content type."""
    schema = http.get("/openapi.json").json()
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            responses = op["responses"]
            if "422" in responses:
                assert responses["422"]["content"]["application/json"]["schema"] == error, (method, path)
            if "requestBody" in op:
                assert responses["415"]["content"]["application/json"]["schema"] == error, (method, path)
    assert "HTTPValidationError" not in json.dumps(schema)
