"""The dashboard reads what the API serves: systems grouped by the name before "@", versions in order, values and
CIs as the job listing gives them, failed and running versions marked, within EMOPRES_UI_JOBS."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from app.main import create_app
from app.ui.dashboard import systems, version_of
from app.ui.trend import MAX_LABEL, TrendPoint, trend_svg
from core.settings import Settings
from tests.ui.conftest import bearer
from tests.ui.test_sessions import sign_in


def view(name, status="succeeded", created="2026-12-01T10:00:00+00:00", job_id="x", metric=None):
    return {
        "id": job_id,
        "name": name,
        "status": status,
        "created_at": created,
        "headline": {"bhattacharyya_side": {"value": metric}} if metric is not None else None,
        "summary": {"primary": {"metric": "bhattacharyya_side"}} if metric is not None else None,
    }


def test_jobs_are_grouped_into_systems_by_the_name_before_the_at():
    jobs = [
        view("s2st@b", created="2026-12-02T00:00:00+00:00", job_id="2", metric=0.7),
        view("s2st@a", created="2026-12-01T00:00:00+00:00", job_id="1", metric=0.6),
        view("other", created="2026-12-03T00:00:00+00:00", job_id="3"),
        view(None, job_id="4"),
        view("s2st@c@x", status="failed", created="2026-12-04T00:00:00+00:00", job_id="5"),
    ]
    found = {s.name: s for s in systems(jobs)}
    assert set(found) == {"s2st", "other"}  # unnamed jobs are listed as jobs, not as a system
    assert [v["id"] for v in found["s2st"].versions] == ["1", "2", "5"]  # oldest first
    assert [version_of(v) for v in found["s2st"].versions] == ["a", "b", "c@x"]
    assert found["s2st"].latest_result["id"] == "2" and found["s2st"].metric == "bhattacharyya_side"
    assert [s.name for s in systems(jobs)] == ["s2st", "other"]  # by latest activity


def test_the_system_page_shows_the_listings_values(ui_service, ui_jobs):
    client = sign_in(ui_service)
    listing = ui_service.get("/v1/jobs", params={"name_prefix": "my-s2st@"}, headers=bearer(ui_service, "a")).json()
    page = client.get("/ui/systems/my-s2st")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    for job in listing["items"]:
        for metric in ("bar", "epr", "kappa"):
            entry = (job["headline"] or {}).get(metric) or {}
            if entry.get("value") is not None:
                assert f"{entry['value']:.3f}" in page.text
    assert page.text.count('<circle class="version ok"') == 2 and page.text.count('<text class="version failed"') == 1
    assert f"baseline={ui_jobs['v1']}" in page.text  # v2 compares with v1
    assert client.get("/ui/systems/their").status_code == 404  # team-b's system


def test_the_dashboard_reads_at_most_its_bound(ui_service, ui_jobs, monkeypatch):
    client = sign_in(ui_service)
    monkeypatch.setattr(ui_service.app.state.services.settings, "ui_jobs", 2)
    page = client.get("/ui/").text
    assert "reads the newest 2" in page
    assert len(re.findall(r'<tr class="job ', page)) == 2


def test_long_version_labels_are_shortened_never_clipped():
    label = "main-" + "x" * 60
    svg = trend_svg([TrendPoint(label, "succeeded", 0.5, 0.4, 0.6)], "Bhattacharyya coefficient")
    drawn = re.findall(r">([^<]*)</text>", svg)
    assert all(len(text) <= MAX_LABEL for text in drawn)
    assert label in svg  # whole, in the tooltip
    assert "no versions yet" in trend_svg([], "x")


def test_without_auth_the_dashboard_needs_no_sign_in(tmp_path):
    settings = Settings(data_dir=tmp_path, auth_disabled=True, broker_url=None, database_url=None)
    with TestClient(create_app(settings, start_worker=False)) as client:
        page = client.get("/ui/")
        assert page.status_code == 200 and "Sign out" not in page.text
