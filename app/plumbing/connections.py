"""Connection limits and timeouts of `emopres serve` (uvicorn, h11).

uvicorn alone keeps a connection that never finishes its request headers for ever, and accepts
connections until the process runs out of file handles (21,000 idle connections: `Errno 24` in a
loop, /healthz timing out). The protocol here adds, per connection:

* a connection limit: one over `max_connections` is reset at once (its file handle freed);
* a header deadline: the request line and headers must arrive within `header_timeout_seconds`
  of the connection (or of the first byte after a keep-alive pause), however slowly they trickle;
* a body idle timeout: a request body that stalls for `body_timeout_seconds` ends the connection
  (the route sees a client disconnect);
* a whole-body deadline: a request body must arrive whole within `body_deadline_seconds` of its
  start, however steadily it trickles (a byte every few seconds never stalls): the client gets a
  408 if no answer was started, and the connection is closed;
* probe connections: `probe_connections` more connections than `max_connections` are accepted, for
  /healthz and /readyz only (a request for any other path on one is reset once its headers are
  read), so probes answer while uploads hold every ordinary connection.

Between requests uvicorn's own keep-alive timeout applies. Each event is counted (CONNECTION_EVENTS,
shown in /metrics).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("emopres.api")

CONNECTION_EVENTS: Counter[str] = Counter()  # refused_over_limit, header_timeout, body_timeout, body_deadline
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: 113\r\n\r\n"
    b'{"error":{"code":"request_timeout","message":"the request body did not arrive within the deadline",'
    b'"details":{}}}'
)

FILE_HANDLE_RESERVE = 256  # for the database pool, blob files, logs and the models


class LimitedH11Protocol(H11Protocol):
    """uvicorn builds one per connection; the limits are the class's (configure(), or the environment's settings
    in a process of `serve --workers N`)."""

    max_connections: int | None = None
    header_timeout = 10.0
    body_timeout = 30.0
    body_deadline = 900.0
    probe_connections = 8

    @classmethod
    def configure(cls, settings) -> None:
        cls.probe_connections = settings.probe_connections
        allowed = connection_limit(settings.max_connections + cls.probe_connections)
        cls.max_connections = max(1, allowed - cls.probe_connections)
        cls.header_timeout, cls.body_timeout = settings.header_timeout_seconds, settings.body_timeout_seconds
        cls.body_deadline = settings.body_deadline_seconds

    def __init__(self, *args, **kwargs) -> None:
        if LimitedH11Protocol.max_connections is None:
            from core.settings import get_settings

            LimitedH11Protocol.configure(get_settings())
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        self._probe_only = False
        self._checked_scope: dict | None = None

    def connection_made(self, transport) -> None:
        if len(self.connections) >= self.max_connections + self.probe_connections:
            CONNECTION_EVENTS["refused_over_limit"] += 1
            transport.abort()  # a reset: nothing is read, the handle is free now
            return
        self._probe_only = len(self.connections) >= self.max_connections  # over the limit: probes only
        super().connection_made(transport)
        self._arm(self.header_timeout, "header_timeout")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._probe_only and self._refuse_non_probe():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm(self.body_timeout, "body_timeout")  # idle time between pieces of the body
            if self._body_deadline is None:  # the whole body's deadline, from its start
                self._body_deadline = self.loop.call_later(self.body_deadline, self._expire_body)
            return
        self._disarm_body()
        if state is h11.IDLE:
            if self._deadline is None:  # a new request after a keep-alive pause: its headers have a deadline
                self._arm(self.header_timeout, "header_timeout")
        else:
            self._disarm()

    def _refuse_non_probe(self) -> bool:
        """On a connection over max_connections: reset it as soon as a request for another path than a probe's has
        its headers (its route task, scheduled but not started, then sees a disconnect)."""
        scope = getattr(self, "scope", None)
        if scope is None or scope is self._checked_scope:
            return False
        self._checked_scope = scope
        if scope.get("path") in PROBE_PATHS:
            return False
        CONNECTION_EVENTS["refused_over_limit"] += 1
        self._disarm()
        self._disarm_body()
        self.transport.abort()
        return True

    def _expire_body(self) -> None:
        self._body_deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        CONNECTION_EVENTS["body_deadline"] += 1
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_started:
            self.transport.write(REQUEST_TIMEOUT)
        if cycle is not None:
            cycle.disconnected = True  # the route reads a disconnect and its answer, if any, is not written
        self.transport.close()  # connection_lost tells a running route that the client is gone

    def _disarm_body(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def connection_lost(self, exc) -> None:
        self._disarm()
        self._disarm_body()
        if self.transport is not None:  # refused connections never became one of ours
            super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._disarm()  # uvicorn's keep-alive timeout takes over
        self._disarm_body()
        super().on_response_complete()

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, reason: str) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        CONNECTION_EVENTS[reason] += 1
        self.transport.close()  # connection_lost tells a running route that the client is gone


def connection_limit(wanted: int) -> int:
    """`wanted`, raising the soft file-handle limit towards the hard one when it is too low for it; less (with a
    warning) when even the hard limit is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + FILE_HANDLE_RESERVE
    if needed > soft:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if needed > soft:
        limit = max(soft - FILE_HANDLE_RESERVE, 16)
        log.warning("file-handle limit %d allows %d connections, not the %d asked for", soft, limit, wanted)
        return limit
    return wanted


def uvicorn_options(settings) -> dict:
    """Timeouts and limits for uvicorn.run (one place for `emopres serve` and the tests)."""
    LimitedH11Protocol.configure(settings)
    return {
        "http": "app.plumbing.connections:LimitedH11Protocol",
        "timeout_keep_alive": settings.keep_alive_seconds,
        "timeout_graceful_shutdown": 30,
        "h11_max_incomplete_event_size": 16 * 1024,
    }
