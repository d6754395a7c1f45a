"""Report routes: what people look at from a finished job's report:

* ``GET /v1/jobs/{id}/plots``: which plots this report has, and why the others were skipped.
* ``GET /v1/jobs/{id}/plots/{name}?format=png|svg``: one plot (worker.render.plots).
* ``GET /v1/jobs/{id}/report.html[?worst=10&audio=true&baseline=JOB_ID]``: the self-contained page
  (worker.render.html_report, its sections in worker.render.html_sections), the worst pairs' audio embedded
  from the blob store.
* ``GET /v1/jobs/{id}/compare/{baseline_id}``: paired bootstrap of every metric over the shared
  pair ids (worker.engine.compare), with the pairs that flipped from agree to disagree.
* ``GET /v1/schema/report[?version=1]``: the report's JSON Schema (public: it holds no data).

A report never changes once written, so responses carry an ETag (304 on If-None-Match, checked after the
caller's credentials), report pages are kept in the database once drawn, and rendered plots in a small
in-process cache.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import jobs as crud
from app.plumbing.deps import ERRORS, PrincipalDep, ServicesDep, SessionDep
from app.plumbing.errors import APIError, NotFound
from app.plumbing.heavy_reads import HEAVY_READ_ERRORS, HeavyReadDep
from core.db import Pair, RenderedPage

router = APIRouter(tags=["reports"])

RENDER_VERSION = "3"  # bump when plots or the page change, so ETags change with them
AUDIO_MIME = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
}
HTML_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class PlotUnavailableError(APIError):
    status, code = 404, "plot_unavailable"


class _RenderCache:
    """A few rendered plots (bytes) by (report hash, name, format); bounded by total size."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024):
        self.max_bytes, self.size = max_bytes, 0
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple, value: bytes) -> None:
        with self._lock:
            if key in self._items or len(value) > self.max_bytes:
                return
            self._items[key] = value
            self.size += len(value)
            while self.size > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.size -= len(old)


_cache = _RenderCache()


def _report(session: Session, project: str, job_id: str) -> tuple[dict, str]:
    """The job's report (409 report_not_ready while it runs) and a hash of its text."""
    text = crud.report_text(session, project, job_id)
    return json.loads(text), hashlib.sha256(text.encode()).hexdigest()


def _end_transaction(session: Session) -> None:
    """Done reading: release the database before the slow part (drawing, bootstrapping).

    The embedded SQLite database begins every transaction IMMEDIATE (one writer at a time), so a
    transaction held while plots are drawn would stall the worker writing results.
    """
    session.commit()


def _etag(*parts: str) -> str:
    return '"' + hashlib.sha256("|".join((RENDER_VERSION, *parts)).encode()).hexdigest()[:32] + '"'


def _not_modified(request: Request, etag: str) -> Response | None:
    match = request.headers.get("if-none-match")
    if match and etag in [m.strip() for m in match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return None


def _cache_headers(etag: str) -> dict:
    # no-cache: the browser asks again each time (a 304 when unchanged), so access ends when a session or token does
    return {"ETag": etag, "Cache-Control": "private, no-cache"}


@router.get("/v1/jobs/{job_id}/plots", responses=ERRORS)
def list_plots(job_id: str, principal: PrincipalDep, session: SessionDep):
    """The plots of this job's report (with what each shows) and the skipped ones with their reasons."""
    from worker.render.plots import plan_plots

    report, _ = _report(session, principal.project, job_id)
    _end_transaction(session)
    specs, skipped = plan_plots(report)
    return {
        "plots": [
            {
                "name": s.name,
                "title": s.title,
                "links": {fmt: f"/v1/jobs/{job_id}/plots/{s.name}?format={fmt}" for fmt in ("png", "svg")},
            }
            for s in specs
        ],
        "skipped": [{"name": name, "reason": reason} for name, reason in skipped.items()],
    }


@router.get(
    "/v1/jobs/{job_id}/plots/{name}",
    responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}, "description": "the plot"}, **ERRORS},
)
def get_plot(
    job_id: str,
    name: str,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    format: Annotated[str, Query(pattern="^(png|svg)$", description="png or svg")] = "png",
):
    """One plot of the job's report. 404 plot_unavailable (with the reason) for a plot this report cannot have."""
    return plot_response(request, session, principal.project, job_id, name, format)


def plot_response(request: Request, session: Session, project: str, job_id: str, name: str, format: str) -> Response:
    from worker.render.plots import MIME, PlotUnavailable, get_spec, plot_names, render

    report, digest = _report(session, project, job_id)
    _end_transaction(session)
    etag = _etag(digest, name, format)
    cached = _not_modified(request, etag)
    if cached is not None:
        return cached
    key = (digest, name, format)
    body = _cache.get(key)
    if body is None:
        try:
            spec = get_spec(report, name)
        except PlotUnavailable as error:
            raise PlotUnavailableError(
                f"plot {name!r} is not available for this report: {error.reason}",
                details={"plot": name, "reason": error.reason},
            ) from None
        except KeyError:
            raise NotFound(
                f"no plot named {name!r}", code="unknown_plot", details={"plot": name, "plots": plot_names(report)}
            ) from None
        body = render(spec, format)
        _cache.put(key, body)
    return Response(body, media_type=MIME[format], headers=_cache_headers(etag))


def _audio_resolver(services, session: Session, job_id: str, max_clip_bytes: int, max_page_bytes: int):
    """audio(pair_id, side) -> (bytes, mime) from the blob store, for the page's worst pairs.

    The size is read first: a file over ``max_clip_bytes`` is never read (AudioSkipped, the page says why), nor
    any once the page's clips reach ``max_page_bytes``; a file shared by several pairs is read once. Reads
    through the request's own session: a second session would wait on the first one's SQLite write lock (the
    embedded database begins every transaction IMMEDIATE).
    """
    from worker.render.html_sections import AudioSkipped, over_cap

    read: dict[str, bytes] = {}

    def resolve(pair_id: str, side: str):
        pair = session.get(Pair, (job_id, pair_id))
        if pair is None:
            return None
        sha, path = (
            (pair.source_sha256, pair.source_path) if side == "source" else (pair.target_sha256, pair.target_path)
        )
        mime = AUDIO_MIME.get(PurePosixPath(path).suffix.lower())
        if sha in read:
            return read[sha], mime
        size = services.blobs.stored_size(session, sha)
        if size is None:
            return None
        if size > max_clip_bytes:
            return over_cap(size, max_clip_bytes)
        if sum(map(len, read.values())) + size > max_page_bytes:
            return AudioSkipped(f"the page's audio budget ({max_page_bytes / (1024 * 1024):.0f} MiB) is spent")
        content = services.blobs.read(session, sha)
        if content is None:
            return None
        read[sha] = bytes(content)
        return read[sha], mime

    return resolve


@router.get(
    "/v1/jobs/{job_id}/report.html", responses={200: {"content": {"text/html": {}}}, **ERRORS, **HEAVY_READ_ERRORS}
)
def get_report_html(
    job_id: str,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    services: ServicesDep,
    _heavy: HeavyReadDep,
    worst: Annotated[int, Query(ge=0, le=100, description="worst pairs listed")] = 10,
    audio: Annotated[bool, Query(description="embed the worst pairs' audio")] = True,
    baseline: Annotated[str | None, Query(max_length=64, description="job id to compare with")] = None,
):
    """The report as one self-contained HTML page (drawn once, then served from the database)."""
    return report_page(
        request, services, session, principal.project, job_id, worst=worst, audio=audio, baseline=baseline
    )


def report_page(
    request: Request,
    services,
    session: Session,
    project: str,
    job_id: str,
    *,
    worst: int = 10,
    audio: bool = True,
    baseline: str | None = None,
) -> Response:
    """The report page of ``project``'s job ``job_id``: 304 when the browser has it, the stored page when it was
    drawn before (rendered_pages, deleted with the job), else drawn now and kept."""
    report, digest = _report(session, project, job_id)
    parts = [digest, str(worst), str(audio)]
    if baseline:
        baseline_report, baseline_digest = _report(session, project, baseline)
        parts.append(baseline_digest)
    etag = _etag("html", *parts)
    headers = {**HTML_HEADERS, **_cache_headers(etag)}
    cached = _not_modified(request, etag)
    if cached is not None:
        return cached
    key = etag.strip('"')
    job = crud.get_job(session, project, job_id)
    stored = session.scalar(select(RenderedPage.content).where(RenderedPage.job_id == job.id, RenderedPage.key == key))
    if stored is not None:
        _end_transaction(session)
        return Response(bytes(stored), media_type="text/html; charset=utf-8", headers=headers)
    clips = _worst_clips(services, session, report, job.id, worst) if audio else {}
    _end_transaction(session)
    page = _draw_page(
        services, report, job.name, clips if audio else None, worst, baseline_report if baseline else None, baseline
    )
    _keep_page(services, session, job.id, key, page)
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)


def _worst_clips(services, session: Session, report: dict, job_id: str, worst: int) -> dict:
    """The worst pairs' audio (or why a clip is left out), read now, inside the request's transaction."""
    from worker.render.html_sections import worst_pairs

    resolve = _audio_resolver(
        services, session, job_id, services.settings.report_audio_clip_bytes, services.settings.report_audio_page_bytes
    )
    clips: dict[tuple[str, str], object] = {}
    for pair in worst_pairs(report, worst)[0]:
        for side in ("source", "target"):
            try:
                clips[(pair["pair_id"], side)] = resolve(pair["pair_id"], side)
            except Exception as error:  # shown on the page for that pair, not a failed page
                clips[(pair["pair_id"], side)] = error
    return clips


def _draw_page(services, report, name, clips, worst, baseline_report, baseline_label) -> str:
    from worker.render.html_report import render_html

    def clip(pair_id: str, side: str):
        value = clips.get((pair_id, side))
        if isinstance(value, Exception):
            raise value
        return value

    comparison = None
    if baseline_report is not None:
        from worker.engine.compare import compare_reports

        comparison = compare_reports(report, baseline_report)
    return render_html(
        report,
        title=f"emopres report: {name}" if name else None,
        audio=clip if clips is not None else None,
        worst_n=worst,
        comparison=comparison,
        baseline_label=baseline_label,
        max_audio_bytes=services.settings.report_audio_clip_bytes,
    )


def _keep_page(services, session: Session, job_id: str, key: str, page: str) -> None:
    """Store the drawn page (at most rendered_pages_per_job per job, the oldest dropped; none over
    rendered_page_bytes). A job deleted meanwhile, or the same page stored by another request: nothing kept."""
    settings = services.settings
    content = page.encode()
    if settings.rendered_pages_per_job == 0 or len(content) > settings.rendered_page_bytes:
        return
    try:
        older = list(
            session.scalars(
                select(RenderedPage.key)
                .where(RenderedPage.job_id == job_id)
                .order_by(RenderedPage.created_at.desc())
                .offset(settings.rendered_pages_per_job - 1)
            )
        )
        if older:
            session.execute(delete(RenderedPage).where(RenderedPage.job_id == job_id, RenderedPage.key.in_(older)))
        session.add(RenderedPage(job_id=job_id, key=key, content=content))
        session.commit()
    except IntegrityError:
        session.rollback()


MAX_COMPARE_BOOTSTRAP = 2_000  # resamples run in the request: 20,000 took 12.5 s of a worker thread (issue 16)


@router.get("/v1/jobs/{job_id}/compare/{baseline_id}", responses={**ERRORS, **HEAVY_READ_ERRORS})
def compare_jobs(
    job_id: str,
    baseline_id: str,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    _heavy: HeavyReadDep,
    bootstrap: Annotated[
        int | None, Query(ge=1, le=MAX_COMPARE_BOOTSTRAP, description="resamples (default: the job's)")
    ] = None,
    seed: Annotated[int | None, Query(ge=0, le=2**32 - 1, description="default: the job's seed")] = None,
):
    """Per-metric difference (job - baseline) with a paired bootstrap 95% CI and p-value over the shared pair ids."""
    from worker.engine.compare import compare_reports

    report, digest = _report(session, principal.project, job_id)
    baseline, baseline_digest = _report(session, principal.project, baseline_id)
    _end_transaction(session)
    etag = _etag("compare", digest, baseline_digest, str(bootstrap), str(seed))
    cached = _not_modified(request, etag)
    if cached is not None:
        return cached
    result = compare_reports(report, baseline, n_bootstrap=bootstrap, seed=seed)
    return JSONResponse(result, headers=_cache_headers(etag))


@router.get("/v1/schema/report", responses={200: {"content": {"application/schema+json": {}}}, 404: ERRORS[404]})
def report_schema_route(version: Annotated[str | None, Query(max_length=10)] = None):
    """The JSON Schema of the report (draft 2020-12). No token needed: it describes the format, not data."""
    from worker.engine.report import SCHEMA_VERSION
    from worker.engine.report_schema import SCHEMA_VERSIONS, report_schema

    version = version or SCHEMA_VERSION
    if version not in SCHEMA_VERSIONS:
        raise NotFound(
            f"no report schema version {version!r}",
            code="unknown_schema_version",
            details={"versions": sorted(SCHEMA_VERSIONS)},
        )
    return Response(
        json.dumps(report_schema(version), indent=1),
        media_type="application/schema+json",
        headers={"Cache-Control": "public, max-age=86400"},
    )
