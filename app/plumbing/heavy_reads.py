"""A bound on CPU-heavy reads (compare's bootstrap, report.html, pairs.csv) in one API process.

They run on the request threads: 40 concurrent compare?bootstrap=2000 requests on a 10k-pair job
made /healthz take 20 s. A token may run `heavy_reads_per_token` of them at once (one more is a
429 too_many_heavy_reads), the process `heavy_reads_total` (one more is a 503 server_busy); both
say Retry-After. Cheap routes are not counted. The counts live on the event loop (the dependency is
async), so they need no lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from app.plumbing.deps import PrincipalDep, ServicesDep
from app.plumbing.errors import APIError
from app.schemas import ErrorResponse

RETRY_AFTER = "2"


class HeavyReads:
    def __init__(self, per_token: int, total: int) -> None:
        self.per_token, self.total = per_token, total
        self.by_token: Counter[tuple] = Counter()
        self.running = 0

    def acquire(self, key: tuple) -> None:
        if self.by_token[key] >= self.per_token:
            raise APIError(
                f"this token already runs {self.per_token} heavy read(s) (compare, report.html, "
                "pairs.csv); retry when one has finished",
                status=429,
                code="too_many_heavy_reads",
                details={"limit": self.per_token},
                headers={"Retry-After": RETRY_AFTER},
            )
        if self.running >= self.total:
            raise APIError(
                "the service runs as many heavy reads as it allows; retry shortly",
                status=503,
                code="server_busy",
                details={"limit": self.total},
                headers={"Retry-After": RETRY_AFTER},
            )
        self.by_token[key] += 1
        self.running += 1

    def release(self, key: tuple) -> None:
        self.running -= 1
        self.by_token[key] -= 1
        if self.by_token[key] <= 0:
            del self.by_token[key]


def heavy_reads(request: Request, services) -> HeavyReads:
    """The process's bounds on heavy reads (made on first use)."""
    state = request.app.state
    reads = getattr(state, "heavy_reads", None)
    if reads is None:
        reads = state.heavy_reads = HeavyReads(
            services.settings.heavy_reads_per_token, services.settings.heavy_reads_total
        )
    return reads


async def heavy_read(request: Request, principal: PrincipalDep, services: ServicesDep) -> AsyncIterator[None]:
    reads = heavy_reads(request, services)
    key = (principal.project, principal.token_name)
    reads.acquire(key)
    try:
        yield
    finally:
        reads.release(key)


HeavyReadDep = Annotated[None, Depends(heavy_read)]
HEAVY_READ_ERRORS = {
    429: {"model": ErrorResponse, "description": "too_many_heavy_reads: this token's bound (Retry-After)"},
    503: {
        "model": ErrorResponse,
        "description": "server_busy: the process's bound (Retry-After), or a dependency away",
    },
}
