"""Jobs in the database: create (with idempotency), read, delete, report, per-pair CSV (the API's views of a job
and the job listing: app.job_views).

Routes call these; they know nothing of HTTP beyond raising APIError.
"""

from __future__ import annotations

import csv
import io
import math
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from sqlalchemy import Row, and_, bindparam, case, delete, func, insert, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.plumbing.errors import Conflict, NotFound
from app.submission.intake import JobRequest
from core.batch_thread import BatchThread
from core.blobstore import BlobStore
from core.catalogue import PAIR_METRICS, SIDE_READING_METRICS
from core.db import Chunk, Job, Pair, PairResult, Report, Webhook, insert_for, utcnow

STATUSES = ("queued", "running", "succeeded", "failed")
FINISHED = ("succeeded", "failed")


# what a replayed submission answers with; built once (every keyed submission runs it)
BY_IDEMPOTENCY_KEY = select(Job.id, Job.status, Job.n_pairs, Job.request_sha256).where(
    Job.project == bindparam("project"), Job.idempotency_key == bindparam("key")
)


def find_by_idempotency_key(session: Session, project: str, key: str) -> Row | None:
    """The job holding this Idempotency-Key (id, status, n_pairs, request_sha256), or None: a Core row, not an
    ORM entity."""
    return session.connection().execute(BY_IDEMPOTENCY_KEY, {"project": project, "key": key}).first()


def check_replay(job: Job | Row, fingerprint: str) -> Job | Row:
    if job.request_sha256 != fingerprint:
        raise Conflict(
            "this Idempotency-Key was used for a different request",
            code="idempotency_conflict",
            details={"job_id": job.id},
        )
    return job


def chunk_of_pairs(request: JobRequest, chunk_size: int) -> list[int]:
    """Each pair's chunk: pairs ranked by audio length (source + target, longest first; ties keep their order)
    fill the chunks in turn. A chunk's utterances then pad little against each other in a worker's batches,
    and the longest chunks go to the queue first (longest-processing-time-first across workers)."""

    def seconds(pair) -> float:
        return sum(request.seconds.get(request.files[path].sha256, 0.0) for path in (pair.source, pair.target))

    order = sorted(range(len(request.pairs)), key=lambda i: -seconds(request.pairs[i]))
    chunks = [0] * len(order)
    for rank, index in enumerate(order):
        chunks[index] = rank // chunk_size
    return chunks


@dataclass
class NewJob:
    """A validated job whose blob files are written, waiting for its rows to be stored."""

    job: Job
    request: JobRequest
    chunks: list[int]
    callback: dict | None
    stored: Future = field(default_factory=Future)  # True: created; False: its Idempotency-Key names another job


def new_job(
    blobs: BlobStore,
    request: JobRequest,
    *,
    project: str,
    idempotency_key: str | None,
    chunk_size: int,
    bootstrap: int,
    seed: int,
    callback: dict | None = None,
) -> NewJob:
    """The job's rows, after writing its blob files (fs store: each on disk, fsynced, before any row refers to it;
    s3: checked, uploaded in the transaction before its commit)."""
    n_pairs = len(request.pairs)
    job = Job(
        id=str(uuid.uuid4()),
        project=project,
        name=request.name,
        profile=request.profile,
        metadata_json=request.metadata,
        status="queued",
        n_pairs=n_pairs,
        n_chunks=math.ceil(n_pairs / chunk_size),
        use_groups=request.use_groups,
        bootstrap=bootstrap,
        seed=seed,
        idempotency_key=idempotency_key,
        request_sha256=request.fingerprint,
        created_at=utcnow(),
    )
    blobs.prepare({sha: audio.read for sha, audio in request.blobs.items()})
    return NewJob(job, request, chunk_of_pairs(request, chunk_size), callback)


def create_job(
    session_factory,
    blobs: BlobStore,
    request: JobRequest,
    *,
    project: str,
    idempotency_key: str | None,
    chunk_size: int,
    bootstrap: int,
    seed: int,
    callback: dict | None = None,
    writer: JobWriter | None = None,
) -> tuple[Job | Row, bool]:
    """Store the blobs, the job, its pairs and chunks (and its webhook callback), committed before this returns
    (with a writer: in its next transaction, with other jobs). (job, created); a replay's job is the key's row
    (find_by_idempotency_key)."""
    item = new_job(
        blobs,
        request,
        project=project,
        idempotency_key=idempotency_key,
        chunk_size=chunk_size,
        bootstrap=bootstrap,
        seed=seed,
        callback=callback,
    )
    if writer is not None:
        writer.submit(item)
    else:
        store_jobs(session_factory, blobs, [item])
    if item.stored.result():
        return item.job, True
    with session_factory() as session:  # another job holds the key (a retry, or a concurrent twin)
        existing = find_by_idempotency_key(session, project, idempotency_key)
    if existing is None:  # pragma: no cover - the conflicting job was deleted meanwhile
        raise Conflict("this Idempotency-Key was used by a job deleted meanwhile; retry", code="idempotency_conflict")
    return check_replay(existing, request.fingerprint), False


def store_jobs(session_factory, blobs: BlobStore, items: list[NewJob]) -> None:
    """One transaction for all: their blob rows, then their job rows (a job whose Idempotency-Key is taken is
    skipped, stored=False), pairs and chunks, one statement per table. Each item's `stored` is set after the
    commit, or to the error. One commit (one fsync) for a whole burst of submissions: with SQLite's single writer,
    each commit held every other submission."""
    try:
        with session_factory() as session:
            readers = {sha: audio.read for item in items for sha, audio in item.request.blobs.items()}
            blobs.put_many(session, readers)
            created = _insert_jobs(session, items)
            _insert_job_rows(session, [item for item in items if item.job.id in created])
            session.commit()
    except Exception as error:
        if len(items) > 1 and isinstance(error, (IntegrityError, DataError)):
            for item in items:  # a job the database refuses must not fail the others: each alone
                store_jobs(session_factory, blobs, [item])
        else:  # or the database is away: every job of the batch gets the error
            for item in items:
                item.stored.set_exception(error)
        return
    for item in items:
        item.stored.set_result(item.job.id in created)


def _insert_jobs(session: Session, items: list[NewJob]) -> set[str]:
    """The job rows, in one statement (executemany with RETURNING: one multi-row INSERT); the ids inserted, i.e.
    without the jobs whose Idempotency-Key another job holds."""
    rows = [
        {attr.columns[0].key: getattr(item.job, attr.key) for attr in sa_inspect(Job).column_attrs} for item in items
    ]
    statement = (
        insert_for(session, Job.__table__)
        .on_conflict_do_nothing(index_elements=["project", "idempotency_key"])
        .returning(Job.__table__.c.id)
    )
    return set(session.scalars(statement, rows))


def _insert_job_rows(session: Session, items: list[NewJob]) -> None:
    """The pairs, chunks and webhook callbacks of new jobs: one Core executemany per table (compiled once)."""
    pairs = [
        dict(
            job_id=item.job.id,
            pair_id=pair.pair_id,
            idx=i,
            chunk=item.chunks[i],
            source_path=pair.source,
            target_path=pair.target,
            source_sha256=item.request.files[pair.source].sha256,
            target_sha256=item.request.files[pair.target].sha256,
            label=pair.label,
            group_id=pair.group,
        )
        for item in items
        for i, pair in enumerate(item.request.pairs)
    ]
    chunks = [
        dict(job_id=item.job.id, idx=i, status="pending", attempts=0)
        for item in items
        for i in range(item.job.n_chunks)
    ]
    callbacks = [dict(job_id=item.job.id, **item.callback) for item in items if item.callback is not None]
    for table, rows in ((Pair.__table__, pairs), (Chunk.__table__, chunks), (Webhook.__table__, callbacks)):
        if rows:
            session.execute(insert(table), rows)


class JobWriter:
    """Stores new jobs from one thread, as many per transaction as have arrived meanwhile (group commit): a burst
    of submissions costs a few commits, not one each, and none waits behind another's commit."""

    MAX_BATCH = 64

    def __init__(self, sessions: Callable[[], sessionmaker], blobs: BlobStore) -> None:
        self.sessions, self.blobs = sessions, blobs  # sessions(): the service's session factory now
        self._thread = BatchThread("emopres-job-writer", self._store, self.MAX_BATCH)

    def start(self) -> JobWriter:
        self._thread.start()
        return self

    def submit(self, item: NewJob) -> None:
        self._thread.put(item)

    def stop(self, timeout: float = 30.0) -> None:
        """Store what was submitted, then end the thread."""
        self._thread.stop(timeout)

    def _store(self, items: list[NewJob]) -> None:
        try:
            store_jobs(self.sessions(), self.blobs, items)
        except Exception as error:  # pragma: no cover - store_jobs answers every item; never leave one waiting
            for item in items:
                if not item.stored.done():
                    item.stored.set_exception(error)


def get_job(session: Session, project: str, job_id: str) -> Job:
    job = session.get(Job, job_id) if is_uuid(job_id) else None
    if job is None or job.project != project:  # another project's job is as absent as a missing one
        raise NotFound(f"no job {job_id}", details={"job_id": job_id})
    return job


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value  # the canonical form only (no braces, urn: or NUL around it)
    except ValueError:
        return False


def progress(session: Session, job_ids: list[str]) -> dict[str, tuple[int, int]]:
    """job id -> (done, failed) pairs."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(PairResult.job_id, func.count(), func.sum(case((PairResult.row.is_(None), 1), else_=0)))
        .where(PairResult.job_id.in_(job_ids))
        .group_by(PairResult.job_id)
    )
    return {job_id: (int(done), int(failed or 0)) for job_id, done, failed in rows}


def delete_job(session: Session, blobs: BlobStore, project: str, job_id: str) -> None:
    """Delete the job, its pairs, results and report, and the audio no other job uses."""
    job = get_job(session, project, job_id)
    shas = set()
    for source, target in session.execute(select(Pair.source_sha256, Pair.target_sha256).where(Pair.job_id == job.id)):
        shas.update((source, target))
    session.execute(delete(Job).where(Job.id == job.id))
    try:
        with session.begin_nested():
            gone = blobs.delete_unreferenced(session, shas)
            blobs.remove_files(gone)  # before commit: the rows stay locked until the files are gone
    except IntegrityError:  # a concurrent upload took one of them: keep them all, it is only storage
        pass
    session.commit()


def report_text(session: Session, project: str, job_id: str) -> str:
    job = get_job(session, project, job_id)
    content = session.scalar(select(Report.content).where(Report.job_id == job.id))
    if content is None:
        done, failed = progress(session, [job.id]).get(job.id, (0, 0))
        raise Conflict(
            f"job {job.id} is {job.status}: its report is not ready",
            code="report_not_ready",
            details={"status": job.status, "progress": {"done": done, "total": job.n_pairs}},
            headers={"Retry-After": "2"},
        )
    return content


SIDE_FIELDS = ("pred", "uncertainty", "duration_s", "pause_rate", "speech_rate")
# the stored per-pair values; the side reading's exist only in the report (they need the whole job)
PAIR_SCORES = ("agree", *(m for m in PAIR_METRICS if m not in SIDE_READING_METRICS))


def pairs_csv(session: Session, project: str, job_id: str) -> str:
    """Per-pair rows in manifest order: finished pairs with their values, failed with the error, others pending."""
    job = get_job(session, project, job_id)
    rows = session.execute(
        select(Pair.pair_id, Pair.label, Pair.group_id, PairResult.row, PairResult.failures)
        .outerjoin(PairResult, and_(PairResult.job_id == Pair.job_id, PairResult.pair_id == Pair.pair_id))
        .where(Pair.job_id == job.id)
        .order_by(Pair.idx)
    ).all()
    classes: list[str] = []
    for *_, row, _failures in rows:
        if row:
            classes = list(row["source"]["probs"])
            break
    header = (
        ["pair_id", "label", "group", "status"]
        + [f"{side}_{f}" for side in ("source", "target") for f in SIDE_FIELDS]
        + list(PAIR_SCORES)
        + [f"{side}_p_{c}" for side in ("source", "target") for c in classes]
        + ["warnings", "error"]
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for pair_id, label, group, row, failures in rows:
        status = "pending" if row is None and failures is None else ("ok" if row else "failed")
        values = [_text_cell(pair_id), _text_cell(label or ""), _text_cell(group or ""), status]
        if row:
            values += [_cell(row[side].get(f)) for side in ("source", "target") for f in SIDE_FIELDS]
            values += [_cell(row.get(s)) for s in PAIR_SCORES]
            values += [_cell(row[side]["probs"].get(c)) for side in ("source", "target") for c in classes]
            values += [_text_cell("; ".join(row.get("warnings") or [])), ""]
        else:
            values += [""] * (2 * len(SIDE_FIELDS) + len(PAIR_SCORES) + 2 * len(classes)) + [""]
            values.append(_text_cell("; ".join(f"{f['side']}: {f['error']}" for f in failures or [])))
        writer.writerow(values)
    return out.getvalue()


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text_cell(text: str) -> str:
    """A client's text in a CSV cell: a leading ' keeps a spreadsheet from running it as a formula (OWASP CSV
    injection). Numbers go through _cell and keep their sign."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
