"""bench/gpu.sh (issue 17) stays runnable: its steps parse their arguments (fast), and a whole CPU dry
run at tiny size goes through the paper benchmarks and the service (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(mode: str, tmp_path: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "EMOPRES_BENCH_DIR": str(tmp_path / "bench"),
        "PYTHONPATH": str(REPO),
    }
    env = {k: v for k, v in env.items() if not k.startswith("EMOPRES_") or k == "EMOPRES_BENCH_DIR"}
    return subprocess.run(
        ["bash", str(REPO / "bench" / "gpu.sh"), mode],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_gpu_script_steps_parse(tmp_path):
    done = _run("check", tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gpu.sh check: ok" in done.stdout


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path):
    done = _run("tiny", tmp_path, timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    out = done.stdout
    for expected in (
        "all paper models",
        "fast mode: timed each model",
        "fast mode's accuracy, bf16 vs exact fp32",
        "max |ours exact - one at a time|",
        "service, one paper worker on cpu",
        "audio-s/s",
        "gpu.sh tiny done",
    ):
        assert expected in out, (expected, out[-3000:])
    table = (tmp_path / "bench" / "gpu-tiny.txt").read_text()
    assert "all paper models" in table and "gpu.sh tiny done" in table  # the tables are also in a file
    assert '"bf16_accuracy"' in (tmp_path / "bench" / "gpu-tiny-paper.json").read_text()
