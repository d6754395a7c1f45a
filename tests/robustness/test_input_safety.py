"""Input that was accepted and later broke reads, or broke only on PostgreSQL (issue 16, points 4-6, 8).

Each case runs against the embedded SQLite service and against a service on a real PostgreSQL
schema: both refuse it with the same 4xx, store nothing, and the project's listings keep working.
The CLI refuses the same manifests with exit status 2 and one line.
"""

from __future__ import annotations

import base64
import json
import os

import pytest
from fastapi.testclient import TestClient

from app.auth import create_token
from app.main import create_app
from cli.main import main
from tests.service.test_service_api import GOOD, assert_error, counts, service_settings
from tests.service_support import drop_postgres_schema, new_postgres_schema, wav_bytes


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tmp_path_factory, random_lite_head):
    overrides = {}
    if request.param == "postgresql":
        postgres_url = request.getfixturevalue("postgres_url")
        schema = f"emopres_input_safety_{os.getpid()}"
        overrides = dict(database_url=new_postgres_schema(postgres_url, schema), auto_migrate=True)
    app = create_app(
        service_settings(tmp_path_factory.mktemp(f"safety-{request.param}"), random_lite_head, **overrides),
        start_worker=False,
    )
    try:
        with TestClient(app) as client:
            with app.state.services.sessions() as session:
                client.headers["Authorization"] = f"Bearer {create_token(session, 'ci', 'team-a')}"
            client.services = app.state.services
            # one good job, so that listings have something to serialise
            accepted = client.post("/v1/jobs", files=files(GOOD), data={"metadata": '{"run": 1}'})
            assert accepted.status_code == 202, accepted.text
            client.job_id = accepted.json()["id"]
            yield client
    finally:
        if overrides:
            drop_postgres_schema(postgres_url, schema)


def files(manifest: str | bytes, name: str = "m.csv", paths=("s.wav", "t.wav")) -> list:
    body = manifest.encode("utf-8", "surrogatepass") if isinstance(manifest, str) else manifest
    return [("manifest", (name, body))] + [(p, (p, wav_bytes(1.0, seed=40 + i))) for i, p in enumerate(paths)]


def jsonl(**overrides) -> str:
    record = {"pair_id": "a", "source": "s.wav", "target": "t.wav", "label": "joy", "group": "g1", **overrides}
    return json.dumps(record) + "\n"  # json.dumps writes a lone surrogate as the escape \ud800


REFUSED = {
    # point 4: metadata and JSONL manifests that used to be stored and then broke every read (or gave 500)
    "metadata nested 256 deep": (dict(metadata='{"a": ' + nested(255) + "}"), GOOD, "m.csv", "invalid_metadata"),
    "metadata nested 600 deep": (dict(metadata='{"a": ' + nested(600) + "}"), GOOD, "m.csv", "invalid_metadata"),
    "metadata with a lone surrogate": (dict(metadata='{"a": "\\ud800"}'), GOOD, "m.csv", "invalid_metadata"),
    "metadata key with a lone surrogate": (dict(metadata='{"\\udfff": 1}'), GOOD, "m.csv", "invalid_metadata"),
    "metadata with NUL": (dict(metadata='{"a": "x\\u0000y"}'), GOOD, "m.csv", "invalid_metadata"),
    "jsonl nested 50000 deep": (
        {},
        '{"pair_id": "a", "source": "s.wav", "target": "t.wav", "x": ' + nested(50_000) + "}\n",
        "m.jsonl",
        "invalid_manifest",
    ),
    "jsonl pair_id lone surrogate": ({}, jsonl(pair_id="a\ud800"), "m.jsonl", "invalid_manifest"),
    "jsonl label lone surrogate": ({}, jsonl(label="\ud800"), "m.jsonl", "invalid_manifest"),
    "jsonl group lone surrogate": ({}, jsonl(group="\udc80"), "m.jsonl", "invalid_manifest"),
    "jsonl path lone surrogate": ({}, jsonl(source="s\ud800.wav"), "m.jsonl", "invalid_manifest"),
    "jsonl label an object": ({}, jsonl(label={"a": 1}), "m.jsonl", "invalid_manifest"),
    # point 5: what only PostgreSQL refused (with a 500)
    "NUL in pair_id": ({}, "pair_id,source,target\na\0b,s.wav,t.wav\n", "m.csv", "invalid_manifest"),
    "NUL in label": ({}, "pair_id,source,target,label\na,s.wav,t.wav,jo\0y\n", "m.csv", "invalid_manifest"),
    "NUL in group": ({}, "pair_id,source,target,group\na,s.wav,t.wav,g\0\n", "m.csv", "invalid_manifest"),
    "NUL in path": ({}, "pair_id,source,target\na,s.wav\0,t.wav\n", "m.csv", "invalid_manifest"),
    "NUL in name": (dict(name="a\0b"), GOOD, "m.csv", "invalid_field"),
    "label over 255 characters": (
        {},
        f"pair_id,source,target,label\na,s.wav,t.wav,{'x' * 256}\n",
        "m.csv",
        "invalid_manifest",
    ),
    "group over 255 characters": (
        {},
        f"pair_id,source,target,group\na,s.wav,t.wav,{'g' * 256}\n",
        "m.csv",
        "invalid_manifest",
    ),
    "pair_id over 255 characters": (
        {},
        f"pair_id,source,target\n{'p' * 256},s.wav,t.wav\n",
        "m.csv",
        "invalid_manifest",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_at_the_door_and_reads_keep_working(service, case):
    data, manifest, name, code = REFUSED[case]
    before = counts(service.services)
    error = assert_error(service.post("/v1/jobs", files=files(manifest, name), data=data), 422, code)
    json.dumps(error, ensure_ascii=False).encode("utf-8")  # the message itself is sendable text
    assert counts(service.services) == before  # nothing stored, audio included
    assert service.get("/v1/jobs").status_code == 200
    assert service.get(f"/v1/jobs/{service.job_id}").status_code == 200


def test_the_same_values_just_inside_the_limits_are_accepted(service):
    fine = f"pair_id,source,target,label,group\n{'p' * 255},s.wav,t.wav,{'x' * 255},{'g' * 255}\n"
    response = service.post(
        "/v1/jobs", files=files(fine), data={"metadata": '{"a": ' + nested(30) + "}", "name": "ÿþ naïve 名前"}
    )
    assert response.status_code == 202, response.text
    job = service.get(f"/v1/jobs/{response.json()['id']}").json()
    assert job["name"] == "ÿþ naïve 名前"  # UTF-8 form text is kept as sent
    assert service.get("/v1/jobs").status_code == 200
    assert service.delete(f"/v1/jobs/{job['id']}").status_code == 204


def test_form_text_that_is_not_utf8_is_refused(service):
    """Point 8: b"\\xff\\xfe" was decoded as Latin-1 and stored as "ÿþ"."""
    before = counts(service.services)
    for field in ("name", "metadata"):
        error = assert_error(
            service.post("/v1/jobs", files=files(GOOD) + [(field, (None, b"\xff\xfe"))]), 422, "invalid_encoding"
        )
        assert field in error["message"] and "UTF-8" in error["message"]
    error = assert_error(
        service.post(
            "/v1/pairs",
            files={
                "source": ("s.wav", wav_bytes(1.0)),
                "target": ("t.wav", wav_bytes(1.0)),
                "label": (None, b"joy\xe9"),
            },
        ),
        422,
        "invalid_encoding",
    )
    assert "label" in error["message"]
    assert counts(service.services) == before


def cursor_of(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    [
        {"name": "a\0b"},
        {"cursor": "WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzAxOjAwIiwgIngiXQ"},  # point 6: ["0001-01-01T00:00:00+01:00","x"]
        {"cursor": cursor_of(["0001-01-01T00:00:00+01:00", "6f1c1d5e-8a63-4a2a-9a2e-0d1e6f0b8a11"])},
        {"cursor": cursor_of(["2026-01-01T00:00:00+00:00", "6f1c1d5e-8a63-4a2a-9a2e-0d1e6f0b8a1\u0000"])},
        {"cursor": cursor_of(["2026-01-01T00:00:00", "6f1c1d5e-8a63-4a2a-9a2e-0d1e6f0b8a11"])},  # no time zone
        {"cursor": cursor_of(["2026-01-01T00:00:00+00:00", 5])},
    ],
)
def test_listing_filters_and_cursors_are_checked(service, query):
    code = "invalid_cursor" if "cursor" in query else "invalid_field"
    assert_error(service.get("/v1/jobs", params=query), 422, code)


def test_a_real_cursor_still_pages(service):
    second = service.post("/v1/jobs", files=files(GOOD))
    assert second.status_code == 202
    first = service.get("/v1/jobs", params={"limit": 1}).json()
    assert first["next_cursor"]
    rest = service.get("/v1/jobs", params={"limit": 200, "cursor": first["next_cursor"]})
    assert rest.status_code == 200
    ids = [job["id"] for job in first["items"] + rest.json()["items"]]
    assert len(ids) == len(set(ids)) and service.job_id in ids and second.json()["id"] in ids


@pytest.mark.parametrize(
    "content",
    [
        '{"pair_id": "a", "source": "s.wav", "target": "t.wav", "x": ' + nested(50_000) + "}\n",
        jsonl(pair_id="a\ud800"),
        "pair_id,source,target\na\0b,s.wav,t.wav\n",
    ],
)
def test_cli_refuses_the_same_manifests_with_exit_2(tmp_path, capsys, content):
    suffix = "csv" if content.startswith("pair_id") else "jsonl"
    manifest = tmp_path / f"pairs.{suffix}"
    manifest.write_bytes(content.encode("utf-8", "surrogatepass"))
    for name in ("s.wav", "t.wav"):
        (tmp_path / name).write_bytes(wav_bytes(1.0))
    status = main(["evaluate", str(manifest), "--out", str(tmp_path / "r.json"), "--no-cache"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r.json").exists()


def test_pairs_csv_escapes_formulas(service):
    """Point 8: cells from the client starting with = + - @ are exported with a leading quote; numbers keep
    their sign."""
    import csv
    import io

    manifest = "pair_id,source,target,label,group\n=HYPERLINK(1),s.wav,t.wav,+cmd,@sum\n-p,t.wav,s.wav,plain,g\n"
    response = service.post("/v1/jobs", files=files(manifest))
    assert response.status_code == 202, response.text
    rows = list(csv.DictReader(io.StringIO(service.get(f"/v1/jobs/{response.json()['id']}/pairs.csv").text)))
    assert [(r["pair_id"], r["label"], r["group"]) for r in rows] == [
        ("'=HYPERLINK(1)", "'+cmd", "'@sum"),
        ("'-p", "plain", "g"),
    ]
    # the report keeps the values as sent: only the spreadsheet export is escaped
    job = service.get(f"/v1/jobs/{response.json()['id']}").json()
    assert job["progress"]["total"] == 2


def test_compare_bootstrap_is_capped(service):
    from app.routes.reports import MAX_COMPARE_BOOTSTRAP

    url = f"/v1/jobs/{service.job_id}/compare/{service.job_id}"
    error = assert_error(service.get(url, params={"bootstrap": MAX_COMPARE_BOOTSTRAP + 1}), 422, "validation_error")
    assert "bootstrap" in error["message"]
    assert_error(service.get(url, params={"bootstrap": 20_000}), 422, "validation_error")
    assert service.get(url, params={"bootstrap": MAX_COMPARE_BOOTSTRAP}).status_code == 409  # valid; no report yet


def test_metrics_are_opt_in(tmp_path, random_lite_head):
    """Point 8: /metrics (no token, service-wide counts) is served only where the deployment turns it on."""
    for enabled, status in ((False, 404), (True, 200)):
        app = create_app(
            service_settings(tmp_path / str(enabled), random_lite_head, metrics_enabled=enabled), start_worker=False
        )
        with TestClient(app) as client:
            response = client.get("/metrics")
            assert response.status_code == status, response.text
            assert ("emopres_http_requests_total" in response.text) is enabled
