"""The embedded queue of `emopres serve` without a broker: the same task code, in this process.

One evaluation thread takes messages from an in-memory queue. The database stays the source of
truth: at start every unfinished chunk is queued again (this process is the only worker), so a
restarted server finishes what it had accepted.
"""

from __future__ import annotations

import logging
import os
import queue as queue_module
import threading

from worker.queue.reconciler import Reconciler
from worker.queue.tasks import TaskQueue, WorkerContext, finalize_job, run_chunk

log = logging.getLogger("emopres.worker")
_STOP = object()


def _lower_priority(nice: int) -> None:
    """Lower this thread's CPU priority (Linux: a thread has its own nice value; the threads it starts inherit
    it), so that the API in the same process answers promptly while evaluation takes what is left."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as error:  # not allowed here: evaluation simply keeps the normal priority
        log.info("cannot lower the evaluation thread's priority: %s", error)


class EmbeddedQueue(TaskQueue):
    def __init__(self, settings, *, engine=None) -> None:
        self.ctx = WorkerContext(settings, queue=self, engine=engine, evaluator_jobs=settings.embedded_jobs)
        self._queue: queue_module.Queue = queue_module.Queue()
        self._thread = threading.Thread(target=self._run, name="emopres-embedded-worker", daemon=True)
        self._reconciler = Reconciler(self.ctx, settings.reconcile_seconds, restart_first=True)

    # TaskQueue
    def send_chunk(self, job_id: str, idx: int) -> None:
        self._queue.put(("chunk", job_id, idx))

    def send_finalize(self, job_id: str) -> None:
        self._queue.put(("finalize", job_id))

    def ping(self) -> bool:
        return self._thread.is_alive()

    def start(self, preload: bool = True) -> EmbeddedQueue:
        if preload:
            self._queue.put(("preload",))
        self._thread.start()
        self._reconciler.start()  # first round: everything unfinished goes back in the queue
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if not self._thread.is_alive():
            self.ctx.close()
            return
        self._reconciler.stop()
        self._queue.put((_STOP,))
        self._thread.join(timeout=timeout)
        if not self._thread.is_alive():
            self.ctx.close()

    def _run(self) -> None:
        _lower_priority(self.ctx.settings.embedded_nice)
        while True:
            message = self._queue.get()
            kind = message[0]
            if kind is _STOP:
                return
            try:
                if kind == "preload":
                    self.ctx.evaluator()
                elif kind == "chunk":
                    run_chunk(self.ctx, message[1], message[2])
                elif kind == "finalize":
                    finalize_job(self.ctx, message[1])
            except Exception as error:  # logged; the chunk was released and the reconciler sends it again
                log.exception("embedded worker: %s: %s", kind, error)
