"""Fast mode chooses its precision by measurement (issues 17, 29).

bf16 is 2-4x faster than fp32 where the hardware has bf16 arithmetic (CUDA GPUs, CPUs with
AVX512-BF16 or AMX) on tall enough matrices, ~0.6x as fast where oneDNN emulates it (an AVX-512
Xeon without them) and ~0.2x on a CPU without AVX-512 (a plain bf16 GEMM). So:

- on a CPU whose flags show no bf16 instructions (:func:`cpu_native_bf16` is False) fast mode
  keeps fp32 without timing anything (reason ``no-bf16-cpu``): the probe costs nothing there;
- elsewhere it times each model on a probe shaped like a job (:data:`PROBE_SECONDS`: several
  utterances of a few seconds, run through the model's own batched method, so bf16 runs the padded
  batches it runs on a job and fp32 its one-utterance streams), fp32 and bf16 alternately, when the
  model is loaded, and keeps bf16 only where it is clearly faster (:data:`FAST_MARGIN`).

Fast mode is never slower than exact mode on the machine it runs on. The choice and its reason go
into the report signature (``mode:...(fast:...)``) and ``emopres models check --fast`` prints the
timings.
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
#: Probe utterance lengths, seconds of 16 kHz audio: a job's batch (19.5 s, ~975 frames) rather than
#: one short clip, whose 50-row GEMMs are overhead-bound in either precision (issue 29).
PROBE_SECONDS = (4.5, 4.0, 3.5, 3.0, 2.5, 2.0)
#: Fast mode's stated accuracy (issue 29): a bf16 output differs from exact fp32, and a padded bf16
#: batch from bf16 one utterance at a time, by at most this share of the output's largest magnitude.
#: bf16 keeps 8 significant bits (one rounding step is 0.4-0.8 % of a value, and the outputs themselves
#: leave the network as bf16); the full-size models (random weights) measured 4.8e-3 to 1.7e-2 (emotion2vec's
#: frame cosine to fp32 0.99993). Per model in docs/paper-models.md; tests/models/test_bf16.py holds the tiny
#: models to it.
BF16_RELATIVE_TOL = 5e-2
#: Stop timing bf16 after its warm-up when that alone was this many times slower than fp32's.
HOPELESS = 2.0

MODES = ("fp32", "bf16")
PROBE_TEXT = f"{len(PROBE_SECONDS)} x {min(PROBE_SECONDS):g}-{max(PROBE_SECONDS):g} s ({sum(PROBE_SECONDS):g} s)"
REASONS = {
    "no-bf16": "no bf16 on this device",
    "no-bf16-cpu": "this CPU has no AVX512-BF16 or AMX: bf16 would be emulated and slower, not timed",
}


@dataclass(frozen=True)
class FastChoice:
    mode: str  # "fp32" | "bf16": what fast mode runs
    reason: str  # short tag for the signature: bf16-faster | bf16-slower | no-bf16 | no-bf16-cpu
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
            return f"{self.mode} ({REASONS.get(self.reason, self.reason)})"
        verdict = "bf16 kept" if self.mode == "bf16" else "exact fp32 kept"
        return (
            f"{self.mode}: bf16 {self.bf16_seconds * 1000:.0f} ms vs fp32 {self.fp32_seconds * 1000:.0f} ms "
            f"on a {PROBE_TEXT} probe = {self.speedup:.2f}x ({verdict}; bf16 needs >= "
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


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The first CPU's feature flags (x86 ``flags``, Arm ``Features``), None where not readable."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_bf16_flags() -> dict[str, bool]:
    """What the CPU reports: AVX512-BF16 / AMX-BF16 instructions (Linux /proc/cpuinfo) and whether
    oneDNN offers bf16 kernels at all (it does on any AVX-512 CPU, emulating where the instructions lack)."""
    flags = _cpuinfo_flags() or set()
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - odd builds
        onednn = False
    return {"avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags, "onednn_bf16": onednn}


def cpu_native_bf16(flags: set[str] | None = None) -> bool | None:
    """Whether this CPU has bf16 arithmetic: AVX512-BF16 or AMX-BF16 (x86), BF16 (Arm) in its flags.
    Where the flags cannot be read (not Linux): False on an x86 CPU whose best kernels torch reports as
    AVX2 or less (bf16 instructions come only with AVX-512), else None (unknown: fast mode times both)."""
    flags = _cpuinfo_flags() if flags is None else flags
    if flags is not None:
        return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    if torch.backends.cpu.get_cpu_capability() in ("NO AVX", "AVX2"):
        return False
    return None


def probe_waves(seconds=None) -> list[np.ndarray]:
    """Deterministic noise utterances of ``seconds`` (default :data:`PROBE_SECONDS`; speed does not
    depend on the content)."""
    seconds = PROBE_SECONDS if seconds is None else seconds
    rng = np.random.default_rng(17)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]


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
    already :data:`HOPELESS`); set the chosen precision and return it. Nothing is timed on a device
    without bf16 or a CPU without bf16 instructions: fp32."""
    waves = probe if probe is not None else probe_waves()
    if not bf16_runs_on(model.device):
        model.precision = "fp32"
        return FastChoice("fp32", "no-bf16")
    if torch.device(model.device).type == "cpu" and cpu_native_bf16() is False:
        model.precision = "fp32"
        return FastChoice("fp32", "no-bf16-cpu")
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
