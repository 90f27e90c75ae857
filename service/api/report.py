"""``GET /model/report``: the served model's training report, an HTML page the trainer wrote.

The service only serves the finished file (``ROOT/reports/<version>/report.html``, found from the served
version's folder by :mod:`movierec.report_files`): it never draws, so the API image needs neither
matplotlib nor the trainer. The page is self-contained (inline CSS, PNGs as ``data:`` URIs), so its
Content-Security-Policy allows exactly that and nothing else: no scripts, no fetches, no framing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response

from movierec.report_files import report_html
from service.deps import current_model
from service.schemas import Error

PAGE_PATH = "/model/report"
"""Exported for service.app: the security-headers middleware must not give this page the JSON API's
``default-src 'none'`` policy, which would block its inline styles and images."""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"

router = APIRouter(tags=["operations"])


@router.get(
    PAGE_PATH,
    response_class=Response,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "the report page"},
        404: {"model": Error, "description": "the served version has no report"},
        503: {"model": Error, "description": "no model loaded"},
    },
)
def model_report(
    request: Request,
    model: Annotated[str | None, Query(description="model kind; default: MOVIEREC_RECOMMEND_MODEL")] = None,
) -> Response:
    """The training report of the served model's version: loss curves, test metrics beside the baselines,
    rating distributions, embedding plots and nearest neighbours, as one self-contained HTML page."""
    # a plain ``def``: FastAPI runs it in the thread pool, so reading the file never blocks the event loop
    loaded = current_model(request, model)
    path = report_html(loaded.artifact.path)
    try:
        body = path.read_bytes()
    except FileNotFoundError:
        raise HTTPException(
            404,
            f"model version {loaded.version} has no training report (draw one with `movierec report` on its "
            "version folder)",
        ) from None
    return Response(body, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": _CSP})
