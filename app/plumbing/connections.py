"""Connection limits and timeouts of `emopres serve` (uvicorn, h11).

uvicorn alone keeps a connection that never finishes its request headers for ever, and accepts
connections until the process runs out of file handles (21,000 idle connections: `Errno 24` in a
loop, /healthz timing out). The protocol here adds, per connection:

* a connection limit: one over `max_connections` is reset at once (its file handle freed);
* a header deadline: the request line and headers must arrive within `header_timeout_seconds`
  of the connection (or of the first byte after a keep-alive pause), however slowly they trickle;
* a body idle timeout: a request body that stalls for `body_timeout_seconds` ends the connection
  (the route sees a client disconnect).

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

CONNECTION_EVENTS: Counter[str] = Counter()  # refused_over_limit, header_timeout, body_timeout
FILE_HANDLE_RESERVE = 256  # for the database pool, blob files, logs and the models


class LimitedH11Protocol(H11Protocol):
    """uvicorn builds one per connection; the limits are the class's (configure(), or the environment's settings
    in a process of `serve --workers N`)."""

    max_connections: int | None = None
    header_timeout = 10.0
    body_timeout = 30.0

    @classmethod
    def configure(cls, settings) -> None:
        cls.max_connections = connection_limit(settings.max_connections)
        cls.header_timeout, cls.body_timeout = settings.header_timeout_seconds, settings.body_timeout_seconds

    def __init__(self, *args, **kwargs) -> None:
        if LimitedH11Protocol.max_connections is None:
            from core.settings import get_settings

            LimitedH11Protocol.configure(get_settings())
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        if len(self.connections) >= self.max_connections:
            CONNECTION_EVENTS["refused_over_limit"] += 1
            transport.abort()  # a reset: nothing is read, the handle is free now
            return
        super().connection_made(transport)
        self._arm(self.header_timeout, "header_timeout")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm(self.body_timeout, "body_timeout")  # idle time between pieces of the body
        elif state is h11.IDLE:
            if self._deadline is None:  # a new request after a keep-alive pause: its headers have a deadline
                self._arm(self.header_timeout, "header_timeout")
        else:
            self._disarm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        if self.transport is not None:  # refused connections never became one of ours
            super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._disarm()  # uvicorn's keep-alive timeout takes over
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
    return {"http": "app.plumbing.connections:LimitedH11Protocol", "timeout_keep_alive": settings.keep_alive_seconds,
            "timeout_graceful_shutdown": 30, "h11_max_incomplete_event_size": 16 * 1024}
