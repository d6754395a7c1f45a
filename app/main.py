"""The FastAPI gateway: API v1, health, metrics; one JSON error shape for every 4xx/5xx.

`create_app(settings)` builds the app; `emopres serve` runs it with uvicorn. Without a broker the
app also runs the embedded in-process worker (worker.embedded); with one it only sends work to
Celery and runs the reconciler.
"""
from __future__ import annotations

import asyncio
import csv
import importlib
import io
import logging
import re
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Iterator

from alembic.runtime.migration import MigrationContext
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app import __version__
from app import jobs as crud
from app import webhooks
from app.auth import DEFAULT_PROJECT, Principal, verify_token
from app.blobstore import BlobStore
from app.db import Chunk, Job, head_revision, make_engine, make_session_factory, upgrade
from app.errors import APIError, InvalidRequest, NotFound, TooLarge, Unauthorized, Unavailable, error_body
from app.forms import read_multipart
from app.intake import (AudioFile, archive_contents, build_request, check_field, check_name, check_profile,
                        decode_manifest, normalise_path, parse_metadata, validate_audio)
from app.schemas import (PAIR_FORM_SCHEMA, JOB_FORM_SCHEMA, ErrorResponse, Health, JobCreated, JobDetail, JobList,
                         Readiness)
from app.settings import Settings, get_settings

log = logging.getLogger("emopres.api")

REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
ROUTER_MODULES = ("app.report_routes", "app.webhook_routes")  # more v1 routes (plots, HTML report, comparisons), when present
TEXT_FIELDS = ("name", "profile", "metadata", "group_column", "callback_url")
ERRORS = {r: {"model": ErrorResponse} for r in (401, 404, 409, 413, 422, 503)}


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    blobs: BlobStore
    queue: object = None
    embedded: object = None
    reconciler: object = None
    webhooks: object = None  # app.webhook_delivery.Dispatcher
    metrics: object = None
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- dependencies


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    session = services.sessions()
    try:
        yield session
    finally:
        try:
            session.close()
        except OperationalError as error:
            # the database went away after the route had answered: the client has its response already
            # (an error here would be raised after it started, and uvicorn would drop the connection);
            # the pool has invalidated the connection, so the next request reconnects
            log.warning("database connection lost while ending a request: %s", str(error).splitlines()[0])


SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(services: ServicesDep,
                  authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> Principal:
    if services.settings.auth_disabled:
        return Principal(DEFAULT_PROJECT, None)
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    with services.sessions() as session:  # its own short transaction (SQLite: one writer at a time)
        principal = verify_token(session, token)
    if principal is None:
        raise Unauthorized("invalid or revoked token")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255,
                                              description="a retry with the same key returns the same job")]


# ---------------------------------------------------------------- upload handling (runs in a thread)


def _reader(upload: UploadFile):
    def read() -> bytes:
        upload.file.seek(0)
        return upload.file.read()
    return read


def _split_form(form) -> tuple[UploadFile | None, UploadFile | None, dict[str, AudioFile], dict[str, str]]:
    manifest = archive = None
    files: dict[str, AudioFile] = {}
    texts: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key in ("manifest", "archive"):
                if (manifest if key == "manifest" else archive) is not None:
                    raise InvalidRequest(f"form field {key!r} given twice", code="duplicate_field")
                manifest, archive = (value, archive) if key == "manifest" else (manifest, value)
                continue
            if key in TEXT_FIELDS:
                raise InvalidRequest(f"form field {key!r} must be text, not a file", code="invalid_field")
            path = normalise_path(key, f"form field {key!r}")
            if path in files:
                raise InvalidRequest(f"audio file {path} given twice", code="duplicate_field", details={"path": path})
            files[path] = AudioFile(path, value.size if value.size is not None else _size(value), _reader(value))
        else:
            if key == "manifest":
                raise InvalidRequest("manifest must be sent as a file (multipart file field)", code="invalid_field")
            if key not in TEXT_FIELDS:
                raise InvalidRequest(f"unknown form field {key!r}: audio must be sent as files named by their "
                                     f"manifest path; other fields: {', '.join(TEXT_FIELDS)}", code="unknown_field",
                                     details={"field": key})
            if key in texts:
                raise InvalidRequest(f"form field {key!r} given twice", code="duplicate_field")
            texts[key] = check_field(value, f"form field {key!r}")
    return manifest, archive, files, texts


def _size(upload: UploadFile) -> int:
    upload.file.seek(0, 2)
    return upload.file.tell()


def submit(services: Services, principal: Principal, idempotency_key: str | None, *, manifest_name: str | None,
           manifest_bytes: bytes, files: dict[str, AudioFile], texts: dict[str, str]) -> tuple[object, bool]:
    settings = services.settings
    name = check_name(texts.get("name"))
    profile = check_profile(texts.get("profile"), settings.profile)
    metadata = parse_metadata(texts.get("metadata"), settings.max_metadata_bytes)
    callback_url = webhooks.check_callback_url(texts.get("callback_url"), settings)
    request = build_request(manifest_text=decode_manifest(manifest_bytes, manifest_name), manifest_name=manifest_name,
                            files=files, name=name, profile=profile, metadata=metadata,
                            group_column=(texts.get("group_column") or "").strip() or None, settings=settings)
    if idempotency_key:
        with services.sessions() as session:
            existing = crud.find_by_idempotency_key(session, principal.project, idempotency_key)
        if existing is not None:
            return crud.check_replay(existing, request.fingerprint), False
    validate_audio(request, settings.max_audio_seconds)
    callback = webhooks.callback_row(services.sessions, callback_url, principal.token_name, settings)
    job, created = crud.create_job(services.sessions, services.blobs, request, project=principal.project,
                                   idempotency_key=idempotency_key, chunk_size=settings.chunk_size,
                                   bootstrap=settings.bootstrap, seed=settings.seed, callback=callback)
    if created:
        from worker.tasks import enqueue_job

        enqueue_job(services.sessions, services.queue, job.id, job.n_chunks)
        if services.metrics:
            services.metrics.jobs_created.inc()
            services.metrics.pairs_accepted.inc(job.n_pairs)
    return job, created


def submit_form(services: Services, principal: Principal, idempotency_key: str | None, form) -> tuple[object, bool]:
    manifest, archive, files, texts = _split_form(form)
    if archive is not None:
        if manifest is not None or files:
            raise InvalidRequest("send either an archive or a manifest with audio files, not both", code="invalid_field")
        with archive_contents(archive.file, services.settings) as (name, manifest_bytes, archived):
            return submit(services, principal, idempotency_key, manifest_name=name, manifest_bytes=manifest_bytes,
                          files=archived, texts=texts)
    if manifest is None:
        raise InvalidRequest("missing 'manifest' (a CSV/JSONL pairs file) or 'archive' (zip/tar with manifest.csv)",
                             code="missing_manifest")
    return submit(services, principal, idempotency_key, manifest_name=manifest.filename,
                  manifest_bytes=_reader(manifest)(), files=files, texts=texts)


def submit_pair(services: Services, principal: Principal, idempotency_key: str | None, form) -> tuple[object, bool]:
    uploads, texts = {}, {}
    for key, value in form.multi_items():
        if key in ("source", "target") and isinstance(value, UploadFile):
            if key in uploads:
                raise InvalidRequest(f"form field {key!r} given twice", code="duplicate_field")
            uploads[key] = value
        elif key in ("label", "pair_id", "name", "profile", "metadata", "callback_url") and not isinstance(value, UploadFile):
            texts[key] = check_field(value, f"form field {key!r}")
        else:
            raise InvalidRequest(f"unexpected form field {key!r} (source and target files; label, pair_id, name, "
                                 "profile, metadata text)", code="unknown_field", details={"field": key})
    missing = [k for k in ("source", "target") if k not in uploads]
    if missing:
        raise InvalidRequest(f"missing audio file field(s): {', '.join(missing)}", code="missing_audio",
                             details={"missing": missing})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["pair_id", "source", "target", "label"])
    writer.writerow([(texts.get("pair_id") or "").strip() or "1", "source", "target", texts.get("label") or ""])
    files = {k: AudioFile(k, v.size if v.size is not None else _size(v), _reader(v)) for k, v in uploads.items()}
    return submit(services, principal, idempotency_key, manifest_name="pairs.csv", manifest_bytes=out.getvalue().encode(),
                  files=files, texts={k: v for k, v in texts.items() if k in TEXT_FIELDS})


async def _read_form(request: Request, settings: Settings):
    return await read_multipart(request, max_files=settings.max_files + 4, max_fields=64)


def _created_response(request: Request, principal: Principal, job, created: bool) -> JSONResponse:
    log.info("job %s %s: %d pairs, project %s, request_id=%s", job.id, "created" if created else "replayed",
             job.n_pairs, principal.project, request.scope.get("state", {}).get("request_id"))
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse({"id": job.id, "status": job.status}, status_code=202, headers=headers)


# ---------------------------------------------------------------- middleware


class RequestMiddleware:
    """Request id (X-Request-ID in and out), access log, Prometheus request metrics, body-size cap."""

    def __init__(self, app, services_getter) -> None:
        self.app, self.services_getter = app, services_getter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        services: Services = self.services_getter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        # a client's id is kept only when it is a plain token: it goes into logs (no control characters, no
        # forged log lines) and back into a response header
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        limit = services.settings.max_upload_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            response = JSONResponse(error_body("payload_too_large", f"request body is over the {limit}-byte cap",
                                               {"limit": limit}), status_code=413)
            await response(scope, receive, send_wrapper)
            self._record(services, scope, status_holder["status"], started, request_id)
            return
        received = 0
        disconnected = False

        async def limited_receive():
            nonlocal received, disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            elif message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(f"request body is over the {limit}-byte cap", details={"limit": limit})
            return message

        try:
            await self.app(scope, limited_receive, send_wrapper)
        finally:
            self._record(services, scope, status_holder["status"], started, request_id, disconnected)

    @staticmethod
    def _record(services, scope, status, started, request_id, disconnected: bool = False) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        if disconnected:  # nobody got a response: not a server error
            if services.metrics:
                services.metrics.disconnects.labels(scope["method"], template).inc()
            log.info("%s %s client disconnected after %.1fms request_id=%s", scope["method"], template,
                     elapsed * 1000, request_id)
            return
        if services.metrics:
            services.metrics.observe(scope["method"], template, status, elapsed)
        log.info("%s %s %s %.1fms request_id=%s", scope["method"], template, status, elapsed * 1000, request_id)


# ---------------------------------------------------------------- metrics


class Metrics:
    def __init__(self, services: Services) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram
        from prometheus_client.core import GaugeMetricFamily

        self.registry = CollectorRegistry()
        self.requests = Counter("emopres_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("emopres_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.jobs_created = Counter("emopres_jobs_created_total", "jobs accepted", registry=self.registry)
        self.pairs_accepted = Counter("emopres_pairs_accepted_total", "pairs accepted", registry=self.registry)
        self.disconnects = Counter("emopres_client_disconnects_total", "requests whose client went away before the "
                                   "response (not counted in emopres_http_requests_total)", ["method", "route"],
                                   registry=self.registry)

        class ConnectionCollector:
            def collect(self_inner):
                from prometheus_client.core import CounterMetricFamily

                from app.connections import CONNECTION_EVENTS

                family = CounterMetricFamily("emopres_connections_closed", "connections the server reset or closed",
                                             labels=["reason"])
                for reason in ("refused_over_limit", "header_timeout", "body_timeout"):
                    family.add_metric([reason], CONNECTION_EVENTS[reason])
                return [family]

        self.registry.register(ConnectionCollector())

        class DatabaseCollector:
            def collect(self_inner):
                jobs = GaugeMetricFamily("emopres_jobs", "jobs by status", labels=["status"])
                chunks = GaugeMetricFamily("emopres_chunks", "work chunks by status", labels=["status"])
                try:
                    with services.sessions() as session:
                        for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
                            jobs.add_metric([status], count)
                        for status, count in session.execute(select(Chunk.status, func.count())
                                                             .group_by(Chunk.status)):
                            chunks.add_metric([status], count)
                except Exception:  # the database is away: /readyz says so
                    return []
                return [jobs, chunks]

        self.registry.register(DatabaseCollector())

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# ---------------------------------------------------------------- readiness


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


# ---------------------------------------------------------------- app


def build_services(settings: Settings) -> Services:
    engine = make_engine(settings.sqlalchemy_url)
    services = Services(settings, make_session_factory(engine), BlobStore.from_settings(settings))
    services.extra["engine"] = engine
    return services


def start_services(services: Services, *, start_worker: bool = True) -> None:
    settings = services.settings
    if settings.should_migrate:
        upgrade(settings.sqlalchemy_url)
    if settings.embedded:
        from worker.embedded import EmbeddedQueue

        services.embedded = EmbeddedQueue(settings, engine=services.extra["engine"])
        services.queue = services.embedded
        if start_worker:
            services.embedded.start()
    else:
        from worker.celery_app import CeleryQueue, make_celery
        from worker.tasks import Reconciler, WorkerContext

        services.queue = CeleryQueue(make_celery(settings), settings.queue_name)
        if start_worker:
            ctx = WorkerContext(settings, queue=services.queue, engine=services.extra["engine"])
            services.reconciler = Reconciler(ctx, settings.reconcile_seconds).start()
    if start_worker:  # in this process in both modes: it reads finished jobs from the database
        from app.webhook_delivery import Dispatcher

        services.webhooks = Dispatcher(settings, services.sessions).start()


def stop_services(services: Services) -> None:
    if services.webhooks is not None:
        services.webhooks.stop()
    if services.embedded is not None:
        services.embedded.stop()
    if services.reconciler is not None:
        services.reconciler.stop()
    services.extra["engine"].dispose()


def create_app(settings: Settings | None = None, *, start_worker: bool = True) -> FastAPI:
    settings = settings or get_settings()
    services = build_services(settings)
    services.metrics = Metrics(services)

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
    app = FastAPIOffline(title="emopres", version=__version__, lifespan=lifespan, static_url="/docs-assets",
                  description="Emotion preservation evaluation for expressive speech-to-speech translation. "
                              "Every v1 route needs `Authorization: Bearer <token>` (`emopres tokens create NAME`). "
                              "Errors: `{\"error\": {\"code\", \"message\", \"details\"}}`.")
    app.state.services = services
    # uploads are decoded, hashed and stored a few at a time: a burst of CI clients queues here (cheaply, in the
    # event loop) instead of as dozens of threads fighting for the GIL, the database connections and, with
    # SQLite, its one write lock (which made every upload in a burst slow and some time out)
    submissions = asyncio.Semaphore(settings.submit_slots)
    app.add_middleware(RequestMiddleware, services_getter=lambda: services)
    install_error_handlers(app)

    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorResponse}}, tags=["ops"])
    def readyz():
        checks = readiness(services)
        if not all(c["ok"] for c in checks.values()):
            failing = [name for name, c in checks.items() if not c["ok"]]
            raise Unavailable(f"not ready: {', '.join(failing)}", details={"checks": checks})
        return {"status": "ok", "checks": checks}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse, responses={404: {"model": ErrorResponse}})
    def metrics():
        if not services.settings.metrics_enabled:
            raise NotFound("metrics are off in this deployment (EMOPRES_METRICS_ENABLED=1 turns them on)",
                           code="metrics_disabled")
        body, content_type = services.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1", tags=["v1"])
    def info(principal: PrincipalDep):
        s = services.settings
        return {"version": __version__, "profile": s.profile, "project": principal.project,
                "limits": {"max_upload_bytes": s.max_upload_bytes, "max_file_bytes": s.max_file_bytes,
                           "max_audio_seconds": s.max_audio_seconds, "max_pairs": s.max_pairs,
                           "max_files": s.max_files}}

    @app.post("/v1/jobs", status_code=202, response_model=JobCreated, responses=ERRORS, tags=["v1"],
              openapi_extra={"requestBody": {"required": True,
                                             "content": {"multipart/form-data": {"schema": JOB_FORM_SCHEMA}}}})
    async def create_job(request: Request, principal: PrincipalDep, idempotency_key: IdempotencyKey = None):
        """A job: `manifest` + audio files named by their manifest paths, or one `archive`."""
        form = await _read_form(request, services.settings)
        try:
            async with submissions:
                job, created = await run_in_threadpool(submit_form, services, principal, idempotency_key, form)
        finally:
            await form.close()
        return _created_response(request, principal, job, created)

    @app.post("/v1/pairs", status_code=202, response_model=JobCreated, responses=ERRORS, tags=["v1"],
              openapi_extra={"requestBody": {"required": True,
                                             "content": {"multipart/form-data": {"schema": PAIR_FORM_SCHEMA}}}})
    async def create_pair(request: Request, principal: PrincipalDep, idempotency_key: IdempotencyKey = None):
        """A one-pair job: `source` and `target` audio, optional `label` and `pair_id`."""
        form = await _read_form(request, services.settings)
        try:
            async with submissions:
                job, created = await run_in_threadpool(submit_pair, services, principal, idempotency_key, form)
        finally:
            await form.close()
        return _created_response(request, principal, job, created)

    @app.get("/v1/jobs", response_model=JobList, responses=ERRORS, tags=["v1"])
    def list_jobs(principal: PrincipalDep, session: SessionDep,
                  status: Annotated[str | None, Query(description="queued, running, succeeded or failed")] = None,
                  name: Annotated[str | None, Query(max_length=200, description="exact name")] = None,
                  name_prefix: Annotated[str | None, Query(max_length=200, description="names starting with this, "
                                                           "e.g. my-s2st@ (a system's versions)")] = None,
                  order: Annotated[str, Query(description="-created_at (newest first) or created_at")] = "-created_at",
                  limit: Annotated[int, Query(ge=1, le=200)] = 50,
                  cursor: Annotated[str | None, Query(max_length=500)] = None):
        if name is not None:
            check_field(name, "name")
        items, next_cursor = crud.list_jobs(session, principal.project, status=status, name=name, limit=limit,
                                            cursor=cursor, name_prefix=name_prefix, order=order)
        return {"items": items, "next_cursor": next_cursor}

    @app.get("/v1/jobs/{job_id}", response_model=JobDetail, responses=ERRORS, tags=["v1"])
    def get_job(job_id: str, principal: PrincipalDep, session: SessionDep):
        return crud.job_view(session, crud.get_job(session, principal.project, job_id))

    @app.get("/v1/jobs/{job_id}/report", responses={200: {"content": {"application/json": {}},
                                                          "description": "the report (DESIGN.md, Report)"}, **ERRORS},
             tags=["v1"])
    def get_report(job_id: str, principal: PrincipalDep, session: SessionDep):
        return Response(crud.report_text(session, principal.project, job_id), media_type="application/json")

    @app.get("/v1/jobs/{job_id}/pairs.csv", responses={200: {"content": {"text/csv": {}}}, **ERRORS}, tags=["v1"])
    def get_pairs_csv(job_id: str, principal: PrincipalDep, session: SessionDep):
        return Response(crud.pairs_csv(session, principal.project, job_id), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{job_id}-pairs.csv"'})

    @app.delete("/v1/jobs/{job_id}", status_code=204, responses=ERRORS, tags=["v1"])
    def delete_job(job_id: str, principal: PrincipalDep, session: SessionDep):
        crud.delete_job(session, services.blobs, principal.project, job_id)
        return Response(status_code=204)

    for module_name in ROUTER_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        app.include_router(module.router)
    return app


# ---------------------------------------------------------------- errors


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              406: "not_acceptable", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
              422: "invalid_request", 429: "too_many_requests", 500: "internal_error", 503: "service_unavailable"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = HTTP_CODES.get(error.status_code, "error")
        message = error.detail if isinstance(error.detail, str) else code.replace("_", " ")
        if error.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return JSONResponse(error_body(code, message), status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        errors = jsonable_encoder(error.errors(), exclude={"ctx", "url", "input"})
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", []))
        return JSONResponse(error_body("validation_error", f"{where}: {first.get('msg', 'invalid request')}",
                                       {"errors": errors}), status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, error: ClientDisconnect):
        return Response(status_code=499)  # never sent: the middleware counts a disconnect (no traceback in the log)

    @app.exception_handler(PoolTimeout)
    async def database_busy(request: Request, error: PoolTimeout):
        log.warning("database connection pool exhausted: %s", str(error).splitlines()[0])
        return JSONResponse(error_body("service_unavailable", "the service is busy (no database connection free); "
                                       "retry shortly"), status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(OperationalError)
    async def database_error(request: Request, error: OperationalError):
        log.error("database unavailable: %s", str(error).splitlines()[0])
        return JSONResponse(error_body("service_unavailable", "the database is unavailable; retry shortly"),
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        request_id = request.scope.get("state", {}).get("request_id")
        log.exception("internal error (request_id=%s)", request_id)
        return JSONResponse(error_body("internal_error", "internal error", {"request_id": request_id}),
                            status_code=500)
