"""Readiness (``GET /readyz``): the database at the code's schema revision, the broker, the models, the audio
store (s3: its bucket answers, with these credentials).

The probe needs no token, so any client may send it at any rate: one check runs at a time, in a thread of its
own, and its answer serves every probe for a second or two (ReadinessProbe). A request thread never waits on the
broker: a check that has not answered in time gives a 503 that says so, and the next probe asks again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from app.services import Services
from core.db import head_revision


def models_check(services: Services) -> dict:
    """Embedded: are the models loaded here? Celery: does a worker of this profile answer?"""
    settings = services.settings
    if services.embedded is not None:
        ctx = services.embedded.ctx
        if ctx.models_loaded:
            return {"ok": True, "profile": settings.profile, "loaded": True}
        if ctx._evaluator_error:
            return {"ok": False, "profile": settings.profile, "error": ctx._evaluator_error}
        return {"ok": False, "profile": settings.profile, "error": "models are loading"}
    workers = services.queue.workers(settings.profile)
    if not workers:
        return {
            "ok": False,
            "profile": settings.profile,
            "error": f"no {settings.profile} worker answered (start `emopres worker`); jobs wait in the queue",
        }
    return {"ok": True, "profile": settings.profile, "workers": workers}


def readiness(services: Services) -> dict:
    checks = {}
    try:
        with services.sessions() as session:
            session.execute(text("SELECT 1"))
            revision = MigrationContext.configure(session.connection()).get_current_revision()
        expected = head_revision()
        checks["database"] = {
            "ok": revision == expected,
            "revision": revision,
            **(
                {}
                if revision == expected
                else {"error": f"schema at {revision}, code expects {expected}: run `emopres db upgrade`"}
            ),
        }
    except Exception as error:
        checks["database"] = {"ok": False, "error": _error_line(error)}
    try:
        checks["blob_store"] = services.blobs.check()
    except Exception as error:
        checks["blob_store"] = {"ok": False, "kind": services.blobs.kind, "error": str(error)[:300]}
    try:
        checks["broker"] = {"ok": bool(services.queue.ping()), "kind": "in-process" if services.embedded else "celery"}
    except Exception as error:
        checks["broker"] = {"ok": False, "error": _error_line(error)}
    try:
        checks["models"] = (
            models_check(services)
            if checks["broker"]["ok"]
            else {"ok": False, "error": "unknown: the broker is unreachable"}
        )
    except Exception as error:
        checks["models"] = {"ok": False, "error": _error_line(error)}
    return checks


def _error_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"


class ReadinessProbe:
    """One readiness check at a time, its answer cached for ``cache_seconds``; a caller waits for a running check
    at most ``timeout_seconds`` (``answer`` in a thread, ``answer_async`` in the event loop, holding no thread)."""

    def __init__(self, check: Callable[[], dict], *, cache_seconds: float, timeout_seconds: float) -> None:
        self._check, self._cache_seconds, self._timeout_seconds = check, cache_seconds, timeout_seconds
        self._lock = threading.Lock()
        self._answer: dict | None = None
        self._answered_at = float("-inf")
        self._running: Future | None = None

    def answer(self) -> dict:
        state = self._fresh_or_running()
        if isinstance(state, dict):
            return state
        try:
            return state.result(self._timeout_seconds)
        except TimeoutError:
            return self._not_answered()

    async def answer_async(self) -> dict:
        state = self._fresh_or_running()
        if isinstance(state, dict):
            return state
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(state)), self._timeout_seconds)
        except TimeoutError:
            return self._not_answered()

    def _fresh_or_running(self) -> dict | Future:
        with self._lock:
            if self._answer is not None and time.monotonic() - self._answered_at < self._cache_seconds:
                return self._answer
            if self._running is None:
                self._running = Future()
                threading.Thread(target=self._run, args=(self._running,), name="emopres-readiness", daemon=True).start()
            return self._running

    def _not_answered(self) -> dict:
        return {
            "probe": {
                "ok": False,
                "error": f"the readiness check has not answered in {self._timeout_seconds:g} s (it goes on; ask again)",
            }
        }

    def _run(self, running: Future) -> None:
        try:
            answer = self._check()
        except Exception as error:  # a check that raises is an answer too: not ready, and why
            answer = {"probe": {"ok": False, "error": _error_line(error)}}
        with self._lock:
            self._answer, self._answered_at, self._running = answer, time.monotonic(), None
        running.set_result(answer)
