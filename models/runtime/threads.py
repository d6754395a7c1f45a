"""How many threads each evaluation process runs (issue 17): its share of the machine's cores.

Every library with a thread pool sizes it to the whole machine by default: torch (intra-op, OpenMP),
the BLAS behind numpy/scipy (OpenBLAS) and MKL. Two worker processes on two cores then run four or
more busy threads, which wait for each other in spin loops (CPU time per file 1.2x higher with two
processes than with one). ONNX Runtime (silero-vad) already runs one intra- and one inter-op thread
(silero's own session options), openSMILE and Praat are single-threaded. :func:`pin_threads` is the
one place that sets all of them; each process calls it once when it starts.
"""

from __future__ import annotations

import os

#: Environment variables read by thread pools that start later (child processes, lazily loaded libraries).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

_limits = None  # the threadpoolctl limiter, kept alive for the life of the process


def machine_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """A worker's share of the cores when ``workers`` evaluation processes share the machine."""
    return max(1, (cores or machine_cores()) // max(1, workers))


def pin_threads(threads: int) -> None:
    """Size every thread pool of this process (torch, BLAS/OpenMP via threadpoolctl, and the variables
    that later-started pools read) to ``threads``."""
    global _limits
    import torch
    from threadpoolctl import threadpool_limits

    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only settable before the first inter-op task; the intra-op count is what matters
        pass
    _limits = threadpool_limits(limits=threads)
