"""The gateway's Prometheus metrics (``GET /metrics``): requests, latency, jobs and pairs accepted, and
jobs and chunks by status read from the database at scrape time."""

from __future__ import annotations

from sqlalchemy import func, select

from app.services import Services
from core.db import Chunk, Job


class Metrics:
    def __init__(self, services: Services) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram
        from prometheus_client.core import GaugeMetricFamily

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "emopres_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "emopres_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.jobs_created = Counter("emopres_jobs_created_total", "jobs accepted", registry=self.registry)
        self.pairs_accepted = Counter("emopres_pairs_accepted_total", "pairs accepted", registry=self.registry)
        self.disconnects = Counter(
            "emopres_client_disconnects_total",
            "requests whose client went away before the response (not counted in emopres_http_requests_total)",
            ["method", "route"],
            registry=self.registry,
        )

        class ConnectionCollector:
            def collect(self_inner):
                from prometheus_client.core import CounterMetricFamily

                from app.plumbing.connections import CONNECTION_EVENTS

                family = CounterMetricFamily(
                    "emopres_connections_closed", "connections the server reset or closed", labels=["reason"]
                )
                for reason in ("refused_over_limit", "header_timeout", "body_timeout"):
                    family.add_metric([reason], CONNECTION_EVENTS[reason])
                return [family]

        self.registry.register(ConnectionCollector())

        class DatabaseCollector:
            def collect(self_inner):
                jobs = GaugeMetricFamily("emopres_jobs", "jobs by status", labels=["status"])
                chunks = GaugeMetricFamily("emopres_chunks", "work chunks by status", labels=["status"])
                try:
                    with services.sessions() as session:
                        for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
                            jobs.add_metric([status], count)
                        for status, count in session.execute(select(Chunk.status, func.count()).group_by(Chunk.status)):
                            chunks.add_metric([status], count)
                except Exception:  # the database is away: /readyz says so
                    return []
                return [jobs, chunks]

        self.registry.register(DatabaseCollector())

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
