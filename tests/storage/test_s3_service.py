"""EMOPRES_BLOB_STORE=s3 through the service, against moto's real S3 server (a TCP proxy in front of it that a
test can cut, as when the object store goes away):

* the embedded topology end to end: a job's report, its page's audio read from the bucket, and deleting the job
  leaves no object of it;
* the object store down during a submission: 503 with Retry-After, no row stored and no partial object; the
  retry is accepted and sends only what the first attempt had not;
* down while a job is deleted: 503, the job and its audio kept whole, deleted once the store is back;
* down while a worker reads a chunk's audio: the chunk waits and retries, its lease renewed (no other worker takes
  it), and finishes once the store is back, each pair stored once;
* /readyz and `emopres serve` / `emopres worker` say what is wrong: no bucket, no credentials, endpoint down.
"""

from __future__ import annotations

import logging
import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import core.blobstore_s3
from app.main import create_app
from cli.main import main as cli_main
from core.blobstore import BlobStore
from core.db import Blob, Chunk, Job, Pair, PairResult, upgrade
from core.settings import Settings
from tests.robustness.fault_injectors import PostgresProxy as TcpProxy
from tests.service.test_service_unit import FakeQueue, make_job
from tests.service_support import free_port, upload_fields, wait_job, write_dataset
from worker.queue.reconciler import reconcile
from worker.queue.tasks import WorkerContext, claim_chunk, run_chunk


@pytest.fixture
def proxy(s3_server):
    """127.0.0.1:<port> -> the S3 server, which the test can cut and restore."""
    tcp = TcpProxy(upstream=(s3_server.host, s3_server.port))
    yield tcp
    tcp.close()


def settings_for(tmp_path, s3_bucket, head, proxy=None, **overrides) -> Settings:
    store = dict(s3_bucket)
    if proxy is not None:
        store["s3_endpoint_url"] = f"http://127.0.0.1:{proxy.port}"
    values = dict(
        data_dir=tmp_path / "data",
        head=str(head),
        bootstrap=0,
        chunk_size=2,
        database_url=None,
        broker_url=None,
        cache_dir=None,
        auth_disabled=True,
        auto_migrate=True,
        readiness_cache_seconds=0,
        s3_timeout_seconds=2,
    )
    return Settings(**{**values, **store, **overrides})


def objects(s3_server, bucket: str) -> dict[str, bytes]:
    """What the bucket holds, read directly (not through the proxy): key -> content."""
    client = s3_server.client()
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listing}


def test_a_job_runs_end_to_end_on_the_s3_store_and_its_deletion_leaves_no_object(
    tmp_path, s3_server, s3_bucket, random_lite_head
):
    settings = settings_for(tmp_path, s3_bucket, random_lite_head)
    manifest = write_dataset(tmp_path / "in", n_pairs=3, seconds=0.8)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz").json()  # 503 while the models load: its checks in the error's details
        assert ready.get("checks", ready.get("error", {}).get("details", {}).get("checks"))["blob_store"] == {
            "ok": True,
            "kind": "s3",
            "bucket": s3_bucket["s3_bucket"],
        }
        job_id = client.post("/v1/jobs", files=upload_fields(manifest)).json()["id"]
        stored = objects(s3_server, s3_bucket["s3_bucket"])
        assert len(stored) == 6 and all(key.endswith(BlobStore.sha256(data)) for key, data in stored.items())
        assert not settings.blob_path.exists()  # nothing in a local folder the workers would have to share
        job = wait_job(client, job_id, timeout=300)
        assert job["status"] == "succeeded" and job["progress"]["done"] == 3
        page = client.get(f"/v1/jobs/{job_id}/report.html?worst=3")
        assert page.status_code == 200 and page.text.count("data:audio/wav;base64,") == 6  # read from the bucket
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert objects(s3_server, s3_bucket["s3_bucket"]) == {}
        with client.app.state.services.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Blob)) == 0


def test_the_object_store_down_during_a_submission_is_a_503_and_nothing_is_half_stored(
    tmp_path, s3_server, s3_bucket, proxy, random_lite_head, monkeypatch
):
    """The store goes away after the first object of the upload is sent: 503 with Retry-After, no job, pair or
    blob row, and what the bucket holds is whole objects only; once it is back the same upload is accepted (the
    orphan object, which no row names, sent again whole)."""
    settings = settings_for(tmp_path, s3_bucket, random_lite_head, proxy)
    manifest = write_dataset(tmp_path / "in", n_pairs=2, seconds=0.5)
    sent, cut, lock = [], [], threading.Lock()
    real_put = core.blobstore_s3.S3Blobs.replace

    def put_then_cut(self, sha, data):  # one at a time: the store goes away after the first object
        with lock:
            if sent and not cut:
                cut.append(proxy.cut())
            real_put(self, sha, data)
            sent.append(sha)

    monkeypatch.setattr(core.blobstore_s3.S3Blobs, "replace", put_then_cut)
    with TestClient(create_app(settings, start_worker=False), raise_server_exceptions=False) as client:
        response = client.post("/v1/jobs", files=upload_fields(manifest))
        assert response.status_code == 503 and response.headers["retry-after"] == "10", response.text
        assert response.json()["error"]["code"] == "service_unavailable"
        with client.app.state.services.sessions() as session:
            assert [session.scalar(select(func.count()).select_from(t)) for t in (Job, Pair, Blob)] == [0, 0, 0]
        held = objects(s3_server, s3_bucket["s3_bucket"])
        assert len(held) == 1 and all(key.endswith(BlobStore.sha256(data)) for key, data in held.items())
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "endpoint down" in ready.json()["error"]["details"]["checks"]["blob_store"]["error"]
        proxy.restore()
        sent.clear()
        assert client.post("/v1/jobs", files=upload_fields(manifest)).status_code == 202
        assert len(sent) == 4
        assert len(objects(s3_server, s3_bucket["s3_bucket"])) == 4


def test_a_job_deleted_while_the_object_store_is_down_stays_whole_until_it_can_be_deleted(
    tmp_path, s3_server, s3_bucket, proxy, random_lite_head
):
    """The deletion removes the objects before its commit: with the store away it is a 503 and the job keeps its
    rows and its audio; once the store is back the deletion leaves no object of it."""
    settings = settings_for(tmp_path, s3_bucket, random_lite_head, proxy)
    manifest = write_dataset(tmp_path / "in", n_pairs=1, seconds=0.5)
    with TestClient(create_app(settings, start_worker=False), raise_server_exceptions=False) as client:
        job_id = client.post("/v1/jobs", files=upload_fields(manifest)).json()["id"]
        proxy.cut()
        response = client.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 503 and "Retry-After" in response.headers
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        assert len(objects(s3_server, s3_bucket["s3_bucket"])) == 2
        proxy.restore()
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert objects(s3_server, s3_bucket["s3_bucket"]) == {}


def test_the_object_store_down_while_a_worker_reads_is_waited_out_under_the_lease(
    tmp_path, s3_bucket, proxy, random_lite_head, caplog
):
    settings = settings_for(
        tmp_path, s3_bucket, random_lite_head, proxy, lease_seconds=3, heartbeat_seconds=1, blob_retry_seconds=120
    )
    upgrade(settings.sqlalchemy_url)
    ctx = WorkerContext(settings, queue=FakeQueue())
    try:
        job_id = make_job(ctx.sessions, ctx.blobs, settings, n_pairs=2)
        proxy.cut()
        outcome = []
        worker = threading.Thread(target=lambda: outcome.append(run_chunk(ctx, job_id, 0)))
        with caplog.at_level(logging.WARNING, logger="emopres.worker"):
            worker.start()
            while "audio store unavailable" not in caplog.text:
                assert worker.is_alive(), outcome
                worker.join(0.2)
            worker.join(settings.lease_seconds + 1)  # past a whole lease: renewed by the heartbeat meanwhile
            assert worker.is_alive()
            other = WorkerContext(settings, queue=FakeQueue())
            other.name = "another-host:1"
            assert claim_chunk(other, job_id, 0) is None and reconcile(other)["lost"] == 0
            other.close()
            proxy.restore()
            worker.join(300)
        assert outcome == ["done"]
        assert run_chunk(ctx, job_id, 1) == "done"  # make_job: one pair per chunk
        with ctx.sessions() as session:
            results = session.scalars(select(PairResult).where(PairResult.job_id == job_id)).all()
            assert sorted(r.pair_id for r in results) == ["q0", "q1"] and all(r.row for r in results)
            chunk = session.scalar(select(Chunk).where(Chunk.job_id == job_id, Chunk.idx == 0))
            assert chunk.status == "done" and chunk.attempts == 1
            assert session.get(Job, job_id).status == "succeeded"
    finally:
        ctx.close()


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_say_what_is_wrong_with_the_bucket_at_start(
    command, tmp_path, s3_server, s3_bucket, monkeypatch, capsys
):
    def start(**store) -> str:
        monkeypatch.setenv("EMOPRES_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("EMOPRES_BROKER_URL", "redis://127.0.0.1:1/0" if command == "worker" else "")
        for name, value in {**s3_bucket, **store}.items():
            monkeypatch.setenv(f"EMOPRES_{name.upper()}", value)
        assert cli_main([command]) == 2
        return capsys.readouterr().err

    assert f"no bucket 'missing-{command}'" in start(s3_bucket=f"missing-{command}")
    assert "endpoint down or unreachable" in start(s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    assert "EMOPRES_S3_BUCKET" in start(s3_bucket="")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert "no credentials" in start()


def test_an_endpoint_that_never_answers_is_given_up_within_the_timeout_setting(monkeypatch):
    """EMOPRES_S3_TIMEOUT_SECONDS bounds a request to a store that accepts connections and then says nothing: the
    call ends with BlobStoreUnavailable after at most two attempts (boto3's standard retry, total_max_attempts 2),
    instead of holding a submission (or the SQLite write lock) forever."""
    import socket
    import threading

    from core.blobstore_s3 import BlobStoreUnavailable, S3Blobs
    from tests.s3_support import CREDENTIALS

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept_and_stay_silent():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    port = listener.getsockname()[1]
    store = S3Blobs("silent", endpoint_url=f"http://127.0.0.1:{port}", timeout_seconds=0.5)
    try:
        with pytest.raises(BlobStoreUnavailable):
            store.size("0" * 64)
        assert 1 <= len(accepted) <= 2
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
