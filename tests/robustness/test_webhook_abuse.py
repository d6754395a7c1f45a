"""Webhook abuse (issue 26, points 2 and 3), on SQLite and on PostgreSQL.

Point 2: an allowed receiver answering 500 with a 1 GB body (or a gzip bomb) raised the API by 5 GB: the
client read the whole answer to keep 200 characters of it. Now at most EMOPRES_WEBHOOK_ANSWER_BYTES of it is
read, raw (Accept-Encoding: identity, nothing decompressed), and the whole exchange is time-boxed by
EMOPRES_WEBHOOK_TIMEOUT_SECONDS, a receiver that drips its answer included. Memory is measured in-process
(tracemalloc: the peak of Python allocations during the attempt, every thread included).

Point 3: a callback URL with a TAB passed the allow-list (urlsplit drops it) and made httpx raise outside
the attempt: no delivery row, retried every lease forever, and 160 of them starved every other token's
callbacks. Now such URLs are refused at submission (parsed as the sender parses them), any client error is a
recorded failed attempt, and due callbacks are taken fairly across tokens.
"""

from __future__ import annotations

import gzip
import logging
import os
import time
import tracemalloc
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.auth import create_token
from app.main import create_app
from app.webhooks.callbacks import allowed, new_secret
from app.webhooks.delivery import Dispatcher
from core.db import Job, Token, Webhook, WebhookDelivery, utcnow
from tests.service.test_service_api import assert_error, counts, job_fields, service_settings
from tests.service_support import drop_postgres_schema, new_postgres_schema
from tests.webhook_receiver import Receiver

MiB = 1024 * 1024
BOMB_BYTES = 256 * MiB
MAX_GROWTH = 100 * MiB
FAST = dict(
    webhook_allowed_hosts="127.0.0.1",
    webhook_poll_seconds=0.1,
    webhook_backoff_seconds=0.2,
    webhook_timeout_seconds=1.0,
    webhook_max_attempts=1,
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tmp_path_factory, random_lite_head):
    """No worker, no dispatcher: the tests finish jobs and run the dispatcher by hand. Tokens a and b."""
    overrides = {}
    if request.param == "postgresql":
        postgres_url = request.getfixturevalue("postgres_url")
        schema = f"emopres_webhook_abuse_{os.getpid()}"
        overrides = dict(database_url=new_postgres_schema(postgres_url, schema), auto_migrate=True)
    app = create_app(
        service_settings(tmp_path_factory.mktemp(f"abuse-{request.param}"), random_lite_head, **FAST, **overrides),
        start_worker=False,
    )
    try:
        with TestClient(app) as client:
            services = app.state.services
            client.services, client.tokens = services, {}
            with services.sessions() as session:
                for name in ("a", "b"):
                    client.tokens[name] = {"Authorization": f"Bearer {create_token(session, name, 'team-w')}"}
                    new_secret(session, session.scalar(select(Token).where(Token.name == name)))
            yield client
    finally:
        if overrides:
            drop_postgres_schema(postgres_url, schema)


def finished_job(service, url: str, token: str = "a", finished_seconds_ago: float = 0.0) -> str:
    """A job with a callback to `url`, finished (failed) `finished_seconds_ago`; its webhook due now."""
    response = service.post("/v1/jobs", headers=service.tokens[token], **job_fields(callback_url=url))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    with service.services.sessions() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="failed",
                error="all 1 pair(s) failed",
                finished_at=utcnow() - timedelta(seconds=finished_seconds_ago),
            )
        )
        session.commit()
    return job_id


def dispatcher(service, **settings) -> Dispatcher:
    return Dispatcher(service.services.settings.model_copy(update=settings), service.services.sessions)


def attempts(service, job_id: str) -> list[WebhookDelivery]:
    with service.services.sessions() as session:
        return list(
            session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.attempt)
            )
        )


def state(service, job_id: str) -> str:
    with service.services.sessions() as session:
        return session.get(Webhook, job_id).state


def deliver_measured(service, answer) -> tuple[WebhookDelivery, int, dict]:
    """One attempt at a receiver answering with `answer`: (its delivery row, peak memory growth, the request)."""
    with Receiver(plan=[answer]) as receiver:
        job_id = finished_job(service, receiver.url)
        sender = dispatcher(service)
        try:
            tracemalloc.start()
            try:
                outcome = sender.deliver(job_id)
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        finally:
            sender.stop()
        request = receiver.requests[0]
    rows = attempts(service, job_id)
    assert outcome == "failed" and len(rows) == 1 and state(service, job_id) == "failed"
    return rows[0], peak, request


# ---------------------------------------------------------------- point 2: what a receiver answers


def huge_answer(handler) -> None:
    handler.send_response(500)
    handler.send_header("Content-Length", str(BOMB_BYTES))
    handler.end_headers()
    block = b"x" * MiB
    for _ in range(BOMB_BYTES // MiB):
        handler.wfile.write(block)


GZIP_BOMB = gzip.compress(b"\0" * BOMB_BYTES, compresslevel=9)  # about 250 KB


def gzip_answer(handler) -> None:
    handler.send_response(500)
    handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Content-Length", str(len(GZIP_BOMB)))
    handler.end_headers()
    handler.wfile.write(GZIP_BOMB)


def dripping_headers(handler) -> None:
    """A status line, then one header line every 0.2 s for 8 s: each read comes well within the timeout."""
    handler.wfile.write(b"HTTP/1.1 500 Internal Server Error\r\n")
    for _ in range(40):
        time.sleep(0.2)
        handler.wfile.write(b"X-Slow: yes\r\n")


def dripping_body(handler) -> None:
    handler.send_response(500)
    handler.send_header("Content-Length", str(MiB))
    handler.end_headers()
    handler.wfile.write(b"overloaded")
    for _ in range(40):
        time.sleep(0.2)
        handler.wfile.write(b".")


def test_a_huge_answer_is_read_only_a_few_kib_of(service):
    row, peak, request = deliver_measured(service, huge_answer)
    assert row.status_code == 500 and row.outcome == "failed"
    assert row.error == "HTTP 500: " + "x" * 200
    assert peak < MAX_GROWTH, f"{peak / MiB:.0f} MiB"
    assert request["headers"]["Accept-Encoding"] == "identity"


def test_a_gzip_bomb_answer_is_not_decompressed(service):
    row, peak, _ = deliver_measured(service, gzip_answer)
    assert row.status_code == 500 and row.error == "HTTP 500 (a gzip-encoded answer, not read)"
    assert peak < MAX_GROWTH, f"{peak / MiB:.0f} MiB"


def test_an_answer_dripping_its_headers_is_cut_at_the_timeout(service):
    row, peak, _ = deliver_measured(service, dripping_headers)
    assert row.status_code is None and row.error == "no answer within 1 s"
    assert peak < MAX_GROWTH


def test_an_answer_dripping_its_body_is_cut_at_the_timeout(service):
    row, _, _ = deliver_measured(service, dripping_body)
    assert row.status_code == 500 and row.error.startswith("HTTP 500: overloaded")
    assert "cut off after 1 s" in row.error and len(row.error) < 300


def nul_answer(handler) -> None:
    handler.send_response(500)
    handler.send_header("Content-Length", "10")
    handler.end_headers()
    handler.wfile.write(b"bad\0answer")


def test_an_answer_holding_nul_is_recorded_on_every_backend(service):
    """PostgreSQL text cannot hold NUL: the attempt's row failed to be written, so it was never recorded."""
    row, _, _ = deliver_measured(service, nul_answer)
    assert row.error == "HTTP 500: bad answer"


# ---------------------------------------------------------------- point 3: URLs that poison the queue


@pytest.mark.parametrize("bad", ["\t", "\n", "\r", "\x00", "\x7f", " ", "\u200b", "\u202e"])
def test_callback_urls_with_control_characters_or_spaces_are_refused(service, bad):
    before = counts(service.services)
    for url in (f"http://127.0.0.1:8000/ho{bad}ok", f"http://127.0.0.1{bad}.evil.example/x"):
        response = service.post("/v1/jobs", headers=service.tokens["a"], **job_fields(callback_url=url))
        if bad == "\x00":  # the form text check refuses NUL first
            assert_error(response, 422)
        else:
            assert_error(response, 422, "invalid_callback_url")
    assert counts(service.services) == before


def test_the_allow_list_reads_the_url_as_the_sender_does():
    assert allowed("http://127.0.0.1:8000\\@evil.example/x", ("127.0.0.1",)) is False  # httpx connects to evil
    assert allowed("http://127.0.0.1/ho\tok", ("127.0.0.1",)) is False  # httpx refuses it


def test_a_poisoned_callback_is_a_failed_attempt_and_other_tokens_go_first(service):
    """URLs stored before the check above (or edited in the database): each is one failed, recorded attempt,
    and a token with many of them does not hold up another token's callback."""
    with Receiver() as receiver:
        poisoned = [finished_job(service, receiver.url, "a", finished_seconds_ago=60 - i) for i in range(12)]
        with service.services.sessions() as session:
            session.execute(update(Webhook).where(Webhook.job_id.in_(poisoned)).values(url="http://127.0.0.1:1/ho\tok"))
            session.commit()
        good = finished_job(service, receiver.url, "b")  # finished last
        sender = dispatcher(service, webhook_concurrency=4, webhook_max_attempts=3)
        try:
            assert sender.dispatch_due(wait=True) == 4
            assert state(service, good) == "delivered" and len(receiver.requests) == 1
            while sender.dispatch_due(wait=True):
                pass
        finally:
            sender.stop()
    for job_id in poisoned:
        rows = attempts(service, job_id)
        assert [(r.attempt, r.outcome, r.status_code) for r in rows] == [(1, "failed", None)]
        assert rows[0].error.startswith("the callback URL is not valid")
        assert state(service, job_id) == "failed"


def test_a_token_with_callbacks_in_flight_yields_the_next_slot(service):
    """Token a's receivers hang; a callback of b's due after more of a's takes the next free slot."""
    with Receiver(plan=["hang"] * 10) as hanging, Receiver() as good:
        first = [finished_job(service, hanging.url, "a", finished_seconds_ago=30 - i) for i in range(2)]
        sender = dispatcher(service, webhook_concurrency=3, webhook_timeout_seconds=30.0)
        try:
            assert sender.dispatch_due() == 2  # a's two, hanging
            waiting = finished_job(service, hanging.url, "a", finished_seconds_ago=20)  # older than b's
            finished_job(service, good.url, "b")
            assert sender.dispatch_due() == 1
            assert waiting not in sender._busy
            good.wait_for(1)
        finally:
            hanging._release.set()
            deadline = time.monotonic() + 30
            while sender._busy and time.monotonic() < deadline:  # the hanging attempts end: nothing left behind
                time.sleep(0.05)
            sender.stop()
        for job_id in first + [waiting]:
            with service.services.sessions() as session:
                session.execute(update(Webhook).where(Webhook.job_id == job_id).values(state="failed"))
                session.commit()


def test_the_dispatcher_logs_an_unexpected_error_with_its_traceback_and_goes_on(service, caplog):
    sender = dispatcher(service, webhook_poll_seconds=0.05)
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("something unexpected")
        return 0

    sender.dispatch_due = flaky
    with caplog.at_level(logging.WARNING, logger="emopres.webhooks"):
        sender.start()
        deadline = time.monotonic() + 30
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        sender.stop()
    assert len(calls) >= 3
    records = [
        r
        for r in caplog.records
        if "something unexpected" in r.getMessage() or (r.exc_info and "something unexpected" in str(r.exc_info[1]))
    ]
    assert records and records[0].exc_info is not None and records[0].levelno >= logging.ERROR
