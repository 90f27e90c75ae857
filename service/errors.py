"""One JSON error shape for every failure: ``{"detail": "<what is wrong>", "errors": [...]}``.

FastAPI's default 422 body is a list of pydantic error dicts with no sentence; clients and on-call
engineers want one line naming the field, so validation errors are summarised here, and every
HTTPException (404, 503, ...) gets the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or (str(loc[0]) if loc else "request")


def summarise(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors)


def _clean(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON-safe error entries (pydantic may put exceptions and raw inputs in ``ctx``/``input``)."""
    out = []
    for e in errors:
        entry = {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")}
        out.append(entry)
    return out


def validation_error(field: str, message: str, where: str = "query") -> RequestValidationError:
    """A 422 for a check that lives in code rather than in a schema (e.g. k above the configured max)."""
    return RequestValidationError([{"loc": (where, field), "msg": message, "type": "value_error"}])


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return JSONResponse(status_code=422, content={"detail": summarise(errors), "errors": _clean(errors)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error"})
