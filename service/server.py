"""Run the API under uvicorn: the plain function behind ``movierec serve``.

Settings reach uvicorn's worker processes through ``MOVIEREC_*`` environment variables (each worker
builds its own app with ``create_app``), so the values given here are exported before uvicorn starts.
The store's schema is migrated once here, before any worker starts, never concurrently by workers.
"""

from __future__ import annotations

import logging
import os

from service.config import ServiceSettings

log = logging.getLogger(__name__)


def export_env(settings: ServiceSettings) -> None:
    for name, value in settings.model_dump(mode="json").items():
        os.environ[f"MOVIEREC_{name.upper()}"] = str(value)


def serve(settings: ServiceSettings) -> None:
    import uvicorn

    from service.store.migrations import upgrade

    upgrade(settings.database_url)
    export_env(settings)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
    )
