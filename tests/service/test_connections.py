"""Connection limits and timeouts of `emopres serve` (issue 16, point 7), with real sockets on loopback.

A real `emopres serve` with small limits (20 connections, 1 s header and body timeouts): idle
connections beyond the limit are refused at once and those within it closed at the header
deadline, and /healthz answers again; a client trickling its headers is cut at the deadline
however slowly it sends; a stalled or abandoned upload is counted as a client disconnect in
/metrics, never as a 500. What ended each connection is read from the server's counters in
/metrics, not from how long it took; every wait is bounded (GUARD, far past the deadlines) so
that a server that never closes fails the test instead of hanging it.
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
    env = service_env(
        data_dir=root / "data",
        head=random_lite_head,
        auth_disabled=1,
        metrics_enabled=1,
        max_connections=LIMIT,
        header_timeout_seconds=TIMEOUT,
        body_timeout_seconds=TIMEOUT,
        keep_alive_seconds=1,
    )
    process = ServiceProcess(["serve", "--port", str(port)], env, root / "serve.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        process.port = port
        yield process
    finally:
        process.stop()


GUARD = 30 * TIMEOUT  # far past every deadline the server sets: reached only by a server that never closes


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def how_closed(sock: socket.socket, deadline: float) -> str:
    """ "reset" or "closed" (FIN) by the server, "answered" if it sent data, "open" if it did neither by `deadline`."""
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        return "closed" if sock.recv(1024) == b"" else "answered"
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "open"


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server has closed or reset the connection (waits up to the socket's timeout)."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def metric(port: int, name: str, **labels) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} ([0-9.e+]+)", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def closes(port: int) -> dict[str, float]:
    return {
        reason: metric(port, "emopres_connections_closed_total", reason=reason)
        for reason in ("refused_over_limit", "header_timeout", "body_timeout")
    }


def healthz(port: int) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code


def test_idle_connections_are_limited_and_closed(server):
    before = closes(server.port)
    sockets = [connect(server.port) for _ in range(2 * LIMIT)]  # half of them over the limit
    try:
        deadline = time.monotonic() + GUARD
        outcomes = [how_closed(sock, deadline) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    after = closes(server.port)
    refused = after["refused_over_limit"] - before["refused_over_limit"]
    timed_out = after["header_timeout"] - before["header_timeout"]
    # each one ended by the server: over the limit refused at once, within it closed at the header deadline
    assert set(outcomes) <= {"reset", "closed"}, outcomes
    # the first probe_connections (8) over the limit are kept for probes: closed at the header deadline instead
    assert refused >= LIMIT - 8 and refused + timed_out == 2 * LIMIT, (refused, timed_out)
    assert healthz(server.port) == 200


def test_headers_trickled_byte_by_byte_are_cut_at_the_deadline(server):
    before = closes(server.port)
    sock = connect(server.port)
    sock.settimeout(0.25)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    cut = False
    try:
        for byte in request:  # one byte every 0.25 s: 50 s if nobody cuts it (the headers never end)
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
    # cut before the request was sent, by the header deadline (a deadline renewed by each byte never cuts it)
    assert cut
    after = closes(server.port)
    assert after["header_timeout"] - before["header_timeout"] == 1, (before, after)
    assert healthz(server.port) == 200


def upload_head(length: int) -> bytes:
    return (
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
        f'Content-Length: {length}\r\n\r\n--xyz\r\nContent-Disposition: form-data; name="manifest"; '
        f'filename="m.csv"\r\n\r\npair_id,source,target\r\n'
    ).encode()


def test_stalled_and_abandoned_uploads_are_disconnects_not_500s(server):
    def counts():
        return (
            metric(server.port, "emopres_client_disconnects_total", route="/v1/jobs"),
            metric(server.port, "emopres_http_requests_total", route="/v1/jobs", status="500"),
        )

    disconnects, errors = counts()
    body_timeouts = closes(server.port)["body_timeout"]
    stalled = connect(server.port)
    stalled.sendall(upload_head(100_000))  # then nothing: the body stalls
    try:
        assert how_closed(stalled, time.monotonic() + GUARD) in ("closed", "reset")
    finally:
        stalled.close()
    assert closes(server.port)["body_timeout"] == body_timeouts + 1  # closed by the body deadline
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
