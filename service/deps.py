"""FastAPI dependencies (``Annotated`` aliases): the model holder, the served model, store sessions; the
checks the hot endpoints call directly instead (``current_model``, ``resolve_k``); and
:class:`QueryModel`, the query parameters of the hot endpoints validated in one call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Self

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from service.config import ServiceSettings
from service.errors import validation_error
from service.model_state import LoadedModel
from service.reloader import ModelHolder, Purpose

# Dependencies that do no I/O are ``async``: FastAPI runs a plain ``def`` dependency in the thread pool,
# and a thread hop per dependency per request costs more than everything they do (measured: 4-5 hops put
# recommendations at 7% of a trivial endpoint's throughput).


async def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


async def get_sessions(request: Request) -> sessionmaker[Session]:
    """The session factory, for async routes that run their store calls in a worker thread."""
    return request.app.state.sessions


def current_model(request: Request, kind: str | None = None, purpose: Purpose = "recommend") -> LoadedModel:
    """The model of ``kind`` (``?model=``), or the purpose's default; 422 for a kind not loaded, 503 (with
    the reason) while none is loaded."""
    holder: ModelHolder = request.app.state.holder
    model = holder.get(kind, purpose)
    if model is not None:
        return model
    loaded = ", ".join(sorted(holder.models))
    if kind is not None and loaded:
        raise validation_error("model", f"model {kind!r} is not loaded; loaded models: {loaded}")
    if loaded:
        default = holder.default_kind(purpose)
        detail = f"the default {purpose} model {default!r} is not loaded (loaded: {loaded}); pass ?model="
    else:
        detail = f"no model loaded: {holder.last_error or 'no model has been loaded yet'}"
    raise HTTPException(status_code=503, detail=detail, headers={"Retry-After": "5"})


async def get_model(request: Request) -> LoadedModel:
    """``current_model`` as a dependency."""
    return current_model(request)


def get_session(request: Request) -> Iterator[Session]:
    """A session for sync (thread-pool) routes: the writes."""
    session = request.app.state.sessions()
    try:
        yield session
    finally:
        session.close()


_MEMO_SIZE = 4096
_MEMO_QUERY_MAX = 256


class QueryModel(BaseModel):
    """Query parameters validated by one pydantic call, for the endpoints where throughput matters.

    FastAPI validates each declared query parameter and resolves each dependency separately, with type
    introspection on every request: measured on a bare app, ~37 us for recommendations' five query
    parameters and ~12 us per dependency, against ~5 us for one model validation. A subclass declares
    the parameters as fields (types, bounds, defaults, descriptions: what a FastAPI signature would);
    :meth:`from_request` validates them with the same pydantic validators FastAPI would use (a repeated
    parameter: the last value wins, unknown parameters are ignored, both as with FastAPI) and raises the
    same ``RequestValidationError`` with ``("query", name)`` locations; :meth:`openapi` documents them as
    the route's query parameters (``openapi_extra=``) exactly as FastAPI would have
    (``tests/test_service_fast_paths.py`` compares both against the plain FastAPI declarations).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def from_request(cls, request: Request) -> Self:
        """The validated parameters. Clients repeat the same few query strings (``k=10``), so a valid
        one's result (frozen, so shareable) is kept per raw query string: a dict lookup instead of ~12 us
        of parsing and validation. Invalid ones are validated, and refused, every time."""
        raw: bytes = request.scope["query_string"]
        memo = cls.__dict__.get("_memo")
        if memo is None:
            memo = {}
            type.__setattr__(cls, "_memo", memo)  # one per subclass, created on its first request
        hit = memo.get(raw)
        if hit is not None:
            return hit
        try:
            parsed = cls.model_validate(dict(request.query_params))
        except ValidationError as e:
            errors = [{**err, "loc": ("query", *err["loc"])} for err in e.errors(include_url=False)]
            raise RequestValidationError(errors) from None
        if len(raw) <= _MEMO_QUERY_MAX and len(memo) < _MEMO_SIZE:
            memo[raw] = parsed  # bounded: once full, further strings are validated every time
        return parsed

    @classmethod
    def openapi(cls) -> dict[str, Any]:
        """``openapi_extra`` documenting the fields as query parameters (FastAPI appends them to the
        path parameters it documents itself)."""
        schema = cls.model_json_schema()
        params = []
        for name, prop in schema["properties"].items():
            prop = dict(prop)
            if prop.get("default", ...) is None:
                del prop["default"]  # what FastAPI writes for an optional parameter
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in schema.get("required", ())}
            param["schema"] = prop
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
        return {"parameters": params}


def resolve_k(request: Request, k: int | None) -> int:
    """``k`` or the configured default; a 422 naming the maximum when above it."""
    settings: ServiceSettings = request.app.state.settings
    if k is None:
        return settings.default_k
    if k > settings.max_k:
        raise validation_error("k", f"k must be at most {settings.max_k} (the configured maximum), got {k}")
    return k


HolderDep = Annotated[ModelHolder, Depends(get_holder)]
ModelDep = Annotated[LoadedModel, Depends(get_model)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
