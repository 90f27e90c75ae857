"""FastAPI dependencies (``Annotated`` aliases): settings, the served model, a store session, k bounds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.config import ServiceSettings
from service.errors import validation_error
from service.model_state import LoadedModel
from service.reloader import ModelHolder

# Dependencies that do no I/O are ``async``: FastAPI runs a plain ``def`` dependency in the thread pool,
# and a thread hop per dependency per request costs more than everything they do (measured: 4-5 hops put
# recommendations at 7% of a trivial endpoint's throughput).


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


async def get_sessions(request: Request) -> sessionmaker[Session]:
    """The session factory, for async routes that run their store calls in a worker thread."""
    return request.app.state.sessions


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_model(request: Request) -> LoadedModel:
    """The model serving right now; 503 (with the reason) while none is loaded."""
    holder: ModelHolder = request.app.state.holder
    model = holder.current
    if model is None:
        reason = holder.last_error or "no model has been loaded yet"
        raise HTTPException(status_code=503, detail=f"no model loaded: {reason}", headers={"Retry-After": "5"})
    return model


def get_session(request: Request) -> Iterator[Session]:
    """A session for sync (thread-pool) routes: the writes."""
    session = request.app.state.sessions()
    try:
        yield session
    finally:
        session.close()


async def get_k(request: Request, k: Annotated[int | None, Query(ge=1, description="number of results")] = None) -> int:
    settings: ServiceSettings = request.app.state.settings
    if k is None:
        return settings.default_k
    if k > settings.max_k:
        raise validation_error("k", f"k must be at most {settings.max_k} (the configured maximum), got {k}")
    return k


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
ModelDep = Annotated[LoadedModel, Depends(get_model)]
SessionDep = Annotated[Session, Depends(get_session)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
KDep = Annotated[int, Depends(get_k)]
