"""The REST service in its embedded default (SQLite + in-process queue), through HTTP.

One app (models loaded once) serves most tests; the report must equal `emopres evaluate`'s on the
same input. Bad input gets a 4xx in the one error shape and stores nothing. Caps, a restart and a database
away: tests/api/test_limits_and_outages.py.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.auth import create_token, revoke_token
from app.main import create_app
from app.submission.uploads import submit
from core.db import Blob, Chunk, Job, Pair, Token
from core.settings import Settings
from tests.service_support import (
    BOOTSTRAP,
    cli_report,
    comparable,
    shared_reference,
    upload_fields,
    wait_job,
    wav_bytes,
    write_dataset,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, random_lite_head) -> Path:
    return shared_reference(tmp_path_factory, random_lite_head)[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, random_lite_head) -> dict:
    """The CLI's report on the dataset: what every service must reproduce."""
    return shared_reference(tmp_path_factory, random_lite_head)[1]


def service_settings(data_dir: Path, head: Path, **overrides) -> Settings:
    values = dict(
        data_dir=data_dir,
        head=str(head),
        bootstrap=BOOTSTRAP,
        chunk_size=2,
        reconcile_seconds=0.5,
        database_url=None,
        broker_url=None,
        cache_dir=None,
        auth_disabled=False,
        metrics_enabled=True,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def service(tmp_path_factory, random_lite_head):
    settings = service_settings(tmp_path_factory.mktemp("service"), random_lite_head)
    app = create_app(settings)
    with TestClient(app) as client:
        services = app.state.services
        with services.sessions() as session:
            token = create_token(session, "ci", "team-a")
            other = create_token(session, "other", "team-b")
        client.headers["Authorization"] = f"Bearer {token}"
        client.services = services
        client.other_headers = {"Authorization": f"Bearer {other}"}
        yield client


def counts(services) -> dict:
    with services.sessions() as session:
        tables = {
            t.__name__: session.scalar(select(func.count()).select_from(t)) for t in (Job, Pair, Chunk, Blob)
        }  # the worker adds results meanwhile
    root = services.blobs.files.root
    tables["files"] = sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return tables


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


# ---------------------------------------------------------------- the main path


def test_job_report_equals_the_cli_report(service, dataset, reference):
    response = service.post(
        "/v1/jobs",
        files=upload_fields(dataset),
        data={"name": "sys-a", "metadata": json.dumps({"system": "a", "commit": "abc"})},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.json()["status"] == "queued" and response.headers["location"] == f"/v1/jobs/{job_id}"

    job = wait_job(service, job_id)
    assert job["status"] == "succeeded" and job["progress"] == {"done": 4, "total": 4, "failed": 0}
    assert job["name"] == "sys-a" and job["metadata"] == {"system": "a", "commit": "abc"}
    assert job["created_at"] <= job["started_at"] <= job["finished_at"] and job["failures"] == []

    report = service.get(f"/v1/jobs/{job_id}/report").json()
    assert report["job"]["id"] == job_id and report["job"]["status"] == "succeeded"
    assert comparable(report) == comparable(reference)

    lines = service.get(f"/v1/jobs/{job_id}/pairs.csv").text.splitlines()
    assert lines[0].startswith("pair_id,label,group,status,source_pred")
    assert [line.split(",")[0] for line in lines[1:]] == ["p0", "p1", "p2", "p3"]
    assert all(line.split(",")[3] == "ok" for line in lines[1:])


def test_the_side_reading_of_a_job_equals_the_cli_report(service, tmp_path, random_lite_head):
    """The side reading needs every pair of the job: the service computes it when the last chunk is done, from the
    SER inputs its chunks stored (and the pairs' groups: two speakers of 20 pairs each, standardised apart), and
    gets the CLI's numbers."""
    from worker.engine.side_reading import MIN_SIDE_UTTERANCES

    manifest = write_dataset(tmp_path / "data", n_pairs=2 * MIN_SIDE_UTTERANCES, seconds=0.6)
    reference = cli_report(manifest, random_lite_head, tmp_path / "cli.json", bootstrap=BOOTSTRAP)
    assert reference["corpus"]["epr_side"]["value"] is not None
    assert reference["models"]["ser_head_side"]["normalised_per"] == {"source": "group", "target": "group"}
    response = service.post("/v1/jobs", files=upload_fields(manifest))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert wait_job(service, job_id)["status"] == "succeeded"
    report = service.get(f"/v1/jobs/{job_id}/report").json()
    assert comparable(report) == comparable(reference)
    assert report["models"]["ser_head_side"]["normalised_per"] == {"source": "group", "target": "group"}
    assert "ser_input" not in service.get(f"/v1/jobs/{job_id}/pairs.csv").text


def test_archive_upload_gives_the_same_report(service, dataset, reference):
    for kind in ("zip", "tar.gz"):
        buffer = io.BytesIO()
        files = [dataset, *sorted((dataset.parent / "audio").iterdir())]
        if kind == "zip":
            with zipfile.ZipFile(buffer, "w") as archive:  # inside one top folder
                for path in files:
                    archive.write(path, f"job/{path.relative_to(dataset.parent)}")
        else:
            with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
                for path in files:
                    archive.add(path, str(path.relative_to(dataset.parent)))
        response = service.post("/v1/jobs", files={"archive": (f"job.{kind}", buffer.getvalue())})
        assert response.status_code == 202, response.text
        job = wait_job(service, response.json()["id"])
        assert job["status"] == "succeeded"
        assert comparable(service.get(f"/v1/jobs/{job['id']}/report").json()) == comparable(reference)


def test_one_pair_endpoint(service):
    response = service.post(
        "/v1/pairs",
        files={"source": ("a.wav", wav_bytes(1.2, seed=5)), "target": ("b.flac", wav_bytes(1.3, seed=6))},
        data={"label": "joy", "pair_id": "utt-42"},
    )
    assert response.status_code == 202, response.text
    job = wait_job(service, response.json()["id"])
    report = service.get(f"/v1/jobs/{job['id']}/report").json()
    assert [(p["pair_id"], p["label"]) for p in report["pairs"]] == [("utt-42", "joy")]
    assert report["job"]["n_pairs"] == 1 and report["corpus"]["epr"]["n"] == 1


def test_idempotency_key_never_creates_a_second_job(service, dataset):
    headers = {"Idempotency-Key": "ci-run-17"}
    first = service.post("/v1/jobs", files=upload_fields(dataset), data={"name": "idem"}, headers=headers)
    again = service.post("/v1/jobs", files=upload_fields(dataset), data={"name": "idem"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    with service.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.idempotency_key == "ci-run-17")) == 1
    # the same key with another request is a conflict, not a silent replay
    other = service.post("/v1/jobs", files=upload_fields(dataset), data={"name": "changed"}, headers=headers)
    assert assert_error(other, 409, "idempotency_conflict")["details"]["job_id"] == first.json()["id"]
    # another project may use the same key for its own job
    theirs = service.post(
        "/v1/jobs", files=upload_fields(dataset), data={"name": "idem"}, headers={**headers, **service.other_headers}
    )
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]


def test_concurrent_retries_with_one_key_create_one_job(service, dataset):
    """Clients racing with the same key: the database's unique key decides, every caller gets that job."""
    from app.auth import Principal
    from app.submission.intake import AudioFile

    services = service.services
    fields = upload_fields(dataset)
    manifest = fields[0][1][1]
    files = {path: AudioFile(path, len(content), (lambda c=content: c)) for path, (_, content, _) in fields[1:]}
    results, errors = [], []

    def post():
        try:
            job, _ = submit(
                services,
                Principal("team-race", None),
                "race-key",
                manifest_name="manifest.csv",
                manifest_bytes=manifest,
                files=dict(files),
                texts={},
            )
            results.append(job.id)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 4 and len(set(results)) == 1
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.project == "team-race")) == 1


# ---------------------------------------------------------------- access, listing, deletion


def test_tokens_are_required_and_projects_isolate_jobs(service, dataset):
    anonymous = service.get("/v1/jobs", headers={"Authorization": ""})
    assert assert_error(anonymous, 401, "unauthorized") and anonymous.headers["www-authenticate"] == "Bearer"
    assert_error(service.get("/v1/jobs", headers={"Authorization": "Bearer emopres_0000_nope"}), 401, "unauthorized")
    assert_error(service.get("/v1/jobs", headers={"Authorization": "Basic abc"}), 401)

    mine = service.post("/v1/jobs", files=upload_fields(dataset), data={"name": "private"}).json()["id"]
    for path in (f"/v1/jobs/{mine}", f"/v1/jobs/{mine}/report", f"/v1/jobs/{mine}/pairs.csv"):
        error = assert_error(service.get(path, headers=service.other_headers), 404, "not_found")
        assert "team-a" not in json.dumps(error)
    assert_error(service.delete(f"/v1/jobs/{mine}", headers=service.other_headers), 404)
    theirs = service.get("/v1/jobs", headers=service.other_headers).json()["items"]
    assert mine not in {j["id"] for j in theirs}

    with service.services.sessions() as session:
        token = create_token(session, "short-lived", "team-a")
    assert service.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with service.services.sessions() as session:
        revoke_token(session, "short-lived")
        stored = session.scalar(select(Token).where(Token.name == "short-lived"))
        secret = token.split("_", 2)[2]
        assert secret not in json.dumps([stored.key_id, stored.secret_sha256, stored.name])  # only its hash is kept
    assert_error(service.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}), 401)


def test_listing_filters_and_pages(service, dataset):
    ids = [
        service.post("/v1/jobs", files=upload_fields(dataset), data={"name": "paged"}).json()["id"] for _ in range(3)
    ]
    seen, cursor = [], None
    while True:
        page = service.get("/v1/jobs", params={"name": "paged", "limit": 2, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200
        seen += [job["id"] for job in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]  # newest first, each once
    for job_id in ids:
        wait_job(service, job_id)
    done = service.get("/v1/jobs", params={"status": "succeeded", "name": "paged"}).json()["items"]
    assert {j["id"] for j in done} == set(ids) and all(j["progress"]["done"] == 4 for j in done)
    for job in done:  # dashboards plot headline metrics across system versions from the listing alone
        report = service.get(f"/v1/jobs/{job['id']}/report").json()
        assert job["headline"]["epr"]["value"] == report["corpus"]["epr"]["value"]
        assert set(job["headline"]) >= {"bar", "epr", "kappa", "acoustic_sim", "pause", "rate"}
    assert_error(service.get("/v1/jobs", params={"status": "bogus"}), 422, "invalid_status")
    assert_error(service.get("/v1/jobs", params={"cursor": "%%%"}), 422, "invalid_cursor")
    assert_error(service.get("/v1/jobs", params={"limit": 0}), 422, "validation_error")


def test_delete_removes_the_job_and_audio_no_one_else_uses(service):
    shared, own = wav_bytes(1.0, seed=21), wav_bytes(1.0, seed=22)
    manifest = "pair_id,source,target\nx,s.wav,t.wav\n"
    keep = service.post(
        "/v1/jobs",
        files=[
            ("manifest", ("m.csv", manifest)),
            ("s.wav", ("s.wav", shared)),
            ("t.wav", ("t.wav", wav_bytes(1.0, seed=23))),
        ],
    ).json()["id"]
    gone = service.post(
        "/v1/jobs", files=[("manifest", ("m.csv", manifest)), ("s.wav", ("s.wav", shared)), ("t.wav", ("t.wav", own))]
    ).json()["id"]
    wait_job(service, gone)
    blobs = service.services.blobs
    sha = {name: blobs.sha256(data) for name, data in (("shared", shared), ("own", own))}
    assert blobs.files.exists(sha["shared"]) and blobs.files.exists(sha["own"])
    assert service.delete(f"/v1/jobs/{gone}").status_code == 204
    assert_error(service.get(f"/v1/jobs/{gone}"), 404, "not_found")
    assert_error(service.delete(f"/v1/jobs/{gone}"), 404, "not_found")
    assert blobs.files.exists(sha["shared"]) and not blobs.files.exists(sha["own"])
    with service.services.sessions() as session:
        assert session.get(Blob, sha["own"]) is None and session.get(Blob, sha["shared"]) is not None
        assert session.scalar(select(func.count()).select_from(Pair).where(Pair.job_id == gone)) == 0
    assert wait_job(service, keep)["status"] == "succeeded"


def test_error_shape_everywhere(service, monkeypatch):
    import worker.queue.embedded

    assert_error(service.get("/no/such/route"), 404, "not_found")
    assert_error(service.get("/v1/jobs/not-a-uuid"), 404, "not_found")
    assert_error(service.get("/v1/jobs/00000000-0000-0000-0000-000000000000/report"), 404, "not_found")
    assert_error(service.put("/v1/jobs"), 405, "method_not_allowed")
    assert_error(service.post("/v1/jobs", json={"manifest": "x"}), 415, "unsupported_media_type")
    # the embedded worker is held back before it takes any chunk, so the job is still queued when its report is
    # asked for: the 409 is checked on every run, however fast the worker
    release, run_chunk = threading.Event(), worker.queue.embedded.run_chunk

    def held_back(ctx, job_id, idx):
        release.wait(120)
        return run_chunk(ctx, job_id, idx)

    monkeypatch.setattr(worker.queue.embedded, "run_chunk", held_back)
    try:
        response = service.post(
            "/v1/pairs",
            files={"source": ("a.wav", wav_bytes(1.0, seed=31)), "target": ("b.wav", wav_bytes(1.0, seed=32))},
        )
        assert response.status_code == 202, response.text
        queued = response.json()["id"]
        error = assert_error(service.get(f"/v1/jobs/{queued}/report"), 409, "report_not_ready")
        assert error["details"]["status"] == "queued"
    finally:
        release.set()
    assert service.get("/healthz").json() == {"status": "ok"}
    deadline = time.monotonic() + 120
    while (ready := service.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        assert ready.json()["error"]["details"]["checks"]["models"]["error"] == "models are loading"
        time.sleep(0.2)
    assert ready.json()["status"] == "ok" and all(check["ok"] for check in ready.json()["checks"].values())
    wait_job(service, queued)
    metrics = service.get("/metrics").text
    assert "emopres_http_requests_total" in metrics and 'emopres_jobs{status="succeeded"}' in metrics
    assert "/v1/jobs" in service.get("/openapi.json").json()["paths"]


# ---------------------------------------------------------------- bad input: 4xx, nothing stored


def zip_bytes(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def tar_with_symlink() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        manifest = b"pair_id,source,target\na,s.wav,t.wav\n"
        info = tarfile.TarInfo("manifest.csv")
        info.size = len(manifest)
        archive.addfile(info, io.BytesIO(manifest))
        link = tarfile.TarInfo("s.wav")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    return buffer.getvalue()


GOOD = "pair_id,source,target\na,s.wav,t.wav\n"


def job_fields(manifest: str = GOOD, source: bytes | None = None, target: bytes | None = None, **extra):
    fields = [("manifest", ("m.csv", manifest.encode()))]
    fields += [
        ("s.wav", ("s.wav", source if source is not None else wav_bytes(1.0, seed=41))),
        ("t.wav", ("t.wav", target if target is not None else wav_bytes(1.0, seed=42))),
    ]
    return {"files": fields, "data": extra}


BAD_INPUT = {
    "empty audio": (job_fields(source=b""), 422, "invalid_audio"),
    "not audio": (job_fields(source=b"this is not audio" * 50), 422, "invalid_audio"),
    "truncated wav header": (job_fields(target=wav_bytes(1.0)[:30]), 422, "invalid_audio"),
    "missing column": (job_fields("pair_id,source\na,s.wav\n"), 422, "invalid_manifest"),
    "duplicate pair ids": (job_fields(GOOD + "a,t.wav,s.wav\n"), 422, "invalid_manifest"),
    "parent path": (job_fields("pair_id,source,target\na,../s.wav,t.wav\n"), 422, "invalid_manifest"),
    "absolute path": (job_fields("pair_id,source,target\na,/etc/passwd,t.wav\n"), 422, "invalid_manifest"),
    "audio not uploaded": (job_fields("pair_id,source,target\na,s.wav,u.wav\n"), 422, "missing_audio"),
    "empty manifest": (job_fields(""), 422, "invalid_manifest"),
    "invalid metadata": (job_fields(metadata="{not json"), 422, "invalid_metadata"),
    "metadata not an object": (job_fields(metadata="[1, 2]"), 422, "invalid_metadata"),
    "unknown profile": (job_fields(profile="huge"), 422, "unsupported_profile"),
    "profile this service lacks": (job_fields(profile="paper"), 422, "unsupported_profile"),
    "no manifest": ({"files": [("s.wav", ("s.wav", b"x"))]}, 422, "missing_manifest"),
    "unknown text field": (job_fields(colour="blue"), 422, "unknown_field"),
    "archive with traversal": (
        {"files": {"archive": ("a.zip", zip_bytes({"manifest.csv": GOOD.encode(), "../s.wav": b"x"}))}},
        422,
        "invalid_archive",
    ),
    "archive with absolute member": (
        {"files": {"archive": ("a.zip", zip_bytes({"manifest.csv": GOOD.encode(), "/tmp/s.wav": b"x"}))}},
        422,
        "invalid_archive",
    ),
    "zip with symlink": (
        {"files": {"archive": ("a.zip", zip_bytes({"manifest.csv": GOOD.encode()}, symlink="s.wav"))}},
        422,
        "invalid_archive",
    ),
    "tar with symlink": ({"files": {"archive": ("a.tar", tar_with_symlink())}}, 422, "invalid_archive"),
    "archive without manifest": (
        {"files": {"archive": ("a.zip", zip_bytes({"s.wav": b"x"}))}},
        422,
        "missing_manifest",
    ),
    "not an archive": ({"files": {"archive": ("a.zip", b"garbage" * 100)}}, 422, "invalid_archive"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_and_nothing_is_stored(service, case):
    request, status, code = BAD_INPUT[case]
    before = counts(service.services)
    assert_error(service.post("/v1/jobs", **request), status, code)
    assert counts(service.services) == before
