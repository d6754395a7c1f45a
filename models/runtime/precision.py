"""Fast mode chooses its precision by measurement (issue 17).

bf16 autocast is 2-3x faster than fp32 where the hardware has bf16 arithmetic (CUDA GPUs, CPUs
with AVX512-BF16 or AMX) and ~0.6x as fast where oneDNN emulates it (an AVX-512 Xeon without
them), and whether a CPU reports bf16 support to torch does not tell the two apart. So fast mode
times each model on a short probe, fp32 and bf16 alternately, when the model is loaded, and keeps
bf16 only where it is clearly faster (:data:`FAST_MARGIN`): fast mode is never slower than exact
mode on the machine it runs on. The choice and its reason go into the report signature
(``mode:...(fast:...)``) and ``emopres models check --fast`` prints the timings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: bf16 is chosen only when it takes at most this share of fp32's time (timing noise must not pick
#: a mode that is in fact slower).
FAST_MARGIN = 0.9
#: Probe utterance length, seconds of 16 kHz audio: long enough for the GEMMs to dominate.
PROBE_SECONDS = 1.0
#: Stop timing bf16 after its warm-up when that alone was this many times slower than fp32's.
HOPELESS = 2.0

MODES = ("fp32", "bf16")


@dataclass(frozen=True)
class FastChoice:
    mode: str  # "fp32" | "bf16": what fast mode runs
    reason: str  # short tag for the signature: bf16-faster | bf16-slower | no-bf16
    fp32_seconds: float | None = None
    bf16_seconds: float | None = None

    @property
    def speedup(self) -> float | None:
        """fp32 time over bf16 time (above 1: bf16 is faster)."""
        if not self.fp32_seconds or not self.bf16_seconds:
            return None
        return self.fp32_seconds / self.bf16_seconds

    def describe(self) -> str:
        if self.speedup is None:
            return f"{self.mode} ({self.reason})"
        verdict = "bf16 kept" if self.mode == "bf16" else "exact fp32 kept"
        return (
            f"{self.mode}: bf16 {self.bf16_seconds * 1000:.0f} ms vs fp32 {self.fp32_seconds * 1000:.0f} ms "
            f"on a {PROBE_SECONDS:g} s probe = {self.speedup:.2f}x ({verdict}; bf16 needs >= "
            f"{1 / FAST_MARGIN:.2f}x)"
        )

    def as_dict(self) -> dict:
        return {
            "mode": self.mode,
            "reason": self.reason,
            "fp32_seconds": self.fp32_seconds,
            "bf16_seconds": self.bf16_seconds,
            "speedup": self.speedup,
            "text": self.describe(),
        }


def choose_precision(fp32_seconds, bf16_seconds, margin: float = FAST_MARGIN) -> FastChoice:
    """The faster mode from timings of the same work: one number each, or one per alternating round.
    bf16 must beat fp32 by the margin in its fastest run and in every round (a machine whose load
    changes mid-measurement must not make fast mode pick the slower mode)."""
    fp32 = [float(fp32_seconds)] if np.isscalar(fp32_seconds) else [float(t) for t in fp32_seconds]
    bf16 = [float(bf16_seconds)] if np.isscalar(bf16_seconds) else [float(t) for t in bf16_seconds]
    if not fp32 or len(fp32) != len(bf16) or not all(t > 0 for t in fp32 + bf16):
        raise ValueError(f"need positive timings, as many of each: fp32 {fp32_seconds!r}, bf16 {bf16_seconds!r}")
    best32, best16 = min(fp32), min(bf16)
    if best16 <= margin * best32 and all(b <= margin * f for f, b in zip(fp32, bf16, strict=True)):
        return FastChoice("bf16", "bf16-faster", best32, best16)
    return FastChoice("fp32", "bf16-slower", best32, best16)


def bf16_runs_on(device: str | torch.device) -> bool:
    """Whether bf16 autocast can run at all (natively or emulated); the timing says whether it pays."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return kind == "cpu"


def cpu_bf16_flags() -> dict[str, bool]:
    """What the CPU reports: AVX512-BF16 / AMX-BF16 instructions (Linux /proc/cpuinfo) and whether
    oneDNN offers bf16 kernels at all (it does on any AVX-512 CPU, emulating where the instructions lack)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - odd builds
        onednn = False
    return {"avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags, "onednn_bf16": onednn}


def probe_waves(seconds: float = PROBE_SECONDS) -> list[np.ndarray]:
    """One deterministic speech-length noise signal (speed does not depend on the content)."""
    rng = np.random.default_rng(17)
    return [(0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)]


def _timed(model, run: Callable[[list[np.ndarray]], object], waves: list[np.ndarray]) -> float:
    """Seconds of one ``run(waves)`` in the model's current precision."""
    start = time.perf_counter()
    run(waves)  # every model's output ends on the CPU (numpy), so a GPU has finished when this returns
    return time.perf_counter() - start


def measure_fast_mode(
    model, run: Callable[[list[np.ndarray]], object], repeats: int = 2, probe: list[np.ndarray] | None = None
) -> FastChoice:
    """Time ``run`` (a model wrapper's batch method) on the probe with ``model.precision`` set to fp32
    and to bf16: a warm-up each, then ``repeats`` alternating rounds (skipped when bf16's warm-up was
    already :data:`HOPELESS`); set the chosen precision and return it."""
    waves = probe if probe is not None else probe_waves()
    if not bf16_runs_on(model.device):
        model.precision = "fp32"
        return FastChoice("fp32", "no-bf16")
    rounds: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for mode in MODES:  # warm-up: first calls allocate and pick kernels
            model.precision = mode
            rounds[mode].append(_timed(model, run, waves))
        if rounds["bf16"][0] < HOPELESS * rounds["fp32"][0]:
            rounds = {mode: [] for mode in MODES}  # the warm-up does not count
            for _ in range(repeats):
                for mode in MODES:
                    model.precision = mode
                    rounds[mode].append(_timed(model, run, waves))
    finally:
        model.precision = "fp32"
    choice = choose_precision(rounds["fp32"], rounds["bf16"])
    model.precision = choice.mode
    logger.info("fast mode, %s: %s", type(model).__name__, choice.describe())
    return choice


def check_precision(precision: str | None) -> str:
    """A forced mode (``"fp32"`` or ``"bf16"``), or fp32 (exact; fast mode measures after loading)."""
    if precision is None:
        return "fp32"
    if precision not in MODES:
        raise ValueError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
    return precision


def signature_mode(choices: dict[str, FastChoice | None], precisions: dict[str, str]) -> str:
    """The signature's ``mode:`` value: ``fp32`` (exact), or the modes fast mode chose and why, e.g.
    ``fp32(fast:bf16-slower)`` or ``e2v=bf16,va=fp32(fast:bf16-faster+bf16-slower)``."""
    modes = set(precisions.values())
    text = modes.pop() if len(modes) == 1 else ",".join(f"{tag}={mode}" for tag, mode in precisions.items())
    reasons = sorted({c.reason for c in choices.values() if c is not None})
    return f"{text}(fast:{'+'.join(reasons)})" if reasons else text
