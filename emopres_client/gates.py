"""The CI gates of `emopres submit`: parse ``--gate``/``--max-drop`` and check them on a report or comparison.

Pure functions, no I/O. ``--gate "bar>=0.5"``: a corpus metric against a threshold
(``metric[.field] OP number``, field one of ``value``, ``ci_low``, ``ci_high``). ``--max-drop bar=0.02``:
with a baseline, the metric may fall at most this much below it (``:sig`` fails only on a significant
drop). A gate on a metric that is null (or missing) fails, naming the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from emopres_client.numbers import finite_or_none

__all__ = [
    "Gate",
    "MaxDrop",
    "GateResult",
    "PRIMARY",
    "parse_gate",
    "parse_max_drop",
    "check_gates",
    "check_max_drops",
]


OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: math.isclose(a, b, rel_tol=0, abs_tol=1e-12),
}
FIELDS = ("value", "ci_low", "ci_high")
_GATE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_]+))?\s*(>=|<=|==|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$"
)
_DROP = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*(?::\s*(sig)\s*)?$")


@dataclass(frozen=True)
class Gate:
    metric: str
    field: str
    op: str
    threshold: float

    def __str__(self) -> str:
        name = self.metric if self.field == "value" else f"{self.metric}.{self.field}"
        return f"{name}{self.op}{self.threshold:g}"


@dataclass(frozen=True)
class MaxDrop:
    metric: str
    max_drop: float
    significant_only: bool = False

    def __str__(self) -> str:
        return f"max-drop {self.metric}={self.max_drop:g}" + (":sig" if self.significant_only else "")


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    observed: str
    reason: str | None = None
    warning: str | None = None  # the gate passed or failed, but the interval says the data cannot decide it


PRIMARY = "primary"  # a gate on the report's primary metric (its summary names it)


def _known(metric: str, known: tuple[str, ...] | None, text: str) -> None:
    if known is not None and metric not in known and metric != PRIMARY:
        raise ValueError(f"{text!r}: unknown metric {metric!r} (metrics: {', '.join(known)})")


def parse_gate(text: str, known_metrics: tuple[str, ...] | None = None) -> Gate:
    """``"bar>=0.5"`` -> Gate("bar", "value", ">=", 0.5); ValueError with a clear message otherwise."""
    match = _GATE.match(text or "")
    if not match:
        raise ValueError(
            f"{text!r} is not a gate; write METRIC[.value|.ci_low|.ci_high] OP NUMBER with OP one of "
            f'{" ".join(OPERATORS)}, e.g. "bar>=0.5" or "epr.ci_low>=0.25"'
        )
    metric, field, op, number = match.groups()
    metric = metric.lower()
    field = (field or "value").lower()
    if field not in FIELDS:
        raise ValueError(f"{text!r}: unknown field {field!r} (one of {', '.join(FIELDS)})")
    _known(metric, known_metrics, text)
    try:
        threshold = float(number)
    except ValueError:
        raise ValueError(f"{text!r}: {number!r} is not a number") from None
    if not math.isfinite(threshold):
        raise ValueError(f"{text!r}: the threshold must be a finite number")
    return Gate(metric, field, op, threshold)


def parse_max_drop(text: str, known_metrics: tuple[str, ...] | None = None) -> MaxDrop:
    """``"bar=0.02"`` -> MaxDrop("bar", 0.02); ``"bar=0.02:sig"`` fails only on a significant drop."""
    match = _DROP.match(text or "")
    if not match:
        raise ValueError(
            f"{text!r} is not a max-drop; write METRIC=AMOUNT (e.g. bar=0.02), optionally "
            "METRIC=AMOUNT:sig to fail only on a significant drop (p < 0.05)"
        )
    metric, number, sig = match.groups()
    metric = metric.lower()
    _known(metric, known_metrics, text)
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"{text!r}: {number!r} is not a number") from None
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"{text!r}: the allowed drop must be a number >= 0")
    return MaxDrop(metric, amount, sig is not None)


def _undecided(entry: dict, gate: Gate) -> str | None:
    """A warning when a gate on a value has its threshold inside the value's confidence interval."""
    low, high = finite_or_none(entry.get("ci_low")), finite_or_none(entry.get("ci_high"))
    if gate.field != "value" or low is None or high is None or not low <= gate.threshold <= high:
        return None
    return (
        f"too few pairs to decide: {gate.threshold:g} lies inside the 95% CI [{low:.4f}, {high:.4f}] "
        f"(gate on {gate.metric}.ci_low or .ci_high for a decision the data supports)"
    )


def check_gates(report: dict, gates: list[Gate]) -> list[GateResult]:
    corpus = (report or {}).get("corpus") or {}
    primary = (((report or {}).get("summary") or {}).get("primary") or {}).get("metric")
    results = []
    for gate in gates:
        name = primary if gate.metric == PRIMARY else gate.metric
        entry = corpus.get(name) if name else None
        if not isinstance(entry, dict):
            results.append(
                GateResult(
                    str(gate),
                    False,
                    "missing",
                    f"the report has no metric {gate.metric!r}"
                    + (" (no summary names its primary metric)" if gate.metric == PRIMARY else ""),
                )
            )
            continue
        value = finite_or_none(entry.get(gate.field))
        if value is None:
            why = entry.get("reason") or ("no confidence interval" if gate.field != "value" else "no value")
            results.append(GateResult(str(gate), False, "null", f"{name}.{gate.field} is null: {why}"))
            continue
        passed = OPERATORS[gate.op](value, gate.threshold)
        results.append(
            GateResult(
                str(gate),
                passed,
                f"{value:.4f}" + (f" ({name})" if name != gate.metric else ""),
                None if passed else f"{name}.{gate.field} = {value:.4f}, needs {gate.op} {gate.threshold:g}",
                _undecided(entry, gate),
            )
        )
    return results


def check_max_drops(comparison: dict | None, drops: list[MaxDrop], alpha: float = 0.05) -> list[GateResult]:
    """Gates on a comparison (``GET /v1/jobs/{id}/compare/{baseline}``: ``metrics[m].diff`` = job - baseline)."""
    results = []
    metrics = ((comparison or {}).get("metrics") or {}) if comparison is not None else {}
    for drop in drops:
        if comparison is None:
            results.append(GateResult(str(drop), False, "missing", "no comparison (pass --baseline JOB_ID)"))
            continue
        entry = metrics.get(drop.metric)
        if not isinstance(entry, dict):
            results.append(GateResult(str(drop), False, "missing", f"the comparison has no metric {drop.metric!r}"))
            continue
        diff = finite_or_none(entry.get("diff"))
        if diff is None:
            results.append(
                GateResult(
                    str(drop), False, "null", f"{drop.metric} difference is null: {entry.get('reason') or 'no value'}"
                )
            )
            continue
        p_value = finite_or_none(entry.get("p_value"))
        observed = f"{diff:+.4f}" + (f" (p={p_value:.3g})" if p_value is not None else "")
        dropped = diff < -drop.max_drop
        if dropped and drop.significant_only:
            if p_value is None:
                results.append(
                    GateResult(
                        str(drop),
                        False,
                        observed,
                        f"{drop.metric} dropped {-diff:.4f} and its p-value is null: "
                        f"{entry.get('reason') or 'no bootstrap'}",
                    )
                )
                continue
            dropped = p_value < alpha
        results.append(
            GateResult(
                str(drop),
                not dropped,
                observed,
                f"{drop.metric} dropped {-diff:.4f} below the baseline (allowed {drop.max_drop:g}"
                + (f", p={p_value:.3g}" if p_value is not None else "")
                + ")"
                if dropped
                else None,
            )
        )
    return results
