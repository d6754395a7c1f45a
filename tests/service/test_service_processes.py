"""The service as it runs for real: `emopres serve` / `emopres worker` processes, killed and restarted.

* embedded default: `emopres serve` SIGKILLed mid-job finishes the job after a restart.
* production: PostgreSQL + Redis on localhost and a real Celery worker process (not eager mode);
  the report equals `emopres evaluate`'s; a SIGKILLed worker's job completes after a worker
  restarts with every pair exactly once; an API restart loses no job (even one accepted while
  the broker was away).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text

from core.db import Chunk, PairResult
from tests.service_support import (
    BOOTSTRAP,
    EMOPRES,
    ServiceProcess,
    comparable,
    free_port,
    service_env,
    shared_reference,
    upload_fields,
    wait_http,
    wait_job,
    write_dataset,
)

FAST_RECOVERY = dict(lease_seconds=3, heartbeat_seconds=0.5, reconcile_seconds=0.5, requeue_after_seconds=6)


def progress_then(client: httpx.Client, job_id: str, at_least: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["progress"]["done"] >= at_least or job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"no progress on {job_id}")


def assert_exactly_once(report: dict, manifest_ids: list[str]) -> None:
    ids = [p["pair_id"] for p in report["pairs"]] + [f["pair_id"] for f in report["failures"]]
    assert sorted(ids) == sorted(manifest_ids) and len(ids) == len(set(ids))
    assert [p["pair_id"] for p in report["pairs"]] == manifest_ids and report["failures"] == []
    assert report["job"]["n_pairs"] == len(manifest_ids) and report["job"]["n_failed"] == 0


def run_cli(args: list[str], env: dict) -> str:
    result = subprocess.run([str(EMOPRES), *args], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


# ---------------------------------------------------------------- embedded


def test_embedded_server_killed_mid_job_finishes_it_after_restart(tmp_path, random_lite_head):
    manifest = write_dataset(tmp_path / "data", n_pairs=8, seconds=2.0, seed=100)
    port = free_port()
    env = service_env(
        data_dir=tmp_path / "service",
        head=random_lite_head,
        bootstrap=BOOTSTRAP,
        chunk_size=1,
        auth_disabled=1,
        **FAST_RECOVERY,
    )
    server = ServiceProcess(["serve", "--port", str(port)], env, tmp_path / "serve.log").start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", server)
        job_id = client.post("/v1/jobs", files=upload_fields(manifest)).json()["id"]
        job = progress_then(client, job_id, at_least=1)
        server.kill()
        assert job["status"] == "running" and job["progress"]["done"] < 8, job

        server = ServiceProcess(["serve", "--port", str(port)], env, tmp_path / "serve.log").start()
        wait_http(f"http://127.0.0.1:{port}/healthz", server)
        job = wait_job(client, job_id)
        assert job["status"] == "succeeded" and job["progress"] == {"done": 8, "total": 8, "failed": 0}
        assert_exactly_once(client.get(f"/v1/jobs/{job_id}/report").json(), [f"p{i}" for i in range(8)])
    finally:
        server.stop()
        client.close()


# ---------------------------------------------------------------- PostgreSQL + Redis + Celery


@pytest.fixture(scope="module")
def stack(postgres_url, redis_url, random_lite_head, tmp_path_factory):
    """A PostgreSQL schema of its own, a queue of its own on Redis db 15, API + worker processes.

    (Nothing shared is flushed: other test runs may use the same database and Redis db meanwhile.)
    """
    import redis

    schema = f"emopres_service_test_{os.getpid()}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    database_url = f"{postgres_url}?options=-csearch_path%3D{schema}"
    broker = redis.Redis.from_url(redis_url)
    root = tmp_path_factory.mktemp("stack")
    queue = f"emopres-test-{uuid.uuid4().hex[:8]}"
    settings = dict(
        database_url=database_url,
        broker_url=redis_url,
        data_dir=root / "data",
        head=random_lite_head,
        bootstrap=BOOTSTRAP,
        chunk_size=1,
        queue=queue,
        **FAST_RECOVERY,
    )
    env = service_env(**settings)
    run_cli(["db", "upgrade"], env)
    token = run_cli(["tokens", "create", "ci", "--project", "team-a"], env).strip()
    port = free_port()

    class Stack:
        pass

    stack = Stack()
    stack.env, stack.settings, stack.root, stack.port = env, settings, root, port
    stack.url = f"http://127.0.0.1:{port}"
    stack.engine = create_engine(database_url)
    stack.api = ServiceProcess(["serve", "--port", str(port)], env, root / "api.log").start()
    stack.worker = ServiceProcess(["worker"], env, root / "worker.log").start()
    stack.client = httpx.Client(base_url=stack.url, timeout=30, headers={"Authorization": f"Bearer {token}"})
    try:
        wait_http(f"{stack.url}/healthz", stack.api)
        yield stack
    finally:
        stack.client.close()
        stack.api.stop()
        stack.worker.stop()
        stack.engine.dispose()
        for key in broker.scan_iter(match=f"*{queue}*"):
            broker.delete(key)
        for tag, message in broker.hgetall("unacked").items():  # the SIGKILLed worker's unacknowledged task
            if queue.encode() in message:
                broker.hdel("unacked", tag)
                broker.zrem("unacked_index", tag)
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


@pytest.mark.services
def test_production_report_equals_cli_and_embedded(stack, tmp_path_factory, random_lite_head):
    manifest, reference = shared_reference(tmp_path_factory, random_lite_head)
    response = stack.client.post("/v1/jobs", files=upload_fields(manifest), data={"name": "prod"})
    assert response.status_code == 202, response.text
    job = wait_job(stack.client, response.json()["id"], timeout=180)
    assert job["status"] == "succeeded", (job, stack.worker.tail())
    report = stack.client.get(f"/v1/jobs/{job['id']}/report").json()
    assert comparable(report) == comparable(reference)
    ready = stack.client.get("/readyz").json()
    assert ready["status"] == "ok" and ready["checks"]["broker"]["kind"] == "celery"


@pytest.mark.services
def test_production_idempotency_under_concurrent_retries(stack, tmp_path_factory, random_lite_head):
    manifest, _ = shared_reference(tmp_path_factory, random_lite_head)
    ids, statuses = [], []

    def post():
        response = stack.client.post("/v1/jobs", files=upload_fields(manifest), headers={"Idempotency-Key": "pg-race"})
        statuses.append(response.status_code)
        ids.append(response.json().get("id"))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [202] * 4 and len(set(ids)) == 1
    with stack.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM jobs WHERE idempotency_key = 'pg-race'")).scalar() == 1
    assert wait_job(stack.client, ids[0], timeout=180)["status"] == "succeeded"


@pytest.mark.services
def test_worker_killed_mid_job_completes_after_restart_exactly_once(stack):
    manifest = write_dataset(stack.root / "kill", n_pairs=8, seconds=2.5, seed=200)
    job_id = stack.client.post("/v1/jobs", files=upload_fields(manifest)).json()["id"]
    job = progress_then(stack.client, job_id, at_least=1, timeout=180)
    stack.worker.kill()  # SIGKILL: the worker and its pool process, mid-job
    assert job["status"] == "running" and job["progress"]["done"] < 8, job
    with stack.engine.connect() as connection:
        running = connection.execute(select(Chunk.idx).where(Chunk.job_id == job_id, Chunk.status == "running")).all()
    time.sleep(1)
    assert stack.client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"

    stack.worker = ServiceProcess(["worker"], stack.env, stack.root / "worker.log").start()
    job = wait_job(stack.client, job_id, timeout=180)
    assert job["status"] == "succeeded" and job["progress"] == {"done": 8, "total": 8, "failed": 0}, stack.worker.tail()
    assert_exactly_once(stack.client.get(f"/v1/jobs/{job_id}/report").json(), [f"p{i}" for i in range(8)])
    with stack.engine.connect() as connection:
        results = connection.execute(
            select(func.count()).select_from(PairResult).where(PairResult.job_id == job_id)
        ).scalar()
        attempts = dict(connection.execute(select(Chunk.idx, Chunk.attempts).where(Chunk.job_id == job_id)).all())
    assert results == 8
    for (idx,) in running:  # the chunk cut short was evaluated again
        assert attempts[idx] >= 2


@pytest.mark.services
def test_api_restart_loses_no_job(stack, tmp_path_factory, random_lite_head):
    """A job accepted while the broker is unreachable, by an API then SIGKILLed, still completes."""
    manifest, _ = shared_reference(tmp_path_factory, random_lite_head)
    stack.api.kill()
    dead_broker = service_env(**{**stack.settings, "broker_url": f"redis://127.0.0.1:{free_port()}/15"})
    stack.api = ServiceProcess(["serve", "--port", str(stack.port)], dead_broker, stack.root / "api.log").start()
    wait_http(f"{stack.url}/healthz", stack.api)
    assert stack.client.get("/readyz").status_code == 503
    response = stack.client.post("/v1/jobs", files=upload_fields(manifest), data={"name": "survivor"})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    stack.api.kill()

    stack.api = ServiceProcess(["serve", "--port", str(stack.port)], stack.env, stack.root / "api.log").start()
    wait_http(f"{stack.url}/healthz", stack.api)
    job = wait_job(stack.client, job_id, timeout=180)
    assert job["status"] == "succeeded" and job["name"] == "survivor"
    assert_exactly_once(stack.client.get(f"/v1/jobs/{job_id}/report").json(), [f"p{i}" for i in range(4)])
    listed = stack.client.get("/v1/jobs", params={"name": "survivor"}).json()["items"]
    assert [j["id"] for j in listed] == [job_id]
