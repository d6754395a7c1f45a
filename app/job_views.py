"""A job as the API shows it (job_view, job_links, failures) and the paged job listing with its cursors."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.jobs import STATUSES, is_uuid, progress
from app.plumbing.errors import InvalidRequest
from core.db import Chunk, Job, Pair, PairResult, Report

MAX_FAILURES_SHOWN = 100


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_links(job_id: str) -> dict:
    """Every resource of a job; `compare` is a template (put the baseline job's id in it)."""
    base = f"/v1/jobs/{job_id}"
    return {
        "self": base,
        "report": f"{base}/report",
        "report_html": f"{base}/report.html",
        "pairs_csv": f"{base}/pairs.csv",
        "plots": f"{base}/plots",
        "compare": base + "/compare/{baseline_id}",
        "deliveries": f"{base}/deliveries",
    }


def job_view(
    session: Session,
    job: Job,
    done_failed: tuple[int, int] | None = None,
    *,
    detail: bool = True,
    stored: tuple[dict | None, dict | None] | None = None,
) -> dict:
    """The job as the API shows it; `stored` (the report's headline metrics and summary) is read here unless
    given."""
    done, failed = done_failed if done_failed is not None else progress(session, [job.id]).get(job.id, (0, 0))
    headline = summary = None
    if stored is not None:
        headline, summary = stored
    elif job.status == "succeeded":
        row = session.execute(select(Report.headline, Report.summary).where(Report.job_id == job.id)).first()
        headline, summary = row if row is not None else (None, None)
    view = {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "profile": job.profile,
        "metadata": job.metadata_json,
        "progress": {"done": done, "total": job.n_pairs, "failed": failed},
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "error": job.error,
        "headline": headline,
        "summary": summary,
        "links": job_links(job.id),
    }
    if detail:
        view["failures"] = failures_of(session, job.id, limit=MAX_FAILURES_SHOWN)
        view["errors"] = ([job.error] if job.error else []) + [
            e
            for e in session.scalars(
                select(Chunk.last_error).where(Chunk.job_id == job.id, Chunk.last_error.is_not(None)).distinct()
            )
        ]
    return view


def failures_of(session: Session, job_id: str, limit: int | None = None) -> list[dict]:
    query = (
        select(PairResult.failures)
        .join(Pair, and_(Pair.job_id == PairResult.job_id, Pair.pair_id == PairResult.pair_id))
        .where(PairResult.job_id == job_id, PairResult.row.is_(None))
        .order_by(Pair.idx)
    )
    if limit:
        query = query.limit(limit)
    return [f for failures in session.scalars(query) for f in (failures or [])]


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at in UTC, job id) of a cursor from encode_cursor; anything else (tampered, truncated, a date
    that cannot be moved to UTC, an id that is no job id) is a 422, on every database alike."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        created = datetime.fromisoformat(created)
        if created.tzinfo is None or not isinstance(job_id, str) or not is_uuid(job_id):
            raise ValueError("not a cursor of ours")
        return created.astimezone(UTC), job_id
    except Exception:
        raise InvalidRequest("invalid cursor (use next_cursor from a previous page)", code="invalid_cursor") from None


ORDERS = ("-created_at", "created_at")  # newest first (the default), oldest first


def list_jobs(
    session: Session,
    project: str,
    *,
    status: str | None,
    name: str | None,
    limit: int,
    cursor: str | None,
    name_prefix: str | None = None,
    order: str = "-created_at",
) -> tuple[list[dict], str | None]:
    query = select(Job).where(Job.project == project)
    if status:
        if status not in STATUSES:
            raise InvalidRequest(f"unknown status {status!r} (one of {', '.join(STATUSES)})", code="invalid_status")
        query = query.where(Job.status == status)
    if order not in ORDERS:
        raise InvalidRequest(f"unknown order {order!r} (one of {', '.join(ORDERS)})", code="invalid_order")
    if name:
        query = query.where(Job.name == name)
    if name_prefix:
        query = query.where(Job.name.startswith(name_prefix, autoescape=True))  # % and _ match themselves
    ascending = order == "created_at"
    if cursor:
        created, job_id = decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at > created, and_(Job.created_at == created, Job.id > job_id))
            if ascending
            else or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
        )
    keys = (Job.created_at.asc(), Job.id.asc()) if ascending else (Job.created_at.desc(), Job.id.desc())
    jobs = list(session.scalars(query.order_by(*keys).limit(limit + 1)))
    more = len(jobs) > limit
    jobs = jobs[:limit]
    counts = progress(session, [j.id for j in jobs])
    stored = {
        job_id: (headline, summary)
        for job_id, headline, summary in session.execute(
            select(Report.job_id, Report.headline, Report.summary).where(Report.job_id.in_([j.id for j in jobs]))
        )
    }
    items = [
        job_view(session, j, counts.get(j.id, (0, 0)), detail=False, stored=stored.get(j.id, (None, None)))
        for j in jobs
    ]
    return items, (encode_cursor(jobs[-1]) if more and jobs else None)
