"""What a submission stores, without HTTP: the bytes intake hashed, a job committed when create_job returns, the
job writer's batches, Idempotency-Key lookups and replays, chunks of pairs of similar length.

Settings, migrations, tokens, the blob store, leases and the reconciler: tests/service/test_service_unit.py.
"""

from __future__ import annotations

import os
import threading

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.jobs import JobWriter, create_job, new_job, store_jobs
from app.submission.intake import AudioFile, build_request
from core.blobstore import BlobStore, Hashed
from core.db import Blob, Chunk, Job, Pair, make_engine, make_session_factory, upgrade
from core.settings import Settings
from tests.service.test_service_unit import worker_context
from tests.service_support import drop_postgres_schema, new_postgres_schema, wav_bytes


@pytest.fixture
def context(tmp_path, random_lite_head):
    yield from worker_context(tmp_path, random_lite_head)


def job_request(settings, seed: int, n_pairs: int = 2):
    files, lines = {}, ["pair_id,source,target"]
    for i in range(n_pairs):
        for side in ("s", "t"):
            data = wav_bytes(0.6, seed=seed + 10 * i + (side == "t"))
            files[f"{side}{i}.wav"] = AudioFile(f"{side}{i}.wav", len(data), lambda d=data: d)
        lines.append(f"q{i},s{i}.wav,t{i}.wav")
    return build_request(
        manifest_text="\n".join(lines) + "\n",
        manifest_name="m.csv",
        files=files,
        name=None,
        profile="lite",
        metadata=None,
        group_column=None,
        settings=settings,
    )


def test_a_request_keeps_the_bytes_it_hashed_up_to_its_budget_and_the_rest_is_hashed_again(context, monkeypatch):
    """Hashed once at intake: the files within KEEP_HASHED_BYTES keep the very bytes hashed (stored without a second
    hash); a file beyond it is read again when stored, and hashed again, so content that changed is refused."""
    import app.submission.intake

    monkeypatch.setattr(
        app.submission.intake, "KEEP_HASHED_BYTES", 1
    )  # nothing fits: every file is read and hashed again
    request = job_request(context.settings, seed=300, n_pairs=1)
    assert not any(isinstance(audio.read, Hashed) for audio in request.files.values())
    audio = next(iter(request.blobs.values()))
    with pytest.raises(ValueError, match="changed while storing"):
        context.blobs.prepare({audio.sha256: lambda: audio.read() + b"x"})
    monkeypatch.setattr(app.submission.intake, "KEEP_HASHED_BYTES", 16 * 1024 * 1024)
    request = job_request(context.settings, seed=300, n_pairs=1)
    assert all(isinstance(audio.read, Hashed) for audio in request.files.values())
    context.blobs.prepare({sha: audio.read for sha, audio in request.blobs.items()})
    for sha, audio in request.blobs.items():
        assert context.blobs.files.path(sha).read_bytes() == audio.read() and BlobStore.sha256(audio.read()) == sha


def test_a_stored_job_is_on_disk_and_in_the_database_when_create_job_returns(context):
    """What a 202 acknowledges is committed: every blob file on disk (fsynced before the rows refer to it), its
    blob row, the job, its pairs and chunks, as a new session reads them; the same through the job writer."""
    writer = JobWriter(lambda: context.sessions, context.blobs).start()
    try:
        for seed, via in ((100, None), (200, writer)):
            request = job_request(context.settings, seed)
            job, created = create_job(
                context.sessions,
                context.blobs,
                request,
                project="p",
                idempotency_key=None,
                chunk_size=1,
                bootstrap=50,
                seed=1,
                writer=via,
            )
            assert created
            shas = sorted(request.blobs)
            assert all(context.blobs.files.path(sha).read_bytes() == request.blobs[sha].read() for sha in shas)
            with context.sessions() as session:
                assert sorted(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(shas)))) == shas
                assert session.get(Job, job.id).n_pairs == 2
                assert session.scalar(select(func.count()).select_from(Pair).where(Pair.job_id == job.id)) == 2
                assert session.scalar(select(func.count()).select_from(Chunk).where(Chunk.job_id == job.id)) == 2
    finally:
        writer.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """(session factory, settings) on a new SQLite file or a new PostgreSQL schema."""
    settings = Settings(data_dir=tmp_path, database_url=None, broker_url=None, cache_dir=None)
    if request.param == "postgresql":
        postgres_url = request.getfixturevalue("postgres_url")
        schema = f"emopres_unit_{os.getpid()}"
        settings = Settings(
            data_dir=tmp_path, database_url=new_postgres_schema(postgres_url, schema), broker_url=None, cache_dir=None
        )
    upgrade(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    yield make_session_factory(engine), settings
    engine.dispose()
    if request.param == "postgresql":
        drop_postgres_schema(postgres_url, schema)


def test_one_transaction_stores_many_jobs_and_one_refused_job_fails_alone(database):
    """The job writer's batch: two jobs with one Idempotency-Key make one job (the other is told to replay it),
    also against a job of an earlier batch; a job the database refuses (here: one pair id twice) fails alone,
    the others of its batch are stored."""
    sessions, settings = database
    store = BlobStore.from_settings(settings)

    def job(seed, key=None):
        return new_job(
            store, job_request(settings, seed), project="p", idempotency_key=key, chunk_size=1, bootstrap=50, seed=1
        )

    items = [job(300, "k1"), job(400, "k1"), job(500), job(600, "k2")]
    store_jobs(sessions, store, items)
    assert [item.stored.result() for item in items] == [True, False, True, True]
    again = job(700, "k2")
    store_jobs(sessions, store, [again])
    assert again.stored.result() is False
    good, bad = job(800), job(900)
    bad.request.pairs.append(bad.request.pairs[0])  # pair q0 twice: the pairs' primary key refuses the job
    bad.chunks.append(0)
    store_jobs(sessions, store, [good, bad])
    assert good.stored.result() is True
    with pytest.raises(IntegrityError):
        bad.stored.result()
    with sessions() as session:
        stored = set(session.scalars(select(Job.id)))
    assert stored == {items[0].job.id, items[2].job.id, items[3].job.id, good.job.id}


def test_an_idempotency_key_finds_its_job_as_a_row_that_a_replay_answers_with(database):
    """The lookup (a Core row, not an ORM entity) gives what a replay answers with: the job's id, status, pair
    count and request fingerprint; create_job replays a key that another job holds with that row."""
    from app.jobs import check_replay, find_by_idempotency_key
    from app.plumbing.errors import Conflict
    from core.db import begin_read_only

    sessions, settings = database
    store = BlobStore.from_settings(settings)
    request = job_request(settings, 1000)
    job, created = create_job(
        sessions, store, request, project="p", idempotency_key="k", chunk_size=1, bootstrap=50, seed=1
    )
    with begin_read_only(sessions()) as session:
        found = find_by_idempotency_key(session, "p", "k")
        assert find_by_idempotency_key(session, "other", "k") is None
        assert find_by_idempotency_key(session, "p", "other") is None
    assert created and (found.id, found.status, found.n_pairs, found.request_sha256) == (
        job.id,
        "queued",
        job.n_pairs,
        request.fingerprint,
    )
    assert check_replay(found, request.fingerprint) is found
    with pytest.raises(Conflict):
        check_replay(found, "another request")
    replayed, created = create_job(
        sessions,
        store,
        job_request(settings, 1000),
        project="p",
        idempotency_key="k",
        chunk_size=1,
        bootstrap=50,
        seed=1,
    )
    assert not created and (replayed.id, replayed.status, replayed.n_pairs) == (job.id, "queued", job.n_pairs)


def test_an_idempotency_lookup_never_waits_for_the_sqlite_writer(context):
    """A read-only transaction (the submissions' Idempotency-Key lookup) begins without SQLite's write lock: it
    does not queue behind a job being stored (the busy handler's sleeps made lookups in a burst take 0.4 s)."""
    from app.jobs import find_by_idempotency_key
    from core.db import begin_read_only

    found = []
    with context.sessions() as writer:
        writer.execute(update(Chunk).values(attempts=0))  # BEGIN IMMEDIATE: the write lock, held
        reader = threading.Thread(
            target=lambda: found.append(find_by_idempotency_key(begin_read_only(context.sessions()), "p", "nope"))
        )
        reader.start()
        reader.join(timeout=20)  # it would wait for the busy timeout (60 s) if it took the lock
        assert not reader.is_alive() and found == [None]
        writer.commit()


def test_chunks_group_pairs_of_similar_length_longest_first(context):
    """validate_audio records each file's duration; create_job fills chunks with pairs ranked by length, so a
    worker's batches pad little and the longest chunk is sent first. The pairs keep their order in the report."""
    from app.submission.intake import validate_audio

    seconds = {"a": 0.6, "b": 2.4, "c": 1.0, "d": 3.0, "e": 0.8}
    files, lines = {}, ["pair_id,source,target"]
    for i, (pair_id, length) in enumerate(seconds.items()):
        for side in ("s", "t"):
            data = wav_bytes(length, seed=10 * i + (side == "t"))
            files[f"{side}{pair_id}.wav"] = AudioFile(f"{side}{pair_id}.wav", len(data), lambda d=data: d)
        lines.append(f"{pair_id},s{pair_id}.wav,t{pair_id}.wav")
    request = build_request(
        manifest_text="\n".join(lines) + "\n",
        manifest_name="m.csv",
        files=files,
        name=None,
        profile="lite",
        metadata=None,
        group_column=None,
        settings=context.settings,
    )
    validate_audio(request, max_seconds=60)
    assert sorted(round(v, 2) for v in request.seconds.values()) == sorted([v for v in seconds.values()] * 2)
    job, _ = create_job(
        context.sessions, context.blobs, request, project="p", idempotency_key=None, chunk_size=2, bootstrap=50, seed=1
    )
    with context.sessions() as session:
        pairs = session.execute(
            select(Pair.pair_id, Pair.idx, Pair.chunk).where(Pair.job_id == job.id).order_by(Pair.idx)
        ).all()
        assert session.get(Job, job.id).n_chunks == 3
    assert [(p, i) for p, i, _ in pairs] == [(p, i) for i, p in enumerate(seconds)]  # manifest order kept
    assert {p: c for p, _, c in pairs} == {"d": 0, "b": 0, "c": 1, "e": 1, "a": 2}
