"""Response shapes of API v1 (for the OpenAPI document at /docs; routes return plain dicts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from core.profiles import PROFILES

JobStatus = Literal["queued", "running", "succeeded", "failed"]


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_manifest"])
    message: str
    details: dict[str, Any] = {}


class ErrorResponse(BaseModel):
    error: ErrorDetail


class JobCreated(BaseModel):
    id: str
    status: JobStatus


class Progress(BaseModel):
    done: int = Field(description="pairs with a result (evaluated or failed)")
    total: int
    failed: int


class Failure(BaseModel):
    pair_id: str
    side: str = Field(description="source, target, or pair")
    error: str


class JobLinks(BaseModel):
    self: str
    report: str
    report_html: str
    pairs_csv: str
    plots: str
    compare: str = Field(description="a template: replace {baseline_id} with the baseline job's id")
    deliveries: str = Field(description="the job's webhook deliveries")
    share: str | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description="a share link to the report (EMOPRES_SHARE_LINKS_IN_VIEWS, succeeded jobs): no token needed",
    )
    share_expires_at: str | None = Field(
        None, exclude_if=lambda value: value is None, description="when the share link stops working"
    )


class HeadlineMetric(BaseModel):
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    reason: str | None = None


class PrimaryMetric(HeadlineMetric):
    metric: str = Field(description="the catalogue name of the preservation metric a CI gate should use")
    label: str
    direction: str
    chance: float | None = Field(default=None, description="its value under independent readings of the two sides")


class TrustWarning(BaseModel):
    code: str = Field(description="near_chance, collapsed, few_pairs, few_groups, primary_fallback, no_primary")
    side: Literal["source", "target"] | None
    message: str


class ReportSummary(BaseModel):
    primary: PrimaryMetric
    ser_health: dict[str, dict[str, dict[str, Any]] | None] = Field(
        description="per SER reading (absolute, side) and side: UA against chance (labelled pairs), the most "
        "predicted class's share, the normalised entropy of the predicted classes"
    )
    metrics: dict[str, dict[str, Any]] = Field(description="each corpus metric's direction and chance level")
    warnings: list[TrustWarning]


class JobSummary(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    profile: str
    metadata: dict[str, Any] | None
    progress: Progress
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    headline: dict[str, HeadlineMetric] | None = Field(
        default=None,
        description="headline corpus metrics with 95% CIs of a succeeded job (null until its report exists)",
    )
    summary: ReportSummary | None = Field(
        default=None,
        description="how far to trust the report: the primary metric with its chance level, the SER "
        "reading health of each side, warnings (null until its report exists)",
    )
    links: JobLinks


class JobDetail(JobSummary):
    failures: list[Failure] = Field(description="the first 100 pair failures (all of them are in the report)")
    errors: list[str] = Field(description="job-level problems (e.g. a worker that cannot load its models)")


class JobListItem(JobSummary):
    pass


class JobList(BaseModel):
    items: list[JobListItem]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, dict[str, Any]]


JOB_FORM_SCHEMA = {
    "type": "object",
    "properties": {
        "manifest": {
            "type": "string",
            "format": "binary",
            "description": "CSV or JSONL pairs file (pair_id, source, target[, label][, group or speaker])",
        },
        "archive": {
            "type": "string",
            "format": "binary",
            "description": "instead of manifest + files: a zip or tar holding manifest.csv and the audio",
        },
        "name": {"type": "string", "maxLength": 200},
        "profile": {"type": "string", "enum": list(PROFILES)},
        "metadata": {"type": "string", "description": 'a JSON object, e.g. {"system": "...", "commit": "..."}'},
        "group_column": {
            "type": "string",
            "description": "manifest column with speaker/dialogue ids: confidence intervals then resample whole "
            "groups (and the side-normalised SER reading standardises each speaker of 20+ utterances on its own). "
            "Default: the manifest's `group` column, else its `speaker` column, as `emopres evaluate` does; "
            "`none` resamples pairs. A named column the manifest lacks is a 422.",
        },
        "callback_url": {
            "type": "string",
            "description": "webhook: the signed job summary is POSTed here when the "
            "job finishes (host on the operator's allow-list)",
        },
    },
    "additionalProperties": {
        "type": "string",
        "format": "binary",
        "description": "audio files, each field named by its path in the manifest",
    },
}

PAIR_FORM_SCHEMA = {
    "type": "object",
    "required": ["source", "target"],
    "properties": {
        "source": {"type": "string", "format": "binary"},
        "target": {"type": "string", "format": "binary"},
        "label": {"type": "string", "description": "gold emotion of the source"},
        "pair_id": {"type": "string"},
        "name": {"type": "string"},
        "profile": {"type": "string", "enum": list(PROFILES)},
        "metadata": {"type": "string"},
        "callback_url": {"type": "string"},
    },
}
