"""The gateway's typed FastAPI dependencies: the services of the running app, a database session per
request, the caller's principal (bearer token) and the idempotency key."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.auth import DEFAULT_PROJECT, Principal, verify_token
from app.browser_auth import SESSION_COOKIE, session_login
from app.plumbing.errors import Unauthorized
from app.schemas import ErrorResponse
from app.services import Services

log = logging.getLogger("emopres.api")

ERRORS = {r: {"model": ErrorResponse} for r in (401, 404, 409, 413, 422, 503)}


# ---------------------------------------------------------------- dependencies


# async: FastAPI runs a plain `def` dependency in a worker thread, a thread hop per request for an attribute read
async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    session = services.sessions()
    try:
        yield session
    finally:
        try:
            session.close()
        except OperationalError as error:
            # the database went away after the route had answered: the client has its response already
            # (an error here would be raised after it started, and uvicorn would drop the connection);
            # the pool has invalidated the connection, so the next request reconnects
            log.warning("database connection lost while ending a request: %s", str(error).splitlines()[0])


SessionDep = Annotated[Session, Depends(get_session)]


BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="an API token (`emopres tokens create NAME`); a browser signed in at /ui/login may read with its "
    "session cookie instead",
)
SAFE_METHODS = ("GET", "HEAD")


async def get_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
) -> Principal:
    """The caller: the bearer token's, or (for GET and HEAD only) the signed-in browser's session."""
    if services.settings.auth_disabled:
        return Principal(DEFAULT_PROJECT, None)
    if credentials is not None and credentials.credentials.strip():
        principal = await run_in_threadpool(_verify, services, credentials.credentials)  # the database, in a thread
        if principal is None:
            raise Unauthorized("invalid or revoked token")
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and request.method in SAFE_METHODS and "authorization" not in request.headers:
        login = await run_in_threadpool(_session_login, services, cookie)
        if login is not None:
            return login.principal
    raise Unauthorized()


def _verify(services: Services, token: str) -> Principal | None:
    with services.sessions() as session:  # its own short transaction (SQLite: one writer at a time)
        return verify_token(session, token)


def _session_login(services: Services, cookie: str):
    with services.sessions() as session:
        return session_login(session, cookie)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=255, description="a retry with the same key returns the same job"),
]
