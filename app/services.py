"""What a running gateway holds (settings, sessions, blob store, queue, embedded worker, reconciler,
Prometheus metrics) and how it is started and stopped. Without a broker the embedded in-process
worker (worker.queue.embedded) evaluates; with one, jobs go to Celery and the reconciler finds lost work."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from core.blobstore import BlobStore
from core.db import make_engine, make_session_factory, upgrade
from core.settings import Settings


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    blobs: BlobStore
    queue: object = None
    job_writer: object = None  # app.jobs.JobWriter: stores new jobs, many per transaction
    enqueuer: object = None  # worker.queue.tasks.Enqueuer: sends new jobs' chunks after their 202
    embedded: object = None
    reconciler: object = None
    webhooks: object = None  # app.webhooks.delivery.Dispatcher
    metrics: object = None
    readiness: object = None  # app.readiness.ReadinessProbe (set by app.main): one check at a time, cached
    # uploads are decoded, hashed and stored a few at a time: a burst of CI clients queues here (cheaply, in the
    # event loop) instead of as dozens of threads fighting for the GIL, the database connections and, with
    # SQLite, its one write lock (which made every upload in a burst slow and some time out)
    submissions: asyncio.Semaphore | None = None
    extra: dict = field(default_factory=dict)


def build_services(settings: Settings) -> Services:
    engine = make_engine(settings.sqlalchemy_url)
    services = Services(
        settings,
        make_session_factory(engine),
        BlobStore.from_settings(settings),
        submissions=asyncio.Semaphore(settings.submit_slots),
    )
    services.extra["engine"] = engine
    return services


def start_services(services: Services, *, start_worker: bool = True) -> None:
    settings = services.settings
    if settings.should_migrate:
        upgrade(settings.sqlalchemy_url)
    if settings.embedded:
        from worker.queue.embedded import EmbeddedQueue

        services.embedded = EmbeddedQueue(settings, engine=services.extra["engine"])
        services.queue = services.embedded
        if start_worker:
            services.embedded.start()
    else:
        from worker.queue.celery_app import CeleryQueue, make_celery
        from worker.queue.reconciler import Reconciler
        from worker.queue.tasks import WorkerContext

        services.queue = CeleryQueue(make_celery(settings), settings.queue_name)
        if start_worker:
            ctx = WorkerContext(settings, queue=services.queue, engine=services.extra["engine"])
            services.reconciler = Reconciler(ctx, settings.reconcile_seconds).start()
    from app.jobs import JobWriter
    from worker.queue.tasks import Enqueuer

    services.job_writer = JobWriter(lambda: services.sessions, services.blobs).start()
    services.enqueuer = Enqueuer(services.sessions, services.queue).start()
    if start_worker:  # in this process in both modes: it reads finished jobs from the database
        from app.webhooks.delivery import Dispatcher

        services.webhooks = Dispatcher(settings, services.sessions).start()


def stop_services(services: Services) -> None:
    for thread in (services.job_writer, services.enqueuer):  # what they hold first, before the database goes
        if thread is not None:
            thread.stop()
    if services.webhooks is not None:
        services.webhooks.stop()
    if services.embedded is not None:
        services.embedded.stop()
    if services.reconciler is not None:
        services.reconciler.stop()
    services.extra["engine"].dispose()
