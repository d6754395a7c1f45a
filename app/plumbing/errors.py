"""The one error shape of every 4xx/5xx: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import errno

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class APIError(Exception):
    status = 400
    code = "bad_request"
    page = False  # True: a browser opening it gets the message as a page (error_handlers.error_page), not JSON

    def __init__(
        self,
        message: str,
        *,
        details: dict | None = None,
        status: int | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.status = status or self.status
        self.code = code or self.code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.code, self.message, self.details)


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


class InvalidRequest(APIError):
    status, code = 422, "invalid_request"


class InvalidManifest(APIError):
    status, code = 422, "invalid_manifest"


class InvalidAudio(APIError):
    status, code = 422, "invalid_audio"


class InvalidArchive(APIError):
    status, code = 422, "invalid_archive"


class TooLarge(APIError):
    status, code = 413, "payload_too_large"


class Unauthorized(APIError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "a valid bearer token is required (Authorization: Bearer <token>)") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFound(APIError):
    status, code = 404, "not_found"


class Conflict(APIError):
    status, code = 409, "conflict"


def storage_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, says the disk (or the database's disk) is full: ENOSPC or
    EDQUOT while spooling an upload or writing a blob, SQLite's SQLITE_FULL, PostgreSQL's disk_full (53100)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
            return True
        original = getattr(error, "orig", None)  # a SQLAlchemy DBAPIError's driver error
        if original is not None:
            if getattr(original, "sqlstate", None) == "53100" or getattr(original, "pgcode", None) == "53100":
                return True
            if "database or disk is full" in str(original):
                return True
        error = error.__cause__ or error.__context__
    return False


class Unavailable(APIError):
    status, code = 503, "service_unavailable"

    def __init__(self, message: str, retry_after: int = 5, details: dict | None = None) -> None:
        super().__init__(message, details=details, headers={"Retry-After": str(retry_after)})
