"""Job routes: submit a job (manifest + audio, or an archive) or one pair, list, read, the report, the
per-pair CSV, delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app import job_views
from app import jobs as crud
from app.browser_auth import share_link_url
from app.plumbing.deps import ERRORS, IdempotencyKey, PrincipalDep, ServicesDep, SessionDep
from app.plumbing.heavy_reads import HEAVY_READ_ERRORS, HeavyReadDep
from app.schemas import JOB_FORM_SCHEMA, PAIR_FORM_SCHEMA, ErrorResponse, JobCreated, JobDetail, JobList
from app.submission.intake import check_field
from app.submission.uploads import created_response, read_form, submit_form, submit_pair

router = APIRouter(tags=["v1"])

UPLOAD_ERRORS = {
    **ERRORS,
    415: {"model": ErrorResponse, "description": "unsupported_media_type: the body is not multipart/form-data"},
}
LIST_ERRORS = {
    **ERRORS,
    422: {
        "model": ErrorResponse,
        "description": "validation_error (a query parameter), "
        "invalid_cursor (a cursor that is not a "
        "next_cursor of ours)",
    },
}


def _multipart(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


async def _accept(request: Request, services, principal, idempotency_key: str | None, submit_from_form: Callable):
    """Read the multipart form, submit it in a thread (a few at a time), answer 202 with the job."""
    form = await read_form(request, services.settings)
    try:
        async with services.submissions:
            job, created = await run_in_threadpool(submit_from_form, services, principal, idempotency_key, form)
    finally:
        await form.close()
    return created_response(request, principal, job, created)


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobCreated,
    responses=UPLOAD_ERRORS,
    openapi_extra=_multipart(JOB_FORM_SCHEMA),
)
async def create_job(
    request: Request, principal: PrincipalDep, services: ServicesDep, idempotency_key: IdempotencyKey = None
):
    """A job: `manifest` + audio files named by their manifest paths, or one `archive`."""
    return await _accept(request, services, principal, idempotency_key, submit_form)


@router.post(
    "/v1/pairs",
    status_code=202,
    response_model=JobCreated,
    responses=UPLOAD_ERRORS,
    openapi_extra=_multipart(PAIR_FORM_SCHEMA),
)
async def create_pair(
    request: Request, principal: PrincipalDep, services: ServicesDep, idempotency_key: IdempotencyKey = None
):
    """A one-pair job: `source` and `target` audio, optional `label` and `pair_id`."""
    return await _accept(request, services, principal, idempotency_key, submit_pair)


@router.get("/v1/jobs", response_model=JobList, responses=LIST_ERRORS)
def list_jobs(
    principal: PrincipalDep,
    session: SessionDep,
    status: Annotated[str | None, Query(description="queued, running, succeeded or failed")] = None,
    name: Annotated[str | None, Query(max_length=200, description="exact name")] = None,
    name_prefix: Annotated[
        str | None, Query(max_length=200, description="names starting with this, e.g. my-s2st@ (a system's versions)")
    ] = None,
    order: Annotated[str, Query(description="-created_at (newest first) or created_at")] = "-created_at",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=500, description="next_cursor of the previous page; anything else is a 422 invalid_cursor"),
    ] = None,
):
    if name is not None:
        check_field(name, "name")
    if name_prefix is not None:  # a NUL reached psycopg: a 500 on PostgreSQL
        check_field(name_prefix, "name_prefix")
    items, next_cursor = job_views.list_jobs(
        session,
        principal.project,
        status=status,
        name=name,
        limit=limit,
        cursor=cursor,
        name_prefix=name_prefix,
        order=order,
    )
    return {"items": items, "next_cursor": next_cursor}


@router.get("/v1/jobs/{job_id}", response_model=JobDetail, responses=ERRORS)
def get_job(job_id: str, request: Request, principal: PrincipalDep, session: SessionDep, services: ServicesDep):
    job = crud.get_job(session, principal.project, job_id)
    view = job_views.job_view(session, job)
    if services.settings.share_links_in_views and job.status == "succeeded":
        view["links"]["share"], view["links"]["share_expires_at"] = share_link_url(
            session, services.settings, principal, job.id, str(request.base_url)
        )
    return view


@router.get(
    "/v1/jobs/{job_id}/report",
    responses={200: {"content": {"application/json": {}}, "description": "the report (docs/metrics.md)"}, **ERRORS},
)
def get_report(job_id: str, principal: PrincipalDep, session: SessionDep):
    return Response(crud.report_text(session, principal.project, job_id), media_type="application/json")


@router.get(
    "/v1/jobs/{job_id}/pairs.csv", responses={200: {"content": {"text/csv": {}}}, **ERRORS, **HEAVY_READ_ERRORS}
)
def get_pairs_csv(job_id: str, principal: PrincipalDep, session: SessionDep, _heavy: HeavyReadDep):
    return Response(
        crud.pairs_csv(session, principal.project, job_id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{job_id}-pairs.csv"'},
    )


@router.delete("/v1/jobs/{job_id}", status_code=204, responses=ERRORS)
def delete_job(job_id: str, principal: PrincipalDep, services: ServicesDep, session: SessionDep):
    crud.delete_job(session, services.blobs, principal.project, job_id)
    return Response(status_code=204)
