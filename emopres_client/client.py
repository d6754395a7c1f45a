"""A small client of the emopres API v1 (httpx only); the CI gates of `emopres submit` live in gates.py.

Client: upload a pairs file with its audio (multipart: ``manifest`` + one field per audio path),
poll the job, fetch its report and a comparison with a baseline job. POST retries reuse one
Idempotency-Key, so a retried upload never creates a second job.

The gates (``Gate``, ``MaxDrop``, ``GateResult``, ``parse_gate``, ``parse_max_drop``, ``check_gates``,
``check_max_drops``, ``PRIMARY``) are defined in ``emopres_client.gates`` and re-exported here.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from emopres_client.gates import (  # re-exported: the gates stay importable from emopres_client.client
    PRIMARY,
    Gate,
    GateResult,
    MaxDrop,
    check_gates,
    check_max_drops,
    parse_gate,
    parse_max_drop,
)
from emopres_client.numbers import finite_or_none

__all__ = [
    "Client",
    "ClientError",
    "Gate",
    "MaxDrop",
    "GateResult",
    "parse_gate",
    "parse_max_drop",
    "check_gates",
    "check_max_drops",
    "PRIMARY",
]

USER_AGENT = "emopres-client"
RETRY_STATUSES = {429, 502, 503, 504}


class ClientError(Exception):
    """A request the service refused or that could not be made; ``status``/``code`` from the error body."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, details: dict | None = None
    ):
        super().__init__(message)
        self.status, self.code, self.details = status, code, details or {}


# ============================================================================================ client


class _ProgressReader:
    """A file object that reports how many bytes httpx has read (the upload progress)."""

    def __init__(self, path: Path, on_read: Callable[[int], None] | None):
        self._file = open(path, "rb")
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if data and self._on_read:
            self._on_read(len(data))
        return data

    def fileno(self) -> int:
        return self._file.fileno()

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def close(self) -> None:
        self._file.close()


def _error_from(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
        error = body.get("error") or {}
        message = error.get("message") or response.text
        return ClientError(
            f"HTTP {response.status_code} {error.get('code') or ''}: {message}".replace("  ", " "),
            status=response.status_code,
            code=error.get("code"),
            details=error.get("details"),
        )
    except Exception:
        return ClientError(f"HTTP {response.status_code}: {response.text[:500]}", status=response.status_code)


class Client:
    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        timeout: float = 300.0,
        retries: int = 4,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.server = server.rstrip("/")
        self.retries = retries
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.server,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=15.0),
            transport=transport,
            follow_redirects=False,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ plumbing

    def _request(
        self, method: str, url: str, *, make_kwargs: Callable[[], dict] | None = None, **kwargs
    ) -> httpx.Response:
        """One request with retries on connection errors and 429/502/503/504 (honouring Retry-After)."""
        delay = 1.0
        for attempt in range(self.retries + 1):
            extra = make_kwargs() if make_kwargs else {}
            try:
                response = self._http.request(method, url, **kwargs, **extra)
            except httpx.TransportError as error:
                if attempt == self.retries:
                    raise ClientError(f"cannot reach {self.server}: {error}") from None
                self._sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            finally:
                for value in (extra.get("files") or {}).values():
                    handle = value[1] if isinstance(value, tuple) else value
                    if hasattr(handle, "close"):
                        handle.close()
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                retry_after = finite_or_none(response.headers.get("Retry-After"))
                self._sleep(min(retry_after if retry_after is not None else delay, 60.0))
                delay = min(delay * 2, 30.0)
                continue
            if response.status_code >= 400:
                raise _error_from(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, url: str, **kwargs) -> Any:
        return self._request(method, url, **kwargs).json()

    # ------------------------------------------------------------------ API

    def submit(
        self,
        pairs_file: str | Path,
        *,
        audio_root: str | Path | None = None,
        name: str | None = None,
        profile: str | None = None,
        metadata: dict | None = None,
        group_column: str | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        on_upload: Callable[[int, int], None] | None = None,
    ) -> dict:
        """POST /v1/jobs with the pairs file and every audio file it names; returns {"id", "status"}.

        ``on_upload(bytes_sent, total_bytes)`` is called as the body goes out.
        """
        import json as _json

        from emopres_client.pairs import check_relative_path, read_pairs_file

        pairs_path = Path(pairs_file)
        pairs = read_pairs_file(pairs_path, group_column=group_column)
        root = Path(audio_root) if audio_root else pairs_path.resolve().parent
        paths = list(dict.fromkeys(check_relative_path(p) for pair in pairs for p in (pair.source, pair.target)))
        local = {p: root / p for p in paths}
        missing = [p for p, f in local.items() if not f.is_file()]
        if missing:
            raise ClientError(
                f"{len(missing)} audio file(s) of {pairs_path} not found under {root}: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            )
        total = pairs_path.stat().st_size + sum(f.stat().st_size for f in local.values())
        sent = [0]

        def bump(n: int) -> None:
            sent[0] += n
            if on_upload:
                on_upload(min(sent[0], total), total)

        data = {
            k: v
            for k, v in {
                "name": name,
                "profile": profile,
                "group_column": group_column,
                "callback_url": callback_url,
                "metadata": _json.dumps(metadata) if metadata is not None else None,
            }.items()
            if v is not None
        }

        def make_files() -> dict:
            sent[0] = 0
            files = {"manifest": (pairs_path.name, _ProgressReader(pairs_path, bump), "text/plain")}
            for path, file in local.items():
                files[path] = (Path(path).name, _ProgressReader(file, bump), "application/octet-stream")
            return {"files": files}

        key = idempotency_key or str(uuid.uuid4())
        return self._json("POST", "/v1/jobs", data=data, make_kwargs=make_files, headers={"Idempotency-Key": key})

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def wait(
        self,
        job_id: str,
        *,
        poll: float = 2.0,
        timeout: float = 3600.0,
        on_progress: Callable[[dict], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> dict:
        """Poll until the job succeeded or failed; returns the last job view. ClientError on timeout."""
        deadline = clock() + timeout
        interval = min(poll, 1.0)
        while True:
            view = self.job(job_id)
            if on_progress:
                on_progress(view)
            if view.get("status") in ("succeeded", "failed"):
                return view
            if clock() >= deadline:
                raise ClientError(f"job {job_id} is still {view.get('status')} after {timeout:g} s", code="timeout")
            self._sleep(interval)
            interval = min(interval * 1.5, max(poll, 0.1))

    def latest_job(self, name: str) -> dict:
        """The newest succeeded job with this name (e.g. the last run of the main branch)."""
        items = self.list_jobs(name=name, status="succeeded", limit=1)["items"]
        if not items:
            raise ClientError(f"no succeeded job named {name!r} on {self.server}", code="no_baseline")
        return items[0]

    def list_jobs(
        self,
        *,
        name: str | None = None,
        name_prefix: str | None = None,
        status: str | None = None,
        order: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict:
        """One page of GET /v1/jobs: {"items", "next_cursor"}."""
        params = {
            k: v
            for k, v in {
                "name": name,
                "name_prefix": name_prefix,
                "status": status,
                "order": order,
                "limit": limit,
                "cursor": cursor,
            }.items()
            if v is not None
        }
        return self._json("GET", "/v1/jobs", params=params)

    def deliveries(self, job_id: str) -> dict:
        """The job's webhook deliveries (every attempt, with its outcome)."""
        return self._json("GET", f"/v1/jobs/{job_id}/deliveries")

    def share(self, job_id: str) -> dict:
        """A signed read-only link to the job's report page that needs no token: {"url", "expires_at"}."""
        return self._json("POST", f"/v1/jobs/{job_id}/share")

    def metric_names(self) -> tuple[str, ...]:
        """The corpus metrics this service's reports have (from its published report schema)."""
        schema = self._json("GET", "/v1/schema/report")
        corpus = schema["properties"]["corpus"]["properties"]
        return tuple(name for name, entry in corpus.items() if entry.get("$ref", "").endswith("/metric"))

    def report(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{job_id}/report")

    def compare(self, job_id: str, baseline_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{job_id}/compare/{baseline_id}")


def env_default(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None
