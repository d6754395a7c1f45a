"""The embedded service's limits and outages, through HTTP: upload caps (nothing stored when one is hit), jobs
accepted before a restart finished after it, a database away answered with 503 and Retry-After.

The main path, access and bad input: tests/service/test_service_api.py, whose helpers these tests use.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.main import create_app
from core.db import Blob, Chunk
from tests.service.test_service_api import GOOD, assert_error, counts, job_fields, service_settings, zip_bytes
from tests.service_support import comparable, shared_reference, upload_fields, wait_job, wav_bytes


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, random_lite_head) -> Path:
    return shared_reference(tmp_path_factory, random_lite_head)[0]  # computed once per session


@pytest.fixture(scope="module")
def reference(tmp_path_factory, random_lite_head) -> dict:
    """The CLI's report on the dataset: what the restarted service must reproduce."""
    return shared_reference(tmp_path_factory, random_lite_head)[1]


# ---------------------------------------------------------------- caps: 413 or 422, nothing stored


@pytest.fixture(scope="module")
def capped(tmp_path_factory, random_lite_head):
    """A service with tiny caps (no worker: nothing here is evaluated)."""
    settings = service_settings(
        tmp_path_factory.mktemp("capped"),
        random_lite_head,
        auth_disabled=True,
        max_upload_bytes=400_000,
        max_file_bytes=100_000,
        max_audio_seconds=2.0,
        max_pairs=3,
    )
    app = create_app(settings, start_worker=False)
    with TestClient(app) as client:
        client.services = app.state.services
        yield client


CAPPED = {
    "body over the cap": (
        {"files": [("manifest", ("m.csv", GOOD.encode())), ("s.wav", ("s.wav", b"\0" * 500_000))]},
        413,
        "payload_too_large",
    ),
    "file over the cap": (job_fields(source=wav_bytes(3.5)), 413, "file_too_large"),
    "audio over the duration cap": (job_fields(source=wav_bytes(2.5, rate=8000)), 422, "invalid_audio"),
    "too many pairs": (job_fields(GOOD + "b,s.wav,t.wav\nc,s.wav,t.wav\nd,s.wav,t.wav\n"), 413, "too_many_pairs"),
    "decompression bomb": (
        {"files": {"archive": ("a.zip", zip_bytes({"manifest.csv": GOOD.encode(), "s.wav": b"\0" * 50_000_000}))}},
        413,
        "file_too_large",
    ),
}


@pytest.mark.parametrize("case", list(CAPPED))
def test_caps_are_enforced_and_nothing_is_stored(capped, case):
    request, status, code = CAPPED[case]
    before = counts(capped.services)
    assert_error(capped.post("/v1/jobs", **request), status, code)
    assert counts(capped.services) == before


def test_body_cap_holds_without_content_length(capped):
    """A chunked upload (no Content-Length) is cut off at the cap too."""

    def body():
        yield b'--xyz\r\nContent-Disposition: form-data; name="s.wav"; filename="s.wav"\r\n\r\n'
        for _ in range(100):
            yield b"\0" * 10_000
        yield b"\r\n--xyz--\r\n"

    before = counts(capped.services)
    response = capped.post("/v1/jobs", content=body(), headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert_error(response, 413, "payload_too_large")
    assert counts(capped.services) == before


# ---------------------------------------------------------------- restart, database away


def test_jobs_accepted_before_a_restart_are_finished_after_it(tmp_path, random_lite_head, dataset, reference):
    """Embedded mode: a server that stops with queued work finishes it when it starts again.

    (With the audio kept in the database: the blob store of workers on other machines.)
    """
    settings = service_settings(tmp_path, random_lite_head, auth_disabled=True, blob_store="database")
    first = create_app(settings, start_worker=False)  # accepts, never evaluates: as if it died right after
    with TestClient(first) as client:
        job_id = client.post("/v1/jobs", files=upload_fields(dataset)).json()["id"]
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    with first.state.services.sessions() as session:  # as if it died in the middle of a chunk
        session.execute(
            Chunk.__table__.update().where(Chunk.job_id == job_id, Chunk.idx == 0).values(status="running", attempts=1)
        )
        session.commit()
    with first.state.services.sessions() as session:
        assert all(blob.content for blob in session.scalars(select(Blob)))
    assert not settings.blob_path.exists() or not any(p.is_file() for p in settings.blob_path.rglob("*"))
    second = create_app(settings)
    with TestClient(second) as client:
        job = wait_job(client, job_id)
        assert job["status"] == "succeeded" and job["progress"]["done"] == 4
        assert comparable(client.get(f"/v1/jobs/{job_id}/report").json()) == comparable(reference)


def test_database_away_is_a_503_with_retry_after(tmp_path, random_lite_head):
    from tests.service_support import free_port

    settings = service_settings(
        tmp_path,
        random_lite_head,
        auth_disabled=True,
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none",
    )
    with TestClient(create_app(settings, start_worker=False)) as client:
        response = client.get("/v1/jobs")
        assert assert_error(response, 503, "service_unavailable") and response.headers["retry-after"] == "5"
        ready = assert_error(client.get("/readyz"), 503, "service_unavailable")
        assert not ready["details"]["checks"]["database"]["ok"]
        assert client.get("/healthz").status_code == 200
