"""Signing in from a browser: /ui/login sets an HttpOnly session cookie that reads (GET) what the token reads,
never writes, never another project's jobs, and ends on sign-out, expiry and revocation."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.auth import create_token, revoke_token
from app.browser_auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE
from app.ui.forms import local_target
from core.db import BrowserSession, utcnow
from tests.ui.conftest import bearer

HTML = {"Accept": "text/html,application/xhtml+xml"}


def browser(service) -> TestClient:
    """A fresh browser on the same app: no Authorization header, its own cookies."""
    return TestClient(service.app, base_url="http://testserver", follow_redirects=False)


def login_csrf(client: TestClient, next_path: str = "/ui/") -> str:
    page = client.get("/ui/login", params={"next": next_path})
    assert page.status_code == 200
    assert client.cookies.get(LOGIN_CSRF_COOKIE)
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def sign_in(service, who: str = "a", next_path: str = "/ui/") -> TestClient:
    client = browser(service)
    csrf = login_csrf(client, next_path)
    response = client.post("/ui/login", data={"token": service.tokens[who], "csrf": csrf, "next": next_path})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == next_path
    return client


def page_csrf(client: TestClient) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/").text).group(1)


def test_signing_in_sets_a_guarded_session_cookie_that_reads_reports(ui_service, ui_jobs):
    client = browser(ui_service)
    csrf = login_csrf(client)
    response = client.post("/ui/login", data={"token": ui_service.tokens["a"], "csrf": csrf, "next": "/ui/"})
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie
    for attribute in ("HttpOnly", "SameSite=lax", "Max-Age=43200", "Path=/"):
        assert attribute.lower() in cookie.lower(), cookie
    assert "secure" not in cookie.lower()  # plain http here; https gets Secure (below)
    value = client.cookies.get(SESSION_COOKIE)
    with ui_service.app.state.services.sessions() as session:  # only its sha256 is stored
        assert session.scalar(select(BrowserSession.id_sha256)) != value
    page = client.get(f"/v1/jobs/{ui_jobs['v1']}/report.html", headers=HTML)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get(f"/v1/jobs/{ui_jobs['v1']}/plots").status_code == 200
    assert client.get("/ui/").status_code == 200


def test_https_cookies_are_secure(ui_service):
    client = TestClient(ui_service.app, base_url="https://testserver", follow_redirects=False)
    csrf = login_csrf(client)
    response = client.post("/ui/login", data={"token": ui_service.tokens["a"], "csrf": csrf})
    assert "secure" in response.headers["set-cookie"].lower()


def test_a_session_never_writes(ui_service, ui_jobs):
    client = sign_in(ui_service)
    assert client.delete(f"/v1/jobs/{ui_jobs['v1']}").status_code == 401
    assert client.post(f"/v1/jobs/{ui_jobs['v1']}/share").status_code == 401
    assert client.post("/v1/jobs", files={"manifest": ("m.csv", b"pair_id,source,target\n")}).status_code == 401
    assert ui_service.get(f"/v1/jobs/{ui_jobs['v1']}", headers=bearer(ui_service, "a")).status_code == 200


def test_a_session_of_token_a_never_opens_token_bs_jobs(ui_service, ui_jobs):
    client = sign_in(ui_service, "a")
    assert client.get(f"/v1/jobs/{ui_jobs['b']}/report.html").status_code == 404
    assert client.get(f"/v1/jobs/{ui_jobs['b']}").status_code == 404
    assert "their" not in client.get("/ui/").text
    other = sign_in(ui_service, "b")
    assert other.get(f"/v1/jobs/{ui_jobs['b']}").status_code == 200
    assert other.get(f"/v1/jobs/{ui_jobs['v1']}").status_code == 404


def test_a_wrong_token_or_a_form_without_its_csrf_cookie_signs_nobody_in(ui_service):
    client = browser(ui_service)
    csrf = login_csrf(client)
    wrong = client.post("/ui/login", data={"token": "emopres_0000_nope", "csrf": csrf})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert client.cookies.get(SESSION_COOKIE) is None
    stranger = browser(ui_service)  # a form posted from elsewhere: no login CSRF cookie of ours
    forged = stranger.post("/ui/login", data={"token": ui_service.tokens["a"], "csrf": csrf})
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf"
    cross = browser(ui_service)
    csrf = login_csrf(cross)
    response = cross.post(
        "/ui/login", data={"token": ui_service.tokens["a"], "csrf": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "cross_site_form"


def test_signing_out_ends_the_session_and_needs_the_forms_csrf_token(ui_service, ui_jobs):
    client = sign_in(ui_service)
    value = client.cookies.get(SESSION_COOKIE)
    assert client.post("/ui/logout", data={"csrf": "guessed"}).status_code == 403
    assert client.post("/ui/logout", data={"csrf": page_csrf(client)}).status_code == 303
    replay = browser(ui_service)
    replay.cookies.set(SESSION_COOKIE, value)
    assert replay.get(f"/v1/jobs/{ui_jobs['v1']}").status_code == 401


def test_revoking_the_token_ends_its_sessions(ui_service, ui_jobs):
    with ui_service.app.state.services.sessions() as session:
        raw = create_token(session, "short-lived", "team-a")
    ui_service.tokens["short"] = raw
    client = sign_in(ui_service, "short")
    assert client.get(f"/v1/jobs/{ui_jobs['v1']}").status_code == 200
    with ui_service.app.state.services.sessions() as session:
        revoke_token(session, "short-lived")
    assert client.get(f"/v1/jobs/{ui_jobs['v1']}").status_code == 401


def test_an_expired_session_is_refused(ui_service, ui_jobs):
    client = sign_in(ui_service, "a2")
    with ui_service.app.state.services.sessions() as session:
        session.execute(update(BrowserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert client.get(f"/v1/jobs/{ui_jobs['v1']}").status_code == 401


def test_a_person_who_is_not_signed_in_is_sent_to_sign_in_and_back(ui_service, ui_jobs):
    client = browser(ui_service)
    target = f"/v1/jobs/{ui_jobs['v1']}/report.html?worst=3"
    response = client.get(target, headers=HTML)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login?next=")
    assert client.get(target).status_code == 401  # a program (no text/html) still gets the JSON 401
    signed = sign_in(ui_service, "a", next_path=target)
    assert signed.get(target, headers=HTML).status_code == 200


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", "", None]
)
def test_sign_in_never_redirects_to_another_site(target):
    assert local_target(target) == "/ui/"


def test_ui_forms_are_bounded_by_their_setting(ui_service):
    limit = ui_service.app.state.services.settings.ui_form_bytes
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    within = browser(ui_service).post("/ui/login", content=b"token=" + b"x" * (limit - 6), headers=form)
    assert within.status_code == 403  # read whole, then refused for its missing CSRF token
    over = browser(ui_service).post("/ui/login", content=b"token=" + b"x" * (limit - 5), headers=form)
    assert over.status_code == 413 and over.json()["error"]["details"]["limit"] == limit


def test_sessions_per_token_are_bounded(ui_service):
    limit = ui_service.app.state.services.settings.sessions_per_token
    with ui_service.app.state.services.sessions() as session:
        ui_service.tokens["many"] = create_token(session, "many-browsers", "team-a")
    for _ in range(limit + 3):
        sign_in(ui_service, "many")
    with ui_service.app.state.services.sessions() as session:
        from core.db import Token

        token_id = session.scalar(select(Token.id).where(Token.name == "many-browsers"))
        kept = session.scalars(select(BrowserSession).where(BrowserSession.token_id == token_id)).all()
    assert len(kept) == limit


def test_openapi_declares_the_bearer_scheme(ui_service):
    spec = ui_service.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["token"] == {**schemes["token"], "type": "http", "scheme": "bearer"}
    assert spec["paths"]["/v1/jobs"]["get"]["security"] == [{"token": []}]
    assert "security" not in spec["paths"]["/share/{link}/report.html"]["get"]


def test_an_altered_session_cookie_opens_nothing(ui_service, ui_jobs):
    value = sign_in(ui_service).cookies.get(SESSION_COOKIE)
    for forged in (value[:-1] + ("A" if value[-1] != "A" else "B"), value + "x", "", "x" * 500):
        client = browser(ui_service)
        client.cookies.set(SESSION_COOKIE, forged)
        assert client.get(f"/v1/jobs/{ui_jobs['v1']}").status_code == 401
        assert client.get("/ui/", headers=HTML).status_code == 303
