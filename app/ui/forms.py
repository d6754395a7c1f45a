"""The UI's form plumbing: small url-encoded bodies read under a cap, same-origin checks, safe redirects, and
the session cookie's attributes."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi import Request, Response

from app.browser_auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE
from app.plumbing.errors import APIError, TooLarge


class Forbidden(APIError):
    status, code = 403, "forbidden"


async def small_form(request: Request) -> dict[str, str]:
    """The url-encoded form of a UI POST, read up to EMOPRES_UI_FORM_BYTES (a token, a CSRF token and a path fit
    in far less); each field's first value."""
    limit = request.app.state.services.settings.ui_form_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"a form of the UI holds at most {limit} bytes", details={"limit": limit})
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def check_same_origin(request: Request) -> None:
    """A state-changing form must come from a page of this service: a browser names the page's origin in
    Origin (or, failing that, Referer); another site's form is refused (403)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return  # not a browser's cross-site form (browsers send Origin on every cross-site POST); CSRF token decides
    given = urlsplit(origin)
    if (given.scheme, given.netloc) != (request.url.scheme, request.url.netloc):
        raise Forbidden("this form was sent from another site", code="cross_site_form")


def local_target(target: str | None, default: str = "/ui/") -> str:
    """Where to go after signing in: a path of this service only (never another site: //host, \\\\host, a scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in target):
        return default
    return target


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, value: str, seconds: int) -> None:
    response.set_cookie(
        SESSION_COOKIE, value, max_age=seconds, path="/", httponly=True, samesite="lax", secure=secure(request)
    )


def set_login_csrf_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        value,
        max_age=3600,
        path="/ui/login",
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure(request))
