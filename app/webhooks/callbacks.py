"""Job webhooks: a job may carry a callback URL; when it finishes (succeeded or failed) the service POSTs
the job summary there, signed, retried with backoff, every attempt recorded.

Tables (core.db)
  webhook_secrets     one signing secret per token. Kept as it is, not hashed: signing needs the secret
                      itself (a token is only compared, so its hash suffices; a signature must be made).
                      Shown once, at `emopres tokens create` (or `emopres tokens webhook-secret NAME`).
  webhooks            the job's callback: URL, the token whose secret signs it, state (waiting, delivered,
                      failed), attempts, when the next attempt is due, a lease while one is being made
  webhook_deliveries  each attempt: when, HTTP status or error, duration, outcome

The callback is stored with the job in one transaction and delivered by a dispatcher thread of the API
process (embedded mode and Celery alike; see app.webhooks.delivery) that picks up finished jobs from the
database: finishing a job never waits on a receiver, and a restart loses no delivery.

Callback targets must match the operator's allow-list (EMOPRES_WEBHOOK_ALLOWED_HOSTS: host names,
``*.domain`` wildcards, IP addresses or networks, each optionally ``:port``); anything else is refused
at submission with 422 callback_not_allowed, so that no client can make the service send requests to
arbitrary hosts inside its network. An empty list (the default) turns callbacks off. The URL is read by
the parser that sends it (httpx.URL), so that the host checked is the host contacted; whitespace and
control characters are refused (urlsplit dropped a TAB that httpx then refused to send).
"""

from __future__ import annotations

import ipaddress
import secrets
import unicodedata
import uuid
from datetime import datetime
from fnmatch import fnmatchcase

import httpx
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.plumbing.errors import InvalidRequest
from core.db import Token, Webhook, WebhookDelivery, WebhookSecret
from emopres_client.webhooks import SECRET_PREFIX

MAX_URL_CHARS = 2000


# ---------------------------------------------------------------- secrets


def new_secret(session: Session, token: Token) -> str:
    """Create (or replace) the token's signing secret and return it: it is shown once."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    session.execute(delete(WebhookSecret).where(WebhookSecret.token_id == token.id))
    session.add(WebhookSecret(token_id=token.id, secret=secret))
    session.commit()
    return secret


def secret_for(session: Session, token_name: str | None, fallback: str | None) -> str | None:
    """The secret that signs a callback of this token (auth disabled: the operator's EMOPRES_WEBHOOK_SECRET)."""
    if token_name is None:
        return fallback
    return session.scalar(
        select(WebhookSecret.secret).join(Token, Token.id == WebhookSecret.token_id).where(Token.name == token_name)
    )


# ---------------------------------------------------------------- allow-list


def allow_list(text: str | None) -> tuple[str, ...]:
    return tuple(entry.strip().lower() for entry in (text or "").split(",") if entry.strip())


def _split_entry(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, None


def _host_matches(pattern: str, host: str) -> bool:
    try:
        network = ipaddress.ip_network(pattern, strict=False)
    except ValueError:
        network = None
    if network is not None:
        try:
            return ipaddress.ip_address(host) in network
        except ValueError:
            return False  # an IP rule matches IP literals only: a name could resolve anywhere
    if pattern.startswith("*."):
        return fnmatchcase(host, pattern) and host.count(".") >= pattern.count(".")
    return host == pattern


def parse_url(url: str) -> httpx.URL:
    """The URL as the dispatcher's client reads it, or ValueError naming why it cannot be sent."""
    bad = next((ch for ch in url if ch.isspace() or unicodedata.category(ch).startswith("C")), None)
    if bad is not None:
        raise ValueError(f"it contains whitespace or a control character ({ascii(bad)})")
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError, TypeError) as error:
        raise ValueError(str(error)[:200]) from None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return parsed


def allowed(url: str, entries: tuple[str, ...]) -> bool:
    try:
        parts = parse_url(url)
    except ValueError:
        return False
    host = parts.host.lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for entry in entries:
        pattern, entry_port = _split_entry(entry)
        if _host_matches(pattern, host) and (entry_port is None or entry_port == port):
            return True
    return False


def check_callback_url(url: str | None, settings) -> str | None:
    """The callback URL, or a 422 naming why it is refused (malformed, or its host not on the allow-list)."""
    url = (url or "").strip()
    if not url:
        return None
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequest(f"callback_url is longer than {MAX_URL_CHARS} characters", code="invalid_callback_url")
    try:
        parts = parse_url(url)
    except ValueError as error:
        raise InvalidRequest(f"callback_url is not a valid URL: {error}", code="invalid_callback_url") from None
    if parts.scheme not in ("http", "https") or not parts.host:
        raise InvalidRequest(
            f"callback_url must be an http(s) URL with a host, at most {MAX_URL_CHARS} characters",
            code="invalid_callback_url",
        )
    if parts.userinfo:
        raise InvalidRequest("callback_url must not hold credentials", code="invalid_callback_url")
    entries = allow_list(settings.webhook_allowed_hosts)
    if not entries:
        raise InvalidRequest(
            "callbacks are off on this service: its operator allows no callback hosts (EMOPRES_WEBHOOK_ALLOWED_HOSTS)",
            code="callback_not_allowed",
            details={"host": parts.host},
        )
    if not allowed(url, entries):
        raise InvalidRequest(
            f"callback host {parts.host!r} is not on this service's allow-list",
            code="callback_not_allowed",
            details={"host": parts.host},
        )
    return url


def callback_row(session_factory, url: str | None, token_name: str | None, settings) -> dict | None:
    """The webhooks row of a new job (without job_id), after checking a secret exists to sign it."""
    if url is None:
        return None
    with session_factory() as session:
        secret = secret_for(session, token_name, settings.webhook_secret)
    if secret is None:
        fix = (
            f"run `emopres tokens webhook-secret {token_name}` on the service"
            if token_name
            else "set EMOPRES_WEBHOOK_SECRET (authentication is disabled)"
        )
        raise InvalidRequest(f"no webhook secret to sign the callback with: {fix}", code="no_webhook_secret")
    return {"url": url, "token_name": token_name, "delivery_id": str(uuid.uuid4()), "state": "waiting", "attempts": 0}


# ---------------------------------------------------------------- views


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def deliveries_view(session: Session, job_id: str) -> dict:
    hook = session.get(Webhook, job_id)
    attempts = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job_id)
        .order_by(WebhookDelivery.attempt, WebhookDelivery.id)
    )
    return {
        "callback": None
        if hook is None
        else {
            "url": hook.url,
            "state": hook.state,
            "attempts": hook.attempts,
            "delivery_id": hook.delivery_id,
            "next_attempt_at": _iso(hook.next_attempt_at) if hook.state == "waiting" else None,
        },
        "items": [
            {
                "attempt": d.attempt,
                "url": d.url,
                "started_at": _iso(d.started_at),
                "duration_ms": d.duration_ms,
                "status_code": d.status_code,
                "error": d.error,
                "outcome": d.outcome,
            }
            for d in attempts
        ],
    }
