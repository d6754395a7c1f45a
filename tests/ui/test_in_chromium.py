"""A person in a real browser (Playwright driving Debian's Chromium): sign in, see the dashboard, open a system's
trend, a version's report and its comparison, share a report and open the link in a fresh browser with no
session, sign out. Screenshots of each page go to $EMOPRES_SCREENSHOTS (default: the test's tmp folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.main import create_app
from tests.browser import FLAGS, find_browser
from tests.service_support import serving

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (pip install -e .[dev])")
pytestmark = pytest.mark.skipif(
    find_browser() is None, reason="no Chromium installed (apt-get install chromium; .ci/run does)"
)


@pytest.fixture(scope="module")
def site(ui_service, ui_jobs):
    """The same data served over real HTTP by uvicorn (a second API host on the same database)."""
    app = create_app(ui_service.app.state.services.settings, start_worker=False)
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=find_browser(), args=[f for f in FLAGS if f != "--headless"])
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("EMOPRES_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def watched_page(context):
    """A page whose console errors and failed requests are collected: a page that shows errors fails the test."""
    page = context.new_page()
    page.problems = []
    page.on("console", lambda message: message.type == "error" and page.problems.append(message.text))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on("requestfailed", lambda request: page.problems.append(f"{request.url}: {request.failure}"))
    page.on("response", lambda response: response.status == 404 and page.problems.append(f"404: {response.url}"))
    return page


def test_a_person_signs_in_follows_a_system_and_shares_a_report(site, chromium, ui_service, ui_jobs, shots):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = watched_page(context)

    page.goto(f"{site}/v1/jobs/{ui_jobs['v2']}/report.html")  # a report link from a chat message
    assert "/ui/login" in page.url
    page.screenshot(path=shots / "1-login.png", full_page=True)
    page.fill("#token", ui_service.tokens["a"])
    page.click("button[type=submit]")
    assert page.url.endswith(f"/v1/jobs/{ui_jobs['v2']}/report.html"), page.url  # back where the link pointed
    assert "my-s2st@v2" in page.title() + page.content()

    page.goto(f"{site}/ui/")
    assert page.locator("#systems tbody tr").count() == 1
    assert "their" not in page.content()  # team-b's system is not team-a's to see
    assert page.locator("#jobs tr.job.failed").count() == 1
    page.screenshot(path=shots / "2-dashboard.png", full_page=True)

    page.click("#systems >> text=trend")
    assert "/ui/systems/my-s2st" in page.url
    chart = page.locator("svg.trend")
    assert chart.locator("circle.version.ok").count() == 2
    assert chart.locator("text.version.failed").count() == 1
    box = chart.bounding_box()
    assert box and box["width"] > 500
    page.screenshot(path=shots / "3-trend.png", full_page=True)

    page.click("#versions >> text=compare with v1")
    assert "baseline=" in page.url
    assert page.locator("#comparison").count() == 1
    page.screenshot(path=shots / "4-comparison.png", full_page=True)

    page.goto(f"{site}/ui/")
    page.locator("#jobs tr", has_text="my-s2st@v1").locator("button", has_text="share").click()
    link = page.input_value("#share-url")
    assert "/share/" in link
    page.screenshot(path=shots / "5-share.png", full_page=True)

    stranger = chromium.new_context(viewport={"width": 1280, "height": 900})  # no session, no token
    shared = watched_page(stranger)
    shared.goto(link)
    assert "my-s2st@v1" in shared.content()
    assert shared.url == link
    shared.screenshot(path=shots / "6-shared-report.png", full_page=True)
    shared.goto(f"{site}/ui/")
    assert "/ui/login" in shared.url  # the link opened one report, not the dashboard
    stranger.close()

    page.goto(f"{site}/ui/")
    page.click("header >> text=Sign out")
    assert "/ui/login" in page.url
    page.goto(f"{site}/v1/jobs/{ui_jobs['v2']}/report.html")
    assert "/ui/login" in page.url
    assert page.problems == [] and shared.problems == []
    context.close()
