"""CPU and memory accounting from /proc for the benchmarks (Linux only): process trees, CPU seconds, peak
RSS, how busy the rest of the machine was, and how many cores a process can actually get."""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def peak_rss_mib(pid: int | str = "self") -> float:
    """VmHWM (peak resident set) of a live process, MiB."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def own_cpu_seconds() -> float:
    """CPU seconds of this process, its reaped children and its live descendants."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = sum(_proc_cpu(p) for p in descendants(os.getpid()))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live


def session_cpu_seconds(session: int) -> dict[str, float]:
    """User + system CPU so far of a session's leader (`emopres serve`: the API process) and of its other processes
    (embedded evaluation, or the API processes of --workers N), from /proc (Linux); {} without it."""
    if not os.path.isdir("/proc"):
        return {}
    ticks = {"server_cpu_seconds": 0, "server_children_cpu_seconds": 0}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after the command name
        except OSError:  # ended meanwhile
            continue
        if int(fields[3]) == session:  # stat field 6: the session id
            ticks["server_cpu_seconds" if int(pid) == session else "server_children_cpu_seconds"] += int(
                fields[11]
            ) + int(fields[12])  # utime, stime
    return {key: value / TICK for key, value in ticks.items()}


def system_busy_seconds() -> float:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / TICK


@dataclass
class Measured:
    seconds: float
    own_cpu: float  # CPU seconds of this benchmark's processes
    others: float  # cores used by other processes on average
    load: float  # 1-min load average at the end

    def note(self) -> str:
        return f"[load {self.load:.1f}, others used {self.others:.1f} cores, ours {self.own_cpu / self.seconds:.1f}]"


class Clock:
    """Wall time, our CPU time and everybody else's, around a block."""

    def __enter__(self) -> Clock:
        self._wall, self._own, self._busy = time.perf_counter(), own_cpu_seconds(), system_busy_seconds()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall
        own = own_cpu_seconds() - self._own
        others = max(0.0, (system_busy_seconds() - self._busy - own) / wall)
        self.result = Measured(wall, own, others, os.getloadavg()[0])


def parallel_capacity() -> float:
    """How many cores two CPU-bound processes actually get right now (2.0 on an idle 2-core machine)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        pool.map(_spin, [1000, 1000])  # start-up out of the way
        one = min(pool.map(_spin, [4_000_000]) for _ in range(2))[0]
        start = time.perf_counter()
        pool.map(_spin, [4_000_000, 4_000_000], chunksize=1)
        two = time.perf_counter() - start
    return 2 * one / two


def _spin(n: int) -> float:
    start, total = time.perf_counter(), 0
    for i in range(n):
        total += i
    return time.perf_counter() - start
