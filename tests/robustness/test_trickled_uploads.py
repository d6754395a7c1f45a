"""Trickled uploads cannot hold the service (issue 26, item 8), with a real `emopres serve` on loopback.

Uploads sending a byte every half second never hit the per-read idle timeout: they filled the
connection limit and every probe failed until they ended. Now probes have connections of their own
(probe_connections beyond max_connections, for /healthz and /readyz only) and a request body must
arrive whole within body_deadline_seconds. No wall-clock bound is asserted: what answers and what is cut.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from tests.service_support import ServiceProcess, free_port, service_env, wait_http

LIMIT = 5
DEADLINE = 4.0


@pytest.fixture
def server(tmp_path, random_lite_head):
    port = free_port()
    env = service_env(
        data_dir=tmp_path / "data",
        head=random_lite_head,
        auth_disabled=1,
        max_connections=LIMIT,
        header_timeout_seconds=10,
        body_timeout_seconds=3,
        body_deadline_seconds=DEADLINE,
    )
    process = ServiceProcess(["serve", "--port", str(port)], env, tmp_path / "serve.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        for _ in range(120):  # the models loaded: /readyz says 200 when it is not starved of connections
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200:
                break
            time.sleep(0.5)
        process.port = port
        yield process
    finally:
        process.stop()


def upload_head(length: int) -> bytes:
    return (
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
        f'Content-Length: {length}\r\n\r\n--xyz\r\nContent-Disposition: form-data; name="manifest"; '
        f'filename="m.csv"\r\n\r\npair_id,source,target\r\n'
    ).encode()


def trickle(port: int, outcome: dict, stop: threading.Event) -> None:
    """One upload, a byte every 0.5 s (under the idle timeout), until the server cuts it or 40 bytes are sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(0.5)
    try:
        sock.sendall(upload_head(10_000))
        for _ in range(40):
            if stop.is_set():
                break
            try:
                sock.sendall(b"a")
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                outcome["cut"] = "reset"
                return
            outcome["cut"] = answer.split(b"\r\n", 1)[0].decode() if answer else "closed"
            return
        outcome["cut"] = None
    finally:
        sock.close()


def test_probes_answer_while_trickled_uploads_fill_the_limit_and_the_uploads_are_cut(server):
    outcomes = [{} for _ in range(LIMIT)]
    stop = threading.Event()
    threads = [threading.Thread(target=trickle, args=(server.port, outcome, stop)) for outcome in outcomes]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)  # every upload connected and trickling: the limit is full
        for probe in ("/healthz", "/readyz"):
            response = httpx.get(f"http://127.0.0.1:{server.port}{probe}", timeout=10)
            assert response.status_code == 200, (probe, response.text, outcomes)
        # a non-probe request over the limit is still refused (reset, or closed without an answer)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.port}/v1/jobs", timeout=10)
    finally:
        for thread in threads:
            thread.join(timeout=60)
        stop.set()
    assert [outcome.get("cut") for outcome in outcomes] == ["HTTP/1.1 408 Request Timeout"] * LIMIT
    assert httpx.get(f"http://127.0.0.1:{server.port}/v1/jobs", timeout=10).status_code == 200
