"""Groups through `POST /v1/jobs`: the manifest's `speaker` column groups the pairs with no form field, as
`emopres evaluate` reads it; `group_column=none` resamples pairs; intervals resampled from fewer than 10 groups are
warned about in the report, the job view, the client's printout and the HTML page."""

from __future__ import annotations

import csv

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from emopres_client.summary import format_summary
from tests.service.test_service_api import assert_error, service_settings
from tests.service_support import BOOTSTRAP, cli_report, comparable, upload_fields, wait_job, write_dataset

N_PAIRS, N_SPEAKERS = 6, 3


@pytest.fixture(scope="module")
def service(tmp_path_factory, random_lite_head):
    settings = service_settings(tmp_path_factory.mktemp("groups"), random_lite_head, auth_disabled=True)
    app = create_app(settings)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def speaker_manifest(tmp_path_factory):
    """A manifest whose speaker ids are in a `speaker` column (no `group` column): 6 pairs of 3 speakers."""
    manifest = write_dataset(tmp_path_factory.mktemp("speakers"), n_pairs=N_PAIRS, seconds=0.8)
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for i, row in enumerate(rows):
        del row["group"]
        row["speaker"] = f"actor{i % N_SPEAKERS}"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def run_job(service, manifest, **form) -> tuple[dict, dict]:
    response = service.post("/v1/jobs", files=upload_fields(manifest), data=form)
    assert response.status_code == 202, response.text
    job = wait_job(service, response.json()["id"])
    assert job["status"] == "succeeded", job
    return job, service.get(f"/v1/jobs/{job['id']}/report").json()


def codes(summary: dict | None) -> set[str]:
    return {w["code"] for w in (summary or {}).get("warnings") or []}


def test_a_speaker_column_groups_the_pairs_without_a_form_field_as_the_cli_does(
    service, speaker_manifest, random_lite_head, tmp_path
):
    job, report = run_job(service, speaker_manifest)
    bootstrap = report["corpus"]["bootstrap"]
    assert bootstrap["unit"] == "group" and bootstrap["n_groups"] == N_SPEAKERS
    assert "unit:group" in report["signature"]
    assert [p["group"] for p in report["pairs"]] == [f"actor{i % N_SPEAKERS}" for i in range(N_PAIRS)]
    # the CLI reads the same file the same way: the same report
    cli = cli_report(speaker_manifest, random_lite_head, tmp_path / "cli.json", bootstrap=BOOTSTRAP)
    assert comparable(report) == comparable(cli)
    # naming the column gives the same job report
    _, named = run_job(service, speaker_manifest, group_column="speaker")
    assert comparable(named) == comparable(report)


def test_fewer_than_10_groups_are_warned_about_in_the_report_the_job_view_and_the_page(service, speaker_manifest):
    job, report = run_job(service, speaker_manifest)
    assert "few_groups" in codes(report["summary"])
    warning = next(w for w in report["summary"]["warnings"] if w["code"] == "few_groups")
    assert f"resample {N_SPEAKERS} groups" in warning["message"]
    assert "few_groups" in codes(job["summary"])
    printed = format_summary(report, job["headline"] or ["epr"])  # what `emopres submit` prints
    assert f"warning [few_groups]: the intervals resample {N_SPEAKERS} groups" in printed
    page = service.get(f"/v1/jobs/{job['id']}/report.html")
    assert page.status_code == 200
    assert "few_groups" in page.text and f"resample {N_SPEAKERS} groups" in page.text


def test_group_column_none_resamples_pairs_and_a_missing_named_column_is_a_422(service, speaker_manifest):
    job, report = run_job(service, speaker_manifest, group_column="none")
    assert report["corpus"]["bootstrap"]["unit"] == "pair" and "few_groups" not in codes(report["summary"])
    assert all(p["group"] is None for p in report["pairs"])
    response = service.post("/v1/jobs", files=upload_fields(speaker_manifest), data={"group_column": "dialogue"})
    error = assert_error(response, 422, "invalid_manifest")
    assert "group column 'dialogue' not found" in error["message"]
