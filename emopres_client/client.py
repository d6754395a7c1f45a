"""A small client of the emopres API v1 (httpx only), and the CI gates of `emopres submit`.

Client: upload a pairs file with its audio (multipart: ``manifest`` + one field per audio path),
poll the job, fetch its report and a comparison with a baseline job. POST retries reuse one
Idempotency-Key, so a retried upload never creates a second job.

Gates (pure functions, no I/O):

* ``--gate "bar>=0.5"``: a corpus metric against a threshold. ``metric[.field] OP number`` with
  OP one of ``>= > <= < ==`` and field one of ``value`` (default), ``ci_low``, ``ci_high``
  (``--gate "epr.ci_low>=0.25"`` asks that the whole 95% CI clear the bar).
* ``--max-drop bar=0.02``: with ``--baseline``, the metric may fall at most this much below the
  baseline (diff = job - baseline < -0.02 fails). ``--max-drop bar=0.02:sig`` fails only when
  the drop is also significant (paired bootstrap p < 0.05).

A gate on a metric that is null (or missing) fails, naming the reason: a CI gate that cannot be
checked must not pass silently.
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

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


# ============================================================================================ gates

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: math.isclose(a, b, rel_tol=0, abs_tol=1e-12),
}
FIELDS = ("value", "ci_low", "ci_high")
_GATE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_]+))?\s*(>=|<=|==|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$"
)
_DROP = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*(?::\s*(sig)\s*)?$")


@dataclass(frozen=True)
class Gate:
    metric: str
    field: str
    op: str
    threshold: float

    def __str__(self) -> str:
        name = self.metric if self.field == "value" else f"{self.metric}.{self.field}"
        return f"{name}{self.op}{self.threshold:g}"


@dataclass(frozen=True)
class MaxDrop:
    metric: str
    max_drop: float
    significant_only: bool = False

    def __str__(self) -> str:
        return f"max-drop {self.metric}={self.max_drop:g}" + (":sig" if self.significant_only else "")


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    observed: str
    reason: str | None = None
    warning: str | None = None  # the gate passed or failed, but the interval says the data cannot decide it


PRIMARY = "primary"  # a gate on the report's primary metric (its summary names it)


def _known(metric: str, known: tuple[str, ...] | None, text: str) -> None:
    if known is not None and metric not in known and metric != PRIMARY:
        raise ValueError(f"{text!r}: unknown metric {metric!r} (metrics: {', '.join(known)})")


def parse_gate(text: str, known_metrics: tuple[str, ...] | None = None) -> Gate:
    """``"bar>=0.5"`` -> Gate("bar", "value", ">=", 0.5); ValueError with a clear message otherwise."""
    match = _GATE.match(text or "")
    if not match:
        raise ValueError(
            f"{text!r} is not a gate; write METRIC[.value|.ci_low|.ci_high] OP NUMBER with OP one of "
            f'{" ".join(OPERATORS)}, e.g. "bar>=0.5" or "epr.ci_low>=0.25"'
        )
    metric, field, op, number = match.groups()
    metric = metric.lower()
    field = (field or "value").lower()
    if field not in FIELDS:
        raise ValueError(f"{text!r}: unknown field {field!r} (one of {', '.join(FIELDS)})")
    _known(metric, known_metrics, text)
    try:
        threshold = float(number)
    except ValueError:
        raise ValueError(f"{text!r}: {number!r} is not a number") from None
    if not math.isfinite(threshold):
        raise ValueError(f"{text!r}: the threshold must be a finite number")
    return Gate(metric, field, op, threshold)


def parse_max_drop(text: str, known_metrics: tuple[str, ...] | None = None) -> MaxDrop:
    """``"bar=0.02"`` -> MaxDrop("bar", 0.02); ``"bar=0.02:sig"`` fails only on a significant drop."""
    match = _DROP.match(text or "")
    if not match:
        raise ValueError(
            f"{text!r} is not a max-drop; write METRIC=AMOUNT (e.g. bar=0.02), optionally "
            "METRIC=AMOUNT:sig to fail only on a significant drop (p < 0.05)"
        )
    metric, number, sig = match.groups()
    metric = metric.lower()
    _known(metric, known_metrics, text)
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"{text!r}: {number!r} is not a number") from None
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"{text!r}: the allowed drop must be a number >= 0")
    return MaxDrop(metric, amount, sig is not None)


def _undecided(entry: dict, gate: Gate) -> str | None:
    """A warning when a gate on a value has its threshold inside the value's confidence interval."""
    low, high = finite_or_none(entry.get("ci_low")), finite_or_none(entry.get("ci_high"))
    if gate.field != "value" or low is None or high is None or not low <= gate.threshold <= high:
        return None
    return (
        f"too few pairs to decide: {gate.threshold:g} lies inside the 95% CI [{low:.4f}, {high:.4f}] "
        f"(gate on {gate.metric}.ci_low or .ci_high for a decision the data supports)"
    )


def check_gates(report: dict, gates: list[Gate]) -> list[GateResult]:
    corpus = (report or {}).get("corpus") or {}
    primary = (((report or {}).get("summary") or {}).get("primary") or {}).get("metric")
    results = []
    for gate in gates:
        name = primary if gate.metric == PRIMARY else gate.metric
        entry = corpus.get(name) if name else None
        if not isinstance(entry, dict):
            results.append(
                GateResult(
                    str(gate),
                    False,
                    "missing",
                    f"the report has no metric {gate.metric!r}"
                    + (" (no summary names its primary metric)" if gate.metric == PRIMARY else ""),
                )
            )
            continue
        value = finite_or_none(entry.get(gate.field))
        if value is None:
            why = entry.get("reason") or ("no confidence interval" if gate.field != "value" else "no value")
            results.append(GateResult(str(gate), False, "null", f"{name}.{gate.field} is null: {why}"))
            continue
        passed = OPERATORS[gate.op](value, gate.threshold)
        results.append(
            GateResult(
                str(gate),
                passed,
                f"{value:.4f}" + (f" ({name})" if name != gate.metric else ""),
                None if passed else f"{name}.{gate.field} = {value:.4f}, needs {gate.op} {gate.threshold:g}",
                _undecided(entry, gate),
            )
        )
    return results


def check_max_drops(comparison: dict | None, drops: list[MaxDrop], alpha: float = 0.05) -> list[GateResult]:
    """Gates on a comparison (``GET /v1/jobs/{id}/compare/{baseline}``: ``metrics[m].diff`` = job - baseline)."""
    results = []
    metrics = ((comparison or {}).get("metrics") or {}) if comparison is not None else {}
    for drop in drops:
        if comparison is None:
            results.append(GateResult(str(drop), False, "missing", "no comparison (pass --baseline JOB_ID)"))
            continue
        entry = metrics.get(drop.metric)
        if not isinstance(entry, dict):
            results.append(GateResult(str(drop), False, "missing", f"the comparison has no metric {drop.metric!r}"))
            continue
        diff = finite_or_none(entry.get("diff"))
        if diff is None:
            results.append(
                GateResult(
                    str(drop), False, "null", f"{drop.metric} difference is null: {entry.get('reason') or 'no value'}"
                )
            )
            continue
        p_value = finite_or_none(entry.get("p_value"))
        observed = f"{diff:+.4f}" + (f" (p={p_value:.3g})" if p_value is not None else "")
        dropped = diff < -drop.max_drop
        if dropped and drop.significant_only:
            if p_value is None:
                results.append(
                    GateResult(
                        str(drop),
                        False,
                        observed,
                        f"{drop.metric} dropped {-diff:.4f} and its p-value is null: "
                        f"{entry.get('reason') or 'no bootstrap'}",
                    )
                )
                continue
            dropped = p_value < alpha
        results.append(
            GateResult(
                str(drop),
                not dropped,
                observed,
                f"{drop.metric} dropped {-diff:.4f} below the baseline (allowed {drop.max_drop:g}"
                + (f", p={p_value:.3g}" if p_value is not None else "")
                + ")"
                if dropped
                else None,
            )
        )
    return results


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
