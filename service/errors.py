"""One JSON error shape for every failure: ``{"detail": "<what is wrong>", "errors": [...]}``.

FastAPI's default 422 body is a list of pydantic error dicts with no sentence; clients and on-call
engineers want one line naming the field, so validation errors are summarised here, and every
HTTPException (404, 503, ...) gets the same shape.
"""

from __future__ import annotations

import json
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


def _sentence(e: dict[str, Any]) -> str:
    if e.get("type") == "json_invalid":
        # FastAPI puts the character offset where the field would be (``("body", 17)``): say "body"
        loc = list(e.get("loc", ()))
        at = f" at character {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
        reason = (e.get("ctx") or {}).get("error")
        return f"body: invalid JSON{at}" + (f" ({reason})" if reason else "")
    return f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}"


def summarise(errors: list[dict[str, Any]]) -> str:
    return "; ".join(_sentence(e) for e in errors)


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


def _unparseable_body(exc: StarletteHTTPException) -> str | None:
    """Why a body FastAPI could not even decode was refused, or None for any other exception.

    FastAPI turns a ``json.JSONDecodeError`` into a 422 but every other failure while decoding the body
    into a bare 400 "There was an error parsing the body", chained from the cause: bytes that are not
    UTF-8, and JSON nested deeper than the decoder's recursion limit (``[[[[...]]]]``, a cheap way to
    probe a server). Those are the same client mistake as malformed JSON, so they get the same 422 and
    a sentence saying what is wrong (found by tests/test_fuzz_api.py: the 400 was undocumented)."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, RecursionError):
        return "body: invalid JSON (nested too deeply)"
    if isinstance(cause, UnicodeError):
        return "body: invalid JSON (not UTF-8 text)"
    if isinstance(cause, ValueError):
        return f"body: invalid JSON ({cause})"
    return None


def _document_error_shape(app: FastAPI) -> None:
    """Make ``/openapi.json`` describe the 415 and 422 bodies this module sends.

    FastAPI documents every 422 it adds by itself with its own ``HTTPValidationError`` (``detail`` a
    list), which is not what :func:`install`'s handler returns (``detail`` a sentence): clients
    generated from the schema would fail to parse our errors. Every 422 response is rewritten to
    :class:`service.schemas.Error` here, where the shape is decided, rather than in each route, and
    every operation with a body documents the 415 :func:`_wrong_content_type` answers."""
    from service.schemas import Error

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("Error", Error.model_json_schema(ref_template="#/components/schemas/{model}"))
        error_ref = {"$ref": "#/components/schemas/Error"}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "requestBody" in operation:  # see _wrong_content_type
                    responses.setdefault("415", {"description": "Unsupported Media Type"})
                for status in ("415", "422"):
                    if status in responses:
                        responses[status]["content"] = {"application/json": {"schema": error_ref}}
        if "HTTPValidationError" not in json.dumps(schema.get("paths", {})):
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters ignored: what FastAPI decodes."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _wrong_content_type(request: Request, errors: list[dict[str, Any]]) -> JSONResponse | None:
    """415 for a body sent as something other than JSON.

    FastAPI does not decode such a body and validates the raw bytes instead, which reads as
    "body: Input should be a valid dictionary": true, but it hides the actual mistake (a form post, a
    missing header). Only the body-level error is taken as the symptom, so a JSON body with a bad field
    keeps its 422 naming the field."""
    if _is_json(request.headers.get("content-type")):
        return None
    if not any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return None
    got = request.headers.get("content-type")
    detail = f"Content-Type must be application/json, got {got!r}" if got else "Content-Type must be application/json"
    entry = {"loc": ["header", "content-type"], "msg": detail, "type": "unsupported_media_type"}
    return JSONResponse(status_code=415, content={"detail": detail, "errors": [entry]})


def install(app: FastAPI) -> None:
    _document_error_shape(app)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if request.method in ("POST", "PUT", "PATCH"):
            wrong = _wrong_content_type(request, errors)
            if wrong is not None:
                return wrong
        return JSONResponse(status_code=422, content={"detail": summarise(errors), "errors": _clean(errors)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        unparseable = _unparseable_body(exc)
        if unparseable is not None:
            entry = {"loc": ["body"], "msg": unparseable.removeprefix("body: "), "type": "json_invalid"}
            return JSONResponse(status_code=422, content={"detail": unparseable, "errors": [entry]})
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error"})
