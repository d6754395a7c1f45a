"""Readiness (``GET /readyz``): the database at the code's schema revision, the broker, the models."""
from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from app.services import Services
from core.db import head_revision


def models_check(services: Services) -> dict:
    """Embedded: are the models loaded here? Celery: does a worker of this profile answer?"""
    settings = services.settings
    if services.embedded is not None:
        ctx = services.embedded.ctx
        if ctx.models_loaded:
            return {"ok": True, "profile": settings.profile, "loaded": True}
        if ctx._evaluator_error:
            return {"ok": False, "profile": settings.profile, "error": ctx._evaluator_error}
        return {"ok": False, "profile": settings.profile, "error": "models are loading"}
    workers = services.queue.workers(settings.profile)
    if not workers:
        return {"ok": False, "profile": settings.profile,
                "error": f"no {settings.profile} worker answered (start `emopres worker`); jobs wait in the queue"}
    return {"ok": True, "profile": settings.profile, "workers": workers}


def readiness(services: Services) -> dict:
    checks = {}
    try:
        with services.sessions() as session:
            session.execute(text("SELECT 1"))
            revision = MigrationContext.configure(session.connection()).get_current_revision()
        expected = head_revision()
        checks["database"] = {"ok": revision == expected, "revision": revision,
                              **({} if revision == expected else {"error": f"schema at {revision}, code expects "
                                                                           f"{expected}: run `emopres db upgrade`"})}
    except Exception as error:
        checks["database"] = {"ok": False, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    try:
        checks["broker"] = {"ok": bool(services.queue.ping()), "kind": "in-process" if services.embedded else "celery"}
    except Exception as error:
        checks["broker"] = {"ok": False, "error": f"{type(error).__name__}: {str(error)[:200]}"}
    try:
        checks["models"] = (models_check(services) if checks["broker"]["ok"]
                            else {"ok": False, "error": "unknown: the broker is unreachable"})
    except Exception as error:
        checks["models"] = {"ok": False, "error": f"{type(error).__name__}: {str(error)[:200]}"}
    return checks
