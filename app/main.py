"""The FastAPI gateway: `create_app(settings)` builds the app (API v1, health, metrics; one JSON error shape
for every 4xx/5xx); `emopres serve` runs it with uvicorn. The routes live in app/routes (one router per
resource), their dependencies in app/plumbing/deps.py, what the app runs in app/services.py."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi_offline import FastAPIOffline

from app.plumbing.error_handlers import install_error_handlers
from app.plumbing.middleware import RequestMiddleware
from app.plumbing.prometheus_metrics import Metrics
from app.readiness import ReadinessProbe, readiness
from app.routes import jobs, ops, reports, share, webhooks
from app.services import build_services, start_services, stop_services
from app.ui import pages
from core import __version__
from core.settings import Settings, get_settings

__all__ = ["create_app"]

log = logging.getLogger("emopres.api")


def create_app(settings: Settings | None = None, *, start_worker: bool = True) -> FastAPI:
    settings = settings or get_settings()
    services = build_services(settings)
    services.metrics = Metrics(services)
    services.readiness = ReadinessProbe(
        lambda: readiness(services),
        cache_seconds=settings.readiness_cache_seconds,
        timeout_seconds=settings.readiness_timeout_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(start_services, services, start_worker=start_worker)
        log.info("emopres %s serving: %s", __version__, settings.public())
        try:
            yield
        finally:
            await run_in_threadpool(stop_services, services)

    # /docs and /redoc load Swagger UI and ReDoc from the service itself (fastapi-offline ships them): CI hosts and
    # private clusters often have no route to a CDN
    app = FastAPIOffline(
        title="emopres",
        version=__version__,
        lifespan=lifespan,
        static_url="/docs-assets",
        description="Emotion preservation evaluation for expressive speech-to-speech translation. "
        "Every v1 route needs `Authorization: Bearer <token>` (`emopres tokens create NAME`; Authorize, above, "
        "takes one). People in browsers sign in at /ui/login and read reports with the session cookie. "
        'Errors: `{"error": {"code", "message", "details"}}`.',
    )
    app.state.services = services
    app.add_middleware(RequestMiddleware, services_getter=lambda: services)
    install_error_handlers(app)
    for router in (ops.router, jobs.router, reports.router, share.router, webhooks.router, pages.router):
        app.include_router(router)
    return app
