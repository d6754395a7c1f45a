"""The browser pages: ``/ui/login`` and ``/ui/logout``, the dashboard ``/ui/`` (systems and jobs), a system's
versions over time ``/ui/systems/{name}``, and a share-link form. Server-rendered (Jinja2, autoescaped), no
script, no CDN; every state-changing form carries a CSRF token and must come from this origin."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import select

from app import jobs as crud
from app.auth import DEFAULT_PROJECT, Principal, verify_token
from app.browser_auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    BrowserLogin,
    csrf_matches,
    end_session,
    session_login,
    share_link_url,
    start_session,
)
from app.plumbing.deps import ServicesDep, SessionDep
from app.plumbing.errors import NotFound, Unauthorized
from app.ui import dashboard
from app.ui.forms import (
    Forbidden,
    check_same_origin,
    clear_session_cookie,
    local_target,
    set_login_csrf_cookie,
    set_session_cookie,
    small_form,
)
from app.ui.trend import trend_svg
from core.catalogue import BY_NAME
from core.db import Token, utcnow

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Environment(loader=PackageLoader("app.ui"), autoescape=select_autoescape(default=True))
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
JOBS_LISTED = 50  # of the jobs read (EMOPRES_UI_JOBS), the dashboard's job list shows the newest this many
AUTH_DISABLED_CSRF = "auth-disabled"


def page(name: str, status_code: int = 200, **context) -> HTMLResponse:
    html = templates.get_template(name).render(metric_label=lambda m: BY_NAME[m].label, **context)
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


async def browser_login(request: Request, services: ServicesDep) -> BrowserLogin:
    """The signed-in browser; a person who is not is sent to /ui/login (app.plumbing.error_handlers)."""
    if services.settings.auth_disabled:
        return BrowserLogin(Principal(DEFAULT_PROJECT, None), AUTH_DISABLED_CSRF, utcnow())
    cookie = request.cookies.get(SESSION_COOKIE)
    login = await run_in_threadpool(_login_of, services, cookie) if cookie else None
    if login is None:
        raise Unauthorized("sign in at /ui/login")
    return login


def _login_of(services, cookie: str) -> BrowserLogin | None:
    with services.sessions() as session:
        return session_login(session, cookie)


LoginDep = Annotated[BrowserLogin, Depends(browser_login)]


async def checked_form(request: Request, login: BrowserLogin) -> dict[str, str]:
    check_same_origin(request)
    form = await small_form(request)
    if not csrf_matches(login.csrf, form.get("csrf")):
        raise Forbidden("this form has expired or was not sent from this service: reload the page", code="csrf")
    return form


@router.get("/ui.css")
def stylesheet():
    css = templates.get_template("ui.css").render()
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


@router.get("/login")
def login_form(request: Request, next: str | None = None):
    csrf = secrets.token_urlsafe(24)
    response = page("login.html", csrf=csrf, next=local_target(next), error=None)
    set_login_csrf_cookie(response, request, csrf)
    return response


@router.post("/login")
async def login(request: Request, services: ServicesDep):
    check_same_origin(request)
    form = await small_form(request)
    target = local_target(form.get("next"))
    if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE), form.get("csrf")):
        raise Forbidden("the sign-in form has expired: reload it and sign in again", code="csrf")
    started = await run_in_threadpool(_start, services, form.get("token") or "")
    if started is None:
        csrf = secrets.token_urlsafe(24)
        response = page("login.html", 401, csrf=csrf, next=target, error="That token is not valid (or was revoked).")
        set_login_csrf_cookie(response, request, csrf)
        return response
    cookie, _ = started
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, request, cookie, services.settings.session_seconds)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui/login")
    return response


def _start(services, raw: str):
    settings = services.settings
    with services.sessions() as session:
        principal = verify_token(session, raw) if raw.strip() else None
        if principal is None:
            return None
        token = session.scalar(select(Token).where(Token.name == principal.token_name))
        return start_session(session, token, settings.session_seconds, settings.sessions_per_token)


@router.post("/logout")
async def logout(request: Request, services: ServicesDep, login: LoginDep):
    await checked_form(request, login)
    cookie = request.cookies.get(SESSION_COOKIE)
    await run_in_threadpool(_end, services, cookie)
    response = RedirectResponse("/ui/login", status_code=303)
    clear_session_cookie(response, request)
    return response


def _end(services, cookie: str | None) -> None:
    with services.sessions() as session:
        end_session(session, cookie)


def _report_href(job: dict) -> str:
    return job["links"]["report_html"]


@router.get("/")
def home(login: LoginDep, session: SessionDep, services: ServicesDep):
    jobs = dashboard.recent_jobs(session, login.principal.project, services.settings.ui_jobs)
    session.commit()
    return page(
        "dashboard.html",
        login=login,
        systems=dashboard.systems(jobs),
        jobs=jobs[:JOBS_LISTED],
        jobs_read=len(jobs),
        jobs_limit=services.settings.ui_jobs,
        metric_entry=dashboard.metric_entry,
        version_of=dashboard.version_of,
        report_href=_report_href,
    )


@router.get("/systems/{name}")
def system_page(name: str, login: LoginDep, session: SessionDep, services: ServicesDep):
    jobs = dashboard.recent_jobs(session, login.principal.project, services.settings.ui_jobs)
    session.commit()
    found = [s for s in dashboard.systems(jobs) if s.name == name]
    if not found:
        raise NotFound(f"no system named {name!r} among the newest {services.settings.ui_jobs} jobs")
    system = found[0]
    rows = []
    for index, job in enumerate(system.versions):
        previous = dashboard.previous_succeeded(system, index)
        compare = None
        if job["status"] == "succeeded" and previous is not None:
            compare = f"{_report_href(job)}?baseline={previous['id']}#comparison"
        rows.append({"job": job, "previous": previous, "compare": compare})
    return page(
        "system.html",
        login=login,
        system=system,
        rows=list(reversed(rows)),
        chart=trend_svg(dashboard.trend_points(system, _report_href), system.metric_label),
        paper_metrics=dashboard.PAPER_METRICS,
        metric_entry=dashboard.metric_entry,
        version_of=dashboard.version_of,
        report_href=_report_href,
    )


@router.post("/jobs/{job_id}/share")
async def share(job_id: str, request: Request, login: LoginDep, services: ServicesDep):
    await checked_form(request, login)
    url, expires, job = await run_in_threadpool(_share, services, login.principal, job_id, str(request.base_url))
    return page("shared.html", login=login, job=job, url=url, expires=expires)


def _share(services, principal: Principal, job_id: str, base_url: str):
    with services.sessions() as session:
        job = crud.get_job(session, principal.project, job_id)
        url, expires = share_link_url(session, services.settings, principal, job.id, base_url)
        return url, expires, {"id": job.id, "name": job.name}
