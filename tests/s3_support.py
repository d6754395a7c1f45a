"""A real S3 API server for the tests: moto's server mode (`moto[server]` from PyPI) in a process of its own, on a
loopback port (or any address: the multi-host test binds it to a namespace link)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.service_support import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "emopres-test-key",
    "AWS_SECRET_ACCESS_KEY": "emopres-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer:
    """`python -m moto.server` on host:port, its output in `log`."""

    def __init__(self, log: Path, host: str = "127.0.0.1", port: int | None = None, prefix: list[str] = ()) -> None:
        self.host, self.port, self.log = host, port or free_port(), log
        self.url = f"http://{host}:{self.port}"
        self.command = [*prefix, sys.executable, "-m", "moto.server", "-H", host, "-p", str(self.port)]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> MotoServer:
        with open(self.log, "ab") as handle:
            self.process = subprocess.Popen(
                self.command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().list_buckets()
                return self
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    output = self.log.read_text(errors="replace")
                    raise AssertionError(f"moto server did not start:\n{output}") from None
                time.sleep(0.2)

    def client(self):
        import boto3
        import botocore.config

        return boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=self.url, config=botocore.config.Config(retries={"max_attempts": 1}))

    def new_bucket(self) -> str:
        name = f"emopres-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def s3_settings(bucket: str, endpoint: str, prefix: str = "") -> dict:
    """The settings of the s3 store on this bucket (credentials: CREDENTIALS, from the environment)."""
    return {"blob_store": "s3", "s3_bucket": bucket, "s3_endpoint_url": endpoint, "s3_prefix": prefix}
