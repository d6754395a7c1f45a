"""Job submission from multipart uploads (runs in a thread): the form split into manifest, archive,
audio files and text fields, checked, stored and enqueued. ``POST /v1/jobs`` and ``POST /v1/pairs``
differ only in how their form becomes a manifest and files."""

from __future__ import annotations

import csv
import io
import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from app import jobs as crud
from app.auth import Principal
from app.plumbing.errors import InvalidRequest
from app.services import Services
from app.submission.archives import archive_contents
from app.submission.forms import read_multipart
from app.submission.intake import (
    AudioFile,
    build_request,
    check_field,
    check_manifest_size,
    check_name,
    check_profile,
    decode_manifest,
    normalise_path,
    parse_metadata,
    validate_audio,
)
from app.webhooks import callbacks as webhooks
from core.db import begin_read_only
from core.settings import Settings

log = logging.getLogger("emopres.api")

TEXT_FIELDS = ("name", "profile", "metadata", "group_column", "callback_url")


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
                raise InvalidRequest(
                    f"unknown form field {key!r}: audio must be sent as files named by their "
                    f"manifest path; other fields: {', '.join(TEXT_FIELDS)}",
                    code="unknown_field",
                    details={"field": key},
                )
            if key in texts:
                raise InvalidRequest(f"form field {key!r} given twice", code="duplicate_field")
            texts[key] = check_field(value, f"form field {key!r}")
    return manifest, archive, files, texts


def _size(upload: UploadFile) -> int:
    upload.file.seek(0, 2)
    return upload.file.tell()


def submit(
    services: Services,
    principal: Principal,
    idempotency_key: str | None,
    *,
    manifest_name: str | None,
    manifest_bytes: bytes,
    files: dict[str, AudioFile],
    texts: dict[str, str],
) -> tuple[object, bool]:
    settings = services.settings
    name = check_name(texts.get("name"))
    profile = check_profile(texts.get("profile"), settings.profile)
    metadata = parse_metadata(texts.get("metadata"), settings.max_metadata_bytes)
    callback_url = webhooks.check_callback_url(texts.get("callback_url"), settings)
    manifest_text = decode_manifest(manifest_bytes, manifest_name)
    del manifest_bytes  # the text alone is held while it is parsed (a manifest may be 64 MiB)
    request = build_request(
        manifest_text=manifest_text,
        manifest_name=manifest_name,
        files=files,
        name=name,
        profile=profile,
        metadata=metadata,
        group_column=(texts.get("group_column") or "").strip() or None,
        settings=settings,
    )
    if idempotency_key:
        with begin_read_only(services.sessions()) as session:
            existing = crud.find_by_idempotency_key(session, principal.project, idempotency_key)
        if existing is not None:
            return crud.check_replay(existing, request.fingerprint), False
    validate_audio(request, settings.max_audio_seconds)
    callback = webhooks.callback_row(services.sessions, callback_url, principal.token_name, settings)
    job, created = crud.create_job(
        services.sessions,
        services.blobs,
        request,
        project=principal.project,
        idempotency_key=idempotency_key,
        chunk_size=settings.chunk_size,
        bootstrap=settings.bootstrap,
        seed=settings.seed,
        callback=callback,
        writer=services.job_writer,
    )
    if created:
        enqueue(services, job)
        if services.metrics:
            services.metrics.jobs_created.inc()
            services.metrics.pairs_accepted.inc(job.n_pairs)
    return job, created


def enqueue(services: Services, job) -> None:
    """After the commit, the job is safe: its chunks are sent after the 202 (or now, without a running enqueuer)."""
    if services.enqueuer is not None:
        services.enqueuer.add(job.id, job.n_chunks)
        return
    from worker.queue.tasks import enqueue_job

    enqueue_job(services.sessions, services.queue, job.id, job.n_chunks)


def submit_form(services: Services, principal: Principal, idempotency_key: str | None, form) -> tuple[object, bool]:
    manifest, archive, files, texts = _split_form(form)
    if archive is not None:
        if manifest is not None or files:
            raise InvalidRequest(
                "send either an archive or a manifest with audio files, not both", code="invalid_field"
            )
        with archive_contents(archive.file, services.settings) as (name, manifest_bytes, archived):
            return submit(
                services,
                principal,
                idempotency_key,
                manifest_name=name,
                manifest_bytes=manifest_bytes,
                files=archived,
                texts=texts,
            )
    if manifest is None:
        raise InvalidRequest(
            "missing 'manifest' (a CSV/JSONL pairs file) or 'archive' (zip/tar with manifest.csv)",
            code="missing_manifest",
        )
    check_manifest_size(manifest.size if manifest.size is not None else _size(manifest))  # before reading it
    return submit(
        services,
        principal,
        idempotency_key,
        manifest_name=manifest.filename,
        manifest_bytes=_reader(manifest)(),
        files=files,
        texts=texts,
    )


def submit_pair(services: Services, principal: Principal, idempotency_key: str | None, form) -> tuple[object, bool]:
    uploads, texts = {}, {}
    for key, value in form.multi_items():
        if key in ("source", "target") and isinstance(value, UploadFile):
            if key in uploads:
                raise InvalidRequest(f"form field {key!r} given twice", code="duplicate_field")
            uploads[key] = value
        elif key in ("label", "pair_id", "name", "profile", "metadata", "callback_url") and not isinstance(
            value, UploadFile
        ):
            texts[key] = check_field(value, f"form field {key!r}")
        else:
            raise InvalidRequest(
                f"unexpected form field {key!r} (source and target files; label, pair_id, name, "
                "profile, metadata text)",
                code="unknown_field",
                details={"field": key},
            )
    missing = [k for k in ("source", "target") if k not in uploads]
    if missing:
        raise InvalidRequest(
            f"missing audio file field(s): {', '.join(missing)}", code="missing_audio", details={"missing": missing}
        )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["pair_id", "source", "target", "label"])
    writer.writerow([(texts.get("pair_id") or "").strip() or "1", "source", "target", texts.get("label") or ""])
    files = {k: AudioFile(k, v.size if v.size is not None else _size(v), _reader(v)) for k, v in uploads.items()}
    return submit(
        services,
        principal,
        idempotency_key,
        manifest_name="pairs.csv",
        manifest_bytes=out.getvalue().encode(),
        files=files,
        texts={k: v for k, v in texts.items() if k in TEXT_FIELDS},
    )


async def read_form(request: Request, settings: Settings):
    return await read_multipart(request, max_files=settings.max_files + 4, max_fields=64)


def created_response(request: Request, principal: Principal, job, created: bool) -> JSONResponse:
    log.info(
        "job %s %s: %d pairs, project %s, request_id=%s",
        job.id,
        "created" if created else "replayed",
        job.n_pairs,
        principal.project,
        request.scope.get("state", {}).get("request_id"),
    )
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse({"id": job.id, "status": job.status}, status_code=202, headers=headers)
