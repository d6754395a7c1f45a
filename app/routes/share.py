"""Share links: ``POST /v1/jobs/{id}/share`` makes one; ``GET /share/{link}/report.html`` and
``GET /share/{link}/plots/{name}`` open that one job's report with no token (app.browser_auth says how a link is
made, checked and ended). A link never opens another job, nor anything but these two read-only resources."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from app import jobs as crud
from app.browser_auth import SharedJob, ShareLinkError, open_share_link, share_link_url
from app.plumbing.deps import ERRORS, PrincipalDep, ServicesDep, SessionDep
from app.plumbing.errors import APIError
from app.plumbing.heavy_reads import HEAVY_READ_ERRORS, heavy_reads
from app.routes.reports import plot_response, report_page

router = APIRouter()
SHARE_ERRORS = {
    401: ERRORS[401],
    403: {**ERRORS[401], "description": "share_link_expired"},
    404: ERRORS[404],
    409: ERRORS[409],
    **HEAVY_READ_ERRORS,
}


class ShareLink(BaseModel):
    url: str
    expires_at: str


class ShareLinkRefused(APIError):
    status, code, page = 401, "invalid_share_link", True


class ShareLinkExpired(APIError):
    status, code, page = 403, "share_link_expired", True


@router.post("/v1/jobs/{job_id}/share", response_model=ShareLink, responses=ERRORS, tags=["v1"])
def create_share_link(
    job_id: str, request: Request, principal: PrincipalDep, session: SessionDep, services: ServicesDep
):
    """A signed read-only link to this job's HTML report and plots that works without a token until `expires_at`
    (EMOPRES_SHARE_LINK_SECONDS). It stops working when the token that made it is revoked or the job deleted."""
    job = crud.get_job(session, principal.project, job_id)
    url, expires = share_link_url(session, services.settings, principal, job.id, str(request.base_url))
    return {"url": url, "expires_at": expires}


def _shared(services, session, link: str) -> SharedJob:
    try:
        return open_share_link(session, link, auth_disabled=services.settings.auth_disabled)
    except ShareLinkError as error:
        if error.kind == "expired":
            raise ShareLinkExpired(str(error)) from None
        raise ShareLinkRefused(str(error)) from None


async def _bounded(request: Request, services, shared: SharedJob, work):
    """Run ``work`` in a thread under the heavy-read bounds, the link's job standing for the token."""
    reads = heavy_reads(request, services)
    key = ("share", shared.job_id)
    reads.acquire(key)
    try:
        return await run_in_threadpool(work)
    finally:
        reads.release(key)


SHARE_HEADERS = {"Cache-Control": "private, no-store"}  # a link may be revoked: never kept by caches


@router.get(
    "/share/{link}/report.html", tags=["share"], responses={200: {"content": {"text/html": {}}}, **SHARE_ERRORS}
)
async def shared_report(
    link: str,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    audio: Annotated[bool, Query(description="embed the worst pairs' audio")] = True,
):
    """The shared job's report page (the same page as /v1/jobs/{id}/report.html)."""
    shared = await run_in_threadpool(_shared, services, session, link)
    response = await _bounded(
        request,
        services,
        shared,
        lambda: report_page(request, services, session, shared.project, shared.job_id, audio=audio),
    )
    response.headers.update(SHARE_HEADERS)
    return response


@router.get(
    "/share/{link}/plots/{name}",
    tags=["share"],
    responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}, **SHARE_ERRORS},
)
async def shared_plot(
    link: str,
    name: str,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    format: Annotated[str, Query(pattern="^(png|svg)$", description="png or svg")] = "png",
):
    """One plot of the shared job's report."""
    shared = await run_in_threadpool(_shared, services, session, link)
    response = await _bounded(
        request, services, shared, lambda: plot_response(request, session, shared.project, shared.job_id, name, format)
    )
    response.headers.update(SHARE_HEADERS)
    return response
