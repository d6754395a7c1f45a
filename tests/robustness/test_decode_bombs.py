"""Audio decode bombs (issue 16, point 1): the header is checked before anything is decoded.

A FLAC of a few hundred bytes can declare ten minutes of 8 channels at 192 kHz (3.7 GB once
decoded as float32): refused from its header at the door, nothing decoded. The gateway decodes
nothing at all (it checks headers and hashes); the worker decodes block by block under the same
caps, and what only decoding shows (NaN samples) fails that pair with its reason, exactly as in
`emopres evaluate`.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile
import soxr
from fastapi.testclient import TestClient

from app.auth import create_token
from app.main import create_app
from cli.main import main
from core.audio import (
    DECODED_RATE_BUDGET,
    AudioError,
    AudioHeader,
    _libsndfile_header,
    _read_mono,
    decode_audio,
    flac_streaminfo,
    read_header,
    sample_budget,
)
from tests.conftest import synthetic_speechlike
from tests.service.test_service_api import assert_error, counts, service_settings
from tests.service_support import comparable, wait_job, wav_bytes


def flac(seconds: float, rate: int, channels: int) -> bytearray:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros((int(seconds * rate), channels), np.float32), rate, format="FLAC")
    return bytearray(buffer.getvalue())


def declaring(data: bytearray, total_frames: int) -> bytes:
    """The FLAC with STREAMINFO's 36-bit total-samples field set to `total_frames` (what a bomb's header says;
    libsndfile decodes what the header declares)."""
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # the first metadata block is STREAMINFO
    field = int.from_bytes(data[8 + 13 : 8 + 18], "big")
    data[8 + 13 : 8 + 18] = ((field & ~((1 << 36) - 1)) | total_frames).to_bytes(5, "big")
    return bytes(data)


BOMB = declaring(flac(0.05, 192_000, 8), 599 * 192_000)  # 599 s, 8 channels, 192 kHz: inside the 600 s cap
HOUR = declaring(flac(0.05, 16_000, 1), 3600 * 16_000)  # one hour of 16 kHz mono


def test_the_header_rules_out_a_bomb_before_decoding():
    assert len(BOMB) < 1000
    for cap in (600, None):  # no duration cap given: the sample budget of the default one
        with pytest.raises(
            AudioError,
            match=r"holds 920064000 samples \(599.0 s x 192000 Hz x 8 channels\), "
            r"over the cap of 57600000",
        ):
            read_header(BOMB, max_seconds=cap)
    with pytest.raises(AudioError, match=r"3600.0 s long, over the 600 s cap"):
        read_header(HOUR, max_seconds=600)
    assert sample_budget(600) == 600 * DECODED_RATE_BUDGET
    # ten minutes of 48 kHz stereo is the most a 600 s cap takes
    assert read_header(declaring(flac(0.05, 48_000, 2), 600 * 48_000), max_seconds=600).seconds == 600


@pytest.mark.parametrize(
    "seconds, rate, channels",
    [(0.3, 16_000, 1), (1.7, 44_100, 2), (0.05, 192_000, 8), (2.0, 8_000, 3), (0.01, 96_000, 1)],
)
def test_a_flac_header_read_from_streaminfo_equals_libsndfiles(seconds, rate, channels):
    data = bytes(flac(seconds, rate, channels))
    assert flac_streaminfo(data) == _libsndfile_header(data) == AudioHeader(int(seconds * rate), rate, channels)
    for declared in (0, 599 * rate, (1 << 36) - 1):  # 0: "unknown" (a streamed FLAC), the cap, the field's maximum
        bomb = declaring(bytearray(data), declared)
        assert flac_streaminfo(bomb) == _libsndfile_header(bomb)
    assert flac_streaminfo(b"ID3" + data) is None and flac_streaminfo(data[:41]) is None  # left to libsndfile


def test_a_flac_header_is_read_without_opening_libsndfile(monkeypatch):
    def no_libsndfile(*args, **kwargs):
        raise AssertionError("libsndfile opened a FLAC to read its header")

    data = bytes(flac(0.5, 22_050, 2))
    monkeypatch.setattr(soundfile, "SoundFile", no_libsndfile)
    assert read_header(data, max_seconds=600) == AudioHeader(11_025, 22_050, 2)
    with pytest.raises(AudioError, match="3600.0 s long"):
        read_header(HOUR, max_seconds=600)


def test_decoding_is_bounded_whatever_the_header_says(tmp_path):
    data = wav_bytes(2.0)
    with pytest.raises(AudioError, match="decodes to more than 1.0 s"):
        _read_mono(data, AudioHeader(16_000, 16_000, 1), max_seconds=1.0)
    with pytest.raises(AudioError, match="over the 1 s cap"):
        decode_audio(data, max_seconds=1.0)


@pytest.mark.parametrize("rate, channels", [(16_000, 1), (44_100, 2), (48_000, 6), (8_000, 1)])
def test_block_decoding_gives_the_same_samples_as_decoding_at_once(rate, channels):
    wave = synthetic_speechlike(3.3, rate, seed=channels)
    data = np.stack([wave * (1 - 0.1 * c) for c in range(channels)], axis=1)
    buffer = io.BytesIO()
    soundfile.write(buffer, data, rate, format="FLAC")
    samples, native = soundfile.read(io.BytesIO(buffer.getvalue()), dtype="float32", always_2d=True)
    reference = samples.mean(axis=1)
    if native != 16_000:
        reference = soxr.resample(reference, native, 16_000, quality="HQ")
    np.testing.assert_array_equal(decode_audio(buffer.getvalue(), max_seconds=600), reference.astype(np.float32))


@pytest.fixture(scope="module")
def service(tmp_path_factory, random_lite_head):
    app = create_app(service_settings(tmp_path_factory.mktemp("bombs"), random_lite_head, bootstrap=50))
    with TestClient(app) as client:
        with app.state.services.sessions() as session:
            client.headers["Authorization"] = f"Bearer {create_token(session, 'ci', 'team-a')}"
        client.services = app.state.services
        yield client


def job(source: bytes, target: bytes, manifest: str = "pair_id,source,target\na,s.flac,t.wav\n"):
    return [("manifest", ("m.csv", manifest.encode())), ("s.flac", ("s.flac", source)), ("t.wav", ("t.wav", target))]


@pytest.mark.parametrize("bomb, reason", [(BOMB, "samples"), (HOUR, "3600.0 s long")])
def test_bombs_are_refused_at_the_door_from_their_header(service, bomb, reason):
    before = counts(service.services)
    error = assert_error(service.post("/v1/jobs", files=job(bomb, wav_bytes(1.0))), 422, "invalid_audio")
    assert reason in error["message"] and error["details"]["files"][0]["path"] == "s.flac"
    assert counts(service.services) == before


def test_the_gateway_decodes_nothing(service, monkeypatch):
    """Uploads are checked from headers and hashed; no sample is decoded in the request."""

    def no_decoding(*args, **kwargs):
        raise AssertionError("the gateway decoded audio")

    monkeypatch.setattr(soundfile, "read", no_decoding)
    monkeypatch.setattr(soundfile.SoundFile, "read", no_decoding)
    monkeypatch.setattr(soundfile.SoundFile, "blocks", no_decoding)
    monkeypatch.setattr("worker.queue.embedded.EmbeddedQueue.send_chunk", lambda *a, **k: None)  # the worker decodes
    source = io.BytesIO()
    soundfile.write(source, synthetic_speechlike(1.2, 22_050, seed=3), 22_050, format="FLAC")
    response = service.post("/v1/jobs", files=job(source.getvalue(), wav_bytes(1.0, seed=4)))
    assert response.status_code == 202, response.text
    assert service.delete(f"/v1/jobs/{response.json()['id']}").status_code == 204


def wav_with(value: float) -> bytes:
    data = synthetic_speechlike(1.0, seed=9)
    data[100] = value
    buffer = io.BytesIO()
    soundfile.write(buffer, data, 16_000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_what_only_decoding_shows_fails_the_pair_with_its_reason_as_in_the_cli(service, tmp_path, random_lite_head):
    files = {
        "nan.wav": wav_with(np.nan),
        "inf.wav": wav_with(np.inf),
        "s.wav": wav_bytes(1.3, seed=5),
        "t.wav": wav_bytes(1.4, seed=6),
    }
    manifest = "pair_id,source,target\nok,s.wav,t.wav\nnan,nan.wav,t.wav\ninf,s.wav,inf.wav\n"
    response = service.post(
        "/v1/jobs", files=[("manifest", ("m.csv", manifest.encode()))] + [(k, (k, v)) for k, v in files.items()]
    )
    assert response.status_code == 202, response.text
    assert wait_job(service, response.json()["id"])["status"] == "succeeded"
    report = service.get(f"/v1/jobs/{response.json()['id']}/report").json()
    assert [p["pair_id"] for p in report["pairs"]] == ["ok"]
    reason = "audio contains NaN or infinite samples"
    assert report["failures"] == [
        {"pair_id": "nan", "side": "source", "error": reason},
        {"pair_id": "inf", "side": "target", "error": reason},
    ]

    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "m.csv").write_text(manifest)
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "m.csv"),
                "--out",
                str(tmp_path / "r.json"),
                "--head",
                str(random_lite_head),
                "--bootstrap",
                "50",
                "--no-cache",
                "--jobs",
                "1",
            ]
        )
        == 0
    )
    cli = json.loads((tmp_path / "r.json").read_text())
    assert comparable(cli) == comparable(report)
