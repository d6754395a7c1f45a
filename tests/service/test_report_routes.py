"""Plots, HTML report, comparison and schema routes of the service (embedded mode, in-process)."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.auth import create_token
from app.main import create_app
from core.settings import Settings
from tests.browser import find_browser, load_page
from tests.service_support import upload_fields, wait_job, write_dataset
from worker.engine.report_schema import report_schema, validate_report
from worker.render.plots import get_spec, plan_plots, render


@pytest.fixture(scope="module")
def service(tmp_path_factory, random_lite_head):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("service"),
        head=str(random_lite_head),
        bootstrap=100,
        chunk_size=4,
        database_url=None,
        broker_url=None,
        cache_dir=None,
        auth_disabled=False,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        with app.state.services.sessions() as session:
            token = create_token(session, "ci", "team-a")
            other = create_token(session, "other", "team-b")
        client.headers["Authorization"] = f"Bearer {token}"
        client.other_headers = {"Authorization": f"Bearer {other}"}
        yield client


@pytest.fixture(scope="module")
def jobs(service, tmp_path_factory):
    """Two finished jobs over the same pair ids: `system`, and `baseline` whose targets are the sources."""
    root = tmp_path_factory.mktemp("data")
    system = write_dataset(root, n_pairs=3, seconds=1.0)
    with open(system, newline="") as handle:
        rows = list(csv.DictReader(handle))
    baseline = root / "baseline.csv"
    with open(baseline, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "target": row["source"]} for row in rows)
    ids = {}
    for key, manifest, name in (("system", system, "sys <b>&</b>"), ("baseline", baseline, "base")):
        response = service.post("/v1/jobs", files=upload_fields(manifest), data={"name": name})
        assert response.status_code == 202, response.text
        ids[key] = response.json()["id"]
    for job_id in ids.values():
        assert wait_job(service, job_id, timeout=300)["status"] == "succeeded"
    ids["report"] = service.get(f"/v1/jobs/{ids['system']}/report").json()
    return ids


def test_the_services_report_matches_the_published_schema(service, jobs):
    schema = service.get("/v1/schema/report", headers={"Authorization": ""})  # public: no token needed
    assert schema.status_code == 200 and schema.headers["content-type"].startswith("application/schema+json")
    assert schema.json() == report_schema()
    pytest.importorskip("jsonschema")
    validate_report(jobs["report"])
    assert service.get("/v1/schema/report?version=99").json()["error"]["code"] == "unknown_schema_version"


def test_plots_are_the_reports_plots(service, jobs):
    job_id, report = jobs["system"], jobs["report"]
    listing = service.get(f"/v1/jobs/{job_id}/plots").json()
    specs, skipped = plan_plots(report)
    assert [p["name"] for p in listing["plots"]] == [s.name for s in specs]
    assert {s["name"]: s["reason"] for s in listing["skipped"]} == skipped
    for name in ("confusion_source", "uncertainty"):
        png = service.get(f"/v1/jobs/{job_id}/plots/{name}")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        Image.open(io.BytesIO(png.content)).verify()
        assert png.content == render(get_spec(report, name), "png")  # the same numbers, the same pixels
        svg = service.get(f"/v1/jobs/{job_id}/plots/{name}?format=svg")
        assert svg.headers["content-type"].startswith("image/svg+xml") and svg.content.lstrip().startswith(b"<?xml")
        again = service.get(f"/v1/jobs/{job_id}/plots/{name}", headers={"If-None-Match": png.headers["etag"]})
        assert again.status_code == 304


def test_plot_errors(service, jobs):
    job_id = jobs["system"]
    unavailable = service.get(f"/v1/jobs/{job_id}/plots/dist_va_sim")
    assert unavailable.status_code == 404 and unavailable.json()["error"]["code"] == "plot_unavailable"
    assert "paper profile" in unavailable.json()["error"]["details"]["reason"]
    unknown = service.get(f"/v1/jobs/{job_id}/plots/nope").json()["error"]
    assert unknown["code"] == "unknown_plot" and "uncertainty" in unknown["details"]["plots"]
    assert service.get(f"/v1/jobs/{job_id}/plots/uncertainty?format=gif").status_code == 422
    assert service.get(f"/v1/jobs/{job_id}/plots/uncertainty", headers={"Authorization": ""}).status_code == 401
    assert service.get(f"/v1/jobs/{job_id}/plots/uncertainty", headers=service.other_headers).status_code == 404
    assert service.get(f"/v1/jobs/{job_id}/report.html", headers=service.other_headers).status_code == 404


def test_report_page_embeds_the_worst_pairs_audio(service, jobs):
    job_id = jobs["system"]
    response = service.get(f"/v1/jobs/{job_id}/report.html?worst=2")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    # the audio is read in the request's own transaction: read in a second one, it would wait out SQLite's busy
    # timeout on the request's write lock and show as "audio unavailable"
    assert page.count('<audio controls preload="metadata" src="data:audio/wav;base64,') == 4
    assert page.count('<span class="length"') == 4  # each clip's length as text: players may show 0:00
    assert "audio unavailable" not in page
    assert "emopres report: sys &lt;b&gt;&amp;&lt;/b&gt;" in page  # the job name is the title, escaped
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<audio" not in service.get(f"/v1/jobs/{job_id}/report.html?audio=false").text
    assert (
        service.get(
            f"/v1/jobs/{job_id}/report.html?worst=2", headers={"If-None-Match": response.headers["etag"]}
        ).status_code
        == 304
    )


@pytest.mark.skipif(find_browser() is None, reason="no Chromium installed (apt-get install chromium; .ci/run does)")
def test_the_report_page_with_audio_shows_in_a_browser_without_errors(service, jobs, tmp_path):
    page = service.get(f"/v1/jobs/{jobs['system']}/report.html?worst=2").text
    (tmp_path / "page.html").write_text(page, encoding="utf-8")
    seen = load_page(tmp_path / "page.html")  # a browser that fails to load it raises BrowserError: a failure
    assert seen["errors"] == [], seen["errors"]
    assert seen["images"] and all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]


def test_compare_jobs_over_the_shared_pairs(service, jobs):
    job_id, baseline_id = jobs["system"], jobs["baseline"]
    response = service.get(f"/v1/jobs/{job_id}/compare/{baseline_id}?bootstrap=200")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["job_id"] == job_id and result["baseline_id"] == baseline_id and result["n_shared"] == 3
    sim = result["metrics"]["acoustic_sim"]
    assert sim["baseline"] == pytest.approx(1.0) and sim["diff"] < 0 and 0 < sim["p_value"] <= 1
    assert result["metrics"]["va_sim"]["diff"] is None and result["metrics"]["va_sim"]["reason"]
    assert set(result["flipped"]) == {"agree_to_disagree", "disagree_to_agree"}
    itself = service.get(f"/v1/jobs/{job_id}/compare/{job_id}?bootstrap=50").json()
    assert itself["metrics"]["epr"]["diff"] == 0 and itself["metrics"]["epr"]["p_value"] == 1.0
    assert service.get(f"/v1/jobs/{job_id}/compare/{baseline_id}", headers=service.other_headers).status_code == 404
    page = service.get(f"/v1/jobs/{job_id}/report.html?baseline={baseline_id}&audio=false").text
    assert 'id="comparison"' in page and baseline_id in page
