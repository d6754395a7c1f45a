"""Percentile bootstrap intervals and the paired bootstrap of two statistics (pure, no I/O).

Resampling is over items (pairs) or, when ``groups`` is given, over whole groups (speakers,
dialogues). A statistic that is undefined on too many resamples raises
:class:`core.metrics.MetricUndefined`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core.metrics import MetricUndefined

__all__ = ["bootstrap_ci", "paired_bootstrap"]


# --------------------------------------------------------------------------------------------
# bootstrap


def _sampler(n_items: int, groups: Any, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    if groups is None:
        return lambda: rng.integers(0, n_items, size=n_items)
    g = np.asarray(groups)
    if g.ndim != 1 or g.size != n_items:
        raise ValueError(f"groups must have one id per item ({n_items}), got shape {g.shape}")
    if g.dtype == object and any(v is None for v in g):
        raise ValueError("groups contains None")
    _, inv = np.unique(g, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    counts = np.bincount(inv)
    starts = np.cumsum(counts) - counts
    n_groups = counts.size

    def draw() -> np.ndarray:
        chosen = rng.integers(0, n_groups, size=n_groups)
        lengths = counts[chosen]
        total = int(lengths.sum())
        offsets = np.cumsum(lengths) - lengths
        pos = np.repeat(starts[chosen] - offsets, lengths) + np.arange(total)
        return order[pos]

    return draw


def _check_bootstrap_args(n_items: int, n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError("n_resamples must be >= 1")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    if n_items < 0:
        raise ValueError("n_items must be >= 0")
    if n_items == 0:
        raise MetricUndefined("no items to resample")


def _resample(
    statistic: Callable[[np.ndarray], float], n_items: int, groups: Any, n_resamples: int, seed: int, what: str
) -> np.ndarray:
    """The defined, finite values of ``statistic`` over ``n_resamples`` resamples drawn from
    ``numpy.random.default_rng(seed)``; MetricUndefined when fewer than half of them gave one."""
    rng = np.random.default_rng(seed)
    draw = _sampler(n_items, groups, rng)
    vals = np.empty(n_resamples)
    n_valid = 0
    for _ in range(n_resamples):
        idx = draw()
        try:
            v = float(statistic(idx))
        except MetricUndefined:
            continue
        if np.isfinite(v):
            vals[n_valid] = v
            n_valid += 1
    if 2 * n_valid < n_resamples:
        raise MetricUndefined(f"only {n_valid} of {n_resamples} {what} resamples had a defined value")
    return vals[:n_valid]


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n_items: int,
    groups: Any = None,
    n_resamples: int = 1000,
    seed: int = 12345,
    confidence: float = 0.95,
) -> tuple[float, float, int]:
    """Percentile bootstrap confidence interval of ``statistic``.

    ``statistic(idx)`` receives an int array of item indices (with repetitions) and returns a
    float; it may raise MetricUndefined for a resample, which is then skipped (a non-finite
    return is skipped too). With ``groups`` (one id per item) whole groups are resampled with
    replacement and all items of each drawn group are taken (cluster bootstrap), so resamples
    vary in size. Randomness: ``numpy.random.default_rng(seed)``.

    Returns ``(low, high, n_valid)``; raises MetricUndefined when there are no items or fewer
    than half of the resamples gave a value.
    """
    _check_bootstrap_args(n_items, n_resamples, confidence)
    vals = _resample(statistic, n_items, groups, n_resamples, seed, "bootstrap")
    low, high = _percentile_interval(vals, confidence)
    return low, high, vals.size


def paired_bootstrap(
    statistic_a: Callable[[np.ndarray], float],
    statistic_b: Callable[[np.ndarray], float],
    n_items: int,
    groups: Any = None,
    n_resamples: int = 1000,
    seed: int = 12345,
    confidence: float = 0.95,
) -> dict:
    """Paired bootstrap of the difference statistic_b - statistic_a.

    Both statistics receive the same resampled index array in every resample (the caller has
    aligned the two runs item by item). ``diff`` = statistic_b(all) - statistic_a(all); the
    interval is the percentile interval of the resampled differences. Resamples where either
    statistic is undefined are skipped; fewer than half valid -> MetricUndefined.

    p-value (two-sided, H0: no difference), by inverting the percentile interval:
    ``p = min(1, 2 * min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (B + 1))`` over the B valid resampled
    differences d*. Identical runs give p = 1; a run better in every resample gives
    p = 2 / (B + 1).

    Returns ``{"diff", "ci_low", "ci_high", "p_value", "n", "n_valid"}`` (n = items,
    n_valid = resamples used).
    """
    _check_bootstrap_args(n_items, n_resamples, confidence)
    full = np.arange(n_items)
    try:
        a0 = float(statistic_a(full))
    except MetricUndefined as exc:
        raise MetricUndefined(f"run a: {exc.reason}") from None
    try:
        b0 = float(statistic_b(full))
    except MetricUndefined as exc:
        raise MetricUndefined(f"run b: {exc.reason}") from None
    d = _resample(
        lambda idx: float(statistic_b(idx)) - float(statistic_a(idx)),
        n_items,
        groups,
        n_resamples,
        seed,
        "paired bootstrap",
    )
    n_valid = d.size
    low, high = _percentile_interval(d, confidence)
    n_le = int(np.count_nonzero(d <= 0.0))
    n_ge = int(np.count_nonzero(d >= 0.0))
    p = min(1.0, 2.0 * (min(n_le, n_ge) + 1) / (n_valid + 1))
    return {
        "diff": b0 - a0,
        "ci_low": low,
        "ci_high": high,
        "p_value": p,
        "n": int(n_items),
        "n_valid": n_valid,
    }
