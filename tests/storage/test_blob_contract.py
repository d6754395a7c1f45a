"""The storage contract, the same tests on all three audio stores (fs, database, s3 on moto's real S3 server; s3
also on PostgreSQL, whose row insert says which blob rows it created):
what a submission stores is readable by a worker elsewhere; audio already stored is not written (sent) again;
content is checked against its name before anything is written; deleting a job removes the audio no other job
uses, also after a deletion raced a submission; a worker's local copies stay within their bound."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.jobs import delete_job, new_job, store_jobs
from core.blobstore import BlobMissing, BlobStore, CachedBlobs, FileBlobs
from core.db import Blob, make_engine, make_session_factory, upgrade
from core.settings import Settings
from tests.api.test_job_storage import job_request
from tests.service.test_service_unit import make_job
from tests.service_support import drop_postgres_schema, new_postgres_schema, wav_bytes


@dataclass
class Backend:
    settings: Settings
    sessions: sessionmaker[Session]
    blobs: BlobStore

    def elsewhere(self, root) -> BlobStore:
        """The same store as a worker on another host sees it (its own data folder; fs: the shared folder)."""
        settings = self.settings.model_copy(update={"data_dir": root, "blob_dir": self.settings.blob_path})
        return BlobStore.from_settings(settings)

    def stored(self) -> set[str]:
        """The sha256 of every blob whose bytes the store holds (files, objects, or rows with content)."""
        files = self.blobs.files
        if isinstance(files, FileBlobs):
            if self.blobs.kind == "database":
                with self.sessions() as session:
                    return set(session.scalars(select(Blob.sha256).where(Blob.content.is_not(None))))
            return {p.name for p in files.root.rglob("*") if p.is_file()} if files.root.exists() else set()
        keys = files.keys()
        assert all(key.startswith(files.prefix) and key.rsplit("/", 1)[-1] in key for key in keys)
        return {key.rsplit("/", 1)[-1] for key in keys}

    def rows(self) -> set[str]:
        with self.sessions() as session:
            return set(session.scalars(select(Blob.sha256)))


def backend(request, tmp_path, **settings) -> Backend:
    """The store named by request.param ("s3-postgresql": on a PostgreSQL schema of its own, else on SQLite)."""
    kind, _, database = request.param.partition("-")
    store = request.getfixturevalue("s3_bucket") if kind == "s3" else {"blob_store": kind}
    if kind == "s3":
        store["s3_prefix"] = "team/audio"
    database_url = None
    if database == "postgresql":
        postgres_url = request.getfixturevalue("postgres_url")
        schema = f"emopres_blob_contract_{os.getpid()}"
        database_url = new_postgres_schema(postgres_url, schema)
        request.addfinalizer(lambda: drop_postgres_schema(postgres_url, schema))
    values = dict(data_dir=tmp_path / "api", database_url=database_url, broker_url=None, cache_dir=None)
    config = Settings(**{**values, **store, **settings})
    upgrade(config.sqlalchemy_url)
    return Backend(config, make_session_factory(make_engine(config.sqlalchemy_url)), BlobStore.from_settings(config))


@pytest.fixture(params=["fs", "database", "s3", "s3-postgresql"])
def store(request, tmp_path):
    yield (made := backend(request, tmp_path))
    made.sessions.kw["bind"].dispose()


@pytest.fixture(params=["database", "s3"])
def remote_store(request, tmp_path):
    """The stores whose workers keep local copies, the copies bounded to about two files of job_audio's."""
    yield (made := backend(request, tmp_path, blob_cache_bytes=2 * len(wav_bytes(0.6)) + 100))
    made.sessions.kw["bind"].dispose()


def shas_of(request) -> set[str]:
    return set(request.blobs)


def test_a_stored_job_is_readable_by_a_worker_elsewhere(store, tmp_path):
    job_id = make_job(store.sessions, store.blobs, store.settings, n_pairs=2)
    with store.sessions() as session:
        shas = {sha for (sha,) in session.execute(select(Blob.sha256))}
    assert len(shas) == 4 and store.stored() == shas == store.rows()
    worker = store.elsewhere(tmp_path / "worker")
    paths = worker.local_paths(store.sessions, sorted(shas))
    with store.sessions() as session:
        for sha, path in paths.items():
            data = path.read_bytes()
            assert BlobStore.sha256(data) == sha
            assert store.blobs.stored_size(session, sha) == len(data) and store.blobs.read(session, sha) == data
        assert store.blobs.stored_size(session, "0" * 64) is None and store.blobs.read(session, "0" * 64) is None
    if store.blobs.kind != "fs":  # the worker's own copies, not the store's
        assert all(str(path).startswith(str(tmp_path / "worker")) for path in paths.values())
    with pytest.raises(BlobMissing):
        worker.local_path(store.sessions, "0" * 64)
    assert job_id


def test_audio_already_stored_is_not_written_again(store, monkeypatch):
    """A second job with the same audio: no file written, no object sent (nor asked for: the database lists
    them), one row each."""
    request = job_request(store.settings, seed=10)
    make = dict(project="p", idempotency_key=None, chunk_size=1, bootstrap=50, seed=1)
    store_jobs(store.sessions, store.blobs, [first := new_job(store.blobs, request, **make)])
    assert first.stored.result()
    written = []
    if store.blobs.kind != "database":
        real = store.blobs.files.replace
        monkeypatch.setattr(store.blobs.files, "replace", lambda sha, data: (written.append(sha), real(sha, data)))
    if store.blobs.kind == "s3":
        monkeypatch.setattr(store.blobs.files, "size", lambda sha: written.append(f"HEAD {sha}"))
    store_jobs(store.sessions, store.blobs, [second := new_job(store.blobs, job_request(store.settings, 10), **make)])
    assert second.stored.result() and written == []
    assert store.rows() == store.stored() == shas_of(request)


def test_content_is_checked_against_its_name_before_anything_is_written(store):
    data = wav_bytes(0.5, seed=3)
    sha = BlobStore.sha256(data)
    if store.blobs.kind != "database":  # the database store writes in the transaction only
        with pytest.raises(ValueError, match="changed while storing"):
            store.blobs.prepare({sha: lambda: data + b"x"})
    with store.sessions() as session, pytest.raises(ValueError, match="changed while storing"):
        store.blobs.put_many(session, {sha: lambda: data[::-1]})
    assert store.stored() == set() and store.rows() == set()


def test_deleting_a_job_removes_the_audio_no_other_job_uses(store, tmp_path):
    """Two jobs share their audio but the second's; deleting the second removes only its own blobs (row, file or
    object, and this host's local copies); deleting the first leaves the store empty."""
    keep = make_job(store.sessions, store.blobs, store.settings, n_pairs=1)
    shared = store.stored()
    gone = make_job(store.sessions, store.blobs, store.settings, n_pairs=2)
    own = store.stored() - shared
    assert len(shared) == 2 and len(own) == 2
    store.blobs.local_paths(store.sessions, sorted(shared | own))  # this host's copies (database, s3)
    for job_id, left in ((gone, shared), (keep, set())):
        with store.sessions() as session:
            delete_job(session, store.blobs, "p", job_id)
        assert store.stored() == store.rows() == left
        assert {p.name for p in store.blobs.local.root.rglob("*") if p.is_file()} == left


def test_audio_a_deletion_removed_while_a_job_was_submitted_is_stored_again(store):
    """A deletion that commits between a submission's prepare (fs: the file written, or found there) and its
    transaction: the submission writes the file again (fs: its check after the row insert finds it gone; s3: the
    row is created again, so its object is uploaded), so its job's audio is all there."""
    first = make_job(store.sessions, store.blobs, store.settings, n_pairs=1)
    make = dict(project="p", idempotency_key=None, chunk_size=1, bootstrap=50, seed=1)
    request = job_request(store.settings, seed=0, n_pairs=1)  # make_job's audio: the same content
    item = new_job(store.blobs, request, **make)  # prepared, not yet committed
    with store.sessions() as session:
        delete_job(session, store.blobs, "p", first)
    assert store.stored() == set()
    store_jobs(store.sessions, store.blobs, [item])
    assert item.stored.result() and store.stored() == store.rows() == shas_of(request)


def test_a_workers_local_copies_stay_within_their_bound(remote_store, tmp_path):
    """blob_cache_bytes: after each fetch the copies hold at most that many bytes, the least recently used gone
    first; a chunk whose own audio is more than the bound keeps it all until the next fetch."""
    sessions, settings = remote_store.sessions, remote_store.settings
    for _ in range(3):
        make_job(sessions, remote_store.blobs, settings, n_pairs=2)  # the same 4 files each time
    shas = sorted(remote_store.rows())
    worker = remote_store.elsewhere(tmp_path / "worker")
    cache = worker.local
    assert isinstance(cache, CachedBlobs) and cache.max_bytes == settings.blob_cache_bytes

    def held() -> dict[str, int]:
        return {p.name: p.stat().st_size for p in cache.root.rglob("*") if p.is_file()}

    for sha in shas:
        worker.local_path(sessions, sha)
        assert sum(held().values()) <= cache.max_bytes
    assert set(held()) == set(shas[-2:])  # the two most recently used
    worker.local_path(sessions, shas[-2])  # used again: now the most recent
    worker.local_path(sessions, shas[0])
    assert set(held()) == {shas[-2], shas[0]}
    paths = worker.local_paths(sessions, shas)  # a chunk of four: all kept, over the bound
    assert set(held()) == set(shas) and all(p.is_file() for p in paths.values())
    worker.local_path(sessions, shas[1])  # hit: nothing fetched, nothing trimmed
    assert len(held()) == 4


def test_s3_objects_are_named_by_prefix_and_sha256_and_a_damaged_one_is_refused(request, tmp_path, s3_bucket):
    request.param = "s3"
    store = backend(request, tmp_path)
    make_job(store.sessions, store.blobs, store.settings, n_pairs=1)
    keys = store.blobs.files.keys()
    assert len(keys) == 2 and all(k == f"team/audio/{k[-64:-62]}/{k[-64:]}" for k in keys)
    sha = keys[0][-64:]
    store.blobs.files.replace(sha, b"not the audio")
    with pytest.raises(BlobMissing, match="does not have the content"):
        store.elsewhere(tmp_path / "worker").local_path(store.sessions, sha)
    store.sessions.kw["bind"].dispose()
