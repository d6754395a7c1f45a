"""/docs and /redoc work without internet: Swagger UI and ReDoc come from the service (fastapi-offline).

A real server on loopback, opened in headless Chromium that cannot resolve any other host: the
operations must render. Control: FastAPI's default docs page (assets from a CDN), opened the same
way, renders none, so the check can see a page that needs the network.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from tests.browser import OFFLINE_FLAGS, find_browser, load_page
from tests.service.test_service_api import service_settings
from tests.service_support import serving

needs_browser = pytest.mark.skipif(find_browser() is None, reason="no Chromium installed (apt-get install chromium)")
SWAGGER_OPERATIONS = "document.querySelectorAll('.opblock').length"
SWAGGER_PATHS = "JSON.stringify(Array.from(document.querySelectorAll('.opblock-summary-path')).map(e => e.textContent))"


@pytest.fixture(scope="module")
def service_url(tmp_path_factory, random_lite_head):
    app = create_app(service_settings(tmp_path_factory.mktemp("docs"), random_lite_head), start_worker=False)
    with serving(app) as url:
        yield url


def test_docs_pages_load_only_the_services_own_assets(service_url):
    for page in ("/docs", "/redoc"):
        html = httpx.get(service_url + page).text
        assets = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)
        assert len(assets) >= 2, html
        for asset in assets:
            assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
            assert httpx.get(service_url + asset).status_code == 200, asset


@needs_browser
def test_swagger_ui_renders_every_operation_with_no_network(service_url):
    spec = httpx.get(service_url + "/openapi.json").json()
    operations = sum(
        len([m for m in item if m in ("get", "post", "put", "patch", "delete")]) for item in spec["paths"].values()
    )
    result = load_page(
        service_url + "/docs",
        flags=OFFLINE_FLAGS,
        settle=f"{SWAGGER_OPERATIONS} > 0",
        evaluate={"operations": SWAGGER_OPERATIONS, "paths": SWAGGER_PATHS},
    )
    assert result["errors"] == []
    assert result["values"]["operations"] == operations > 10
    paths = json.loads(result["values"]["paths"])
    assert "/v1/jobs" in [p.replace("\u200b", "") for p in paths]


@needs_browser
def test_redoc_renders_with_no_network(service_url):
    result = load_page(
        service_url + "/redoc",
        flags=OFFLINE_FLAGS,
        settle="document.querySelectorAll('[data-section-id]').length > 0",
        evaluate={"sections": "document.querySelectorAll('[data-section-id]').length"},
    )
    assert result["values"]["sections"] > 10
    assert "POST /v1/jobs" in result["text"].replace("\n", " ") or "/v1/jobs" in result["text"]


@needs_browser
def test_control_the_cdn_docs_page_stays_blank_with_no_network():
    app = FastAPI(title="control")

    @app.get("/ping")
    def ping():
        return {}

    with serving(app) as url:
        result = load_page(url + "/docs", flags=OFFLINE_FLAGS, timeout=30, evaluate={"operations": SWAGGER_OPERATIONS})
    assert result["values"]["operations"] == 0
    assert any("cdn.jsdelivr.net" in e or "ERR_NAME_NOT_RESOLVED" in e for e in result["errors"]), result["errors"]
