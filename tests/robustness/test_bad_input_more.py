"""Bad and odd input beyond tests/service/test_service_api.py (issue 7).

Odd but valid audio is evaluated: 8 kHz to 96 kHz, 1 to 6 channels, FLAC and OGG, all-silence
audio (with a "no speech found" warning). Audio too short for the model fails only its pair, with
the reason. Everything else gets a 4xx in the one JSON error shape and stores nothing: a zero-frame
or zero-channel WAV (infinite samples, which only decoding shows, fail their pair: test_decode_bombs), URLs
instead of uploaded paths, NaN in metadata, oversized or malformed multipart, over-long headers and names.
Another project's job is a 404 on every route (including as a comparison baseline), saying nothing about it.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient

from app.auth import create_token
from app.main import create_app
from tests.conftest import synthetic_speechlike
from tests.service.test_service_api import GOOD, assert_error, counts, job_fields, service_settings
from tests.service_support import wait_job, wav_bytes


@pytest.fixture(scope="module")
def service(tmp_path_factory, random_lite_head):
    app = create_app(service_settings(tmp_path_factory.mktemp("bad-input"), random_lite_head, bootstrap=50))
    with TestClient(app) as client:
        services = app.state.services
        with services.sessions() as session:
            mine = create_token(session, "ci", "team-a")
            other = create_token(session, "intruder", "team-b")
        client.headers["Authorization"] = f"Bearer {mine}"
        client.services = services
        client.other_headers = {"Authorization": f"Bearer {other}"}
        yield client


def encoded(data: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, data, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def speech(seconds: float, rate: int = 16_000, seed: int = 0, channels: int = 1) -> np.ndarray:
    wave = synthetic_speechlike(seconds, rate, seed)
    return np.stack([wave * (1 - 0.1 * c) for c in range(channels)], axis=1) if channels > 1 else wave


def wav_header_only(channels: int, rate: int = 16_000, frames: int = 0) -> bytes:
    """A hand-made PCM16 WAV: `channels` may be 0 (which no encoder writes)."""
    block = max(channels, 1) * 2
    data = b"\0" * (frames * block)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def submit(client, pairs: list[tuple[str, str, str]], audio: dict[str, bytes], **data):
    manifest = "pair_id,source,target\n" + "".join(f"{p},{s},{t}\n" for p, s, t in pairs)
    files = [("manifest", ("m.csv", manifest.encode()))] + [(path, (path, content)) for path, content in audio.items()]
    return client.post("/v1/jobs", files=files, data=data)


def finished_report(client, response) -> dict:
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["id"])
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    ids = [p["pair_id"] for p in report["pairs"]] + [f["pair_id"] for f in report["failures"]]
    assert len(ids) == len(set(ids)) == report["job"]["n_pairs"]  # every pair exactly once
    return report


# ---------------------------------------------------------------- odd but valid: evaluated


def test_any_rate_channel_count_and_format_is_evaluated(service):
    audio = {
        "r8k.wav": encoded(speech(1.2, 8_000, seed=1), 8_000),
        "r96k.wav": encoded(speech(1.2, 96_000, seed=2), 96_000),
        "r22k.flac": encoded(speech(1.2, 22_050, seed=3), 22_050, "FLAC"),
        "r44k.ogg": encoded(speech(1.2, 44_100, seed=4), 44_100, "OGG", "VORBIS"),
        "stereo.wav": encoded(speech(1.2, 48_000, seed=5, channels=2), 48_000),
        "six.wav": encoded(speech(1.2, 16_000, seed=6, channels=6), 16_000, subtype="FLOAT"),
        "mono24.wav": encoded(speech(1.2, 11_025, seed=7), 11_025, subtype="PCM_24"),
    }
    pairs = [
        ("low-high", "r8k.wav", "r96k.wav"),
        ("flac-ogg", "r22k.flac", "r44k.ogg"),
        ("channels", "stereo.wav", "six.wav"),
        ("pcm24", "mono24.wav", "r8k.wav"),
    ]
    report = finished_report(service, submit(service, pairs, audio))
    assert report["failures"] == [] and [p["pair_id"] for p in report["pairs"]] == [p for p, *_ in pairs]
    for pair in report["pairs"]:
        for side in ("source", "target"):
            assert pair[side]["duration_s"] == pytest.approx(1.2, abs=0.01)
            assert abs(sum(pair[side]["probs"].values()) - 1) < 1e-5


def test_silence_is_evaluated_with_a_warning_and_too_short_audio_fails_only_its_pair(service):
    audio = {
        "speech.wav": wav_bytes(1.5, seed=11),
        "silence.wav": encoded(np.zeros(24_000, np.float32), 16_000),
        "blip.wav": encoded(speech(0.02, seed=12), 16_000),
        "other.wav": wav_bytes(1.4, seed=13),
    }
    pairs = [
        ("silent", "speech.wav", "silence.wav"),
        ("blip", "blip.wav", "other.wav"),
        ("fine", "speech.wav", "other.wav"),
    ]
    report = finished_report(service, submit(service, pairs, audio))
    assert report["job"]["status"] == "succeeded" and report["job"]["n_failed"] == 1
    assert [p["pair_id"] for p in report["pairs"]] == ["silent", "fine"]
    silent = report["pairs"][0]
    assert any("no speech found" in w for w in silent["warnings"]) and silent["target"]["pause_rate"] is None
    assert silent["target"]["speech_rate"] is None and silent["target"]["pred"] in silent["target"]["probs"]
    [failure] = report["failures"]
    assert failure["pair_id"] == "blip" and failure["side"] == "source" and "too short" in failure["error"]
    job = service.get(f"/v1/jobs/{report['job']['id']}").json()
    assert job["progress"] == {"done": 3, "total": 3, "failed": 1} and job["failures"][0]["pair_id"] == "blip"


# ---------------------------------------------------------------- refused: 4xx, one error shape, nothing stored


REFUSED = {
    "zero-frame wav": (job_fields(source=encoded(np.zeros((0, 1), np.float32), 16_000)), 422, "invalid_audio"),
    "zero-channel wav": (job_fields(source=wav_header_only(0, frames=100)), 422, "invalid_audio"),
    "header-only wav": (job_fields(target=wav_header_only(1)), 422, "invalid_audio"),
    "http url as path": (
        job_fields("pair_id,source,target\na,http://127.0.0.1:9/s.wav,t.wav\n"),
        422,
        "invalid_manifest",
    ),
    "file url as path": (job_fields("pair_id,source,target\na,s.wav,file:///etc/passwd\n"), 422, "invalid_manifest"),
    "url as a form field": (
        {
            "files": [
                ("manifest", ("m.csv", GOOD.encode())),
                ("t.wav", ("t.wav", wav_bytes(1.0))),
                ("https://example.com/s.wav", ("s.wav", wav_bytes(1.0))),
            ]
        },
        422,
        "invalid_manifest",
    ),
    "url in a jsonl manifest": (
        {
            "files": [
                (
                    "manifest",
                    (
                        "m.jsonl",
                        json.dumps({"pair_id": "a", "source": "https://example.com/s.wav", "target": "t.wav"}).encode(),
                    ),
                ),
                ("t.wav", ("t.wav", wav_bytes(1.0))),
            ]
        },
        422,
        "invalid_manifest",
    ),
    "relative path never uploaded": (job_fields("pair_id,source,target\na,s.wav,sub/t.wav\n"), 422, "missing_audio"),
    "nan in metadata": (job_fields(metadata='{"score": NaN}'), 422, "invalid_metadata"),
    "infinity in metadata": (job_fields(metadata='{"x": [1, -Infinity]}'), 422, "invalid_metadata"),
    "metadata over its cap": (job_fields(metadata=json.dumps({"x": "y" * 20_000})), 413, "payload_too_large"),
    "metadata sent as a file": (
        {"files": job_fields()["files"] + [("metadata", ("m.json", b"{}"))]},
        422,
        "invalid_field",
    ),
    "manifest not utf-8": (
        {"files": [("manifest", ("m.csv", b"pair_id,source,target\na,s\xe9.wav,t.wav\n"))] + job_fields()["files"][1:]},
        422,
        "invalid_manifest",
    ),
    "manifest given twice": (
        {"files": job_fields()["files"] + [("manifest", ("n.csv", GOOD.encode()))]},
        422,
        "duplicate_field",
    ),
    "audio given twice": (
        {"files": job_fields()["files"] + [("s.wav", ("s.wav", wav_bytes(1.0, seed=9)))]},
        422,
        "duplicate_field",
    ),
    "manifest and archive": ({"files": job_fields()["files"] + [("archive", ("a.zip", b"PK"))]}, 422, "invalid_field"),
    "group column missing": (job_fields(group_column="speaker"), 422, "invalid_manifest"),
    "name too long": (job_fields(name="n" * 201), 422, "invalid_name"),
    "text part over 1 MiB": (job_fields(name="n" * (1024 * 1024 + 1)), 400, "bad_request"),
    "too many form fields": (
        {"files": job_fields()["files"], "data": {f"f{i}": "x" for i in range(70)}},
        400,
        "bad_request",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_with_one_error_shape_and_nothing_stored(service, case):
    request, status, code = REFUSED[case]
    before = counts(service.services)
    assert_error(service.post("/v1/jobs", **request), status, code)
    assert counts(service.services) == before


def test_malformed_requests_are_4xx_and_store_nothing(service):
    before = counts(service.services)
    multipart = {"Content-Type": "multipart/form-data; boundary=b"}
    assert_error(service.post("/v1/jobs", content=b"--b\r\nbroken", headers=multipart), 422, "missing_manifest")
    assert_error(
        service.post("/v1/jobs", content=b"x", headers={"Content-Type": "multipart/form-data"}), 400, "bad_request"
    )
    assert_error(
        service.post("/v1/jobs", content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"}),
        415,
        "unsupported_media_type",
    )
    long_key = service.post("/v1/jobs", **job_fields(), headers={"Idempotency-Key": "k" * 256})
    assert_error(long_key, 422, "validation_error")
    assert_error(service.post("/v1/pairs", files={"source": ("a.wav", wav_bytes(1.0))}), 422, "missing_audio")
    assert_error(
        service.post("/v1/pairs", files={"source": ("a.wav", wav_bytes(1.0)), "target": ("b.wav", b"")}),
        422,
        "invalid_audio",
    )
    assert_error(
        service.post(
            "/v1/pairs",
            files={
                "source": ("a.wav", wav_bytes(1.0)),
                "target": ("b.wav", wav_bytes(1.0)),
                "extra": ("c.wav", wav_bytes(1.0)),
            },
        ),
        422,
        "unknown_field",
    )
    assert counts(service.services) == before


# ---------------------------------------------------------------- another project's job: 404, nothing leaked


def test_another_projects_job_is_404_everywhere_and_leaks_nothing(service):
    mine = finished_report(
        service,
        submit(
            service,
            [("x", "s.wav", "t.wav")],
            {"s.wav": wav_bytes(1.0, seed=51), "t.wav": wav_bytes(1.1, seed=52)},
            name="secret-system",
        ),
    )["job"]["id"]
    intruder = service.other_headers
    theirs = service.post(
        "/v1/pairs",
        headers=intruder,
        files={"source": ("a.wav", wav_bytes(1.0, seed=53)), "target": ("b.wav", wav_bytes(1.0, seed=54))},
    )
    theirs = wait_job(service, theirs.json()["id"], headers=intruder)["id"]
    missing = "00000000-0000-4000-8000-000000000000"
    paths = ["", "/report", "/pairs.csv", "/plots", "/plots/confusion?format=svg", "/report.html"]
    for job_id in (mine, missing):
        bodies = []
        for path in paths:
            response = service.get(f"/v1/jobs/{job_id}{path}", headers=intruder)
            bodies.append(assert_error(response, 404))
        bodies.append(assert_error(service.delete(f"/v1/jobs/{job_id}", headers=intruder), 404))
        # as a comparison baseline, or compared against their own job
        bodies.append(assert_error(service.get(f"/v1/jobs/{theirs}/compare/{job_id}", headers=intruder), 404))
        bodies.append(
            assert_error(
                service.get(f"/v1/jobs/{theirs}/report.html", params={"baseline": job_id}, headers=intruder), 404
            )
        )
        text = json.dumps(bodies)
        assert "secret-system" not in text and "team-a" not in text and "succeeded" not in text
        if job_id == mine:
            leaked = bodies
        else:  # a job of another project reads exactly like one that does not exist
            assert [b["code"] for b in bodies] == [b["code"] for b in leaked]
            assert json.dumps(bodies).replace(missing, "ID") == json.dumps(leaked).replace(mine, "ID")
    listed = service.get("/v1/jobs", params={"name": "secret-system"}, headers=intruder).json()
    assert listed["items"] == []
    # and the owner still sees it, unharmed
    assert service.get(f"/v1/jobs/{mine}").json()["status"] == "succeeded"
    assert service.get(f"/v1/jobs/{theirs}").status_code == 404


def test_an_exhausted_connection_pool_is_a_503_with_retry_after(tmp_path, random_lite_head):
    """Under a burst the database pool may run dry: the client is told to retry (found by bench/load.py, where
    it was a 500)."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    app = create_app(service_settings(tmp_path, random_lite_head, auth_disabled=True), start_worker=False)
    with TestClient(app) as client:
        services = app.state.services
        real = services.sessions

        def exhausted():
            raise PoolTimeout("QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00")

        services.sessions = exhausted
        try:
            for response in (client.get("/v1/jobs"), client.post("/v1/jobs", **job_fields())):
                assert_error(response, 503, "service_unavailable")
                assert response.headers["retry-after"].isdigit()
        finally:
            services.sessions = real
        assert client.get("/v1/jobs").status_code == 200
