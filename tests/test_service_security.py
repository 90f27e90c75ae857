"""Access control, security headers, CORS, the body-size limit and the authenticated admin reload, over
real HTTP (TestClient against ``create_app``, lifespan included) on the tiny model trained in
tests/test_service_api.py.

The store is SQLite only here (``db_url`` is overridden below): these layers sit in front of the routes
and do not depend on the back end; test_service_api.py runs the routes themselves on both.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from movierec import artifacts
from service.app import create_app
from service.config import ServiceSettings
from service.middleware import BodySizeLimitMiddleware, SecurityHeadersMiddleware
from service.security import MISSING, NOT_CONFIGURED, RequireKeyMiddleware
from tests.test_service_api import (  # noqa: F401  (fixtures)
    KEY_HEADERS,
    TEST_API_KEY,
    art,
    make_settings,
    store_url,
    trained,
)

WRONG_KEY = "wrong-key-9876543210"


@pytest.fixture
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SQLite only (overrides conftest's parametrized one)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"


@pytest.fixture
def app_client(trained, store_url):  # noqa: F811
    """Builds a client for settings overrides; every client is closed (lifespan shut down) at teardown."""
    clients: list[TestClient] = []

    def make(**kw: object) -> TestClient:
        client = TestClient(create_app(make_settings(trained[1], store_url, **kw)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(app_client) -> TestClient:
    return app_client()


def ids(art) -> tuple[int, int]:  # noqa: F811
    return int(art.user_ids[0]), int(art.item_ids[0])


def assert_no_secret(response, *secrets: str) -> None:
    text = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    for secret in secrets:
        assert secret not in text


# ------------------------------------------------------------------------------------------------------------
# API key on writes and /admin


def test_rating_post_needs_the_key_and_the_key_is_never_echoed_or_logged(client, art, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    u, m = ids(art)
    body = {"movie_id": m, "rating": 4.0}

    missing = client.post(f"/users/{u}/ratings", json=body)
    assert missing.status_code == 401
    assert missing.json() == {"detail": "missing API key (X-API-Key header)"}
    assert missing.headers["www-authenticate"] == "ApiKey"

    empty = client.post(f"/users/{u}/ratings", json=body, headers={"X-API-Key": ""})
    assert empty.status_code == 401 and empty.json()["detail"] == MISSING

    wrong = client.post(f"/users/{u}/ratings", json=body, headers={"X-API-Key": WRONG_KEY})
    assert wrong.status_code == 403 and wrong.json() == {"detail": "invalid API key"}
    assert "www-authenticate" not in wrong.headers
    # a prefix of the key, or the key with a suffix, is not the key
    for near in (TEST_API_KEY[:-1], TEST_API_KEY + "x", TEST_API_KEY.upper()):
        assert client.post(f"/users/{u}/ratings", json=body, headers={"X-API-Key": near}).status_code == 403

    right = client.post(f"/users/{u}/ratings", json=body, headers=KEY_HEADERS)
    assert right.status_code in (200, 201), right.text
    assert client.get(f"/users/{u}/ratings").status_code == 200  # reads stay open by default

    for r in (missing, empty, wrong, right):
        assert_no_secret(r, TEST_API_KEY, WRONG_KEY)
    logged = "\n".join(f"{rec.getMessage()} {rec.args!r}" for rec in caplog.records)
    assert "refused POST" in logged  # refusals are logged ...
    assert TEST_API_KEY not in logged and WRONG_KEY not in logged  # ... without any key


def test_the_key_is_checked_before_the_body_or_the_model(client, art):  # noqa: F811
    """An anonymous caller learns nothing about ids or the model: 401 even for a body that would be 404."""
    u, _ = ids(art)
    r = client.post(f"/users/{u}/ratings", json={"movie_id": 999_999_999, "rating": 3})
    assert r.status_code == 401
    assert client.post(f"/users/{u}/ratings", json={"movie_id": 999_999_999, "rating": 3},
                       headers=KEY_HEADERS).status_code == 404  # fmt: skip


def test_no_key_configured_closes_writes_and_admin_but_not_reads(app_client, art):  # noqa: F811
    c = app_client(api_key=None)
    u, m = ids(art)
    for headers in ({}, KEY_HEADERS, {"X-API-Key": WRONG_KEY}):
        r = c.post(f"/users/{u}/ratings", json={"movie_id": m, "rating": 4.0}, headers=headers)
        assert r.status_code == 403 and r.json() == {"detail": NOT_CONFIGURED}
        assert "MOVIEREC_API_KEY" in r.json()["detail"]
        admin = c.post("/admin/reload", headers=headers)
        assert admin.status_code == 403 and admin.json() == {"detail": NOT_CONFIGURED}
    assert c.get(f"/users/{u}/recommendations").status_code == 200
    assert c.get(f"/users/{u}/ratings").status_code == 200


def test_an_empty_key_setting_means_no_key(monkeypatch):
    """Compose passes an unset ``${MOVIEREC_API_KEY:-}`` as empty: that must not become the key "" (which
    a request without the header would then match)."""
    monkeypatch.setenv("MOVIEREC_API_KEY", "")
    assert ServiceSettings().api_key is None
    monkeypatch.setenv("MOVIEREC_API_KEY", "   ")
    assert ServiceSettings().api_key is None
    monkeypatch.setenv("MOVIEREC_API_KEY", "s3cret-value")
    assert ServiceSettings().api_key.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(ServiceSettings()) and "s3cret-value" not in str(ServiceSettings().model_dump())


def test_a_settings_error_does_not_print_the_key():
    with pytest.raises(ValidationError) as e:
        ServiceSettings(api_key="s3cret-value", default_k=500, max_k=100)
    assert "s3cret-value" not in str(e.value)


def test_the_comparison_is_constant_time(client, art, monkeypatch):  # noqa: F811
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    u, m = ids(art)
    assert client.post(f"/users/{u}/ratings", json={"movie_id": m, "rating": 4},
                       headers={"X-API-Key": WRONG_KEY}).status_code == 403  # fmt: skip
    assert client.post(f"/users/{u}/ratings", json={"movie_id": m, "rating": 4}, headers=KEY_HEADERS).status_code in (
        200,
        201,
    )
    assert calls == [(WRONG_KEY.encode(), TEST_API_KEY.encode()), (TEST_API_KEY.encode(), TEST_API_KEY.encode())]


def test_a_non_ascii_key_works_from_the_raw_header_bytes(app_client, art):  # noqa: F811
    key = "clé-🔑-0123456789"
    c = app_client(api_key=key, require_key_for_reads=True)
    u, m = ids(art)
    raw = {"X-API-Key": key.encode("utf-8")}
    assert c.post(f"/users/{u}/ratings", json={"movie_id": m, "rating": 4}, headers=raw).status_code in (200, 201)
    assert c.get(f"/users/{u}/recommendations", headers=raw).status_code == 200  # the middleware path
    assert c.get(f"/users/{u}/recommendations", headers={"X-API-Key": b"cl\xc3"}).status_code == 403


# ------------------------------------------------------------------------------------------------------------
# reads


def test_reads_are_open_by_default_and_the_hot_route_has_no_dependency(client, art):  # noqa: F811
    u, m = ids(art)
    assert client.get(f"/users/{u}/recommendations").status_code == 200
    assert client.get(f"/movies/{m}").status_code == 200
    assert client.post("/predict", json={"user_id": u, "movie_id": m}).status_code == 200
    assert RequireKeyMiddleware not in [mw.cls for mw in client.app.user_middleware]
    from service.api.recommendations import router

    route = next(r for r in router.routes if r.path == "/users/{user_id}/recommendations")
    assert route.dependant.dependencies == []  # the fast path is untouched by access control


def test_require_key_for_reads_closes_everything_but_the_probes(app_client, art, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    c = app_client(require_key_for_reads=True)
    u, m = ids(art)
    reads = [("get", f"/users/{u}/recommendations", {}), ("get", f"/movies/{m}", {}),
             ("get", f"/movies/{m}/similar", {}), ("get", f"/users/{u}/ratings", {}), ("get", "/model", {}),
             ("get", "/openapi.json", {}), ("get", "/docs", {}), ("get", "/nope", {}),
             ("post", "/predict", {"json": {"user_id": u, "movie_id": m}})]  # fmt: skip
    for method, path, kw in reads:
        missing = getattr(c, method)(path, **kw)
        assert missing.status_code == 401, path
        assert missing.json() == {"detail": MISSING} and missing.headers["www-authenticate"] == "ApiKey"
        assert missing.headers["x-content-type-options"] == "nosniff"  # the refusal carries the headers too
        wrong = getattr(c, method)(path, headers={"X-API-Key": WRONG_KEY}, **kw)
        assert wrong.status_code == 403 and wrong.json() == {"detail": "invalid API key"}, path
        right = getattr(c, method)(path, headers=KEY_HEADERS, **kw)
        assert right.status_code == (404 if path == "/nope" else 200), (path, right.text)
        assert_no_secret(right, TEST_API_KEY)
    for path in ("/health", "/ready", "/metrics"):
        assert c.get(path).status_code == 200, path
    assert c.post(f"/users/{u}/ratings", json={"movie_id": m, "rating": 4.0}).status_code == 401
    assert c.post(f"/users/{u}/ratings", json={"movie_id": m, "rating": 4.0}, headers=KEY_HEADERS).status_code in (
        200,
        201,
    )
    logged = "\n".join(f"{rec.getMessage()} {rec.args!r}" for rec in caplog.records)
    assert "refused GET" in logged and TEST_API_KEY not in logged and WRONG_KEY not in logged


def test_require_key_for_reads_needs_a_key(tmp_path):
    with pytest.raises(ValidationError, match="MOVIEREC_API_KEY"):
        ServiceSettings(artifacts_dir=tmp_path, require_key_for_reads=True)


# ------------------------------------------------------------------------------------------------------------
# CORS


def test_cors_is_off_unless_origins_are_configured(app_client, art):  # noqa: F811
    u, _ = ids(art)
    origin = "https://app.example.com"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "x-api-key, content-type"}  # fmt: skip

    off = app_client()
    r = off.options(f"/users/{u}/ratings", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    r = off.get(f"/users/{u}/recommendations", headers={"Origin": origin})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers

    on = app_client(cors_origins=[origin, "http://localhost:3000"])
    r = on.options(f"/users/{u}/ratings", headers=preflight)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == origin
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"x-api-key", "content-type"} <= allowed
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in r.headers
    r = on.get(f"/users/{u}/recommendations", headers={"Origin": origin})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    # a refusal is readable by the allowed page too (CORS sits outside the key check)
    r = on.post(f"/users/{u}/ratings", json={"movie_id": 1, "rating": 3}, headers={"Origin": origin})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == origin
    # another origin gets no grant
    r = on.get(f"/users/{u}/recommendations", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    r = on.options(f"/users/{u}/ratings", headers={**preflight, "Origin": "https://evil.example"})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers


def test_cors_origins_from_the_environment(monkeypatch):
    monkeypatch.setenv("MOVIEREC_CORS_ORIGINS", "https://a.example, http://localhost:3000")
    assert ServiceSettings().cors_origins == ["https://a.example", "http://localhost:3000"]
    monkeypatch.setenv("MOVIEREC_CORS_ORIGINS", '["https://a.example"]')
    assert ServiceSettings().cors_origins == ["https://a.example"]
    monkeypatch.setenv("MOVIEREC_CORS_ORIGINS", "https://a.example/")  # would never match an Origin header
    with pytest.raises(ValidationError, match="no trailing"):
        ServiceSettings()


# ------------------------------------------------------------------------------------------------------------
# security headers


def assert_security_headers(r, csp: str = "default-src 'none'; frame-ancestors 'none'") -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["content-security-policy"] == csp
    assert r.headers["cache-control"] == "no-store"
    assert len(r.headers.get_list("cache-control")) == 1


def test_security_headers_on_every_kind_of_answer(client, art, tmp_path, store_url):  # noqa: F811
    u, m = ids(art)
    new_user = int(art.user_ids.max()) + 1000
    answers = {
        200: client.get(f"/users/{u}/recommendations"),
        201: client.post(f"/users/{new_user}/ratings", json={"movie_id": m, "rating": 2.5}, headers=KEY_HEADERS),
        401: client.post(f"/users/{u}/ratings", json={"movie_id": m, "rating": 2.5}),
        404: client.get("/users/999999999/recommendations"),
        405: client.delete(f"/users/{u}/ratings"),
        413: client.post("/predict", content=b"x" * 1_000_001, headers={"content-type": "application/json"}),
        422: client.get(f"/users/{u}/recommendations", params={"k": 0}),
    }
    answers[200.1] = client.get("/health")
    answers[200.2] = client.post("/predict", json={"user_id": u, "movie_id": m})
    answers[200.3] = client.get("/metrics")
    with TestClient(create_app(make_settings(tmp_path / "empty", store_url))) as empty:
        answers[503] = empty.get(f"/users/{u}/recommendations")
        answers[503.1] = empty.get("/ready")
    for status, r in answers.items():
        assert r.status_code == int(status), (status, r.text)
        assert_security_headers(r)


def test_docs_still_render_with_a_csp_that_lets_them(client):
    r = client.get("/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"] and "swagger" in r.text.lower()
    assert_security_headers(r, csp="frame-ancestors 'none'")
    r = client.get("/redoc")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert_security_headers(r, csp="frame-ancestors 'none'")
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key", "description": "the service's MOVIEREC_API_KEY"
    }  # fmt: skip
    assert "/admin/reload" in schema["paths"]


def test_a_route_that_sets_cache_control_keeps_it():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"cache-control", b"max-age=60")]})
        await send({"type": "http.response.body", "body": b"{}"})

    r = TestClient(SecurityHeadersMiddleware(app)).get("/x")
    assert r.headers.get_list("cache-control") == ["max-age=60"] and r.headers["x-frame-options"] == "DENY"


# ------------------------------------------------------------------------------------------------------------
# body size


def test_oversize_bodies_are_413_declared_or_streamed(app_client, art):  # noqa: F811
    c = app_client(max_body_bytes=2000)
    u, m = ids(art)
    detail = {"detail": "request body too large (limit 2000 bytes)"}
    pairs = [{"user_id": u, "movie_id": m}] * 200  # ~7 kB of JSON
    big = c.post("/predict", json={"pairs": pairs})
    assert big.status_code == 413 and big.json() == detail
    assert big.request.headers["content-length"] != "" and "transfer-encoding" not in big.request.headers

    def chunks() -> Iterator[bytes]:
        yield b'{"pairs": ['
        for i in range(200):
            yield (b", " if i else b"") + b'{"user_id": %d, "movie_id": %d}' % (u, m)
        yield b"]}"

    streamed = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413 and streamed.json() == detail
    posted = c.post(f"/users/{u}/ratings", content=b" " * 3000 + b'{"movie_id": 1, "rating": 3}',
                    headers={**KEY_HEADERS, "content-type": "application/json"})  # fmt: skip
    assert posted.status_code == 413  # before the key or the body is looked at

    # within the limit, both ways, the request goes through
    small = [{"user_id": u, "movie_id": m}] * 5
    assert c.post("/predict", json={"pairs": small}).status_code == 200

    def few() -> Iterator[bytes]:
        yield b'{"pairs": ['
        yield b", ".join(b'{"user_id": %d, "movie_id": %d}' % (u, m) for _ in range(5))
        yield b"]}"

    assert c.post("/predict", content=few(), headers={"content-type": "application/json"}).status_code == 200


def test_malformed_content_length_is_400(client):
    for value in ("abc", "-5", "1e3", "12 34"):
        r = client.post("/predict", content=b'{"user_id": 1, "movie_id": 1}',
                        headers={"content-type": "application/json", "content-length": value})  # fmt: skip
        assert r.status_code == 400, value
        assert r.json() == {"detail": "malformed Content-Length header (expected a byte count)"}
        assert_security_headers(r)


async def _drive(app, messages: list[dict], headers: list[tuple[bytes, bytes]]) -> tuple[list[dict], int]:
    """Run an ASGI app on one request whose body arrives as ``messages``; returns what it sent and how many
    messages it read."""
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        read += 1
        return messages[read - 1] if read <= len(messages) else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "http_version": "1.1", "method": "POST", "path": "/", "headers": headers}
    await app(scope, receive, send)
    return sent, read


def test_a_streamed_body_is_not_read_past_the_limit():
    """At the ASGI level: the app keeps asking for chunks; reading stops at the first one past the limit."""
    seen: list[int] = []

    async def greedy(scope, receive, send):
        while True:
            message = await receive()
            seen.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    chunks = [{"type": "http.request", "body": b"x" * 400, "more_body": True} for _ in range(100)]
    mw = BodySizeLimitMiddleware(greedy, max_bytes=1000)
    sent, read = asyncio.run(_drive(mw, chunks, [(b"transfer-encoding", b"chunked")]))
    assert read == 3 and seen == [400, 400]  # the third chunk (1200 bytes in all) was the last read
    assert sent[0]["status"] == 413 and b"limit 1000 bytes" in sent[1]["body"]

    # a declared length over the limit: the app never runs, nothing is read
    sent, read = asyncio.run(_drive(mw, chunks, [(b"content-length", b"40000")]))
    assert read == 0 and seen == [400, 400] and sent[0]["status"] == 413
    # conflicting repeated lengths: 400
    sent, read = asyncio.run(_drive(mw, chunks, [(b"content-length", b"10"), (b"content-length", b"20")]))
    assert read == 0 and sent[0]["status"] == 400


# ------------------------------------------------------------------------------------------------------------
# admin reload


def test_admin_reload_swaps_in_a_new_version_and_refuses_a_corrupt_one(tmp_path, trained, store_url):  # noqa: F811
    root = tmp_path / "art"
    shutil.copytree(trained[1], root)
    old = artifacts.load_version(root)
    user = int(old.user_ids[0])
    # no poller: only /admin/reload loads anything here
    settings = make_settings(root, store_url)
    with TestClient(create_app(settings)) as c:
        assert c.post("/admin/reload").status_code == 401
        assert c.post("/admin/reload", headers={"X-API-Key": WRONG_KEY}).status_code == 403
        assert c.get("/admin/reload", headers=KEY_HEADERS).status_code == 405

        r = c.post("/admin/reload", headers=KEY_HEADERS)
        assert r.status_code == 200, r.text
        assert r.json() == {"swapped": False, "before": {"mf": old.version}, "after": {"mf": old.version},
                            "refused": False, "error": None}  # fmt: skip

        new = artifacts.publish(root, old.manifest.draft(), dict(old.arrays))
        assert c.get("/model").json()["version"] == old.version  # not polled: still the old one
        r = c.post("/admin/reload", headers=KEY_HEADERS)
        assert r.status_code == 200 and r.json() == {
            "swapped": True, "before": {"mf": old.version}, "after": {"mf": new.name}, "refused": False, "error": None
        }  # fmt: skip
        assert c.get("/model").json()["version"] == new.name
        assert c.get(f"/users/{user}/recommendations").json()["model_version"] == new.name

        bad = artifacts.publish(root, old.manifest.draft(), dict(old.arrays))
        (bad / "item_factors.npy").write_bytes(b"garbage")
        r = c.post("/admin/reload", headers=KEY_HEADERS)
        assert r.status_code == 409, r.text  # a deploy script's `curl --fail` notices the refusal
        body = r.json()
        assert body["swapped"] is False and body["refused"] is True
        assert body["before"] == body["after"] == {"mf": new.name}
        assert "checksum" in body["error"] and bad.name in body["error"]
        assert_security_headers(r)
        # the good version keeps serving
        recs = c.get(f"/users/{user}/recommendations")
        assert recs.status_code == 200 and recs.json()["model_version"] == new.name
        assert c.get("/model").json()["version"] == new.name
        assert c.get("/ready").status_code == 200


# ------------------------------------------------------------------------------------------------------------
# SQL


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/users/1%20OR%201=1/ratings", {"movie_id": 1, "rating": 3}),
        ("/users/1';%20DROP%20TABLE%20ratings;--/ratings", {"movie_id": 1, "rating": 3}),
        ("/users/{u}/ratings", {"movie_id": "1; DROP TABLE ratings; --", "rating": 3}),
        ("/users/{u}/ratings", {"movie_id": "1 OR 1=1", "rating": 3}),
        ("/users/{u}/ratings", {"movie_id": "{m}", "rating": "3 OR 1=1"}),
        ("/users/{u}/ratings", {"movie_id": "{m}", "rating": 3, "timestamp": "0); DELETE FROM ratings; --"}),
    ],
)
def test_sql_looking_ids_are_422_and_the_store_is_intact(client, art, path, body):  # noqa: F811
    u, m = ids(art)
    before = client.get(f"/users/{u}/ratings").json()["ratings"]
    body = {k: (m if v == "{m}" else v) for k, v in body.items()}
    r = client.post(path.format(u=u), json=body, headers=KEY_HEADERS)
    assert r.status_code == 422, r.text
    assert client.get(f"/users/{u}/ratings").json()["ratings"] == before
    assert client.get(f"/users/{u}/recommendations").status_code == 200


def test_the_store_builds_no_sql_from_formatted_strings():
    """Every statement takes values as bound parameters: no f-string, %-format or .format() SQL text. The
    one f-string allowed interpolates module constants only (database.py's ``PRAGMA busy_timeout``, which
    takes no parameters), never anything a request carries."""
    store = Path(__file__).resolve().parents[1] / "service" / "store"
    sources = [p for p in store.rglob("*.py") if "versions" not in p.parts]
    assert any(p.name == "repository.py" for p in sources)
    formatted = re.compile(r"""(execute|exec_driver_sql|text|executemany)\(\s*(f["']|["'][^"']*["']\s*(%|\.format))""")
    constant = re.compile(r"^(int\()?[A-Z][A-Z0-9_]*\)?$")
    for path in sources:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if formatted.search(line):
                fields = re.findall(r"\{([^{}]*)\}", line)
                assert "f" in formatted.search(line).group(2) and fields, f"{path.name}:{n}: {line.strip()}"
                assert all(constant.match(f) for f in fields), f"{path.name}:{n}: {line.strip()}"
    assert not any(formatted.search(line) for line in (store / "repository.py").read_text().splitlines())
    # and the check itself catches what it is meant to
    assert formatted.search('conn.execute(f"SELECT * FROM t WHERE id = {uid}")')
    assert formatted.search("session.execute(text(f'DELETE FROM ratings WHERE user_id={u}'))")
    assert formatted.search('cur.execute("SELECT %s" % uid)')
    assert not formatted.search("conn.execute(self.sql, (uid,))")


def test_user_ids_reach_the_store_as_integers(client, art):  # noqa: F811
    """An id past the store's BIGINT range is refused by the path bound, never handed to the driver."""
    r = client.post(f"/users/{2**63}/ratings", json={"movie_id": ids(art)[1], "rating": 3}, headers=KEY_HEADERS)
    assert r.status_code == 422 and "user_id" in r.json()["detail"]


def test_limits_and_key_over_a_real_uvicorn_server(trained, store_url, art):  # noqa: F811
    """Through uvicorn's own HTTP parser and a real socket: a chunked upload and a declared one past the
    limit get the JSON 413, later requests are answered normally, and the key check holds. (That reading stops at
    the limit is checked at the ASGI level above: an HTTP/1.1 client sends its whole body regardless.)"""
    import threading
    import time

    import httpx
    import uvicorn

    from tests.test_service_uvicorn import free_port

    port = free_port()
    app = create_app(make_settings(trained[1], store_url, max_body_bytes=4096))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            assert thread.is_alive() and time.time() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        u, m = ids(art)

        def chunks() -> Iterator[bytes]:
            for _ in range(64):  # 64 kB, chunked: no Content-Length to refuse it by
                yield b" " * 1024

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            r = http.post("/predict", content=chunks(), headers={"content-type": "application/json"})
            assert r.request.headers["transfer-encoding"] == "chunked"
            assert r.status_code == 413 and r.json() == {"detail": "request body too large (limit 4096 bytes)"}
            assert r.headers["x-content-type-options"] == "nosniff"
            r = http.post("/predict", content=b"x" * 5000, headers={"content-type": "application/json"})
            assert r.status_code == 413
            assert http.post(f"/users/{u}/ratings", json={"movie_id": m, "rating": 3}).status_code == 401
            r = http.post(f"/users/{u}/ratings", json={"movie_id": m, "rating": 3}, headers=KEY_HEADERS)
            assert r.status_code in (200, 201), r.text
            assert http.get(f"/users/{u}/recommendations").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
