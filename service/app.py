"""The FastAPI application factory. Nothing is loaded at import: the model and the store connect in the
lifespan, so importing this module (tests, tooling, ``--help``) is cheap and side-effect free.

Run with ``movierec serve`` or ``uvicorn service.app:create_app --factory``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from movierec import __version__
from service import errors
from service.api import admin, health, movies, predict, recommendations, report, users
from service.config import ServiceSettings
from service.metrics import Metrics, MetricsMiddleware
from service.middleware import BodySizeLimitMiddleware, SecurityHeadersMiddleware
from service.reloader import ModelHolder
from service.security import API_KEY_HEADER, RequireKeyMiddleware
from service.store.database import make_engine, session_factory
from service.store.repository import RatedMovieIds

log = logging.getLogger(__name__)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the app; settings are validated here (from ``MOVIEREC_*`` when not given)."""
    settings = settings or ServiceSettings()
    holder = ModelHolder(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from service.retrieval import configure_faiss_threads

        configure_faiss_threads(1)  # requests run concurrently; one FAISS thread each avoids oversubscription
        engine = make_engine(settings.database_url)
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        app.state.rated_ids = RatedMovieIds(engine, settings.rated_cache_size)
        holder.reload()  # a missing or broken model is not fatal: /ready says 503 until one loads
        holder.start_polling()
        try:
            yield
        finally:
            holder.stop()
            app.state.rated_ids.close()
            engine.dispose()

    app = FastAPI(
        title="movierec",
        version=__version__,
        description="Movie recommendations, rating predictions and similar movies from trained embeddings.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.holder = holder
    app.state.metrics = Metrics(holder.metrics_state)
    errors.install(app)
    for module in (recommendations, predict, movies, users, admin, health, report):
        app.include_router(module.router)
    add_middlewares(app, settings)
    return app


def add_middlewares(app: FastAPI, settings: ServiceSettings) -> None:
    """The middleware stack, outermost first: metrics (so refusals are counted too), security headers (so
    every answer below carries them), CORS (so a browser can read the refusals below it, and preflights
    are answered before any key check), the body-size limit, then the key check for reads when enabled.
    All pure ASGI; the optional ones are not installed at all when off, so they cost nothing then.
    Starlette runs the last added outermost, hence the reverse order here."""
    if settings.require_key_for_reads:
        app.add_middleware(RequireKeyMiddleware, settings=settings)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=[API_KEY_HEADER, "Content-Type"],
            allow_credentials=False,  # the key travels in a header, never in cookies
            max_age=600,
        )
    # HTML pages: the docs, and the training report (which narrows the policy again with its own CSP)
    docs = [p for p in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url, report.PAGE_PATH) if p]
    app.add_middleware(SecurityHeadersMiddleware, docs_paths=docs)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
