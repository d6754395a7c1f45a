"""The webhook dispatcher: a thread of the API process that delivers finished jobs' callbacks.

Every `poll` seconds it looks in the database for callbacks whose job has finished and whose next
attempt is due, takes a lease on each (an UPDATE that only one process wins, so several API
processes never deliver one twice at once), and POSTs the signed job summary from a small thread
pool (a receiver that never answers holds one slot for the timeout, not the others). Outcome of an
attempt: a 2xx is delivered; anything else (an error status, a timeout, a refused connection) is
retried after backoff * 2**(attempt - 1) seconds, until max_attempts, then failed. Every attempt is
a webhook_deliveries row. Redirects are not followed (they could lead off the allow-list), and the
allow-list is checked again before each attempt (the operator may have narrowed it).
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from sqlalchemy import and_, or_, select, update

from app import jobs as crud
from core.db import Job, Webhook, WebhookDelivery, dumps, utcnow
from app.webhooks.callbacks import allow_list, allowed, secret_for
from emopres_client.webhooks import DELIVERY_HEADER, EVENT_HEADER, sign

log = logging.getLogger("emopres.webhooks")
EVENT = "job.finished"
USER_AGENT = "emopres-webhooks"
MAX_ERROR_CHARS = 500


def summary(session, job: Job, public_url: str | None) -> dict:
    """The job summary a webhook carries: id, name, status, metadata, progress, headline metrics with CIs, links."""
    view = crud.job_view(session, job, detail=False)
    if public_url:
        view["links"] = {k: public_url.rstrip("/") + v for k, v in view["links"].items()}
    return view


class Dispatcher:
    def __init__(self, settings, sessions, *, client: httpx.Client | None = None) -> None:
        self.settings, self.sessions = settings, sessions
        self._client = client or httpx.Client(timeout=httpx.Timeout(settings.webhook_timeout_seconds),
                                              follow_redirects=False, headers={"User-Agent": USER_AGENT})
        self._pool = ThreadPoolExecutor(max_workers=settings.webhook_concurrency, thread_name_prefix="emopres-webhook")
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emopres-webhooks", daemon=True)

    def start(self) -> "Dispatcher":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)  # an unfinished attempt's lease runs out: retried
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.dispatch_due()
            except Exception as error:  # the database away for a moment: try again next round
                log.warning("webhook dispatcher: %s: %s", type(error).__name__, str(error).splitlines()[0][:200])
            self._stop.wait(self.settings.webhook_poll_seconds)

    # ------------------------------------------------------------------ one round

    def dispatch_due(self, *, wait: bool = False) -> int:
        """Claim the due callbacks that a free slot can take and deliver them; returns how many were claimed."""
        with self._lock:
            free = self.settings.webhook_concurrency - len(self._busy)
        claimed = [job_id for job_id in self._due(limit=max(0, free)) if self._claim(job_id)]
        futures = []
        for job_id in claimed:
            with self._lock:
                self._busy.add(job_id)
            futures.append(self._pool.submit(self._deliver_and_release, job_id))
        if wait:
            for future in futures:
                future.result()
        return len(claimed)

    def _due(self, limit: int) -> list[str]:
        if limit <= 0:
            return []
        now = utcnow()
        with self.sessions() as session:
            return list(session.scalars(
                select(Webhook.job_id).join(Job, Job.id == Webhook.job_id)
                .where(Webhook.state == "waiting", Job.status.in_(crud.FINISHED),
                       or_(Webhook.next_attempt_at.is_(None), Webhook.next_attempt_at <= now),
                       or_(Webhook.lease_until.is_(None), Webhook.lease_until < now),
                       Webhook.job_id.not_in(list(self._busy) or [""]))
                .order_by(Job.finished_at).limit(limit)))

    def _claim(self, job_id: str) -> bool:
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.webhook_timeout_seconds + 60)
        with self.sessions() as session:
            won = session.execute(
                update(Webhook).where(Webhook.job_id == job_id, Webhook.state == "waiting",
                                      or_(Webhook.lease_until.is_(None), Webhook.lease_until < now))
                .values(lease_until=lease)).rowcount
            session.commit()
        return bool(won)

    def _deliver_and_release(self, job_id: str) -> None:
        try:
            self.deliver(job_id)
        except Exception:  # recorded nowhere else: the lease runs out and the attempt is made again
            log.exception("webhook of job %s", job_id)
        finally:
            with self._lock:
                self._busy.discard(job_id)

    # ------------------------------------------------------------------ one attempt

    def deliver(self, job_id: str) -> str:
        """Make one attempt at the job's callback (its lease held); returns the outcome."""
        settings = self.settings
        with self.sessions() as session:
            hook, job = session.get(Webhook, job_id), session.get(Job, job_id)
            if hook is None or job is None or hook.state != "waiting":
                return "gone"
            payload = {"event": EVENT, "delivery_id": hook.delivery_id,
                       "job": summary(session, job, settings.public_url)}
            secret = secret_for(session, hook.token_name, settings.webhook_secret)
            url, attempt = hook.url, hook.attempts + 1
            session.commit()
        body = dumps(payload).encode()
        started, status, error = utcnow(), None, None
        clock = time.monotonic()
        if secret is None:
            error = "no webhook secret to sign with (the token's secret was removed)"
        elif not allowed(url, allow_list(settings.webhook_allowed_hosts)):
            error = "the callback host is no longer on the service's allow-list"
        else:
            headers = {"Content-Type": "application/json", EVENT_HEADER: EVENT, DELIVERY_HEADER: hook.delivery_id,
                       **sign(secret, body)}
            try:
                response = self._client.post(url, content=body, headers=headers)
                status = response.status_code
                if not 200 <= status < 300:
                    error = f"HTTP {status}" + (f": {response.text[:200]}" if response.text else "")
            except httpx.TimeoutException:
                error = f"no answer within {settings.webhook_timeout_seconds:g} s"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        final = error is None or error.startswith(("no webhook secret", "the callback host"))
        outcome = "delivered" if error is None else ("failed" if final or attempt >= settings.webhook_max_attempts
                                                     else "retry")
        self._record(job_id, attempt, url, started, clock, status, error, outcome)
        log.info("webhook of job %s, attempt %d: %s%s", job_id, attempt, outcome, f" ({error})" if error else "")
        return outcome

    def _record(self, job_id, attempt, url, started, clock, status, error, outcome) -> None:
        now = utcnow()
        values = {"attempts": attempt, "lease_until": None,
                  "state": {"delivered": "delivered", "failed": "failed"}.get(outcome, "waiting"),
                  "next_attempt_at": (now + timedelta(seconds=self.settings.webhook_backoff_seconds * 2 ** (attempt - 1))
                                      if outcome == "retry" else None)}
        with self.sessions() as session:
            session.add(WebhookDelivery(job_id=job_id, attempt=attempt, url=url, started_at=started,
                                        duration_ms=int((time.monotonic() - clock) * 1000), status_code=status,
                                        error=error[:MAX_ERROR_CHARS] if error else None, outcome=outcome))
            session.execute(update(Webhook).where(and_(Webhook.job_id == job_id, Webhook.state == "waiting"))
                            .values(**values))
            session.commit()

