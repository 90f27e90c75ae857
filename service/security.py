"""API-key access control: ``X-API-Key`` on writes and ``/admin`` always, on reads when configured.

Why these rules:

* Writes (``POST /users/{id}/ratings``) change what the next model is trained on and ``/admin`` changes
  what is served, so they always need the key. With no ``MOVIEREC_API_KEY`` configured they are closed
  (403 saying so) rather than open: forgetting the variable must not leave a deployment writable by anyone.
* Reads are open by default (recommendations are the product, and the hot path must stay cheap). With
  ``MOVIEREC_REQUIRE_KEY_FOR_READS=true`` a pure ASGI middleware, installed only then, asks for the key on
  every route except the probes and the scrape (``/health``, ``/ready``, ``/metrics``): the
  recommendation route keeps its no-dependency fast path either way.
* A missing key is 401 with ``WWW-Authenticate: ApiKey``; a wrong one 403. The comparison is
  ``hmac.compare_digest`` on bytes (time independent of where the strings differ), and the key is never
  echoed in a response or written to a log: refusals log the method, path and client only.

Header bytes are compared as sent: Starlette decodes header values as latin-1, so the dependency encodes
them back with latin-1 and both paths see the same bytes; the configured key is UTF-8 encoded.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import ServiceSettings
from service.middleware import send_json_error

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
_HEADER_RAW = API_KEY_HEADER.lower().encode("latin-1")
#: routes that stay open with require_key_for_reads: orchestrator probes and the Prometheus scrape
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})

NOT_CONFIGURED = "writes and admin endpoints are disabled: no MOVIEREC_API_KEY is configured"
MISSING = f"missing API key ({API_KEY_HEADER} header)"
INVALID = "invalid API key"
CHALLENGE = {"WWW-Authenticate": "ApiKey"}

# Documents the scheme in the OpenAPI schema (the docs' Authorize button); auto_error=False because the
# answers (401 vs 403, the no-key-configured case) are decided in check_key.
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="the service's MOVIEREC_API_KEY", scheme_name="ApiKey"
)


def expected_key(settings: ServiceSettings) -> bytes | None:
    """The configured key as the bytes a client must send, or None when none is configured."""
    return None if settings.api_key is None else settings.api_key.get_secret_value().encode("utf-8")


def check_key(expected: bytes | None, presented: bytes | None) -> tuple[int, str] | None:
    """None when ``presented`` is the key; otherwise the (status, detail) to answer with."""
    if expected is None:
        return 403, NOT_CONFIGURED
    if not presented:
        return 401, MISSING
    if not hmac.compare_digest(presented, expected):
        return 403, INVALID
    return None


def _log_refusal(status: int, detail: str, method: str, path: str, client: tuple[str, int] | None) -> None:
    # never the presented key: a near-miss key in a log is most of a leaked key
    who = client[0] if client else "unknown client"
    log.warning("refused %s %s from %s: %d %s", method, path, who, status, detail)


async def require_api_key(request: Request, presented: Annotated[str | None, Security(api_key_scheme)] = None) -> None:
    """The dependency for writes and ``/admin``: raises 401/403 (JSON ``detail``) unless the key matches."""
    settings: ServiceSettings = request.app.state.settings
    raw = presented.encode("latin-1") if presented is not None else None
    refused = check_key(expected_key(settings), raw)
    if refused is not None:
        status, detail = refused
        _log_refusal(status, detail, request.method, request.url.path, request.client)
        raise HTTPException(status, detail, headers=CHALLENGE if status == 401 else None)


ApiKeyDep = Annotated[None, Depends(require_api_key)]


class RequireKeyMiddleware:
    """Every route but :data:`OPEN_PATHS` needs the key (``require_key_for_reads``); pure ASGI, so a
    refusal costs no routing or dependency resolution, and it is installed only when the setting is on."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings) -> None:
        self.app = app
        self.expected = expected_key(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = None
        for name, value in scope["headers"]:
            if name == _HEADER_RAW:
                presented = value
                break
        refused = check_key(self.expected, presented)
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, detail = refused
        _log_refusal(status, detail, scope.get("method", ""), scope["path"], scope.get("client"))
        extra = [(b"www-authenticate", b"ApiKey")] if status == 401 else []
        await send_json_error(send, status, detail, extra)
