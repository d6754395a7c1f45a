"""Operations routes: liveness, readiness, Prometheus metrics, and the service's own description (``/v1``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from app.plumbing.deps import PrincipalDep, ServicesDep
from app.plumbing.errors import NotFound, Unavailable
from app.schemas import ErrorResponse, Health, Readiness
from core import __version__

router = APIRouter()


# both probes are coroutines: they answer from the event loop even when every request thread is busy
@router.get("/healthz", response_model=Health, tags=["ops"])
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorResponse}}, tags=["ops"])
async def readyz(services: ServicesDep):
    checks = await services.readiness.answer_async()
    if not all(c["ok"] for c in checks.values()):
        failing = [name for name, c in checks.items() if not c["ok"]]
        raise Unavailable(f"not ready: {', '.join(failing)}", details={"checks": checks})
    return {"status": "ok", "checks": checks}


@router.get("/metrics", tags=["ops"], response_class=PlainTextResponse, responses={404: {"model": ErrorResponse}})
def metrics(services: ServicesDep):
    if not services.settings.metrics_enabled:
        raise NotFound(
            "metrics are off in this deployment (EMOPRES_METRICS_ENABLED=1 turns them on)", code="metrics_disabled"
        )
    body, content_type = services.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/v1", tags=["v1"])
def info(principal: PrincipalDep, services: ServicesDep):
    s = services.settings
    return {
        "version": __version__,
        "profile": s.profile,
        "project": principal.project,
        "limits": {
            "max_upload_bytes": s.max_upload_bytes,
            "max_file_bytes": s.max_file_bytes,
            "max_audio_seconds": s.max_audio_seconds,
            "max_pairs": s.max_pairs,
            "max_files": s.max_files,
        },
    }


FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1f2d3d"/>'
    '<path d="M3 10 Q8 2 13 10" stroke="#8ec5ff" stroke-width="2" fill="none"/></svg>'
)


@router.get("/favicon.ico", include_in_schema=False)
async def favicon():
    """Browsers ask every page's site for an icon: a small one, not a 404 in every console."""
    return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})
