"""The faults that tests/robustness/test_faults.py injects: a feature model that crashes on one utterance length,
a PostgreSQL connection the test can cut, a private Redis it can kill, a worker process carrying the model fault."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from tests.service_support import REPO, ServiceProcess, free_port

FAULT_SECONDS = 1.337  # the injected model fault hits utterances of exactly this length (at 16 kHz)

FAULT_INJECTION = f'''
"""Imported by the test's worker before Celery starts (the pool processes inherit it)."""
import models.lite.profile

_real = models.lite.profile.LiteProfile.utterance_features


def utterance_features(self, waves):
    if any(len(w) == round({FAULT_SECONDS} * 16000) for w in waves):
        raise RuntimeError("injected model fault: the feature model crashed on this utterance")
    return _real(self, waves)


models.lite.profile.LiteProfile.utterance_features = utterance_features
'''


class PostgresProxy:
    """A TCP proxy in threads: 127.0.0.1:<port> -> 127.0.0.1:5432 (or `listen` -> `upstream`: any TCP service),
    which the test can cut and restore.

    Cut: every open connection is reset and new ones are closed on accept, as when the database
    server goes away; restore: connections pass again.
    """

    def __init__(
        self, upstream: tuple[str, int] = ("127.0.0.1", 5432), listen: tuple[str, int] = ("127.0.0.1", 0)
    ) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(listen)
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.closed = False
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="pg-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                self._reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                self._reset(client)
                continue
            with self._lock:
                self._sockets |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                self._reset(sock)

    def _reset(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST, not FIN
            sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv (close alone would not)
        except OSError:
            pass
        sock.close()

    def cut(self) -> None:
        self.up = False
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._reset(sock)

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.closed = True
        self.cut()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.listener.close()


class PrivateRedis:
    """A redis-server of the test's own (no persistence): killing it loses every queued message."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.root = root
        self.password = f"redis-pw-{uuid.uuid4().hex}"  # a secret that must never reach a log
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        log = open(self.root / "redis.log", "ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--requirepass",
                self.password,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                    reply = b""
                    while len(reply) < 12 and (data := sock.recv(64)):
                        reply += data
                    if reply == b"+OK\r\n+PONG\r\n":
                        return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("private redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


class InjectedWorker(ServiceProcess):
    """`emopres worker` with the fault injection imported first."""

    def __init__(self, env: dict, root: Path) -> None:
        super().__init__(
            ["worker"], {**env, "PYTHONPATH": os.pathsep.join([str(root / "inject"), str(REPO)])}, root / "worker.log"
        )

    def start(self) -> InjectedWorker:
        handle = open(self.log, "ab")
        code = "import emopres_fault_injection, sys; from cli.main import main; sys.exit(main(['worker']))"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        handle.close()
        return self
