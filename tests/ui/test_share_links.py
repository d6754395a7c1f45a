"""Share links: a signed, expiring, read-only link to one job's report page and plots that needs no token;
altered, expired, revoked or deleted, it opens nothing, and it never opens another job."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from app.auth import Principal, create_token, revoke_token
from app.browser_auth import make_share_link
from app.webhooks.delivery import summary
from core.db import Job, RenderedPage, ServiceKey
from tests.service_support import upload_fields, wait_job, write_dataset
from tests.ui.conftest import bearer


def anonymous(service) -> TestClient:
    return TestClient(service.app, base_url="http://testserver", follow_redirects=False)


def share(service, job_id: str, who: str = "a") -> str:
    response = service.post(f"/v1/jobs/{job_id}/share", headers=bearer(service, who))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"url", "expires_at"}
    return urlsplit(body["url"]).path


def link_of(path: str) -> str:
    return path.split("/")[2]


def test_a_share_link_opens_the_report_and_its_plots_with_no_token(ui_service, ui_jobs):
    path = share(ui_service, ui_jobs["v1"])
    assert path.startswith("/share/") and path.endswith("/report.html")
    client = anonymous(ui_service)
    page = client.get(path)
    assert page.status_code == 200 and "my-s2st@v1" in page.text
    assert page.headers["cache-control"] == "private, no-store"
    name = ui_service.get(f"/v1/jobs/{ui_jobs['v1']}/plots", headers=bearer(ui_service, "a")).json()["plots"][0]["name"]
    plot = client.get(path.replace("/report.html", f"/plots/{name}"), params={"format": "svg"})
    assert plot.status_code == 200 and plot.headers["content-type"].startswith("image/svg+xml")
    # read-only: the link opens the page and plots, nothing else of the job
    link = link_of(path)
    assert client.get(f"/share/{link}/report").status_code == 404
    assert client.get(f"/v1/jobs/{ui_jobs['v1']}").status_code == 401


def test_an_altered_link_is_refused(ui_service, ui_jobs):
    link = link_of(share(ui_service, ui_jobs["v1"]))
    job_id, expiry, key_id, signature = link.split(".")
    client = anonymous(ui_service)
    forged = [
        f"{ui_jobs['v2']}.{expiry}.{key_id}.{signature}",  # another job of the same project
        f"{ui_jobs['b']}.{expiry}.{key_id}.{signature}",  # another project's job
        f"{job_id}.{int(expiry) + 86400}.{key_id}.{signature}",  # a later expiry
        f"{job_id}.{expiry}.{key_id}.{signature[:-2]}AA",
        f"{job_id}.{expiry}.-.{signature}",
        "not-a-link",
    ]
    for bad in forged:
        response = client.get(f"/share/{bad}/report.html")
        assert response.status_code == 401, bad
        assert response.json()["error"]["code"] == "invalid_share_link"


def test_a_link_of_token_a_never_opens_token_bs_job(ui_service, ui_jobs):
    with pytest.raises(AssertionError):
        share(ui_service, ui_jobs["b"], who="a")  # 404: not token a's job
    assert ui_service.post(f"/v1/jobs/{ui_jobs['b']}/share", headers=bearer(ui_service, "a")).status_code == 404


def test_an_expired_link_is_refused(ui_service, ui_jobs):
    with ui_service.app.state.services.sessions() as session:
        link, _ = make_share_link(session, Principal("team-a", "ci-a"), ui_jobs["v1"], seconds=-5)
    response = anonymous(ui_service).get(f"/share/{link}/report.html")
    assert response.status_code == 403 and response.json()["error"]["code"] == "share_link_expired"


def test_a_link_dies_with_its_token(ui_service, ui_jobs):
    with ui_service.app.state.services.sessions() as session:
        raw = create_token(session, "sharer", "team-a")
    response = ui_service.post(f"/v1/jobs/{ui_jobs['v1']}/share", headers={"Authorization": f"Bearer {raw}"})
    path = urlsplit(response.json()["url"]).path
    client = anonymous(ui_service)
    assert client.get(path).status_code == 200
    with ui_service.app.state.services.sessions() as session:
        revoke_token(session, "sharer")
    assert client.get(path).status_code == 401


def test_a_link_dies_with_its_job_and_the_jobs_stored_pages_go_too(ui_service, tmp_path):
    manifest = write_dataset(tmp_path, n_pairs=2, seconds=1.0)
    created = ui_service.post("/v1/jobs", files=upload_fields(manifest), headers=bearer(ui_service, "a"))
    job_id = created.json()["id"]
    assert wait_job(ui_service, job_id, timeout=300, headers=bearer(ui_service, "a"))["status"] == "succeeded"
    path = share(ui_service, job_id)
    client = anonymous(ui_service)
    assert client.get(path).status_code == 200
    with ui_service.app.state.services.sessions() as session:
        assert session.scalars(select(RenderedPage.key).where(RenderedPage.job_id == job_id)).all()
    assert ui_service.delete(f"/v1/jobs/{job_id}", headers=bearer(ui_service, "a")).status_code == 204
    assert client.get(path).status_code == 404
    with ui_service.app.state.services.sessions() as session:
        assert not session.scalars(select(RenderedPage.key).where(RenderedPage.job_id == job_id)).all()


def test_every_api_host_accepts_the_links_of_the_others(ui_service, ui_jobs):
    """The signing key lives in the database, made once: a second app on the same database checks the link."""
    from app.main import create_app

    path = share(ui_service, ui_jobs["v1"])
    second = create_app(ui_service.app.state.services.settings, start_worker=False)
    with TestClient(second) as client:
        assert client.get(path).status_code == 200
    with ui_service.app.state.services.sessions() as session:
        assert len(session.scalars(select(ServiceKey)).all()) == 1


def test_job_views_and_webhook_summaries_carry_a_share_link_when_enabled(ui_service, ui_jobs, monkeypatch):
    settings = ui_service.app.state.services.settings
    view = ui_service.get(f"/v1/jobs/{ui_jobs['v1']}", headers=bearer(ui_service, "a")).json()
    assert view["links"].get("share") is None
    monkeypatch.setattr(settings, "share_links_in_views", True)
    view = ui_service.get(f"/v1/jobs/{ui_jobs['v1']}", headers=bearer(ui_service, "a")).json()
    assert anonymous(ui_service).get(urlsplit(view["links"]["share"]).path).status_code == 200
    assert view["links"]["share_expires_at"]
    with ui_service.app.state.services.sessions() as session:
        job = session.get(Job, ui_jobs["v1"])
        carried = summary(session, job, settings, "ci-a")
    assert anonymous(ui_service).get(carried["links"]["share"]).status_code == 200


def test_the_report_page_is_drawn_once_and_kept_within_its_bound(ui_service, ui_jobs):
    services = ui_service.app.state.services
    job_id = ui_jobs["v2"]
    with services.sessions() as session:
        session.execute(delete(RenderedPage).where(RenderedPage.job_id == job_id))
        session.commit()
    first = ui_service.get(f"/v1/jobs/{job_id}/report.html", headers=bearer(ui_service, "a"))
    with services.sessions() as session:
        stored = session.scalars(select(RenderedPage).where(RenderedPage.job_id == job_id)).all()
        assert [bytes(p.content).decode() for p in stored] == [first.text]
    again = ui_service.get(f"/v1/jobs/{job_id}/report.html", headers=bearer(ui_service, "a"))
    assert again.text == first.text
    for worst in range(1, 8):
        assert ui_service.get(
            f"/v1/jobs/{job_id}/report.html?worst={worst}", headers=bearer(ui_service, "a")
        ).is_success
    with services.sessions() as session:
        kept = session.scalars(select(RenderedPage.key).where(RenderedPage.job_id == job_id)).all()
    assert len(kept) == services.settings.rendered_pages_per_job


def test_the_stored_page_is_what_is_served(ui_service, ui_jobs):
    """A stored page is served as stored: proof that a second view does not draw it again."""
    services = ui_service.app.state.services
    job_id = ui_jobs["v1"]
    with services.sessions() as session:
        session.execute(delete(RenderedPage).where(RenderedPage.job_id == job_id))
        session.commit()
    ui_service.get(f"/v1/jobs/{job_id}/report.html?worst=2", headers=bearer(ui_service, "a"))
    with services.sessions() as session:
        (page,) = session.scalars(select(RenderedPage).where(RenderedPage.job_id == job_id)).all()
        marked = re.sub(rb"</body>", b"<!-- kept --></body>", bytes(page.content))
        page.content = marked
        session.commit()
    assert (
        "<!-- kept -->"
        in ui_service.get(f"/v1/jobs/{job_id}/report.html?worst=2", headers=bearer(ui_service, "a")).text
    )


def test_a_link_made_without_auth_is_refused_once_auth_is_on(ui_service, ui_jobs):
    with ui_service.app.state.services.sessions() as session:
        link, _ = make_share_link(session, Principal("team-a", None), ui_jobs["v1"], seconds=600)
    assert anonymous(ui_service).get(f"/share/{link}/report.html").status_code == 401


def test_share_links_expire_within_the_setting(ui_service, ui_jobs):
    from datetime import datetime

    response = ui_service.post(f"/v1/jobs/{ui_jobs['v1']}/share", headers=bearer(ui_service, "a")).json()
    expires = datetime.fromisoformat(response["expires_at"])
    from core.db import utcnow

    seconds = ui_service.app.state.services.settings.share_link_seconds
    assert utcnow() < expires <= utcnow() + timedelta(seconds=seconds)


def test_a_person_opening_a_dead_link_reads_why_not_a_sign_in_form(ui_service, ui_jobs):
    with ui_service.app.state.services.sessions() as session:
        link, _ = make_share_link(session, Principal("team-a", "ci-a"), ui_jobs["v1"], seconds=-5)
    html = {"Accept": "text/html"}
    expired = anonymous(ui_service).get(f"/share/{link}/report.html", headers=html)
    assert expired.status_code == 403 and expired.headers["content-type"].startswith("text/html")
    assert "expired" in expired.text
    altered = anonymous(ui_service).get("/share/x.1.y.<script>/report.html", headers=html)
    assert altered.status_code == 401 and "<script>" not in altered.text
