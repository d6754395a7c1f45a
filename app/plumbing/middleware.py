"""The request middleware: request id, access log, Prometheus request metrics, body-size cap."""

from __future__ import annotations

import logging
import re
import time
import uuid

from fastapi.responses import JSONResponse

from app.plumbing.errors import TooLarge, error_body
from app.services import Services

log = logging.getLogger("emopres.api")

REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


class RequestMiddleware:
    """Request id (X-Request-ID in and out), access log, Prometheus request metrics, body-size cap."""

    def __init__(self, app, services_getter) -> None:
        self.app, self.services_getter = app, services_getter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        services: Services = self.services_getter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        # a client's id is kept only when it is a plain token: it goes into logs (no control characters, no
        # forged log lines) and back into a response header
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        limit = services.settings.max_upload_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            response = JSONResponse(
                error_body("payload_too_large", f"request body is over the {limit}-byte cap", {"limit": limit}),
                status_code=413,
            )
            await response(scope, receive, send_wrapper)
            self._record(services, scope, status_holder["status"], started, request_id)
            return
        received = 0
        disconnected = False

        async def limited_receive():
            nonlocal received, disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            elif message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(f"request body is over the {limit}-byte cap", details={"limit": limit})
            return message

        try:
            await self.app(scope, limited_receive, send_wrapper)
        finally:
            self._record(services, scope, status_holder["status"], started, request_id, disconnected)

    @staticmethod
    def _record(services, scope, status, started, request_id, disconnected: bool = False) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        if disconnected:  # nobody got a response: not a server error
            if services.metrics:
                services.metrics.disconnects.labels(scope["method"], template).inc()
            log.info(
                "%s %s client disconnected after %.1fms request_id=%s",
                scope["method"],
                template,
                elapsed * 1000,
                request_id,
            )
            return
        if services.metrics:
            services.metrics.observe(scope["method"], template, status, elapsed)
        log.info("%s %s %s %.1fms request_id=%s", scope["method"], template, status, elapsed * 1000, request_id)
