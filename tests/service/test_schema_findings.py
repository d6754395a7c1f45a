"""The OpenAPI document and OPTIONS answers say what the service does (issue 26, item 10)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from core.settings import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("schema"), auth_disabled=True, database_url=None, broker_url=None
    )
    with TestClient(create_app(settings, start_worker=False)) as client:
        client.openapi = client.get("/openapi.json").json()
        yield client


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/pairs"])
def test_uploads_document_415(client, path):
    responses = client.openapi["paths"][path]["post"]["responses"]
    assert "415" in responses and "ErrorResponse" in str(responses["415"])
    answer = client.post(path, content=b"{}", headers={"Content-Type": "application/json"})
    assert answer.status_code == 415 and answer.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("path, methods", [("/v1/jobs/some-job", {"GET", "DELETE"}), ("/v1/jobs", {"GET", "POST"})])
def test_options_lists_every_method_of_the_path(client, path, methods):
    answer = client.options(path)
    assert answer.status_code == 405
    assert {m.strip() for m in answer.headers["allow"].split(",")} >= methods
    assert "OPTIONS" not in answer.headers["allow"]


def test_an_invalid_cursor_is_documented_as_the_422_it_is(client):
    answer = client.get("/v1/jobs", params={"cursor": "not-a-cursor"})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_cursor"
    operation = client.openapi["paths"]["/v1/jobs"]["get"]
    assert "400" not in operation["responses"] and "invalid_cursor" in operation["responses"]["422"]["description"]
    cursor = next(p for p in operation["parameters"] if p["name"] == "cursor")
    assert "422" in cursor["description"]
