"""Helpers of the service tests: synthetic job data, HTTP helpers, service processes."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile

from tests.conftest import MELD_CLASSES, synthetic_speechlike

REPO = Path(__file__).resolve().parents[1]
EMOPRES = Path(sys.executable).parent / "emopres"
BOOTSTRAP = 200  # resamples in the service tests' reports (CLI and services alike)
_REFERENCES: dict[str, tuple[Path, dict]] = {}


def write_dataset(root: Path, n_pairs: int = 4, seconds: float = 1.5, seed: int = 0) -> Path:
    """Pairs of synthetic speech-like audio under root/audio, manifest root/manifest.csv (with labels, groups)."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_pairs):
        for side, pitch in (("src", 110 + 25 * i), ("tgt", 130 + 20 * i)):
            wave = synthetic_speechlike(seconds + 0.1 * i, seed=seed + 2 * i + (side == "tgt"), pitch=pitch)
            soundfile.write(root / "audio" / f"{side}{i}.wav", wave, 16_000)
        rows.append(
            {
                "pair_id": f"p{i}",
                "source": f"audio/src{i}.wav",
                "target": f"audio/tgt{i}.wav",
                "label": MELD_CLASSES[i % 3],
                "group": f"spk{i % 2}",
            }
        )
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def upload_fields(manifest: Path) -> list:
    """multipart fields of POST /v1/jobs for a manifest written by write_dataset."""
    root = manifest.parent
    fields = [("manifest", (manifest.name, manifest.read_bytes(), "text/csv"))]
    with open(manifest, newline="") as handle:
        paths = dict.fromkeys(p for row in csv.DictReader(handle) for p in (row["source"], row["target"]))
    fields += [(p, (Path(p).name, (root / p).read_bytes(), "audio/wav")) for p in paths]
    return fields


def wav_bytes(seconds: float = 1.0, seed: int = 0, rate: int = 16_000, data: np.ndarray | None = None) -> bytes:
    import io

    buffer = io.BytesIO()
    soundfile.write(buffer, synthetic_speechlike(seconds, rate, seed) if data is None else data, rate, format="WAV")
    return buffer.getvalue()


def wait_job(client, job_id: str, timeout: float = 120, headers=None, until=("succeeded", "failed")) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job.get("status") in until:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not finished after {timeout} s: {job}")
        time.sleep(0.2)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def comparable(report: dict) -> dict:
    """The report without its job block (ids, timestamps), as JSON would carry it."""
    report = json.loads(json.dumps(_finite(report)))
    job = report.pop("job")
    report["n_pairs"], report["n_failed"] = job["n_pairs"], job["n_failed"]
    return report


def cli_report(manifest: Path, head: Path, out: Path, *, bootstrap: int, seed: int = 12345) -> dict:
    from cli.main import main

    code = main(
        [
            "evaluate",
            str(manifest),
            "--out",
            str(out),
            "--head",
            str(head),
            "--jobs",
            "1",
            "--no-cache",
            "--bootstrap",
            str(bootstrap),
            "--seed",
            str(seed),
        ]
    )
    assert code == 0
    return json.loads(out.read_text())


def shared_reference(tmp_path_factory, head: Path) -> tuple[Path, dict]:
    """(manifest of a 4-pair dataset, the CLI's report on it): computed once per test session."""
    key = str(head)
    if key not in _REFERENCES:
        root = tmp_path_factory.mktemp("reference")
        manifest = write_dataset(root / "data", n_pairs=4)
        _REFERENCES[key] = manifest, cli_report(manifest, head, root / "cli.json", bootstrap=BOOTSTRAP)
    return _REFERENCES[key]


@contextmanager
def serving(app, port: int | None = None):
    """A FastAPI app served by uvicorn on loopback in a thread of this process (its lifespan run); yields the URL."""
    import threading

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port or free_port(), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """`emopres <args>` in its own process group, output to a log file."""

    def __init__(self, args: list[str], env: dict, log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        handle = open(self.log, "ab")
        command = [str(EMOPRES)] if EMOPRES.exists() else [sys.executable, "-m", "cli.main"]
        self.process = subprocess.Popen(
            command + self.args, env=self.env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
        handle.close()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (a Celery worker and its pool processes)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 20) -> None:
        if not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def wait_http(url: str, process: ServiceProcess, timeout: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise AssertionError(f"service exited:\n{process.tail()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not up after {timeout} s:\n{process.tail()}")


def service_env(**settings) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOPRES_")}
    env.update({f"EMOPRES_{k.upper()}": str(v) for k, v in settings.items() if v is not None})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def new_postgres_schema(postgres_url: str, name: str) -> str:
    """A new, empty PostgreSQL schema `name` (dropped first if a crashed run left it); the URL that uses it."""
    from sqlalchemy import create_engine, text

    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {name}"))
    admin.dispose()
    return f"{postgres_url}?options=-csearch_path%3D{name}"


def drop_postgres_schema(postgres_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
    admin.dispose()
