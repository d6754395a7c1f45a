"""models/runtime/threads.py: each evaluation process runs its share of the cores' threads (issue 17)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from models.registry import ProfileSpec
from models.runtime.threads import threads_per_worker


def test_share_of_the_cores():
    assert threads_per_worker(1, cores=2) == 2
    assert threads_per_worker(2, cores=2) == 1
    assert threads_per_worker(3, cores=2) == 1  # never zero
    assert threads_per_worker(2, cores=16) == 8
    assert threads_per_worker(0, cores=4) == 4


def test_pin_threads_sizes_torch_and_blas_pools():
    code = (
        "import json, numpy; from models.runtime.threads import pin_threads; pin_threads(1); "
        "from tests.models.test_threads import thread_counts; "
        "import os; print(json.dumps({**thread_counts(), 'omp_env': os.environ['OMP_NUM_THREADS']}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {"torch": 1, "blas_openmp": 1, "omp_env": "1"}


def test_pool_workers_get_their_share(random_lite_head, monkeypatch):
    from models.ser.head import SerHead
    from worker.engine import pipeline

    monkeypatch.setattr(pipeline, "threads_per_worker", lambda workers: 1 if workers == 2 else 99)
    with pipeline.Evaluator(ProfileSpec("lite"), SerHead.load(random_lite_head), n_jobs=2) as evaluator:
        counts = list(evaluator._pool.map(thread_counts, range(4)))
    assert counts == [{"torch": 1, "blas_openmp": 1}] * 4


def thread_counts(_=None) -> dict[str, int]:
    """This process's pool sizes: torch intra-op and the largest BLAS/OpenMP pool threadpoolctl sees."""
    import torch
    from threadpoolctl import threadpool_info

    pools = [info["num_threads"] for info in threadpool_info()]
    return {"torch": torch.get_num_threads(), "blas_openmp": max(pools) if pools else 0}
