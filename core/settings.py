"""Service settings: one object read from the environment (prefix EMOPRES_).

The defaults give the embedded mode of `emopres serve`: a SQLite file and the blob store under
the data folder, an in-process queue, the lite profile. Production sets at least
EMOPRES_DATABASE_URL (PostgreSQL) and EMOPRES_BROKER_URL (Redis).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.profiles import DEFAULT_PROFILE, NO_SIDE_HEAD, PROFILES

MiB = 1024 * 1024


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "emopres"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMOPRES_", extra="ignore")

    # where things live
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="SQLite file, blob store and feature cache of the embedded default",
    )
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/emopres.db")
    broker_url: str | None = Field(None, description="Celery broker (redis://...); unset = in-process queue")
    blob_store: Literal["fs", "database", "s3"] = Field(
        "fs",
        description="fs: files under blob_dir (shared volume between api and workers); "
        "database: audio bytes in the database (workers on any machine, no shared volume); "
        "s3: objects in an S3-compatible bucket (s3_bucket; workers on any machine, the database stays small)",
    )
    blob_dir: Path | None = Field(None, description="default <data_dir>/blobs")
    blob_cache_bytes: int = Field(
        2 * 1024 * MiB,
        ge=0,
        description="database and s3 stores: the local copies of audio a worker keeps under <cache_dir>/blobs, at "
        "most this many bytes (the least recently used go first; the chunk in hand's are kept)",
    )
    s3_bucket: str | None = Field(None, description="s3 store: the bucket (it must exist)")
    s3_endpoint_url: str | None = Field(
        None, description="s3 store: the endpoint of an S3-compatible service (MinIO, Ceph, R2); default AWS S3"
    )
    s3_prefix: str = Field("", description="s3 store: a prefix for every object key (e.g. emopres/)")
    s3_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="s3 store: connecting to the endpoint, and waiting for its answer, each at most this; a request "
        "is tried at most twice, then the submission answers 503 (a worker waits, blob_retry_seconds)",
    )
    blob_retry_seconds: float = Field(
        300.0,
        gt=0,
        description="a worker waits this long for an unreachable object store (retrying, its chunk's lease renewed) "
        "before it gives the chunk back",
    )
    cache_dir: Path | None = Field(None, description="feature cache; default <data_dir>/features")
    no_cache: bool = False
    auto_migrate: bool | None = Field(None, description="upgrade the schema at start; default: only for SQLite")

    # evaluation
    profile: Literal[PROFILES] = DEFAULT_PROFILE  # type: ignore[valid-type]
    model_dir: str | None = None
    head: str | None = Field(None, description="SER head folder; default: the profile's shipped head")
    side_head: str | None = Field(
        None,
        description="per-side SER head folder (the side-normalised reading); "
        f"default: the profile's, if it has one; {NO_SIDE_HEAD!r}: none",
    )
    device: str = "cpu"
    fast: bool = False
    bootstrap: int = Field(1000, ge=0, le=100_000)
    seed: int = Field(12345, ge=0, le=2**32 - 1, description="bootstrap seed (numpy needs a non-negative one)")

    # access
    auth_disabled: bool = False
    metrics_enabled: bool = Field(
        False,
        description="serve /metrics (Prometheus; no token, service-wide counts): "
        "opt in where only the operator's network reaches it",
    )

    # caps on what a client may send
    max_upload_bytes: int = Field(1024 * MiB, gt=0, description="whole request body")
    max_file_bytes: int = Field(100 * MiB, gt=0, description="one audio file")
    max_audio_seconds: float = Field(600.0, gt=0)
    max_pairs: int = Field(10_000, gt=0)
    max_files: int = Field(
        20_001,
        gt=0,
        description="form fields / archive entries (every entry counts: files, "
        "folders, links), refused as soon as one more is seen",
    )
    max_archive_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="what one archive member's header may "
        "hold: a tar long name or PAX header (checked before it is read; global "
        "PAX headers together), a zip entry's name, extra field and comment",
    )
    max_metadata_bytes: int = Field(16 * 1024, gt=0)
    max_connections: int = Field(
        1000,
        ge=1,
        description="open client connections per API process; more are reset "
        "(the file-handle limit is raised to fit, if it can be)",
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="a request's line and headers must arrive within this"
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="a request body that stalls this long ends its connection"
    )
    body_deadline_seconds: float = Field(
        900.0,
        gt=0,
        description="a request body must arrive whole within this "
        "(however steadily it trickles): 408 and the connection closed after it "
        "(900 s: a 1 GiB upload needs at least 1.2 MB/s)",
    )
    probe_connections: int = Field(
        8,
        ge=0,
        description="connections beyond max_connections kept for /healthz and "
        "/readyz: probes answer while uploads fill the limit",
    )
    heavy_reads_per_token: int = Field(
        2,
        ge=1,
        description="CPU-heavy reads (compare, report.html, pairs.csv) one "
        "token may run at once per API process; one more is a 429 with Retry-After",
    )
    heavy_reads_total: int = Field(
        8,
        ge=1,
        description="CPU-heavy reads running at once per API process, all tokens; "
        "one more is a 503 with Retry-After (cheap routes stay fast)",
    )
    readiness_cache_seconds: float = Field(
        2.0,
        ge=0,
        description="GET /readyz (no token) answers from the last check for this long; one check runs at a time",
    )
    readiness_timeout_seconds: float = Field(
        3.0, gt=0, description="a /readyz request waits this long for the running check, then answers 503"
    )
    report_audio_clip_bytes: int = Field(
        2 * MiB,
        gt=0,
        description="report.html: one worst pair's audio file is "
        "embedded only up to this size; a larger one is not read (its size "
        "is), the page says why",
    )
    report_audio_page_bytes: int = Field(
        32 * MiB,
        gt=0,
        description="report.html: all embedded audio of one page; clips past it are left out with a note",
    )
    rendered_pages_per_job: int = Field(
        4,
        ge=0,
        description="report.html variants (worst, audio, baseline) kept rendered per job in the database, so a "
        "page is drawn once; the oldest goes first (0: render on every view)",
    )
    rendered_page_bytes: int = Field(
        40 * MiB, ge=0, description="report.html: a rendered page larger than this is served but not kept"
    )

    # people in browsers (app.browser_auth, app.ui)
    session_seconds: int = Field(
        12 * 3600, ge=60, description="a browser's sign-in (/ui/login) lasts this long; revoking the token ends it"
    )
    sessions_per_token: int = Field(
        20, ge=1, description="signed-in browsers kept per token; signing in once more ends the oldest"
    )
    share_link_seconds: int = Field(
        7 * 86400,
        ge=60,
        le=366 * 86400,
        description="a share link (POST /v1/jobs/{id}/share) opens the job's report for this long",
    )
    share_links_in_views: bool = Field(
        False, description="job views and webhook summaries carry a share link to the report (links.share)"
    )
    ui_form_bytes: int = Field(
        16 * 1024, ge=1024, le=1024 * 1024, description="a form of the UI (sign-in, sign-out, share): larger is a 413"
    )
    ui_jobs: int = Field(
        500, ge=1, le=10_000, description="the dashboard (/ui/) reads at most this many of the newest jobs"
    )
    keep_alive_seconds: int = Field(5, ge=1, description="an idle connection between requests is closed after this")
    submit_concurrency: int | None = Field(
        None,
        ge=1,
        description="uploads validated and stored at once per API "
        "process; more wait their turn. Default: 4 on SQLite "
        "(one writer at a time), 16 on PostgreSQL",
    )

    # webhooks (app.webhooks.callbacks)
    webhook_allowed_hosts: str = Field(
        "",
        description="comma-separated hosts a job's callback_url may point at: "
        "names, *.domain, IPs or networks (10.0.0.0/8), each optionally :port; "
        "empty = callbacks refused",
    )
    webhook_secret: str | None = Field(
        None, description="signs callbacks when auth_disabled (no token, so no token secret)"
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, description="one delivery attempt's limit: connecting, sending and the answer together"
    )
    webhook_answer_bytes: int = Field(
        4096,
        ge=0,
        description="of a receiver's failed answer, at most this much is "
        "read (raw, never decompressed); its first 200 characters are the reason",
    )
    webhook_max_attempts: int = Field(6, ge=1, description="attempts per callback before it is marked failed")
    webhook_backoff_seconds: float = Field(2.0, gt=0, description="wait before retry n: backoff * 2**(n-1)")
    webhook_poll_seconds: float = Field(2.0, gt=0, description="how often the dispatcher looks for due callbacks")
    webhook_concurrency: int = Field(4, ge=1, description="deliveries in flight at once per API process")
    public_url: str | None = Field(None, description="the service's external URL: makes webhook links absolute")

    # workers and the queue
    queue: str = Field("emopres", description="Celery queue prefix; jobs go to <queue>.<profile>")
    chunk_size: int = Field(8, ge=1, le=1000, description="pairs per task")
    worker_concurrency: int = Field(1, ge=1, description="processes per `emopres worker` (one per GPU)")
    embedded_jobs: int = Field(
        1, ge=1, description="`emopres serve` without broker: evaluation processes (1 = a thread of the server process)"
    )
    embedded_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="`emopres serve` without broker: how much lower the "
        "evaluation's CPU priority is than the API's (0: the same)",
    )
    lease_seconds: float = Field(
        30.0,
        gt=0,
        description="a running chunk with no heartbeat for this long is re-queued "
        "(a killed worker's chunk runs again after this)",
    )
    heartbeat_seconds: float = Field(5.0, gt=0, description="lease renewal; at most a third of lease_seconds")
    requeue_after_seconds: float = Field(
        900.0,
        gt=0,
        description="a queued chunk not started after this is re-sent (a restarted Redis is noticed at once instead)",
    )
    reconcile_seconds: float = Field(5.0, gt=0, description="how often the reconciler looks for lost work")
    db_retry_seconds: float = Field(
        300.0,
        gt=0,
        description="a worker waits this long for an unreachable database before it gives its task back to the broker",
    )
    max_attempts: int = Field(3, ge=1, description="worker losses tolerated per chunk before its pairs fail")
    visibility_timeout: int = Field(3600, gt=0, description="Redis: unacknowledged tasks come back after this")

    @model_validator(mode="after")
    def _heartbeat_within_lease(self):
        if self.heartbeat_seconds * 3 > self.lease_seconds:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds:g}) must be at most a third of "
                f"lease_seconds ({self.lease_seconds:g}): a live worker would lose its lease"
            )
        return self

    @model_validator(mode="after")
    def _bucket_for_s3(self):
        if self.blob_store == "s3" and not self.s3_bucket:
            raise ValueError("blob_store s3 needs a bucket: set EMOPRES_S3_BUCKET")
        return self

    @field_validator(
        "broker_url",
        "database_url",
        "model_dir",
        "head",
        "side_head",
        "webhook_secret",
        "public_url",
        "s3_bucket",
        "s3_endpoint_url",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'emopres.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def submit_slots(self) -> int:
        """submit_concurrency, or its default for the database (PostgreSQL overlaps the uploads' round trips and
        commits: a 100-job burst's p99 3.7 s with 16 vs 5.7 s with 4, bench/RESULTS.md)."""
        return self.submit_concurrency or (4 if self.is_sqlite else 16)

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @property
    def blob_path(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def feature_cache_path(self) -> Path | None:
        if self.no_cache:
            return None
        return self.cache_dir or self.data_dir / "features"

    @property
    def should_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    @property
    def queue_name(self) -> str:
        return f"{self.queue}.{self.profile}"

    def public(self) -> dict:
        """Settings safe to show (no credentials in URLs)."""
        return {
            "profile": self.profile,
            "embedded": self.embedded,
            "database": _redact(self.sqlalchemy_url),
            "broker": _redact(self.broker_url) if self.broker_url else "in-process",
            "blob_store": self.blob_store,
        }


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


@lru_cache
def get_settings() -> Settings:
    return Settings()
