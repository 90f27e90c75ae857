"""``POST /admin/reload``: load newly published model versions now instead of at the next poll.

Goes through the same :class:`~service.reloader.ModelHolder` as the poller, so the same guarantees hold:
a version is loaded aside and validated fully before the one-reference swap, and a refused one (corrupt,
half-written, invalid) leaves the served model in place. The answer says what was served before and
after and, when a version was refused, the holder's error, so a deploy script learns at once whether its
model went live: a refusal answers 409 (the same body, ``refused: true``), so ``curl --fail`` fails.

With several uvicorn workers the call reloads the worker that answers it; the others pick the version
up at their next poll (``MOVIEREC_RELOAD_INTERVAL_S``).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.deps import HolderDep
from service.schemas import Error
from service.security import ApiKeyDep

router = APIRouter(prefix="/admin", tags=["admin"])


class ReloadResult(BaseModel):
    swapped: bool = Field(description="whether any model kind now serves a different version")
    before: dict[str, str] = Field(description="model kind -> version served before the reload")
    after: dict[str, str] = Field(description="model kind -> version served after it")
    refused: bool = Field(description="whether a published version failed to load (the old one kept serving)")
    error: str | None = Field(None, description="why it was refused (the holder's last error)")


@router.post(
    "/reload",
    response_model=ReloadResult,
    responses={
        401: {"model": Error},
        403: {"model": Error},
        409: {"model": ReloadResult, "description": "a published version was refused; the old one keeps serving"},
    },
)
def reload_models(_: ApiKeyDep, holder: HolderDep) -> ReloadResult | JSONResponse:
    """Load every model kind whose ``latest`` pointer names a version not served yet (needs X-API-Key).

    A plain ``def``: loading reads and checksums the artifact files, which belongs in the thread pool, not
    on the event loop serving recommendations.
    """
    before = {kind: m.version for kind, m in holder.models.items()}
    failures = holder.failures
    swapped = holder.reload()
    refused = holder.failures > failures
    after = {kind: m.version for kind, m in holder.models.items()}
    result = ReloadResult(
        swapped=swapped, before=before, after=after, refused=refused, error=holder.last_error if refused else None
    )
    if refused:
        return JSONResponse(result.model_dump(), status_code=409)
    return result
