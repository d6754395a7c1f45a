"""A signed-in service with two systems' versions (team-a) and one job of another project (team-b)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.auth import create_token
from app.main import create_app
from core.db import Job
from tests.service.test_service_api import service_settings
from tests.service_support import upload_fields, wait_job, write_dataset


@pytest.fixture(scope="package")
def ui_service(tmp_path_factory, random_lite_head):
    settings = service_settings(tmp_path_factory.mktemp("ui-service"), random_lite_head, bootstrap=100, chunk_size=4)
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver") as client:
        with app.state.services.sessions() as session:
            client.tokens = {
                "a": create_token(session, "ci-a", "team-a"),
                "b": create_token(session, "ci-b", "team-b"),
                "a2": create_token(session, "ci-a-second", "team-a"),
            }
        yield client


def bearer(client, who: str) -> dict:
    return {"Authorization": f"Bearer {client.tokens[who]}"}


@pytest.fixture(scope="package")
def ui_jobs(ui_service, tmp_path_factory):
    """team-a: my-s2st@v1, my-s2st@v2 (finished), my-s2st@v3 (failed, written as the worker records it);
    team-b: their@v1."""
    client = ui_service
    manifest = write_dataset(tmp_path_factory.mktemp("ui-data"), n_pairs=3, seconds=1.0)
    ids = {}
    for key, who, name in (("v1", "a", "my-s2st@v1"), ("v2", "a", "my-s2st@v2"), ("b", "b", "their@v1")):
        response = client.post(
            "/v1/jobs", files=upload_fields(manifest), data={"name": name}, headers=bearer(client, who)
        )
        assert response.status_code == 202, response.text
        ids[key] = response.json()["id"]
        assert wait_job(client, ids[key], timeout=300, headers=bearer(client, who))["status"] == "succeeded"
    with client.app.state.services.sessions() as session:
        failed = Job(
            id="00000000-0000-4000-8000-000000000003",
            project="team-a",
            name="my-s2st@v3",
            profile="lite",
            status="failed",
            n_pairs=3,
            n_chunks=1,
            bootstrap=100,
            seed=1,
            error="every pair failed: the target audio could not be decoded",
        )
        session.add(failed)
        session.commit()
    ids["v3"] = failed.id
    return ids
