"""What a dashboard reads from the service: which system a report belongs to (name, metadata, profile in the
report's job block), a job's headline metrics and every link, listing a system's versions by name prefix in
either order; and an upload whose files match no manifest path says which ones."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.auth import create_token
from app.main import create_app
from tests.service.test_service_api import assert_error, job_fields, service_settings
from tests.service_support import upload_fields, wait_job, write_dataset


@pytest.fixture(scope="module")
def service(tmp_path_factory, random_lite_head):
    app = create_app(service_settings(tmp_path_factory.mktemp("dashboard"), random_lite_head))
    with TestClient(app) as client:
        with app.state.services.sessions() as session:
            client.headers["Authorization"] = f"Bearer {create_token(session, 'dash', 'team-d')}"
        yield client


@pytest.fixture(scope="module")
def versions(service, tmp_path_factory):
    """Three finished jobs of one system (my-s2st@v1..v3) and one of another, oldest first."""
    manifest = write_dataset(tmp_path_factory.mktemp("data"), n_pairs=2)
    ids = []
    for name in ("my-s2st@v1", "my-s2st@v2", "other@v1", "my-s2st@v3"):
        response = service.post(
            "/v1/jobs", files=upload_fields(manifest), data={"name": name, "metadata": f'{{"commit": "{name[-2:]}"}}'}
        )
        assert response.status_code == 202, response.text
        ids.append((name, response.json()["id"]))
        wait_job(service, ids[-1][1], timeout=300)
    return ids


def test_report_job_block_names_the_system(service, versions):
    name, job_id = versions[0]
    report = service.get(f"/v1/jobs/{job_id}/report").json()
    assert report["job"]["id"] == job_id
    assert report["job"]["name"] == name
    assert report["job"]["metadata"] == {"commit": "v1"}
    assert report["job"]["profile"] == "lite"


def test_job_has_headline_metrics_with_cis_and_every_link(service, versions):
    _, job_id = versions[1]
    job = service.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    report = service.get(f"/v1/jobs/{job_id}/report").json()
    for metric in ("bar", "epr", "kappa", "acoustic_sim", "pause", "rate"):
        assert job["headline"][metric]["value"] == report["corpus"][metric]["value"]
        assert job["headline"][metric]["ci_low"] == report["corpus"][metric]["ci_low"]
    links = job["links"]
    assert set(links) >= {"self", "report", "report_html", "pairs_csv", "plots", "compare"}
    baseline = versions[0][1]
    for key, link in links.items():
        url = link.replace("{baseline_id}", baseline)
        response = service.get(url)
        assert response.status_code == 200, (key, url, response.text[:200])
    assert "text/html" in service.get(links["report_html"]).headers["content-type"]


def test_listing_by_name_prefix_in_both_orders(service, versions):
    mine = [job_id for name, job_id in versions if name.startswith("my-s2st@")]
    newest = service.get("/v1/jobs", params={"name_prefix": "my-s2st@"}).json()["items"]
    assert [j["id"] for j in newest] == mine[::-1]
    oldest = service.get("/v1/jobs", params={"name_prefix": "my-s2st@", "order": "created_at"}).json()["items"]
    assert [j["id"] for j in oldest] == mine
    assert all(j["headline"]["epr"]["value"] is not None for j in oldest)  # one request: a metric per version
    # pages in ascending order continue where the last one stopped
    first = service.get("/v1/jobs", params={"name_prefix": "my-s2st@", "order": "created_at", "limit": 2}).json()
    rest = service.get(
        "/v1/jobs",
        params={"name_prefix": "my-s2st@", "order": "created_at", "limit": 2, "cursor": first["next_cursor"]},
    ).json()
    assert [j["id"] for j in first["items"] + rest["items"]] == mine and rest["next_cursor"] is None
    # a prefix is literal: SQL wildcards in it match only themselves
    assert service.get("/v1/jobs", params={"name_prefix": "my%"}).json()["items"] == []
    assert service.get("/v1/jobs", params={"name_prefix": "my_s2st"}).json()["items"] == []
    assert_error(service.get("/v1/jobs", params={"order": "name"}), 422, "invalid_order")


def test_missing_audio_lists_the_uploads_that_matched_nothing(service):
    request = job_fields("pair_id,source,target\na,audio/s.wav,audio/t.wav\n")
    error = assert_error(service.post("/v1/jobs", **request), 422, "missing_audio")
    assert error["details"]["missing"] == ["audio/s.wav", "audio/t.wav"]
    assert error["details"]["unmatched"] == ["s.wav", "t.wav"]
    assert "s.wav" in error["message"] and "match no manifest path" in error["message"]
