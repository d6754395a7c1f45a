"""A real HTTP receiver on loopback for the webhook tests: records each request; answers by a plan."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """``plan``: the status of each request in turn ("hang" = never answer within the test; a callable writes
    the whole answer itself, given the request handler), then ``then``."""

    def __init__(self, plan: list | None = None, then: int = 200, hang_seconds: float = 30.0) -> None:
        self.plan, self.then, self.hang_seconds = list(plan or []), then, hang_seconds
        self.requests: list[dict] = []
        self.hanging = 0  # "hang" requests held unanswered right now
        self._lock = threading.Lock()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body, "at": time.monotonic()}
                    )
                    answer = receiver.plan.pop(0) if receiver.plan else receiver.then
                if answer == "hang":
                    with receiver._lock:
                        receiver.hanging += 1
                    receiver._release.wait(receiver.hang_seconds)
                    with receiver._lock:
                        receiver.hanging -= 1
                    return
                if callable(answer):
                    try:
                        answer(self)
                    except OSError:  # the client hung up: what the answer was testing
                        pass
                    return
                self.send_response(answer)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, n: int, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.requests)} of {n} webhook requests after {timeout} s")
            time.sleep(0.05)
        return self.requests
