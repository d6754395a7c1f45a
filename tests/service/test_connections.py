"""Connection limits and timeouts of `emopres serve` (issue 16, point 7), with real sockets on loopback.

A real `emopres serve` with small limits (20 connections, 1 s header and body timeouts): idle
connections beyond the limit are reset and those within it closed at the header deadline, so
/healthz answers again within seconds; a client trickling its headers is cut at the deadline
however slowly it sends; a stalled or abandoned upload is counted as a client disconnect in
/metrics, never as a 500. Every loop here is bounded and ends by itself.
"""
from __future__ import annotations

import re
import socket
import time

import httpx
import pytest

from tests.service_support import ServiceProcess, free_port, service_env, wait_http

LIMIT = 20
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_lite_head):
    root = tmp_path_factory.mktemp("connections")
    port = free_port()
    env = service_env(data_dir=root / "data", head=random_lite_head, auth_disabled=1, metrics_enabled=1,
                      max_connections=LIMIT, header_timeout_seconds=TIMEOUT, body_timeout_seconds=TIMEOUT,
                      keep_alive_seconds=1)
    process = ServiceProcess(["serve", "--port", str(port)], env, root / "serve.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        process.port = port
        yield process
    finally:
        process.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server has closed or reset the connection (waits up to the socket's timeout)."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def metric(port: int, name: str, **labels) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} ([0-9.e+]+)", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def healthz(port: int) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code


def test_idle_connections_are_limited_and_closed(server):
    refused_before = metric(server.port, "emopres_connections_closed_total", reason="refused_over_limit")
    sockets = [connect(server.port) for _ in range(2 * LIMIT)]  # half of them over the limit
    try:
        started = time.monotonic()
        assert all(closed_by_server(sock) for sock in sockets)  # reset at once, or closed at the header deadline
        assert time.monotonic() - started < TIMEOUT + 4
    finally:
        for sock in sockets:
            sock.close()
    assert healthz(server.port) == 200
    # the first probe_connections (8) over the limit are kept for probes: closed at the header deadline instead
    assert metric(server.port, "emopres_connections_closed_total", reason="refused_over_limit") - refused_before >= LIMIT - 8
    assert metric(server.port, "emopres_connections_closed_total", reason="header_timeout") >= 1


def test_headers_trickled_byte_by_byte_are_cut_at_the_deadline(server):
    sock = connect(server.port)
    sock.settimeout(0.25)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    started, cut = time.monotonic(), False
    try:
        for byte in request:  # one byte every 0.25 s: 50 s if nobody cuts it
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            if closed_by_server(sock):
                cut = True
                break
    finally:
        sock.close()
    assert cut and time.monotonic() - started < TIMEOUT + 3
    assert healthz(server.port) == 200


def upload_head(length: int) -> bytes:
    return (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
            f"Content-Length: {length}\r\n\r\n--xyz\r\nContent-Disposition: form-data; name=\"manifest\"; "
            f"filename=\"m.csv\"\r\n\r\npair_id,source,target\r\n").encode()


def test_stalled_and_abandoned_uploads_are_disconnects_not_500s(server):
    def counts():
        return (metric(server.port, "emopres_client_disconnects_total", route="/v1/jobs"),
                metric(server.port, "emopres_http_requests_total", route="/v1/jobs", status="500"))

    disconnects, errors = counts()
    stalled = connect(server.port)
    stalled.sendall(upload_head(100_000))  # then nothing: the body stalls
    try:
        started = time.monotonic()
        assert closed_by_server(stalled) and time.monotonic() - started < TIMEOUT + 4
    finally:
        stalled.close()
    abandoned = connect(server.port)
    abandoned.sendall(upload_head(100_000))
    time.sleep(0.3)
    abandoned.close()  # the client gives up mid-upload
    deadline = time.monotonic() + 10
    while counts()[0] < disconnects + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert counts() == (disconnects + 2, errors)
    assert "Traceback" not in server.tail(200)
    assert healthz(server.port) == 200
