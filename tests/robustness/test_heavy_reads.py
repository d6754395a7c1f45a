"""CPU-heavy reads (compare, report.html, pairs.csv) are bounded per token and overall (issue 26, item 9):
one over the token's bound is a 429, one over the process's a 503, both with Retry-After; cheap routes answer."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

import app.routes.jobs
import app.routes.reports
from app.auth import create_token
from app.main import create_app
from core.settings import Settings

HEAVY = ["/v1/jobs/{id}/compare/{id}", "/v1/jobs/{id}/report.html", "/v1/jobs/{id}/pairs.csv"]


@pytest.fixture
def service(tmp_path, random_lite_head):
    settings = Settings(
        data_dir=tmp_path / "data",
        head=str(random_lite_head),
        database_url=None,
        broker_url=None,
        auth_disabled=False,
        heavy_reads_per_token=1,
        heavy_reads_total=2,
    )
    application = create_app(settings, start_worker=False)
    with TestClient(application) as client:
        with application.state.services.sessions() as session:
            client.tokens = [{"Authorization": f"Bearer {create_token(session, f't{i}', 'team')}"} for i in range(3)]
        yield client


def block_heavy_reads(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Every heavy route waits in its first step (reading the job) until `release` is set."""
    entered, release = threading.Event(), threading.Event()
    original_report, original_csv = app.routes.reports._report, app.routes.jobs.crud.pairs_csv

    def report(*args, **kwargs):
        entered.set()
        assert release.wait(10)
        return original_report(*args, **kwargs)

    def pairs_csv(*args, **kwargs):
        entered.set()
        assert release.wait(10)
        return original_csv(*args, **kwargs)

    monkeypatch.setattr(app.routes.reports, "_report", report)
    monkeypatch.setattr(app.routes.jobs.crud, "pairs_csv", pairs_csv)
    return entered, release


@pytest.mark.parametrize("first", HEAVY)
def test_a_second_heavy_read_of_a_token_is_429_and_cheap_routes_answer(service, monkeypatch, first):
    entered, release = block_heavy_reads(monkeypatch)
    one, two, three = service.tokens
    answers = {}
    running = threading.Thread(target=lambda: answers.update(first=service.get(first.format(id="nojob"), headers=one)))
    running.start()
    try:
        assert entered.wait(30), answers  # the first heavy read holds its token's slot
        for path in HEAVY:
            refused = service.get(path.format(id="nojob"), headers=one)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_heavy_reads" and int(refused.headers["Retry-After"]) > 0
        assert service.get("/healthz").status_code == 200
        assert service.get("/v1/jobs", headers=one).status_code == 200  # cheap reads of the same token
        second = threading.Thread(target=lambda: answers.update(second=service.get(first.format(id="x"), headers=two)))
        second.start()  # another token: its own slot, the second of the two overall
        try:
            for _ in range(100):
                if service.app.state.heavy_reads.running >= 2:
                    break
                threading.Event().wait(0.05)
            busy = service.get(HEAVY[0].format(id="nojob"), headers=three)
            assert busy.status_code == 503, busy.text  # the process's bound
            assert busy.json()["error"]["code"] == "server_busy" and int(busy.headers["Retry-After"]) > 0
        finally:
            release.set()
            second.join(30)
    finally:
        release.set()
        running.join(30)
    assert answers["first"].status_code == 404 and answers["second"].status_code == 404  # ran, then released
    assert service.get(HEAVY[0].format(id="nojob"), headers=one).status_code == 404  # the slots are free again
