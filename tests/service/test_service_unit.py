"""Service parts without HTTP: settings, migrations, tokens, blob store, leases and the reconciler.

What a submission stores (create_job, the job writer, Idempotency-Key lookups): tests/api/test_job_storage.py.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.auth import TokenError, create_token, list_tokens, revoke_token, verify_token
from app.jobs import create_job
from app.submission.intake import AudioFile, build_request
from core.blobstore import BlobStore
from core.db import Blob, Chunk, Job, PairResult, Token, make_engine, make_session_factory, upgrade, utcnow
from core.settings import Settings
from tests.service_support import drop_postgres_schema, new_postgres_schema, wav_bytes
from worker.queue.reconciler import NEW_JOB_SECONDS, reconcile
from worker.queue.tasks import (
    Enqueuer,
    TaskQueue,
    WorkerContext,
    claim_chunk,
    enqueue_job,
    run_chunk,
)


class FakeQueue(TaskQueue):
    def __init__(self, fail: bool = False) -> None:
        self.sent, self.fail = [], fail

    def send_chunk(self, job_id, idx):
        if self.fail:
            raise ConnectionError("broker away")
        self.sent.append(("chunk", job_id, idx))

    def send_finalize(self, job_id):
        self.sent.append(("finalize", job_id))

    def ping(self):
        return not self.fail


def test_settings_default_to_the_embedded_mode(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("EMOPRES_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EMOPRES_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMOPRES_BROKER_URL", "")
    settings = Settings()
    assert settings.embedded and settings.is_sqlite and settings.should_migrate and settings.profile == "lite"
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path / 'emopres.db'}"
    assert settings.blob_path == tmp_path / "blobs" and settings.feature_cache_path == tmp_path / "features"
    monkeypatch.setenv("EMOPRES_DATABASE_URL", "postgresql+psycopg://u:secret@db/emopres")
    monkeypatch.setenv("EMOPRES_BROKER_URL", "redis://:secret@redis:6379/0")
    production = Settings()
    assert not production.embedded and not production.should_migrate and production.queue_name == "emopres.lite"
    assert "secret" not in str(production.public())


def _compare(url: str) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from core.db import Base

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": False}), Base.metadata)
    finally:
        engine.dispose()


def test_migrations_build_exactly_the_models_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    assert _compare(url) == []
    upgrade(url)  # idempotent


@pytest.mark.services
def test_migrations_build_exactly_the_models_postgres(postgres_url):
    schema = f"emopres_migration_test_{os.getpid()}"
    url = new_postgres_schema(postgres_url, schema)
    try:
        upgrade(url)
        assert _compare(url) == []
        from alembic import command

        from core.db import alembic_config

        command.downgrade(alembic_config(url), "base")
        upgrade(url)
    finally:
        drop_postgres_schema(postgres_url, schema)


@pytest.fixture
def sessions(tmp_path):
    url = f"sqlite:///{tmp_path / 'unit.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def test_tokens_are_stored_hashed_and_revocable(sessions):
    with sessions() as session:
        token = create_token(session, "ci", "team-a")
        with pytest.raises(TokenError):
            create_token(session, "ci")
        stored = session.scalar(select(Token))
        secret = token.split("_", 2)[2]
        assert token.startswith("emopres_") and secret not in (stored.secret_sha256, stored.key_id)
        assert verify_token(session, token).project == "team-a"
        assert verify_token(session, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        assert verify_token(session, "emopres_nokey_" + secret) is None and verify_token(session, "garbage") is None
        revoke_token(session, "ci")
        assert verify_token(session, token) is None
        assert [t.name for t in list_tokens(session)] == ["ci"]


def test_blobs_are_stored_once_by_content(tmp_path, sessions):
    for kind in ("fs", "database"):
        store = BlobStore(kind, tmp_path / kind / "blobs", tmp_path / kind / "local")
        data = wav_bytes(0.5, seed=1)
        sha = store.sha256(data)
        with sessions() as session:
            store.put_many(session, {sha: lambda data=data: data})
            store.put_many(session, {sha: lambda data=data: data})
            session.commit()
            assert session.scalar(select(func.count()).select_from(Blob).where(Blob.sha256 == sha)) == 1
            assert (session.get(Blob, sha).content is not None) == (kind == "database")
        assert store.local_path(sessions, sha).read_bytes() == data
        assert store.files.exists(sha) == (kind == "fs")
        with sessions() as session:
            assert store.delete_unreferenced(session, {sha}) == [sha]
            session.commit()
            session.execute(Blob.__table__.delete())
            session.commit()


def test_a_blob_file_is_written_only_with_the_content_its_name_says(tmp_path, sessions):
    """prepare (before the transaction) and put_many (a file a concurrent deletion removed) check the content
    against its sha256 before writing; a file on disk with the right size is not hashed again; a damaged one
    (another size) is written again."""
    store = BlobStore("fs", tmp_path / "blobs")
    data = wav_bytes(0.5, seed=2)
    sha = BlobStore.sha256(data)
    with pytest.raises(ValueError, match="changed while storing"):
        store.prepare({sha: lambda: data + b"x"})
    assert not store.files.exists(sha)
    store.prepare({sha: lambda: data})
    assert store.files.path(sha).read_bytes() == data
    store.files.path(sha).write_bytes(data[:100])  # damaged
    with sessions() as session:
        store.put_many(session, {sha: lambda: data})
        session.commit()
        assert session.get(Blob, sha).size == len(data)
    assert store.files.path(sha).read_bytes() == data
    store.files.remove(sha)
    with sessions() as session, pytest.raises(ValueError, match="changed while storing"):
        store.put_many(session, {sha: lambda: data[::-1]})
    assert not store.files.exists(sha)


# ---------------------------------------------------------------- leases, attempts, reconciler


def make_job(sessions, store, settings, n_pairs: int = 2, project: str = "p") -> str:
    files = {}
    lines = ["pair_id,source,target"]
    for i in range(n_pairs):
        for side in ("s", "t"):
            data = wav_bytes(0.6, seed=10 * i + (side == "t"))
            files[f"{side}{i}.wav"] = AudioFile(f"{side}{i}.wav", len(data), lambda d=data: d)
        lines.append(f"q{i},s{i}.wav,t{i}.wav")
    request = build_request(
        manifest_text="\n".join(lines) + "\n",
        manifest_name="m.csv",
        files=files,
        name=None,
        profile="lite",
        metadata=None,
        group_column=None,
        settings=settings,
    )
    job, _ = create_job(
        sessions, store, request, project=project, idempotency_key=None, chunk_size=1, bootstrap=50, seed=1
    )
    return job.id


def worker_context(tmp_path, head):
    """A WorkerContext on a new SQLite database under tmp_path, sending to a FakeQueue (a fixture's body)."""
    settings = Settings(
        data_dir=tmp_path,
        head=str(head),
        database_url=None,
        broker_url=None,
        cache_dir=None,
        lease_seconds=30,
        requeue_after_seconds=60,
        max_attempts=2,
    )
    upgrade(settings.sqlalchemy_url)
    ctx = WorkerContext(settings, queue=FakeQueue())
    yield ctx
    ctx.close()


@pytest.fixture
def context(tmp_path, random_lite_head):
    yield from worker_context(tmp_path, random_lite_head)


def age_jobs(sessions, seconds: float) -> None:
    """Every job created `seconds` earlier (the reconciler leaves a new job to its enqueuer for a while)."""
    with sessions() as session:
        session.execute(update(Job).values(created_at=utcnow() - timedelta(seconds=seconds)))
        session.commit()


def test_a_job_the_broker_never_got_is_sent_by_the_reconciler(context):
    job_id = make_job(context.sessions, context.blobs, context.settings)
    enqueue_job(context.sessions, FakeQueue(fail=True), job_id)  # the broker is away at submit time
    assert reconcile(context)["sent"] == 0  # a new job: its enqueuer may still be waiting to send it
    age_jobs(context.sessions, NEW_JOB_SECONDS + 1)
    assert reconcile(context)["sent"] == 2
    assert sorted(m[2] for m in context.queue.sent) == [0, 1]
    assert reconcile(context)["sent"] == 0  # sent once; again only after requeue_after_seconds
    with context.sessions() as session:
        session.execute(update(Chunk).values(enqueued_at=utcnow() - timedelta(seconds=120)))
        session.commit()
    assert reconcile(context)["sent"] == 2


def test_the_enqueuer_sends_new_jobs_after_their_acceptance_and_records_them_in_batches(context):
    """Submissions hand their jobs to the enqueuer (after the commit, off the request's path); it sends every chunk
    and records them as enqueued, so the reconciler does not send them again; stopping sends what is left."""
    jobs = [make_job(context.sessions, context.blobs, context.settings) for _ in range(3)]
    enqueuer = Enqueuer(context.sessions, context.queue)
    for job_id in jobs:  # added before the thread starts: one batch
        enqueuer.add(job_id, 2)
    enqueuer.start().stop()
    assert sorted(m[1:] for m in context.queue.sent) == sorted((job_id, idx) for job_id in jobs for idx in (0, 1))
    with context.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Chunk).where(Chunk.enqueued_at.is_(None))) == 0
    assert reconcile(context)["sent"] == 0


def test_chunks_the_enqueuer_cannot_send_are_left_to_the_reconciler(context):
    job_id = make_job(context.sessions, context.blobs, context.settings)
    enqueuer = Enqueuer(context.sessions, FakeQueue(fail=True)).start()  # the broker is away
    enqueuer.add(job_id, 2)
    enqueuer.stop()
    age_jobs(context.sessions, NEW_JOB_SECONDS + 1)
    assert reconcile(context)["sent"] == 2


def test_a_lost_worker_lease_is_taken_over_and_each_pair_stored_once(context):
    job_id = make_job(context.sessions, context.blobs, context.settings)
    assert claim_chunk(context, job_id, 0) == 1
    assert claim_chunk(context, job_id, 0) == 2  # the same process again (its first answer was lost): its own lease
    context.name = "another-host:2"
    assert claim_chunk(context, job_id, 0) is None  # leased to a live worker
    with context.sessions() as session:  # that worker died: its heartbeat stops
        session.execute(update(Chunk).where(Chunk.idx == 0).values(heartbeat_at=utcnow() - timedelta(seconds=60)))
        session.commit()
    assert reconcile(context)["lost"] == 1 and ("chunk", job_id, 0) in context.queue.sent
    for idx in (0, 1, 0, 1):  # duplicates of both messages
        run_chunk(context, job_id, idx)
    with context.sessions() as session:
        job = session.get(Job, job_id)
        assert job.status == "succeeded"
        assert session.scalar(select(func.count()).select_from(PairResult).where(PairResult.job_id == job_id)) == 2
        assert session.scalar(select(Chunk.attempts).where(Chunk.job_id == job_id, Chunk.idx == 0)) == 3


def test_a_chunk_that_keeps_killing_workers_fails_its_pairs_not_the_queue(context):
    job_id = make_job(context.sessions, context.blobs, context.settings)
    run_chunk(context, job_id, 1)
    for _ in range(context.settings.max_attempts):  # claimed, then the worker dies each time
        assert claim_chunk(context, job_id, 0) is not None
        with context.sessions() as session:
            session.execute(update(Chunk).where(Chunk.idx == 0).values(status="pending"))
            session.commit()
    assert run_chunk(context, job_id, 0) == "done"
    with context.sessions() as session:
        results = {r.pair_id: r for r in session.scalars(select(PairResult).where(PairResult.job_id == job_id))}
        job = session.get(Job, job_id)
    assert results["q1"].row is not None and results["q0"].row is None
    assert "not evaluated after 2 attempts" in results["q0"].failures[0]["error"]
    assert job.status == "succeeded"  # one pair succeeded; the other is in the report's failures


def test_models_that_cannot_load_fail_the_job_with_the_reason(tmp_path):
    settings = Settings(
        data_dir=tmp_path, head=str(tmp_path / "no-head"), database_url=None, broker_url=None, max_attempts=1
    )
    upgrade(settings.sqlalchemy_url)
    ctx = WorkerContext(settings, queue=FakeQueue())
    try:
        job_id = make_job(ctx.sessions, ctx.blobs, settings, n_pairs=1)
        with pytest.raises(RuntimeError, match="cannot load the lite models"):
            run_chunk(ctx, job_id, 0)
        with ctx.sessions() as session:
            chunk = session.scalar(select(Chunk).where(Chunk.job_id == job_id))
            assert chunk.status == "pending" and "cannot load" in chunk.last_error
        run_chunk(ctx, job_id, 0)  # attempts exhausted: the pair fails with the reason
        with ctx.sessions() as session:
            job = session.get(Job, job_id)
            result = session.scalar(select(PairResult))
        assert job.status == "failed" and "cannot load the lite models" in result.failures[0]["error"]
    finally:
        ctx.close()


def test_celery_is_configured_for_long_idempotent_tasks():
    from worker.queue.celery_app import CHUNK_TASK, FINALIZE_TASK, make_celery

    app = make_celery(Settings(broker_url="redis://127.0.0.1:6379/15", database_url="sqlite://"))
    conf = app.conf
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == 1 and conf.task_reject_on_worker_lost
    assert conf.accept_content == ["json"] and conf.task_default_queue == "emopres.lite"
    import worker.queue.celery_app as module

    assert {CHUNK_TASK, FINALIZE_TASK} <= set(module.app.tasks)


def test_service_commands(tmp_path, monkeypatch, capsys):
    from cli.main import main

    for name in list(os.environ):
        if name.startswith("EMOPRES_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EMOPRES_DATA_DIR", str(tmp_path))
    assert main(["worker"]) == 2 and "EMOPRES_BROKER_URL" in capsys.readouterr().err
    assert main(["tokens", "create", "ci", "--project", "team-a"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("emopres_")
    assert main(["tokens", "list"]) == 0 and "team-a" in capsys.readouterr().out
    assert main(["tokens", "revoke", "ci"]) == 0
    assert main(["tokens", "revoke", "nobody"]) == 2
    assert main(["db", "upgrade"]) == 0 and main(["db", "current"]) == 0
    assert main(["serve", "--workers", "2"]) == 2
