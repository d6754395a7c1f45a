"""The work itself, shared by Celery workers and the embedded in-process queue.

A job's pairs are split in chunks (the unit sent to the queue). A chunk task claims its chunk
(a lease renewed by a heartbeat), evaluates the pairs that have no result yet, upserts one
result per pair (exactly once, by (job_id, pair_id)) and marks the chunk done; whoever finishes
the last chunk builds the report. The reconciler (:mod:`worker.queue.reconciler`) finds work the
queue lost (a worker killed mid-chunk, a broker restarted, an API that died before enqueueing) and
sends it again.

The models are loaded once per process, lazily, on first use (never in a parent before fork).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, null, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from core.batch_thread import BatchThread
from core.blobstore import BlobMissing, BlobStore, BlobStoreUnavailable
from core.db import Chunk, Job, Pair, PairResult, Report, dumps, insert_for, make_engine, make_session_factory, utcnow

log = logging.getLogger("emopres.worker")

FINISHED = ("succeeded", "failed")
DATABASE_AWAY = (OperationalError, InterfaceError)  # connection refused, reset or lost: worth retrying
RETRY_DELAY_MAX = 5.0  # seconds between retries once backed off: work resumes within this of the database's return


class TaskQueue:
    """Where chunk and finalize messages go: Celery (worker.queue.celery_app) or in-process (worker.queue.embedded)."""

    def send_chunk(self, job_id: str, idx: int) -> None:
        raise NotImplementedError

    def send_finalize(self, job_id: str) -> None:
        raise NotImplementedError

    def ping(self) -> bool:
        raise NotImplementedError

    def broker_identity(self) -> str | None:
        """An id that changes when the broker restarts (and loses what it held); None when unknown."""
        return None


def build_evaluator(settings, n_jobs: int = 1):
    from models.registry import ProfileSpec, load_head, load_side_head
    from worker.engine.pipeline import Evaluator

    spec = ProfileSpec(settings.profile, settings.model_dir, settings.device, settings.fast)
    head = load_head(spec, settings.head)
    return Evaluator(
        spec,
        head,
        n_jobs=n_jobs,
        cache_dir=settings.feature_cache_path,
        max_seconds=settings.max_audio_seconds,
        side_head=load_side_head(spec, settings.side_head, head),
    )


class WorkerContext:
    """One per process: database, blob store, queue, and the resident evaluator."""

    def __init__(self, settings, queue: TaskQueue | None = None, engine=None, evaluator_jobs: int = 1) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings.sqlalchemy_url)
        self.sessions = make_session_factory(self.engine)
        self.blobs = BlobStore.from_settings(settings)
        self.queue = queue
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.evaluator_jobs = evaluator_jobs
        self._evaluator = None
        self._evaluator_error: str | None = None
        self.lock = threading.RLock()  # one evaluation at a time per evaluator
        self.broker_seen: str | None = None  # the broker's identity at the last reconcile

    def evaluator(self):
        with self.lock:
            if self._evaluator is None:
                started = time.monotonic()
                try:
                    self._evaluator = build_evaluator(self.settings, self.evaluator_jobs)
                except Exception as error:
                    self._evaluator_error = f"cannot load the {self.settings.profile} models: {error}"
                    raise RuntimeError(self._evaluator_error) from None
                self._evaluator_error = None
                log.info("models loaded in %.1f s (%s)", time.monotonic() - started, self._evaluator.feature_signature)
            return self._evaluator

    @property
    def models_loaded(self) -> bool:
        return self._evaluator is not None

    def close(self) -> None:
        if self._evaluator is not None:
            self._evaluator.close()
            self._evaluator = None
        self.engine.dispose()


def retry_while_database_away(ctx: WorkerContext, what: str, action, *args):
    """action(*args), retried with backoff (0.5 s doubling to RETRY_DELAY_MAX) while the database is unreachable,
    for up to settings.db_retry_seconds; then the error is raised. A task that took a message from the broker
    keeps it meanwhile, instead of failing (and acknowledging it) and leaving its chunk to the re-send timer."""
    return retry_while_away(DATABASE_AWAY, "database", ctx.settings.db_retry_seconds, what, action, *args)


def retry_while_away(errors: tuple, service: str, seconds: float, what: str, action, *args):
    """action(*args), retried with backoff while it raises one of `errors` (`service` is away), for up to
    `seconds`; then the error is raised."""
    delay, deadline = 0.5, time.monotonic() + seconds
    while True:
        try:
            return action(*args)
        except errors as error:
            if time.monotonic() + delay > deadline:
                raise
            log.warning(
                "%s: %s unavailable (%s); retrying in %.1f s", what, service, str(error).splitlines()[0][:200], delay
            )
            time.sleep(delay)
            delay = min(2 * delay, RETRY_DELAY_MAX)


# ---------------------------------------------------------------- chunks


class Heartbeat:
    """Renews the chunk's lease while it is being evaluated."""

    def __init__(self, ctx: WorkerContext, job_id: str, idx: int) -> None:
        self.ctx, self.job_id, self.idx = ctx, job_id, idx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id[:8]}-{idx}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.ctx.settings.heartbeat_seconds):
            try:
                with self.ctx.sessions() as session:
                    session.execute(
                        update(Chunk)
                        .where(
                            Chunk.job_id == self.job_id,
                            Chunk.idx == self.idx,
                            Chunk.worker == self.ctx.name,
                            Chunk.status == "running",
                        )
                        .values(heartbeat_at=utcnow())
                    )
                    session.commit()
            except Exception as error:  # the database is away: the lease may lapse, the work stays idempotent
                log.warning("heartbeat of chunk %s/%s failed: %s", self.job_id, self.idx, error, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def claim_chunk(ctx: WorkerContext, job_id: str, idx: int) -> int | None:
    """Take the chunk's lease; its attempt number, or None when it is done, gone or leased to a live worker."""
    now = utcnow()
    stale = now - timedelta(seconds=ctx.settings.lease_seconds)
    with ctx.sessions() as session:
        claimed = session.execute(
            update(Chunk)
            .where(
                Chunk.job_id == job_id,
                Chunk.idx == idx,
                or_(
                    Chunk.status == "pending",
                    and_(
                        Chunk.status == "running",
                        # this process's own lease: a claim whose commit reached the database
                        # but whose answer was lost to a dropped connection, retried
                        or_(Chunk.heartbeat_at.is_(None), Chunk.heartbeat_at < stale, Chunk.worker == ctx.name),
                    ),
                ),
            )
            .values(status="running", attempts=Chunk.attempts + 1, heartbeat_at=now, worker=ctx.name)
        ).rowcount
        if claimed != 1:
            session.rollback()
            return None
        attempts = session.scalar(select(Chunk.attempts).where(Chunk.job_id == job_id, Chunk.idx == idx))
        session.execute(
            update(Job).where(Job.id == job_id, Job.status == "queued").values(status="running", started_at=now)
        )
        session.commit()
        return attempts


def pending_pairs(ctx: WorkerContext, job_id: str, idx: int) -> list[Pair]:
    with ctx.sessions() as session:
        done = exists().where(PairResult.job_id == Pair.job_id, PairResult.pair_id == Pair.pair_id)
        return list(
            session.scalars(select(Pair).where(Pair.job_id == job_id, Pair.chunk == idx, ~done).order_by(Pair.idx))
        )


def evaluate(ctx: WorkerContext, pairs: list[Pair]) -> tuple[list[dict], list[dict]]:
    """The chunk's pairs evaluated, their audio copied here first (database and s3 stores): an object store (or
    database) that is away is waited out for up to blob_retry_seconds, the chunk's lease renewed meanwhile."""
    from emopres_client.pairs import PairSpec

    shas = {
        path: sha for p in pairs for path, sha in ((p.source_path, p.source_sha256), (p.target_path, p.target_sha256))
    }
    found = retry_while_away(
        (BlobStoreUnavailable, *DATABASE_AWAY),
        "audio store",
        ctx.settings.blob_retry_seconds,
        f"job {pairs[0].job_id} chunk {pairs[0].chunk}: audio",
        _local_copies,
        ctx,
        set(shas.values()),
    )
    local = {path: str(found.get(sha) or ctx.blobs.local.path(sha)) for path, sha in shas.items()}
    specs = [PairSpec(p.pair_id, p.source_path, p.target_path, p.label, p.group_id) for p in pairs]
    with ctx.lock:
        return ctx.evaluator().evaluate_pairs(specs, local.__getitem__)


def _local_copies(ctx: WorkerContext, shas: set[str]) -> dict:
    """sha256 -> local file, for those stored; one stored nowhere is logged and left out (its pairs fail with the
    reason: no such file)."""
    try:
        return ctx.blobs.local_paths(ctx.sessions, sorted(shas))
    except BlobMissing:  # one at least is gone: each alone, to keep the others
        found = {}
        for sha in sorted(shas):
            try:
                found[sha] = ctx.blobs.local_path(ctx.sessions, sha)
            except BlobMissing as error:
                log.error("%s", error)
        return found


def store_results(
    ctx: WorkerContext, job_id: str, idx: int, pairs: list[Pair], rows: list[dict], failures: list[dict]
) -> bool:
    """Upsert one result per pair and mark the chunk done, in one transaction; False if the job is gone."""
    by_pair = {row["pair_id"]: row for row in rows}
    failed: dict[str, list[dict]] = {}
    for failure in failures:
        failed.setdefault(failure["pair_id"], []).append(failure)
    now = utcnow()
    with ctx.sessions() as session:
        try:
            for pair in pairs:
                row = by_pair.get(pair.pair_id)
                # SQL NULL, not the JSON value null (what None becomes in a JSON column): readers ask `row IS NULL`
                statement = insert_for(session, PairResult.__table__).values(
                    job_id=job_id,
                    pair_id=pair.pair_id,
                    row=row if row is not None else null(),
                    failures=null()
                    if row is not None
                    else failed.get(pair.pair_id) or [{"pair_id": pair.pair_id, "side": "pair", "error": "no result"}],
                    finished_at=now,
                )
                session.execute(statement.on_conflict_do_nothing(index_elements=["job_id", "pair_id"]))
            session.execute(
                update(Chunk)
                .where(Chunk.job_id == job_id, Chunk.idx == idx)
                .values(status="done", heartbeat_at=now, last_error=None)
            )
            session.commit()
        except IntegrityError:  # the job was deleted meanwhile
            session.rollback()
            return False
    return True


def release_chunk(ctx: WorkerContext, job_id: str, idx: int, error: str) -> None:
    """Give the chunk back after an error; the reconciler sends it again (attempts are capped)."""
    try:
        with ctx.sessions() as session:
            session.execute(
                update(Chunk)
                .where(Chunk.job_id == job_id, Chunk.idx == idx, Chunk.status == "running")
                .values(status="pending", enqueued_at=None, heartbeat_at=None, last_error=error[:2000])
            )
            session.commit()
    except Exception as db_error:  # the lease lapses instead
        log.warning("cannot release chunk %s/%s: %s", job_id, idx, db_error)


def run_chunk(ctx: WorkerContext, job_id: str, idx: int) -> str:
    """Evaluate one chunk of a job (idempotent: safe to run twice, or after a crash). Database outages are waited
    out (retry_while_database_away); evaluation errors release the chunk."""
    where = f"job {job_id} chunk {idx}"
    attempts = retry_while_database_away(ctx, f"{where}: claim", claim_chunk, ctx, job_id, idx)
    if attempts is None:
        return "skipped"
    pairs = retry_while_database_away(ctx, f"{where}: pairs", pending_pairs, ctx, job_id, idx)
    if attempts > ctx.settings.max_attempts:
        with ctx.sessions() as session:
            last = session.scalar(select(Chunk.last_error).where(Chunk.job_id == job_id, Chunk.idx == idx))
        reason = f"not evaluated after {attempts - 1} attempts" + (
            f" (last error: {last})" if last else " (the worker was lost each time)"
        )
        failures = [{"pair_id": p.pair_id, "side": "pair", "error": reason} for p in pairs]
        store_results(ctx, job_id, idx, pairs, [], failures)
        log.error("job %s chunk %s: %s", job_id, idx, reason)
    elif pairs:
        started = time.monotonic()
        try:
            with Heartbeat(ctx, job_id, idx):
                rows, failures = evaluate(ctx, pairs)
        except Exception as error:
            message = f"{type(error).__name__}: {error}" if not isinstance(error, RuntimeError) else str(error)
            log.exception("job %s chunk %s failed", job_id, idx)
            release_chunk(ctx, job_id, idx, message)
            raise
        if not retry_while_database_away(
            ctx, f"{where}: results", store_results, ctx, job_id, idx, pairs, rows, failures
        ):
            return "job deleted"
        log.info("job %s chunk %s: %d pairs in %.1f s", job_id, idx, len(pairs), time.monotonic() - started)
    else:
        retry_while_database_away(ctx, f"{where}: results", store_results, ctx, job_id, idx, [], [], [])
    retry_while_database_away(ctx, f"job {job_id}: report", finalize_job, ctx, job_id)
    return "done"


# ---------------------------------------------------------------- report


def _report_time(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def finalize_job(ctx: WorkerContext, job_id: str) -> str:
    """Build and store the report once every pair has a result (idempotent)."""
    from worker.engine.report import headline, report_for_evaluator

    with ctx.sessions() as session:
        job = session.get(Job, job_id)
        if job is None or job.status in FINISHED:
            return "skipped"
        done = session.scalar(select(func.count()).select_from(PairResult).where(PairResult.job_id == job_id))
        if done < job.n_pairs:
            return "not ready"
        results = session.execute(
            select(Pair.pair_id, PairResult.row, PairResult.failures)
            .join(PairResult, and_(PairResult.job_id == Pair.job_id, PairResult.pair_id == Pair.pair_id))
            .where(Pair.job_id == job_id)
            .order_by(Pair.idx)
        ).all()
    rows = [row for _, row, _ in results if row is not None]
    failures = [f for _, row, fails in results if row is None for f in (fails or [])]
    status = "succeeded" if rows else "failed"
    error = None if rows else f"all {job.n_pairs} pair(s) failed; see failures"
    finished = utcnow()
    try:
        with ctx.lock:
            report = report_for_evaluator(
                ctx.evaluator(),
                rows=rows,
                failures=failures,
                pair_order=[pair_id for pair_id, *_ in results],
                job={
                    "id": job.id,
                    "name": job.name,
                    "metadata": job.metadata_json,
                    "status": status,
                    "created_at": _report_time(job.created_at),
                    "finished_at": _report_time(finished),
                },
                n_bootstrap=job.bootstrap,
                seed=job.seed,
                use_groups=job.use_groups,
            )
        content = dumps(report)
    except Exception as build_error:  # a report that cannot be built will not be built on retry either
        log.exception("job %s: report failed", job_id)
        status, content, error = "failed", None, f"report failed: {type(build_error).__name__}: {build_error}"
    with ctx.sessions() as session:
        job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
        if job is None or job.status in FINISHED:
            return "skipped"
        if content is not None:
            session.add(
                Report(
                    job_id=job_id,
                    content=content,
                    headline=headline(report),
                    summary=report.get("summary"),
                    created_at=finished,
                )
            )
        job.status, job.finished_at, job.error = status, finished, error
        session.commit()
    log.info("job %s %s (%d pairs, %d failed)", job_id, status, job.n_pairs, len({f["pair_id"] for f in failures}))
    return status


def enqueue_job(ctx_or_sessions, queue: TaskQueue, job_id: str, n_chunks: int | None = None) -> None:
    """Send every chunk of a new job (all `n_chunks` of a job just created: no query needed); a chunk that cannot
    be sent now is left to the reconciler."""
    sessions = getattr(ctx_or_sessions, "sessions", ctx_or_sessions)
    if n_chunks is not None:
        indexes = list(range(n_chunks))
    else:
        with sessions() as session:
            indexes = list(
                session.scalars(
                    select(Chunk.idx)
                    .where(Chunk.job_id == job_id, Chunk.status == "pending", Chunk.enqueued_at.is_(None))
                    .order_by(Chunk.idx)
                )
            )
    send_chunks(sessions, queue, [(job_id, idx) for idx in indexes])


def send_chunks(sessions, queue: TaskQueue, chunks: list[tuple[str, int]]) -> None:
    """Send chunks (job id, index), then record the sent ones in one transaction; what cannot be sent now (the
    broker is away) is left to the reconciler."""
    sent = []
    for job_id, idx in chunks:
        try:
            queue.send_chunk(job_id, idx)
        except Exception as error:
            log.warning("cannot enqueue job %s (the reconciler will): %s", job_id, error)
            break
        sent.append((job_id, idx))
    if sent:
        with sessions() as session:
            session.execute(update(Chunk).where(tuple_(Chunk.job_id, Chunk.idx).in_(sent)).values(enqueued_at=utcnow()))
            session.commit()


class Enqueuer:
    """Sends the chunks of new jobs from one thread, in batches, after their 202: a burst of submissions costs one
    enqueue record (one transaction) per batch instead of one per job, and none on the requests' path. A job
    accepted but not sent yet is in the database already: if this process dies first, the reconciler sends it."""

    MAX_BATCH = 500  # chunks per batch (one UPDATE)
    SETTLE = (0.2, 2.0)  # a batch waits while jobs keep coming (at most 2 s): sending takes CPU from the submissions

    def __init__(self, sessions, queue: TaskQueue) -> None:
        self.sessions, self.queue = sessions, queue
        self._thread = BatchThread("emopres-enqueuer", self._send, self.MAX_BATCH, self.SETTLE)

    def start(self) -> Enqueuer:
        self._thread.start()
        return self

    def add(self, job_id: str, n_chunks: int) -> None:
        for idx in range(n_chunks):
            self._thread.put((job_id, idx))

    def stop(self, timeout: float = 30.0) -> None:
        """Send what was added (the service is stopping), then end the thread."""
        self._thread.stop(timeout)

    def _send(self, chunks: list[tuple[str, int]]) -> None:
        try:
            send_chunks(self.sessions, self.queue, chunks)
        except Exception as error:  # the database is away: the reconciler sends them again later
            log.warning(
                "cannot record %d chunks as enqueued (the reconciler will resend them): %s",
                len(chunks),
                error,
                exc_info=True,
            )
