"""Readiness under a flood of probes (issue 26, item 0).

`GET /readyz` needs no token. With Celery on Redis, each probe used to broadcast a control ping that held a
broker pool connection while its publisher waited for another: 50 concurrent probes left every request thread
blocked for good, and the API (health probes and authenticated routes alike) stopped answering.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from app.readiness import ReadinessProbe
from tests.service.test_service_processes import run_cli
from tests.service_support import ServiceProcess, free_port, service_env, wait_http


def test_one_check_at_a_time_and_cached():
    calls, release = [], threading.Event()

    def check():
        calls.append(time.monotonic())
        release.wait(5)
        return {"broker": {"ok": True}}

    probe = ReadinessProbe(check, cache_seconds=60, timeout_seconds=0.2)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(probe.answer())) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert len(calls) == 1  # twenty probes while one check hangs: still one check
    assert all(a["probe"]["ok"] is False and "has not answered" in a["probe"]["error"] for a in answers)
    release.set()
    deadline = time.monotonic() + 5
    while probe.answer() != {"broker": {"ok": True}}:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for _ in range(100):
        assert probe.answer() == {"broker": {"ok": True}}
    assert len(calls) == 1  # fresh answers come from the cache


def test_a_stale_answer_is_checked_again_and_a_failing_check_says_why():
    results = iter([{"database": {"ok": True}}, RuntimeError("boom")])

    def check():
        value = next(results)
        if isinstance(value, Exception):
            raise value
        return value

    probe = ReadinessProbe(check, cache_seconds=0, timeout_seconds=2)
    assert probe.answer() == {"database": {"ok": True}}
    answer = probe.answer()
    assert answer["probe"]["ok"] is False and "RuntimeError: boom" in answer["probe"]["error"]


@pytest.mark.services
def test_a_flood_of_readiness_probes_leaves_the_production_api_answering(redis_url, tmp_path):
    """50 clients probe /readyz for 20 s (Celery on real Redis, no worker); then /healthz and an authenticated
    route answer within 1 s, and so does /readyz itself."""
    env = service_env(
        broker_url=redis_url, data_dir=tmp_path / "data", queue=f"emopres-ready-{free_port()}", auto_migrate=1
    )
    run_cli(["db", "upgrade"], env)
    token = run_cli(["tokens", "create", "ci"], env).strip()
    port = free_port()
    api = ServiceProcess(["serve", "--port", str(port)], env, tmp_path / "api.log").start()
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    probes = {"sent": 0}

    def flood():
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.is_set():
                try:
                    client.get("/readyz")
                    probes["sent"] += 1
                except httpx.HTTPError:
                    pass

    try:
        wait_http(f"{url}/healthz", api)
        threads = [threading.Thread(target=flood, daemon=True) for _ in range(50)]
        for thread in threads:
            thread.start()
        time.sleep(20)
        stop.set()
        for thread in threads:
            thread.join(timeout=2)  # a probe stuck in the server keeps its client thread: do not wait it out
        assert probes["sent"] > 50, api.tail()
        with httpx.Client(base_url=url, timeout=1.0) as client:
            assert client.get("/healthz").status_code == 200, api.tail()
            assert client.get("/v1", headers={"Authorization": f"Bearer {token}"}).status_code == 200
            assert client.get("/readyz").status_code in (200, 503)  # no worker runs: 503, but an answer
    finally:
        stop.set()
        api.stop()
