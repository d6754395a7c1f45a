"""Job webhooks: how the service signs a delivery and how a receiver checks it.

The service POSTs the job summary as JSON with these headers:

* ``X-Emopres-Event``: ``job.finished``;
* ``X-Emopres-Delivery``: the delivery's id (the same for every retry of one job's callback);
* ``X-Emopres-Timestamp``: Unix seconds when this attempt was signed;
* ``X-Emopres-Signature``: ``sha256=`` + hex HMAC-SHA256, keyed with the token's webhook secret, of
  ``timestamp + "." + body`` (the raw body bytes).

A receiver calls :func:`verify` with its secret, the raw body and the headers; it should refuse
timestamps older than a few minutes (replays) and may use the delivery id to ignore repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_HEADER, TIMESTAMP_HEADER = "X-Emopres-Signature", "X-Emopres-Timestamp"
EVENT_HEADER, DELIVERY_HEADER = "X-Emopres-Event", "X-Emopres-Delivery"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300.0


class InvalidSignature(ValueError):
    pass


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def sign(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The timestamp and signature headers of one delivery attempt."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Raise InvalidSignature unless the headers sign `body` with `secret` within `tolerance` seconds."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp, given = lower.get(TIMESTAMP_HEADER.lower()), lower.get(SIGNATURE_HEADER.lower())
    if not timestamp or not given:
        raise InvalidSignature("missing signature or timestamp header")
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        raise InvalidSignature("timestamp is not a number") from None
    if age > tolerance:
        raise InvalidSignature(f"timestamp is {age:.0f} s away from now (tolerance {tolerance:g} s)")
    if not hmac.compare_digest(signature(secret, timestamp, body), given):
        raise InvalidSignature("signature does not match")
