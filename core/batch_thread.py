"""A daemon thread that hands everything queued meanwhile to one call: the group commit of new jobs
(app.jobs.JobWriter) and the batched enqueue of their chunks (worker.queue.tasks.Enqueuer)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
_STOP = object()
log = logging.getLogger("emopres.batch_thread")


class BatchThread(Generic[T]):
    """``handle(items)`` on one thread, with every item put since the last call (at most ``max_batch``).

    With ``settle`` (quiet, longest) seconds, a batch also waits for more items while they keep coming: until none
    has come for ``quiet`` seconds, or ``longest`` seconds after its first item (work that can wait leaves the
    CPU to a burst of requests, and is done in one batch after it).
    ``handle`` deals with its own errors; one escaping it (a bug) is logged with its traceback, the batch is
    dropped and the thread goes on with the next one."""

    def __init__(
        self, name: str, handle: Callable[[list[T]], None], max_batch: int, settle: tuple[float, float] = (0.0, 0.0)
    ) -> None:
        self._handle, self._max_batch, self._settle = handle, max_batch, settle
        self._pending: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> BatchThread[T]:
        self._thread.start()
        return self

    def put(self, item: T) -> None:
        self._pending.put(item)

    def stop(self, timeout: float = 30.0) -> None:
        """Handle what was put, then end the thread."""
        self._pending.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            items = [item for item in batch if item is not _STOP]
            if items:
                try:
                    self._handle(items)
                except Exception:
                    log.exception("%s: a batch of %d items failed", self._thread.name, len(items))
            if batch[-1] is _STOP:
                return

    def _next_batch(self) -> list:
        batch = [self._pending.get()]
        quiet, longest = self._settle
        deadline = time.monotonic() + longest
        while len(batch) < self._max_batch and batch[-1] is not _STOP:
            wait = min(quiet, deadline - time.monotonic())
            try:
                batch.append(self._pending.get(timeout=wait) if wait > 0 else self._pending.get_nowait())
            except queue.Empty:
                break
        return batch
