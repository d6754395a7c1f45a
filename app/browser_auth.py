"""Credentials a browser can carry: sign-in sessions (a cookie) and share links (a signed URL).

* A **session** is made by `/ui/login` from an API token. The cookie holds a random secret; the database keeps
  only its sha256, the token it belongs to, its CSRF form token and when it ends. It ends at ``expires_at``
  (EMOPRES_SESSION_SECONDS), on sign-out, and when its token is revoked. A session authenticates the safe
  methods (GET, HEAD) only: every state-changing /v1 route still needs the bearer token, and the UI's own forms
  carry the session's CSRF token.
* A **share link** opens one job's report page and plots, read-only, with no token, until it expires
  (EMOPRES_SHARE_LINK_SECONDS). It is ``<job id>.<expiry>.<token key id>.<signature>``: HMAC-SHA256 under a key
  the service makes once and keeps in the database, so every API host accepts the links of the others. A link
  dies with the token that made it (revoked), and with its job (deleted).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth import DEFAULT_PROJECT, Principal
from core.db import BrowserSession, ServiceKey, Token, utcnow

SESSION_COOKIE = "emopres_session"
LOGIN_CSRF_COOKIE = "emopres_login_csrf"  # the login form's double-submit token (there is no session yet)
SHARE_KEY_NAME = "share_links"
NO_TOKEN = "-"  # the key id of a link made with auth disabled


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- sessions


@dataclass(frozen=True)
class BrowserLogin:
    principal: Principal
    csrf: str
    expires_at: datetime


def start_session(session: Session, token: Token, seconds: int, per_token: int) -> tuple[str, BrowserLogin]:
    """A new session for ``token``: (the cookie value, the login). The token's oldest sessions beyond
    ``per_token`` and its expired ones end here."""
    now = utcnow()
    secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    session.execute(delete(BrowserSession).where(BrowserSession.token_id == token.id, BrowserSession.expires_at <= now))
    kept = list(
        session.scalars(
            select(BrowserSession.id_sha256)
            .where(BrowserSession.token_id == token.id)
            .order_by(BrowserSession.created_at.desc())
            .offset(per_token - 1)
        )
    )
    if kept:
        session.execute(delete(BrowserSession).where(BrowserSession.id_sha256.in_(kept)))
    expires = now + timedelta(seconds=seconds)
    session.add(BrowserSession(id_sha256=_sha256(secret), token_id=token.id, csrf=csrf, expires_at=expires))
    session.commit()
    return secret, BrowserLogin(Principal(token.project, token.name), csrf, expires)


def session_login(session: Session, cookie: str | None) -> BrowserLogin | None:
    """The login a session cookie stands for, or None (unknown, ended, expired, or its token revoked)."""
    if not cookie or len(cookie) > 200:
        return None
    row = session.execute(
        select(BrowserSession, Token)
        .join(Token, Token.id == BrowserSession.token_id)
        .where(BrowserSession.id_sha256 == _sha256(cookie))
    ).first()
    if row is None:
        return None
    browser, token = row
    if token.revoked_at is not None or browser.expires_at <= utcnow():
        return None
    return BrowserLogin(Principal(token.project, token.name), browser.csrf, browser.expires_at)


def end_session(session: Session, cookie: str | None) -> None:
    if cookie:
        session.execute(delete(BrowserSession).where(BrowserSession.id_sha256 == _sha256(cookie)))
        session.commit()


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


# ---------------------------------------------------------------- share links


class ShareLinkError(ValueError):
    """Why a share link does not open: ``expired`` (403) or ``invalid`` (401)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class SharedJob:
    project: str
    job_id: str
    expires_at: datetime


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def signing_key(session: Session) -> bytes:
    """The share links' key: made by the first host that needs it, read by every other."""
    secret = session.scalar(select(ServiceKey.secret).where(ServiceKey.name == SHARE_KEY_NAME))
    if secret is None:
        try:
            with session.begin_nested():
                session.add(ServiceKey(name=SHARE_KEY_NAME, secret=secrets.token_hex(32)))
            session.commit()
        except IntegrityError:  # another host made it first: use theirs
            session.rollback()
        secret = session.scalar(select(ServiceKey.secret).where(ServiceKey.name == SHARE_KEY_NAME))
    return bytes.fromhex(secret)


def _signature(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def _key_id(session: Session, principal: Principal) -> str:
    if principal.token_name is None:
        return NO_TOKEN
    key_id = session.scalar(select(Token.key_id).where(Token.name == principal.token_name))
    return key_id or NO_TOKEN


def make_share_link(session: Session, principal: Principal, job_id: str, seconds: int) -> tuple[str, datetime]:
    """(the link's key, its expiry) for the job ``job_id`` (which the caller has checked is the principal's)."""
    expires = (utcnow() + timedelta(seconds=seconds)).replace(microsecond=0)
    body = f"{job_id}.{int(expires.timestamp())}.{_key_id(session, principal)}"
    return f"{body}.{_signature(signing_key(session), body)}", expires


def open_share_link(session: Session, link: str, *, auth_disabled: bool) -> SharedJob:
    """The job a share link opens; ShareLinkError when it was altered, has expired or its token was revoked."""
    parts = link.split(".")
    if len(link) > 300 or len(parts) != 4:
        raise ShareLinkError("invalid", "not a share link")
    job_id, expiry, key_id, signature = parts
    body = f"{job_id}.{expiry}.{key_id}"
    if not hmac.compare_digest(_signature(signing_key(session), body), signature):
        raise ShareLinkError("invalid", "this share link was altered or was not made by this service")
    expires = datetime.fromtimestamp(int(expiry), UTC)
    if expires <= utcnow():
        raise ShareLinkError("expired", f"this share link expired at {expires.isoformat()}")
    if key_id == NO_TOKEN:
        if not auth_disabled:
            raise ShareLinkError("invalid", "this share link was made without a token")
        return SharedJob(DEFAULT_PROJECT, job_id, expires)
    token = session.scalar(select(Token).where(Token.key_id == key_id))
    if token is None or token.revoked_at is not None:
        raise ShareLinkError("invalid", "the token that made this share link was revoked")
    return SharedJob(token.project, job_id, expires)


def share_link_url(
    session: Session, settings, principal: Principal, job_id: str, base_url: str = ""
) -> tuple[str, str]:
    """(a share link to the job's report page, its expiry in ISO 8601): absolute with EMOPRES_PUBLIC_URL or
    ``base_url`` (the request's), else a path."""
    link, expires = make_share_link(session, principal, job_id, settings.share_link_seconds)
    base = (settings.public_url or base_url).rstrip("/")
    return f"{base}/share/{link}/report.html", expires.isoformat()
