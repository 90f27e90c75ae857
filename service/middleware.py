"""Pure ASGI middlewares applied to every request: security headers and the request-body size limit.

Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``, which costs a task and a stream per request
(the recommendation route answers in tens of microseconds, so per-request overhead shows). Each does the
least it can on the hot path: the headers are precomputed byte pairs appended in the send wrapper, and
the size limit only reads the request headers of a request that cannot carry a body.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Header = tuple[bytes, bytes]

_BASE_HEADERS: tuple[Header, ...] = (
    (b"x-content-type-options", b"nosniff"),  # no MIME sniffing of a JSON body into HTML
    (b"x-frame-options", b"DENY"),  # never framed (clickjacking), for browsers without CSP frame-ancestors
    (b"referrer-policy", b"no-referrer"),  # user ids in URLs never leak to other sites
)
# The API serves JSON only, so nothing may load from it; the interactive docs pages run Swagger UI / ReDoc
# scripts and styles from a CDN, so they only keep the framing rule.
_API_CSP: Header = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_DOCS_CSP: Header = (b"content-security-policy", b"frame-ancestors 'none'")
# Answers are per user (recommendations, ratings) and change with every posted rating and model version:
# no shared or browser cache may keep them. A route that wants caching sets its own Cache-Control.
_NO_STORE: Header = (b"cache-control", b"no-store")


async def send_json_error(send: Send, status: int, detail: str, headers: Sequence[Header] = ()) -> None:
    """A ``{"detail": ...}`` response written straight to ASGI (the body shape service.errors gives the
    app's own errors), for middlewares that answer before the app runs."""
    body = json.dumps({"detail": detail}).encode("utf-8")
    start_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("latin-1")),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


class SecurityHeadersMiddleware:
    """Adds the security headers to every response the app (or an inner middleware) sends."""

    def __init__(self, app: ASGIApp, docs_paths: Collection[str] = ()) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)
        self.api_headers = (*_BASE_HEADERS, _API_CSP)
        self.docs_headers = (*_BASE_HEADERS, _DOCS_CSP)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.docs_headers if scope["path"] in self.docs_paths else self.api_headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                for name, _ in headers:
                    if name.lower() == b"cache-control":
                        message["headers"] = [*headers, *extra]  # a new list: a response may reuse its own
                        break
                else:
                    message["headers"] = [*headers, _NO_STORE, *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit. An HTTPException, so FastAPI's body
    reading lets it through to the app's JSON error handler (413); the middleware answers it itself when
    nothing inside did."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_detail(limit))


def too_large_detail(limit: int) -> str:
    return f"request body too large (limit {limit} bytes)"


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413 without reading the rest.

    * ``Content-Length`` above the limit: 413 before the app runs, nothing read. Malformed (not digits)
      or conflicting repeated values: 400, since the framing of such a request cannot be trusted.
    * No ``Content-Length`` (chunked upload, HTTP/2 stream): the bytes are counted as the app reads them,
      and reading stops with 413 at the first chunk past the limit.
    * A declared length within the limit is passed through untouched: the server (h11, httptools, any
      HTTP/2 stack) refuses a body longer than its declared length. So is an HTTP/1.x request with
      neither header, which has no body at all (the hot GET routes), at the cost of one header scan.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = too_large_detail(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if declared is not None and value.strip() != declared:
                    await send_json_error(send, 400, "conflicting Content-Length headers")
                    return
                declared = value.strip()
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None:
            if not declared.isdigit():  # bytes.isdigit: ASCII digits only, so no sign, space or "1_000"
                await send_json_error(send, 400, "malformed Content-Length header (expected a byte count)")
                return
            if int(declared) > self.max_bytes:
                await send_json_error(send, 413, self.detail)
                return
            if not chunked:
                await self.app(scope, receive, send)
                return
        elif not chunked and scope.get("http_version", "1.1") in ("1.0", "1.1"):
            await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a ``receive`` that counts body bytes and stops past the limit."""
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await send_json_error(send, 413, self.detail)
