"""Shared fixtures: real speech from ../shared/data (skipped when absent), heads, services."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMOPRES_SHARED_DATA") or REPO.parent / "shared" / "data")  # empty: the default
MELD_CLASSES = ["neutral", "joy", "sadness", "anger", "fear", "disgust", "surprise"]
POSTGRES_URL = os.environ.get("EMOPRES_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("EMOPRES_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "pairs" / "en-ja.csv").is_file():
        pytest.skip(f"real speech data not found at {SHARED_DATA} (set EMOPRES_SHARED_DATA)")
    return SHARED_DATA


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def random_lite_head(tmp_path_factory):
    """A random-weight eGeMAPS head: for plumbing tests that do not judge prediction quality."""
    return write_random_lite_head(tmp_path_factory.mktemp("head") / "random_lite")


def write_random_lite_head(folder: Path) -> Path:
    """Save a random-weight eGeMAPS head (seed 0) in `folder` (also used by bench/ without a shipped head)."""
    import torch

    from models.ser.head import SerHead

    torch.manual_seed(0)
    head = SerHead.new(88, MELD_CLASSES, "egemaps-v02", metadata={"source": "random test head"})
    with torch.no_grad():
        for parameter in head.network.parameters():
            parameter.mul_(20)  # spread the logits so that predictions vary across utterances
    return head.save(folder)


def synthetic_speechlike(seconds: float, rate: int = 16_000, seed: int = 0, pitch: float = 140.0) -> np.ndarray:
    """Voiced bursts (harmonic tone with syllable-like amplitude modulation) separated by silences."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * pitch * k * t * (1 + 0.05 * np.sin(2 * np.pi * 0.5 * t))) / k for k in range(1, 6))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2
    words = (np.sin(2 * np.pi * 0.6 * t + rng.uniform(0, 6)) > -0.3).astype(float)
    wave = 0.3 * tone * syllables * words + 0.003 * rng.standard_normal(len(t))
    return wave.astype(np.float32)


@pytest.fixture
def write_wav(tmp_path):
    """write_wav(name, seconds=2.0, seed=0, rate=16000, channels=1) -> Path of a synthetic WAV file."""

    def write(
        name: str,
        seconds: float = 2.0,
        seed: int = 0,
        rate: int = 16_000,
        channels: int = 1,
        pitch: float = 140.0,
        fmt: str | None = None,
    ) -> Path:
        wave = synthetic_speechlike(seconds, rate, seed, pitch)
        data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, data, rate, format=fmt)
        return path

    return write


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def in_ci() -> bool:
    """CI=true (as CI runners set it): a service or tool the suite needs must be there, so its absence fails."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(available: bool, reason: str) -> None:
    """Skip with `reason` where `available` is false; under CI=true fail instead (a skip there would hide it)."""
    if available:
        return
    if in_ci():
        pytest.fail(f"{reason}; CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    require(_reachable("127.0.0.1", 5432), "PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it)")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    require(_reachable("127.0.0.1", 6379), "Redis is not running on 127.0.0.1:6379 (.ci/run starts it)")
    return REDIS_URL


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 API server (moto's server mode, a process of its own on a loopback port) for the whole session."""
    from tests.s3_support import MotoServer

    try:
        import moto.server  # noqa: F401
    except ImportError:
        require(False, "moto[server] is not installed (pip install -e '.[dev]')")
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A new bucket on the session's S3 server, and its credentials in this process's environment: the settings
    of the s3 store on it (blob_store, s3_bucket, s3_endpoint_url)."""
    from tests.s3_support import CREDENTIALS, s3_settings

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return s3_settings(s3_server.new_bucket(), s3_server.url)
