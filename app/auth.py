"""API tokens: `emopres_<key id>_<secret>`; only sha256(secret) is stored, compared in constant time.

A token belongs to one project; a request sees only that project's jobs. With
EMOPRES_AUTH_DISABLED=1 every request acts for the project "default".
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db import Token, utcnow

PREFIX = "emopres"
DEFAULT_PROJECT = "default"
_DUMMY_HASH = hashlib.sha256(b"no such token").hexdigest()


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    project: str
    token_name: str | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, name: str, project: str | None = None) -> str:
    """Create a token and return it; it cannot be shown again."""
    name = name.strip()
    if not name or len(name) > 200:
        raise TokenError("token name must be 1 to 200 characters")
    if session.scalar(select(Token.id).where(Token.name == name)) is not None:
        raise TokenError(f"a token named {name!r} exists already (revoke it or pick another name)")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    session.add(Token(key_id=key_id, name=name, project=(project or name).strip(), secret_sha256=_hash(secret)))
    session.commit()
    return f"{PREFIX}_{key_id}_{secret}"


def revoke_token(session: Session, name_or_key: str) -> Token:
    token = session.scalar(select(Token).where((Token.name == name_or_key) | (Token.key_id == name_or_key)))
    if token is None:
        raise TokenError(f"no token named {name_or_key!r}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.commit()
    return token


def list_tokens(session: Session) -> list[Token]:
    return list(session.scalars(select(Token).order_by(Token.created_at, Token.id)))


def parse_token(raw: str) -> tuple[str, str] | None:
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def verify_token(session: Session, raw: str) -> Principal | None:
    """The token's principal, or None when it is malformed, unknown or revoked."""
    parsed = parse_token(raw.strip())
    key_id, secret = parsed if parsed else ("", raw)
    token = session.scalar(select(Token).where(Token.key_id == key_id)) if key_id else None
    expected = token.secret_sha256 if token is not None else _DUMMY_HASH
    matches = hmac.compare_digest(_hash(secret), expected)  # the same work whether or not the key exists
    if token is None or not matches or token.revoked_at is not None:
        return None
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        session.execute(update(Token).where(Token.id == token.id).values(last_used_at=now))
        session.commit()
    return Principal(token.project, token.name)
