"""One JSON error shape for every 4xx/5xx: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from html import escape
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.plumbing.errors import APIError, Unauthorized, error_body, storage_full
from core.blobstore import BlobStoreUnavailable

log = logging.getLogger("emopres.api")


HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
    507: "insufficient_storage",
}
STORAGE_RETRY_AFTER = "60"
STORE_RETRY_AFTER = "10"


def insufficient_storage(request: Request, error: BaseException) -> JSONResponse:
    """507: the data directory (or the database's disk) is full. Nothing half-written is kept: blob files are
    written to a temporary name and renamed, and the job's transaction is rolled back."""
    log.error("storage full (%s %s): %s", request.method, request.url.path, error)
    return JSONResponse(
        error_body("insufficient_storage", "the service is out of storage space; nothing was stored: retry later"),
        status_code=507,
        headers={"Retry-After": STORAGE_RETRY_AFTER},
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method a route of this path answers (GET and DELETE for /v1/jobs/{id})."""
    from starlette.routing import Match

    methods: set[str] = set()

    def visit(routes) -> None:
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI >= 0.165 wraps an included router
            if included is not None:
                visit(included.routes)
                continue
            if getattr(route, "methods", None) and route.matches(request.scope)[0] is not Match.NONE:
                methods.update(route.methods)

    visit(request.app.routes)
    return sorted(methods)


def wants_page(request: Request) -> bool:
    """A person's browser opening a page (a link clicked), not a program: it is sent to sign in instead of a 401."""
    accept = request.headers.get("accept", "")
    return request.method == "GET" and "text/html" in accept and "authorization" not in request.headers


def error_page(error: APIError) -> str:
    """A person's view of an error the API marks as a page's (a share link that no longer opens): the message."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>emopres</title></head>'
        f'<body style="font-family: system-ui, sans-serif; margin: 3em"><h1>This link does not open</h1>'
        f'<p>{escape(error.message)}</p><p>Ask whoever sent it for a new one, or <a href="/ui/login">sign in</a>.</p>'
        "</body></html>"
    )


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/ui/login?" + urlencode({"next": target})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError):
        if isinstance(error, Unauthorized) and wants_page(request):
            return RedirectResponse(login_url(request), status_code=303)
        if error.page and wants_page(request):
            return HTMLResponse(error_page(error), status_code=error.status, headers=error.headers)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = HTTP_CODES.get(error.status_code, "error")
        message = error.detail if isinstance(error.detail, str) else code.replace("_", " ")
        if error.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        headers = getattr(error, "headers", None)
        if error.status_code == 405:  # Starlette's Allow names the first matching route's methods only
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return JSONResponse(error_body(code, message), status_code=error.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        errors = jsonable_encoder(error.errors(), exclude={"ctx", "url", "input"})
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", []))
        return JSONResponse(
            error_body("validation_error", f"{where}: {first.get('msg', 'invalid request')}", {"errors": errors}),
            status_code=422,
        )

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, error: ClientDisconnect):
        return Response(status_code=499)  # never sent: the middleware counts a disconnect (no traceback in the log)

    @app.exception_handler(PoolTimeout)
    async def database_busy(request: Request, error: PoolTimeout):
        log.warning("database connection pool exhausted: %s", str(error).splitlines()[0])
        return JSONResponse(
            error_body("service_unavailable", "the service is busy (no database connection free); retry shortly"),
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(OperationalError)
    async def database_error(request: Request, error: OperationalError):
        if storage_full(error):
            return insufficient_storage(request, error)
        log.error("database unavailable: %s", str(error).splitlines()[0])
        return JSONResponse(
            error_body("service_unavailable", "the database is unavailable; retry shortly"),
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(BlobStoreUnavailable)
    async def blob_store_unavailable(request: Request, error: BlobStoreUnavailable):
        log.error("object store unavailable (%s %s): %s", request.method, request.url.path, error)
        return JSONResponse(
            error_body("service_unavailable", "the audio store is unavailable; nothing was stored: retry shortly"),
            status_code=503,
            headers={"Retry-After": STORE_RETRY_AFTER},
        )

    @app.exception_handler(OSError)
    async def os_error(request: Request, error: OSError):
        if storage_full(error):
            return insufficient_storage(request, error)
        return await internal_error(request, error)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        if storage_full(error):
            return insufficient_storage(request, error)
        request_id = request.scope.get("state", {}).get("request_id")
        log.exception("internal error (request_id=%s)", request_id)
        return JSONResponse(error_body("internal_error", "internal error", {"request_id": request_id}), status_code=500)
