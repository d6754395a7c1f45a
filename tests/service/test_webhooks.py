"""Webhooks: a job's callback URL gets the signed job summary when it finishes, retried with backoff, every
attempt visible at GET /v1/jobs/{id}/deliveries; callback hosts off the operator's allow-list are refused
at submission. Against a real HTTP receiver on loopback (tests/webhook_receiver.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from itertools import pairwise

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.auth import create_token
from app.main import create_app
from app.webhooks.callbacks import allowed, new_secret
from app.webhooks.delivery import Dispatcher
from core.db import Job, Token, Webhook, WebhookDelivery
from emopres_client.webhooks import InvalidSignature, sign, verify
from tests.service.test_service_api import assert_error, service_settings
from tests.service_support import upload_fields, wait_job, write_dataset
from tests.webhook_receiver import Receiver

FAST = dict(
    webhook_allowed_hosts="127.0.0.1, *.ci.example",
    webhook_poll_seconds=0.1,
    webhook_backoff_seconds=0.2,
    webhook_timeout_seconds=1.0,
    webhook_max_attempts=4,
)


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    "url, entries, expected",
    [
        ("https://hooks.ci.example/x", ("*.ci.example",), True),
        ("https://ci.example/x", ("*.ci.example",), False),  # the wildcard needs a subdomain
        ("https://evil-ci.example/x", ("*.ci.example",), False),
        ("http://127.0.0.1:9000/x", ("127.0.0.1",), True),
        ("http://127.0.0.1:9000/x", ("127.0.0.1:8000",), False),
        ("http://10.2.3.4/x", ("10.0.0.0/8",), True),
        ("http://10.2.3.4.nip.io/x", ("10.0.0.0/8",), False),  # an IP rule matches IP literals, not names
        ("http://[::1]:81/x", ("[::1]:81",), True),
        ("https://Hooks.CI.example/x", ("hooks.ci.example",), True),
        ("https://hooks.ci.example/x", (), False),
    ],
)
def test_allow_list(url, entries, expected):
    assert allowed(url, entries) is expected


def test_signature_is_hmac_sha256_of_timestamp_and_body():
    body, secret = b'{"job": 1}', "whsec_abc"
    headers = sign(secret, body, now=1_700_000_000)
    expected = hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert headers["X-Emopres-Signature"] == f"sha256={expected}"
    verify(secret, body, headers, now=1_700_000_010)
    for bad_secret, bad_body, now in (
        ("whsec_other", body, 1_700_000_010),
        (secret, body + b" ", 1_700_000_010),
        (secret, body, 1_700_001_000),
    ):  # wrong secret, altered body, replayed late
        with pytest.raises(InvalidSignature):
            verify(bad_secret, bad_body, headers, now=now)


# ---------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("hooks-data"), n_pairs=2)


@pytest.fixture(scope="module")
def service(tmp_path_factory, random_lite_head):
    """The embedded service (its worker and webhook dispatcher running) and the token's webhook secret."""
    app = create_app(service_settings(tmp_path_factory.mktemp("hooks"), random_lite_head, **FAST))
    with TestClient(app) as client:
        services = app.state.services
        with services.sessions() as session:
            token = create_token(session, "hooks", "team-h")
            secret = new_secret(session, session.scalar(select(Token).where(Token.name == "hooks")))
            create_token(session, "no-secret", "team-h")
        client.headers["Authorization"] = f"Bearer {token}"
        client.services, client.secret = services, secret
        yield client


def _submit(service, dataset, callback_url, name="sys@1"):
    response = service.post("/v1/jobs", files=upload_fields(dataset), data={"name": name, "callback_url": callback_url})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _deliveries(service, job_id, until=("delivered", "failed"), timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        body = service.get(f"/v1/jobs/{job_id}/deliveries").json()
        if body["callback"]["state"] in until:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_a_finished_job_posts_its_signed_summary(service, dataset):
    with Receiver() as receiver:
        job_id = _submit(service, dataset, receiver.url)
        job = wait_job(service, job_id, timeout=300)
        deliveries = _deliveries(service, job_id)
        request = receiver.wait_for(1)[0]
    assert deliveries["callback"]["state"] == "delivered" and deliveries["callback"]["attempts"] == 1
    assert [(d["attempt"], d["status_code"], d["outcome"]) for d in deliveries["items"]] == [(1, 200, "delivered")]
    verify(service.secret, request["body"], request["headers"])  # what a receiver does
    assert request["headers"]["X-Emopres-Event"] == "job.finished"
    assert request["headers"]["X-Emopres-Delivery"] == deliveries["callback"]["delivery_id"]
    payload = json.loads(request["body"])
    summary = payload["job"]
    assert summary["id"] == job_id and summary["name"] == "sys@1" and summary["status"] == "succeeded"
    assert summary["headline"] == job["headline"] and summary["headline"]["epr"]["ci_low"] is not None
    assert summary["links"]["report_html"] == f"/v1/jobs/{job_id}/report.html"
    assert service.get(f"/v1/jobs/{job_id}").json()["links"]["deliveries"] == f"/v1/jobs/{job_id}/deliveries"


def test_a_receiver_returning_500_gets_retries_with_backoff(service, dataset):
    with Receiver(plan=[500, 503]) as receiver:
        job_id = _submit(service, dataset, receiver.url, name="sys@retry")
        wait_job(service, job_id, timeout=300)
        deliveries = _deliveries(service, job_id)
        requests = receiver.wait_for(3)
    assert [(d["status_code"], d["outcome"]) for d in deliveries["items"]] == [
        (500, "retry"),
        (503, "retry"),
        (200, "delivered"),
    ]
    assert deliveries["items"][0]["error"].startswith("HTTP 500")
    assert len({r["headers"]["X-Emopres-Delivery"] for r in requests}) == 1  # one delivery, three attempts
    gaps = [b["at"] - a["at"] for a, b in pairwise(requests)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # backoff 0.2 s, then doubled
    for request in requests:
        verify(service.secret, request["body"], request["headers"])


def test_callbacks_off_the_allow_list_are_refused_and_nothing_is_stored(service, dataset):
    services = service.services
    with services.sessions() as session:
        before = session.scalar(select(func.count()).select_from(Job))
    for url, code in (
        ("http://10.1.2.3/hook", "callback_not_allowed"),
        ("https://ci.example/hook", "callback_not_allowed"),
        ("ftp://127.0.0.1/hook", "invalid_callback_url"),
        ("http://u:p@127.0.0.1/x", "invalid_callback_url"),
        ("http://127.0.0.1:99999/x", "invalid_callback_url"),
    ):
        response = service.post("/v1/jobs", files=upload_fields(dataset), data={"callback_url": url})
        assert_error(response, 422, code)
    other = service.post(
        "/v1/jobs",
        files=upload_fields(dataset),
        data={"callback_url": "http://127.0.0.1/x"},
        headers={"Authorization": "Bearer " + _token(services, "no-secret2")},
    )
    assert_error(other, 422, "no_webhook_secret")
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == before


def _token(services, name):
    with services.sessions() as session:
        return create_token(session, name, "team-h")


# ---------------------------------------------------------------- the dispatcher, step by step


@pytest.fixture
def idle_service(tmp_path, random_lite_head):
    """No worker and no dispatcher running: jobs stay queued until a test finishes them by hand."""
    app = create_app(service_settings(tmp_path, random_lite_head, **FAST), start_worker=False)
    with TestClient(app) as client:
        services = app.state.services
        with services.sessions() as session:
            token = create_token(session, "idle", "team-i")
            client.secret = new_secret(session, session.scalar(select(Token).where(Token.name == "idle")))
        client.headers["Authorization"] = f"Bearer {token}"
        client.services = services
        yield client


def _finish(services, job_id, status="failed"):
    with services.sessions() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status, error="all 2 pair(s) failed"))
        session.commit()


def test_a_failed_job_is_delivered_too_and_only_once_finished(idle_service, dataset):
    services = idle_service.services
    dispatcher = Dispatcher(services.settings, services.sessions)
    try:
        with Receiver() as receiver:
            job_id = _submit(idle_service, dataset, receiver.url)
            assert dispatcher.dispatch_due(wait=True) == 0  # queued: nothing to send yet
            _finish(services, job_id)
            assert dispatcher.dispatch_due(wait=True) == 1
            assert dispatcher.dispatch_due(wait=True) == 0  # delivered: never again
            payload = json.loads(receiver.wait_for(1)[0]["body"])
        assert payload["job"]["status"] == "failed" and payload["job"]["error"] == "all 2 pair(s) failed"
        assert len(receiver.requests) == 1
    finally:
        dispatcher.stop()


def test_a_receiver_that_never_answers_times_out_and_fails_after_max_attempts(idle_service, dataset):
    services = idle_service.services
    dispatcher = Dispatcher(services.settings, services.sessions)
    try:
        with Receiver(plan=["hang"] * 10, hang_seconds=600) as receiver:
            job_id = _submit(idle_service, dataset, receiver.url)
            _finish(services, job_id, "succeeded")
            for attempt in range(1, 5):
                with services.sessions() as session:
                    session.execute(update(Webhook).values(next_attempt_at=None))  # no waiting out the backoff
                    session.commit()
                assert dispatcher.dispatch_due(wait=True) == 1
                # the dispatcher gave up by itself: the receiver still holds every request it got, unanswered
                assert len(receiver.requests) == attempt and receiver.hanging == attempt
            assert dispatcher.dispatch_due(wait=True) == 0
        body = idle_service.get(f"/v1/jobs/{job_id}/deliveries").json()
    finally:
        dispatcher.stop()
    assert body["callback"]["state"] == "failed" and body["callback"]["attempts"] == 4
    assert [d["outcome"] for d in body["items"]] == ["retry", "retry", "retry", "failed"]
    assert all(d["error"] == "no answer within 1 s" and d["status_code"] is None for d in body["items"])
    assert all(d["duration_ms"] >= 900 for d in body["items"])  # each attempt waited out its 1 s timeout
    # the job's own result is untouched by its webhook's failure
    assert idle_service.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"


def test_an_attempt_cut_off_by_a_crash_is_made_again_after_its_lease(idle_service, dataset):
    services = idle_service.services
    dispatcher = Dispatcher(services.settings, services.sessions)
    try:
        with Receiver() as receiver:
            job_id = _submit(idle_service, dataset, receiver.url)
            _finish(services, job_id, "succeeded")
            assert dispatcher._claim(job_id)  # a dispatcher took it, then its process died
            assert dispatcher.dispatch_due(wait=True) == 0  # leased: nobody else sends it meanwhile
            with services.sessions() as session:
                session.execute(update(Webhook).values(lease_until=Webhook.created_at))  # the lease ran out
                session.commit()
            assert dispatcher.dispatch_due(wait=True) == 1
            receiver.wait_for(1)
        with services.sessions() as session:
            assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
    finally:
        dispatcher.stop()


# ---------------------------------------------------------------- production: API and Celery worker processes


@pytest.mark.slow
@pytest.mark.services
def test_celery_mode_delivers_from_the_api_process(postgres_url, redis_url, random_lite_head, tmp_path, dataset):
    """`emopres serve` with a broker plus `emopres worker` (PostgreSQL, Redis): the worker finishes the job,
    the API's dispatcher delivers its callback, signed with the secret `emopres tokens create` printed."""
    import os
    import uuid

    import httpx
    from sqlalchemy import create_engine, text

    from tests.service_support import EMOPRES, ServiceProcess, free_port, service_env, wait_http

    schema = f"emopres_webhook_test_{os.getpid()}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    port = free_port()
    env = service_env(
        database_url=f"{postgres_url}?options=-csearch_path%3D{schema}",
        broker_url=redis_url,
        data_dir=tmp_path / "data",
        head=random_lite_head,
        bootstrap=100,
        chunk_size=1,
        queue=f"emopres-hooks-{uuid.uuid4().hex[:8]}",
        **FAST,
    )
    api = worker = None
    try:
        import subprocess

        assert subprocess.run([str(EMOPRES), "db", "upgrade"], env=env, capture_output=True).returncode == 0
        created = subprocess.run([str(EMOPRES), "tokens", "create", "ci"], env=env, capture_output=True, text=True)
        token = created.stdout.strip()
        secret = created.stderr.split("X-Emopres-Signature with it): ")[1].split()[0]
        api = ServiceProcess(["serve", "--port", str(port)], env, tmp_path / "api.log").start()
        worker = ServiceProcess(["worker"], env, tmp_path / "worker.log").start()
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", api)
        with (
            Receiver(plan=[500]) as receiver,
            httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as client,
        ):
            response = client.post(
                "/v1/jobs", files=upload_fields(dataset), data={"name": "prod@1", "callback_url": receiver.url}
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            requests = receiver.wait_for(2, timeout=240)
            deliveries = _deliveries(client, job_id, timeout=30)
        verify(secret, requests[1]["body"], requests[1]["headers"])
        assert json.loads(requests[1]["body"])["job"]["status"] == "succeeded"
        assert [d["outcome"] for d in deliveries["items"]] == ["retry", "delivered"]
    finally:
        for process in (api, worker):
            if process is not None:
                process.stop()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
