"""The printed summary of a report: the headline metrics with their CIs, one line each."""
from __future__ import annotations

from collections.abc import Iterable


def format_value(metric: dict) -> str:
    if metric.get("value") is None:
        return f"null ({metric.get('reason')})"
    text = f"{metric['value']:.3f}"
    if metric.get("ci_low") is not None and metric.get("ci_high") is not None:
        text += f"  [{metric['ci_low']:.3f}, {metric['ci_high']:.3f}]"
    return text + f"  n={metric.get('n')}"


def format_summary(report: dict, metrics: Iterable[str]) -> str:
    """Pairs, failures, signature, then each of `metrics` (the headline ones, in order) the report has."""
    metrics = list(metrics)
    lines = [f"pairs: {report['job']['n_pairs']}  failed: {report['job']['n_failed']}",
             f"signature: {report['signature']}", ""]
    width = max(len(m) for m in metrics)
    for name in metrics:
        metric = report["corpus"].get(name)
        if metric is not None:
            lines.append(f"{name:<{width}}  {format_value(metric)}")
    return "\n".join(lines)
