"""The reconciler: sends again the work the queue lost (a worker killed mid-chunk, a broker restarted, a job unsent)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import and_, exists, or_, select, update

from core.db import Chunk, Job, utcnow
from worker.queue.tasks import WorkerContext

log = logging.getLogger("emopres.worker")

NEW_JOB_SECONDS = 10.0  # the reconciler leaves a job this young to the enqueuer of the process that accepted it


def reconcile(ctx: WorkerContext, *, restart: bool = False) -> dict[str, int]:
    """Send again what the queue lost. `restart`: this process is the only worker (embedded) and just started."""
    if ctx.queue is None:
        return {}
    settings = ctx.settings
    now = utcnow()
    lease = now - timedelta(seconds=settings.lease_seconds)
    resend = now - timedelta(seconds=settings.requeue_after_seconds)
    counts = {"lost": 0, "sent": 0, "finalize": 0, "broker_restarted": 0}
    broker_lost_all = _broker_restarted(ctx)
    with ctx.sessions() as session:
        if broker_lost_all:  # every message it held is gone: send each pending chunk again now, not after the timer
            counts["broker_restarted"] = 1
            counts["lost"] += session.execute(
                update(Chunk).where(Chunk.status == "pending", Chunk.enqueued_at.is_not(None)).values(enqueued_at=None)
            ).rowcount
        if restart:
            counts["lost"] += session.execute(
                update(Chunk).where(Chunk.status.in_(("pending", "running"))).values(status="pending", enqueued_at=None)
            ).rowcount
        counts["lost"] += session.execute(
            update(Chunk)
            .where(Chunk.status == "running", or_(Chunk.heartbeat_at.is_(None), Chunk.heartbeat_at < lease))
            .values(status="pending", enqueued_at=None)
        ).rowcount
        session.commit()
        unsent = Chunk.enqueued_at.is_(None)
        if not (restart or broker_lost_all):  # a new job's unclaimed chunks are its Enqueuer's (after its SETTLE wait)
            unsent = and_(
                unsent,
                or_(
                    Chunk.attempts > 0,
                    exists().where(Job.id == Chunk.job_id, Job.created_at < now - timedelta(seconds=NEW_JOB_SECONDS)),
                ),
            )
        due = or_(unsent, Chunk.enqueued_at < resend)
        candidates = session.execute(
            select(Chunk.job_id, Chunk.idx)
            .where(Chunk.status == "pending", due)
            .order_by(Chunk.job_id, Chunk.idx)
            .limit(10_000)
        ).all()
        # every chunk done, the last one a lease ago, and still no report: the finisher died before writing it
        unfinished = exists().where(
            Chunk.job_id == Job.id,
            or_(Chunk.status != "done", Chunk.heartbeat_at.is_(None), Chunk.heartbeat_at > lease),
        )
        to_finalize = list(session.scalars(select(Job.id).where(Job.status.in_(("queued", "running")), ~unfinished)))
    for job_id, idx in candidates:
        # send, then record: a crash in between costs at worst a duplicate message (a no-op), never a delay
        try:
            ctx.queue.send_chunk(job_id, idx)
        except Exception as error:
            log.warning("cannot enqueue chunk %s/%s: %s", job_id, idx, error)
            break  # the broker is away; try again next round
        counts["sent"] += 1
        with ctx.sessions() as session:
            session.execute(
                update(Chunk)
                .where(Chunk.job_id == job_id, Chunk.idx == idx, Chunk.status == "pending")
                .values(enqueued_at=now)
            )
            session.commit()
    for job_id in to_finalize:
        try:
            ctx.queue.send_finalize(job_id)
            counts["finalize"] += 1
        except Exception as error:
            log.warning("cannot enqueue the report of job %s: %s", job_id, error)
            break
    if any(counts.values()):
        log.info("reconciler: %s", counts)
    return counts


def _broker_restarted(ctx: WorkerContext) -> bool:
    """True once when the broker's identity differs from the one the last round saw (it restarted meanwhile)."""
    try:
        identity = ctx.queue.broker_identity()
    except Exception as error:  # the broker is away: nothing to compare yet
        log.debug("broker identity unknown: %s", error)
        return False
    if identity is None:
        return False
    seen, ctx.broker_seen = ctx.broker_seen, identity
    if seen is not None and seen != identity:
        log.warning("the broker restarted (%s -> %s): pending chunks are sent again", seen, identity)
        return True
    return False


class Reconciler:
    """Runs reconcile() every `interval` seconds in a daemon thread; a round that raises is logged with its
    traceback (a bug must not read as an outage) and the next round runs on time."""

    def __init__(self, ctx: WorkerContext, interval: float, *, restart_first: bool = False) -> None:
        self.ctx, self.interval, self.restart_first = ctx, interval, restart_first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emopres-reconciler", daemon=True)

    def start(self) -> Reconciler:
        self._thread.start()
        return self

    def _run(self) -> None:
        restart = self.restart_first
        while True:
            try:
                reconcile(self.ctx, restart=restart)
                restart = False
            except Exception as error:
                log.exception("reconciler: %s", error)
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
