"""``GET /v1/jobs/{id}/deliveries``: the job's webhook callback and every delivery attempt (included by app.main)."""

from __future__ import annotations

from fastapi import APIRouter

from app import jobs as crud
from app.plumbing.deps import ERRORS, PrincipalDep, SessionDep
from app.webhooks.callbacks import deliveries_view

router = APIRouter(tags=["v1"])


@router.get("/v1/jobs/{job_id}/deliveries", responses=ERRORS)
def list_deliveries(job_id: str, principal: PrincipalDep, session: SessionDep):
    """The callback (url, state: waiting, delivered or failed; attempts) and each attempt's status or error."""
    job = crud.get_job(session, principal.project, job_id)
    return deliveries_view(session, job.id)
