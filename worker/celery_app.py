"""Celery: the production queue. `emopres worker` runs this app; the api only sends to it.

Long tasks, following Celery's own advice: acks_late + prefetch 1 (a task leaves the broker only
when done), reject on worker loss, JSON only, one queue per profile (``<EMOPRES_QUEUE>.<profile>``).
Models are loaded lazily in each pool process (after the fork), once, and stay resident. The
main process runs the reconciler, which re-sends what the broker lost.
"""
from __future__ import annotations

import logging

from celery import Celery, signals

from app.settings import Settings, get_settings
from worker.tasks import Reconciler, TaskQueue, WorkerContext, finalize_job, run_chunk

log = logging.getLogger("emopres.worker")

CHUNK_TASK = "emopres.evaluate_chunk"
FINALIZE_TASK = "emopres.finalize_job"
WORKER_NAME_PREFIX = "emopres-"  # workers are named emopres-<profile>@<host>


def make_celery(settings: Settings) -> Celery:
    app = Celery("emopres", broker=settings.broker_url or "memory://")
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_default_queue=settings.queue_name,
        task_create_missing_queues=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        worker_hijack_root_logger=True,
        worker_send_task_events=False,
    )
    return app


settings = get_settings()
app = make_celery(settings)


class CeleryQueue(TaskQueue):
    def __init__(self, celery: Celery, queue: str) -> None:
        self.celery, self.queue = celery, queue

    def send_chunk(self, job_id: str, idx: int) -> None:
        self.celery.send_task(CHUNK_TASK, args=[job_id, idx], queue=self.queue)

    def send_finalize(self, job_id: str) -> None:
        self.celery.send_task(FINALIZE_TASK, args=[job_id], queue=self.queue)

    def ping(self) -> bool:
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
            return True

    def workers(self, profile: str, timeout: float = 1.0) -> list[str]:
        """Names of the live workers of a profile (Celery control ping; the first answer ends the wait)."""
        replies = self.celery.control.ping(timeout=timeout, limit=1) or []
        names = [name for reply in replies for name in reply]
        return sorted(n for n in names if n.startswith(f"{WORKER_NAME_PREFIX}{profile}@"))


_context: WorkerContext | None = None
_reconciler: Reconciler | None = None


def process_context() -> WorkerContext:
    """This process's context: database engine, blob store, and (on first use) the models."""
    global _context
    if _context is None:
        _context = WorkerContext(settings, queue=CeleryQueue(app, settings.queue_name))
    return _context


@app.task(name=CHUNK_TASK, acks_late=True, ignore_result=True)
def evaluate_chunk(job_id: str, idx: int) -> str:
    return run_chunk(process_context(), job_id, idx)


@app.task(name=FINALIZE_TASK, acks_late=True, ignore_result=True)
def finalize(job_id: str) -> str:
    return finalize_job(process_context(), job_id)


@signals.worker_process_init.connect
def _after_fork(**_kwargs) -> None:
    """A pool process starts with no inherited connections and builds its own context lazily, and runs
    its share of the cores' threads."""
    global _context
    from worker.threads import pin_threads, threads_per_worker

    pin_threads(threads_per_worker(app.conf.worker_concurrency or settings.worker_concurrency))
    if _reconciler is not None:
        _reconciler.ctx.engine.dispose(close=False)
    _context = None


@signals.worker_ready.connect
def _start_reconciler(**_kwargs) -> None:
    global _reconciler
    ctx = WorkerContext(settings, queue=CeleryQueue(app, settings.queue_name))
    _reconciler = Reconciler(ctx, settings.reconcile_seconds).start()
    log.info("emopres worker ready: profile %s, queue %s", settings.profile, settings.queue_name)


@signals.worker_shutdown.connect
def _stop_reconciler(**_kwargs) -> None:
    if _reconciler is not None:
        _reconciler.stop()
