"""Progress on stderr: a redrawn line on a terminal, and in a CI log (no terminal) one plain line every
few seconds with done/total and the rate, instead of carriage-return redraws that a log shows as one
unreadable line or thousands of them."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class Progress:
    """``update(done, total, status)`` as work goes; ``close()`` prints the final line.

    ``lines``: plain lines at most every ``interval`` seconds (default: when ``file`` is not a terminal);
    otherwise one line redrawn in place. ``unit`` "B" shows sizes.
    """

    def __init__(
        self,
        what: str,
        unit: str,
        *,
        file=None,
        interval: float = 5.0,
        lines: bool | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.unit, self.file = what, unit, (file if file is not None else sys.stderr)
        self.lines = (not _isatty(self.file)) if lines is None else lines
        self.interval, self.enabled, self.clock = (interval if self.lines else 0.2), enabled, clock
        self.started = clock()
        self.done, self.total, self.status = 0, 0, ""
        self._last: float | None = None
        self._shown: tuple | None = None

    def update(self, done: int, total: int | None = None, status: str = "") -> None:
        self.done, self.total, self.status = done, total if total is not None else self.total, status
        now = self.clock()
        if self._last is None or now - self._last >= self.interval:
            self._emit(now)

    def advance(self, n: int = 1) -> None:
        """`n` more done (a callback that counts increments, as `emopres evaluate`'s pipeline reports them)."""
        self.update(self.done + n, self.total, self.status)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.enabled and (self.done, self.total, self.status) != self._shown:
            self._emit(self.clock())
        if self.enabled and not self.lines:
            self.file.write("\n")
            self.file.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        count = (
            f"{_size(self.done)}/{_size(self.total)}" if self.unit == "B" else f"{self.done}/{self.total} {self.unit}s"
        )
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        rate = f"{_size(self.done / elapsed)}/s" if self.unit == "B" else f"{self.done / elapsed:.2f} {self.unit}s/s"
        return f"{self.what}: {count}{share}, {rate}, {elapsed:.0f} s" + (f", {self.status}" if self.status else "")

    def _emit(self, now: float) -> None:
        self._last, self._shown = now, (self.done, self.total, self.status)
        if not self.enabled:
            return
        text = self.line(now)
        self.file.write(text + "\n" if self.lines else "\r" + text + "\x1b[K")
        self.file.flush()


def _isatty(file) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False
