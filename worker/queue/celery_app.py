"""Celery: the production queue. `emopres worker` runs this app; the api only sends to it.

Long tasks, following Celery's own advice: acks_late + prefetch 1 (a task leaves the broker only
when done), reject on worker loss, JSON only, one queue per profile (``<EMOPRES_QUEUE>.<profile>``).
Models are loaded lazily in each pool process (after the fork), once, and stay resident. The
main process runs the reconciler, which re-sends what the broker lost.
"""

from __future__ import annotations

import logging

from celery import Celery, signals

from core.settings import Settings, get_settings
from worker.queue.reconciler import Reconciler
from worker.queue.tasks import (
    DATABASE_AWAY,
    TaskQueue,
    WorkerContext,
    finalize_job,
    retry_while_database_away,
    run_chunk,
)

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
        self._redis = None

    def broker_identity(self) -> str | None:
        """Redis: the server's run_id, new at every start (a restart without persistence loses every queued and
        unacknowledged message). Other brokers: unknown."""
        url = self.celery.conf.broker_url or ""
        if not url.startswith(("redis://", "rediss://", "unix://")):
            return None
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return str(self._redis.info("server")["run_id"])

    def send_chunk(self, job_id: str, idx: int) -> None:
        self.celery.send_task(CHUNK_TASK, args=[job_id, idx], queue=self.queue)

    def send_finalize(self, job_id: str) -> None:
        self.celery.send_task(FINALIZE_TASK, args=[job_id], queue=self.queue)

    def ping(self) -> bool:
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
            return True

    def workers(self, profile: str, timeout: float = 1.0) -> list[str]:
        """Names of the live workers of a profile (Celery control ping; the first answer ends the wait).

        The ping gets a connection of its own: from the shared pool, a broadcast holds one connection while its
        publisher waits for another, and concurrent pings exhausted the pool and hung every request thread."""
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
            replies = self.celery.control.ping(timeout=timeout, limit=1, connection=connection) or []
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


@app.task(name=CHUNK_TASK, acks_late=True, ignore_result=True, bind=True)
def evaluate_chunk(self, job_id: str, idx: int) -> str:
    try:
        return run_chunk(process_context(), job_id, idx)
    except DATABASE_AWAY as error:  # away for longer than the retries: put the message back, never drop it
        raise self.retry(exc=error, countdown=settings.heartbeat_seconds, max_retries=None) from error


@app.task(name=FINALIZE_TASK, acks_late=True, ignore_result=True, bind=True)
def finalize(self, job_id: str) -> str:
    try:
        return retry_while_database_away(
            process_context(), f"job {job_id}: report", finalize_job, process_context(), job_id
        )
    except DATABASE_AWAY as error:
        raise self.retry(exc=error, countdown=settings.heartbeat_seconds, max_retries=None) from error


@signals.worker_process_init.connect
def _after_fork(**_kwargs) -> None:
    """A pool process starts with no inherited connections and builds its own context lazily, and runs
    its share of the cores' threads."""
    global _context
    from models.runtime.threads import pin_threads, threads_per_worker

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
