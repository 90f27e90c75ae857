"""Operations: ``/health`` (alive), ``/ready`` (model and store), ``/model`` (manifest), ``/metrics``."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service.deps import HolderDep, ModelDep
from service.schemas import Error, Health, ModelInfo, Ready
from service.store.database import ping

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is alive (no dependency is checked: a liveness probe must not restart on a DB outage)."""
    return Health(status="ok")


@router.get("/ready", response_model=Ready, responses={503: {"model": Ready}})
def ready(request: Request, holder: HolderDep) -> Response:
    """Ready to serve: a model is loaded and the store answers."""
    store_ok = ping(request.app.state.engine)
    model = holder.current
    body = Ready(
        ready=model is not None and store_ok,
        model_version=model.version if model is not None else None,
        store="ok" if store_ok else "unreachable",
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/model", response_model=ModelInfo, responses={503: {"model": Error}})
def model_info(model: ModelDep, holder: HolderDep) -> ModelInfo:
    m = model.artifact.manifest
    return ModelInfo(
        version=m.version,
        model_kind=m.model_kind,
        trained_at=m.created_at,
        loaded_at=datetime.fromtimestamp(model.loaded_at, UTC),
        dims=m.dims.model_dump(),
        rating_scale=m.rating_scale.model_dump(),
        dataset=m.dataset.model_dump(),
        hyperparameters=m.hyperparameters,
        metrics={k: v for k, v in m.metrics.items() if k != "history"},
        last_reload_error=holder.last_error,
    )


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
