"""What the dashboard shows, read from the same job views the API serves (app.job_views): systems (job names
grouped by the part before ``@``, as ``name_prefix`` does), each system's versions in order, and the job list.
Nothing here computes a metric: values, CIs and warnings come from the stored headline and summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from app.job_views import list_jobs
from app.ui.trend import TrendPoint
from core.catalogue import BY_NAME, PRIMARY_METRIC

PAPER_METRICS = ("bar", "epr", "kappa")  # the paper's three, beside the primary metric
UNNAMED = "(unnamed jobs)"


@dataclass
class System:
    name: str
    versions: list[dict] = field(default_factory=list)  # job views, oldest first

    @property
    def latest(self) -> dict:
        return self.versions[-1]

    @property
    def latest_result(self) -> dict | None:
        """The newest version that finished with a report."""
        return next((v for v in reversed(self.versions) if v["status"] == "succeeded"), None)

    @property
    def metric(self) -> str:
        """The metric the trend draws: the primary metric most versions report (a fallback stays visible as
        such in each version's summary)."""
        used = Counter(
            (v.get("summary") or {}).get("primary", {}).get("metric") for v in self.versions if v.get("summary")
        )
        used.pop(None, None)
        return used.most_common(1)[0][0] if used else PRIMARY_METRIC

    @property
    def metric_label(self) -> str:
        return BY_NAME[self.metric].label


def system_of(name: str | None) -> str:
    if not name:
        return UNNAMED
    return name.split("@", 1)[0]


def version_of(job: dict) -> str:
    name = job.get("name") or ""
    if "@" in name:
        return name.split("@", 1)[1]
    return (job.get("created_at") or "")[:16].replace("T", " ")


def recent_jobs(session: Session, project: str, limit: int) -> list[dict]:
    """The project's newest ``limit`` jobs (views as GET /v1/jobs gives them), newest first."""
    items, _ = list_jobs(session, project, status=None, name=None, limit=limit, cursor=None)
    return items


def systems(jobs: list[dict]) -> list[System]:
    """Named jobs grouped into systems, each with its versions oldest first; systems by their latest version."""
    by_name: dict[str, System] = {}
    for job in sorted(jobs, key=lambda j: (j["created_at"], j["id"])):
        if not job.get("name"):
            continue
        by_name.setdefault(system_of(job["name"]), System(system_of(job["name"]))).versions.append(job)
    return sorted(by_name.values(), key=lambda s: s.latest["created_at"], reverse=True)


def metric_entry(job: dict, metric: str) -> dict:
    """The job's stored value of ``metric``: value, ci_low, ci_high, reason (each None when absent)."""
    entry = (job.get("headline") or {}).get(metric) or {}
    return {key: entry.get(key) for key in ("value", "ci_low", "ci_high", "reason")}


def previous_succeeded(system: System, index: int) -> dict | None:
    for job in reversed(system.versions[:index]):
        if job["status"] == "succeeded":
            return job
    return None


def trend_points(system: System, report_href) -> list[TrendPoint]:
    points = []
    for job in system.versions:
        entry = metric_entry(job, system.metric)
        points.append(
            TrendPoint(
                label=version_of(job),
                status=job["status"],
                value=entry.get("value"),
                ci_low=entry.get("ci_low"),
                ci_high=entry.get("ci_high"),
                href=report_href(job) if job["status"] == "succeeded" else None,
            )
        )
    return points
