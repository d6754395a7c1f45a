"""The webhook dispatcher: a thread of the API process that delivers finished jobs' callbacks.

Every `poll` seconds it looks in the database for callbacks whose job has finished and whose next
attempt is due, takes a lease on each (an UPDATE that only one process wins, so several API
processes never deliver one twice at once), and POSTs the signed job summary from a small thread
pool (a receiver that never answers holds one slot for the timeout, not the others). Outcome of an
attempt: a 2xx is delivered; anything else (an error status, a timeout, a refused connection) is
retried after backoff * 2**(attempt - 1) seconds, until max_attempts, then failed. Every attempt is
a webhook_deliveries row. Redirects are not followed (they could lead off the allow-list), and the
allow-list is checked again before each attempt (the operator may have narrowed it).

An attempt is bounded whatever the receiver does: the whole exchange (connect, send, answer) within
webhook_timeout_seconds (httpx's timeouts bound each read, not their sum: a timer shuts the connection at
the deadline), and of a failed answer at most webhook_answer_bytes are read, raw (Accept-Encoding:
identity, nothing decompressed), of which 200 characters are kept as the reason. Any error of the client
(a URL it refuses to send to included) is a recorded failed attempt. Due callbacks are taken fairly across
tokens (each token's oldest first, a token with attempts in flight after those without), so that one
token's failing or hanging callbacks do not hold up another's.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from sqlalchemy import and_, func, or_, select, update

from app import jobs as crud
from app.auth import Principal
from app.browser_auth import share_link_url
from app.job_views import job_view
from app.webhooks.callbacks import allow_list, allowed, parse_url, secret_for
from core.db import Job, Webhook, WebhookDelivery, dumps, utcnow
from emopres_client.webhooks import DELIVERY_HEADER, EVENT_HEADER, sign

log = logging.getLogger("emopres.webhooks")
EVENT = "job.finished"
USER_AGENT = "emopres-webhooks"
MAX_ERROR_CHARS = 500
KEPT_ANSWER_CHARS = 200


def printable(text: str) -> str:
    """Text safe to store and show: control characters (NUL included, which PostgreSQL cannot store) as spaces."""
    return "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)


def summary(session, job: Job, settings, token_name: str | None = None) -> dict:
    """The job summary a webhook carries: id, name, status, metadata, progress, headline metrics with CIs, links
    (with a share link to the report when EMOPRES_SHARE_LINKS_IN_VIEWS is on)."""
    view = job_view(session, job, detail=False)
    if settings.public_url:
        view["links"] = {k: settings.public_url.rstrip("/") + v for k, v in view["links"].items()}
    if settings.share_links_in_views and job.status == "succeeded":
        principal = Principal(job.project, token_name)
        view["links"]["share"], view["links"]["share_expires_at"] = share_link_url(session, settings, principal, job.id)
    return view


class Dispatcher:
    def __init__(self, settings, sessions, *, client: httpx.Client | None = None) -> None:
        self.settings, self.sessions = settings, sessions
        # a new connection per attempt (no keep-alive): the time box below shuts the socket it saw connect
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(settings.webhook_timeout_seconds),
            limits=httpx.Limits(max_keepalive_connections=0),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )
        self._pool = ThreadPoolExecutor(max_workers=settings.webhook_concurrency, thread_name_prefix="emopres-webhook")
        self._busy: dict[str, str | None] = {}  # job_id -> token name, of the attempts in flight
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emopres-webhooks", daemon=True)

    def start(self) -> Dispatcher:
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
            except Exception:  # the database away for a moment, or a bug: logged whole, tried again next round
                log.exception(
                    "webhook dispatcher: a round failed; trying again in %g s", self.settings.webhook_poll_seconds
                )
            self._stop.wait(self.settings.webhook_poll_seconds)

    # ------------------------------------------------------------------ one round

    def dispatch_due(self, *, wait: bool = False) -> int:
        """Claim the due callbacks that a free slot can take and deliver them; returns how many were claimed."""
        with self._lock:
            free = self.settings.webhook_concurrency - len(self._busy)
            busy = dict(self._busy)
        claimed = [(job_id, token) for job_id, token in self._due(max(0, free), busy) if self._claim(job_id)]
        futures = []
        for job_id, token in claimed:
            with self._lock:
                self._busy[job_id] = token
            futures.append(self._pool.submit(self._deliver_and_release, job_id))
        if wait:
            for future in futures:
                future.result()
        return len(claimed)

    def _due(self, limit: int, busy: dict[str, str | None]) -> list[tuple[str, str | None]]:
        """Up to `limit` due callbacks (job id, token name), fairly across tokens: each token's oldest first, and
        a token's n-th after every other token's (n - its attempts in flight)-th."""
        if limit <= 0:
            return []
        now = utcnow()
        rank = (
            func.row_number()
            .over(partition_by=Webhook.token_name, order_by=(Job.finished_at, Webhook.job_id))
            .label("rank")
        )
        due = (
            select(Webhook.job_id, Webhook.token_name, Job.finished_at, rank)
            .join(Job, Job.id == Webhook.job_id)
            .where(
                Webhook.state == "waiting",
                Job.status.in_(crud.FINISHED),
                or_(Webhook.next_attempt_at.is_(None), Webhook.next_attempt_at <= now),
                or_(Webhook.lease_until.is_(None), Webhook.lease_until < now),
                Webhook.job_id.not_in(list(busy) or [""]),
            )
        ).subquery()
        with self.sessions() as session:
            rows = session.execute(
                select(due.c.job_id, due.c.token_name, due.c.finished_at, due.c.rank).where(due.c.rank <= limit)
            ).all()
        in_flight = Counter(busy.values())
        rows.sort(
            key=lambda row: (
                in_flight[row.token_name] + row.rank,
                row.finished_at.timestamp() if row.finished_at else float("inf"),
                row.job_id,
            )
        )
        return [(row.job_id, row.token_name) for row in rows[:limit]]

    def _claim(self, job_id: str) -> bool:
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.webhook_timeout_seconds + 60)
        with self.sessions() as session:
            won = session.execute(
                update(Webhook)
                .where(
                    Webhook.job_id == job_id,
                    Webhook.state == "waiting",
                    or_(Webhook.lease_until.is_(None), Webhook.lease_until < now),
                )
                .values(lease_until=lease)
            ).rowcount
            session.commit()
        return bool(won)

    def _deliver_and_release(self, job_id: str) -> None:
        try:
            self.deliver(job_id)
        except Exception:  # recorded nowhere else: the lease runs out and the attempt is made again
            log.exception("webhook of job %s", job_id)
        finally:
            with self._lock:
                self._busy.pop(job_id, None)

    # ------------------------------------------------------------------ one attempt

    def deliver(self, job_id: str) -> str:
        """Make one attempt at the job's callback (its lease held); returns the outcome."""
        settings = self.settings
        with self.sessions() as session:
            hook, job = session.get(Webhook, job_id), session.get(Job, job_id)
            if hook is None or job is None or hook.state != "waiting":
                return "gone"
            payload = {
                "event": EVENT,
                "delivery_id": hook.delivery_id,
                "job": summary(session, job, settings, hook.token_name),
            }
            secret = secret_for(session, hook.token_name, settings.webhook_secret)
            url, attempt = hook.url, hook.attempts + 1
            session.commit()
        body = dumps(payload).encode()
        started, status, error, final = utcnow(), None, None, True
        clock = time.monotonic()
        try:
            parse_url(url)
            problem = None
        except ValueError as exc:
            problem = str(exc)
        if secret is None:
            error = "no webhook secret to sign with (the token's secret was removed)"
        elif problem is not None:  # stored before submission checked it as the client does
            error = f"the callback URL is not valid: {problem}"
        elif not allowed(url, allow_list(settings.webhook_allowed_hosts)):
            error = "the callback host is no longer on the service's allow-list"
        else:
            headers = {
                "Content-Type": "application/json",
                EVENT_HEADER: EVENT,
                DELIVERY_HEADER: hook.delivery_id,
                **sign(secret, body),
            }
            final = False
            try:
                status, error = self._post(url, body, headers)
            except httpx.InvalidURL as exc:  # the client refuses the URL: no later attempt will do better
                error, final = f"the callback URL is not valid: {exc}", True
            except Exception as exc:  # any other client error is a failed attempt too, recorded like the rest
                error = f"{type(exc).__name__}: {exc}"
        final = final or error is None
        outcome = (
            "delivered"
            if error is None
            else ("failed" if final or attempt >= settings.webhook_max_attempts else "retry")
        )
        self._record(job_id, attempt, url, started, clock, status, error, outcome)
        log.info("webhook of job %s, attempt %d: %s%s", job_id, attempt, outcome, f" ({error})" if error else "")
        return outcome

    def _post(self, url: str, body: bytes, headers: dict) -> tuple[int | None, str | None]:
        """POST the body; (HTTP status, the reason it failed or None). The exchange as a whole is time-boxed:
        a timer shuts the socket it connected down at the deadline, whatever stage the exchange is at."""
        limit = self.settings.webhook_timeout_seconds
        sockets: list[socket.socket] = []
        lock, expired = threading.Lock(), threading.Event()

        def shut(sock: socket.socket) -> None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def trace(event: str, info: dict) -> None:
            if event == "connection.connect_tcp.complete":
                sock = info["return_value"].get_extra_info("socket")
                if sock is not None:
                    with lock:  # a duplicate: the same connection, whatever TLS later does to the original
                        sockets.append(sock.dup())
                        if expired.is_set():
                            shut(sockets[-1])

        def expire() -> None:
            with lock:
                expired.set()
                for sock in sockets:
                    shut(sock)

        timer = threading.Timer(limit, expire)
        timer.daemon = True
        timer.start()
        try:
            with self._client.stream(
                "POST", url, content=body, headers=headers, extensions={"trace": trace}
            ) as response:
                status = response.status_code
                if 200 <= status < 300:
                    return status, None  # the body is never read
                return status, self._reason(response, expired)
        except httpx.HTTPError as exc:
            if expired.is_set() or isinstance(exc, httpx.TimeoutException):
                return None, f"no answer within {limit:g} s"
            raise
        finally:
            timer.cancel()
            with lock:
                for sock in sockets:
                    sock.close()

    def _reason(self, response: httpx.Response, expired: threading.Event) -> str:
        """ "HTTP status: the answer's first characters", from at most webhook_answer_bytes of it, read raw."""
        reason = f"HTTP {response.status_code}"
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            return f"{reason} (a {printable(encoding[:40])}-encoded answer, not read)"
        cap, kept, cut = self.settings.webhook_answer_bytes, bytearray(), False
        try:
            for chunk in response.iter_raw():
                kept += chunk
                if len(kept) >= cap:
                    break
        except httpx.HTTPError:  # cut off at the deadline, or the receiver hung up
            cut = expired.is_set()
        text = printable(kept[:cap].decode("utf-8", errors="replace"))[:KEPT_ANSWER_CHARS].strip()
        return (
            reason
            + (f": {text}" if text else "")
            + (f" (the answer was cut off after {self.settings.webhook_timeout_seconds:g} s)" if cut else "")
        )

    def _record(self, job_id, attempt, url, started, clock, status, error, outcome) -> None:
        now = utcnow()
        values = {
            "attempts": attempt,
            "lease_until": None,
            "state": {"delivered": "delivered", "failed": "failed"}.get(outcome, "waiting"),
            "next_attempt_at": (
                now + timedelta(seconds=self.settings.webhook_backoff_seconds * 2 ** (attempt - 1))
                if outcome == "retry"
                else None
            ),
        }
        with self.sessions() as session:
            session.add(
                WebhookDelivery(
                    job_id=job_id,
                    attempt=attempt,
                    url=url,
                    started_at=started,
                    duration_ms=int((time.monotonic() - clock) * 1000),
                    status_code=status,
                    error=printable(error)[:MAX_ERROR_CHARS] if error else None,
                    outcome=outcome,
                )
            )
            session.execute(
                update(Webhook).where(and_(Webhook.job_id == job_id, Webhook.state == "waiting")).values(**values)
            )
            session.commit()
