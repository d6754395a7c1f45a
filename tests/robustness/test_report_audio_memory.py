"""report.html embeds worst pairs' audio without reading large files whole (issue 26, item 6).

A job's pairs all point at one 99 MB file: the page used to read it once per worst pair and side
(?worst=15: +2.8 GB). The resolver now reads the size first and skips a clip over the cap, with a note.
"""

from __future__ import annotations

import tracemalloc

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.main import create_app
from core.db import Blob
from core.settings import Settings
from tests.service_support import drop_postgres_schema, new_postgres_schema, upload_fields, wait_job, write_dataset

MiB = 1024 * 1024
BIG = 99 * MiB


@pytest.fixture(params=["sqlite-fs", "postgres-database"])
def service(request, tmp_path, random_lite_head):
    database_url, blob_store, schema = None, "fs", None
    if request.param.startswith("postgres"):
        postgres_url = request.getfixturevalue("postgres_url")
        schema = "report_audio_memory"
        database_url, blob_store = new_postgres_schema(postgres_url, schema), "database"
    settings = Settings(
        data_dir=tmp_path / "data",
        head=str(random_lite_head),
        bootstrap=0,
        chunk_size=8,
        database_url=database_url,
        broker_url=None,
        auth_disabled=True,
        blob_store=blob_store,
        auto_migrate=True,
    )
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            client.app_services = app.state.services
            yield client
    finally:
        if schema:
            drop_postgres_schema(request.getfixturevalue("postgres_url"), schema)


def test_a_huge_worst_pair_file_is_not_read_whole(service, tmp_path):
    manifest = write_dataset(tmp_path / "in", n_pairs=4, seconds=1.0)
    response = service.post("/v1/jobs", files=upload_fields(manifest))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert wait_job(service, job_id, timeout=300)["status"] == "succeeded"
    services = service.app_services
    big = b"RIFF" + b"\0" * (BIG - 4)
    if services.blobs.kind == "fs":  # every stored file becomes a 99 MB one
        for file in services.blobs.files.root.rglob("*"):
            if file.is_file():
                file.write_bytes(big)
    else:
        with services.sessions() as session:
            session.execute(update(Blob).values(content=big))
            session.commit()
    del big
    tracemalloc.start()
    try:
        page = service.get(f"/v1/jobs/{job_id}/report.html?worst=15")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert page.status_code == 200
    assert "<audio" not in page.text and "audio not embedded" in page.text
    print(f"report.html peak traced memory: {peak / MiB:.1f} MiB")
    assert peak < 100 * MiB, f"report.html peak {peak / MiB:.0f} MiB"
