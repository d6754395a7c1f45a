"""The printed summary of a report: the primary metric with its chance level and the report's warnings, then the
headline metrics with their CIs, one line each."""

from __future__ import annotations

from collections.abc import Iterable


def format_value(metric: dict) -> str:
    if metric.get("value") is None:
        return f"null ({metric.get('reason')})"
    text = f"{metric['value']:.3f}"
    if metric.get("ci_low") is not None and metric.get("ci_high") is not None:
        text += f"  [{metric['ci_low']:.3f}, {metric['ci_high']:.3f}]"
    return text + f"  n={metric.get('n')}"


def format_trust(summary: dict | None) -> list[str]:
    """The report's summary as lines: the primary metric (value, CI, chance, direction), then each warning."""
    if not summary:
        return []
    primary = summary["primary"]
    chance = primary.get("chance")
    lines = [
        f"primary: {primary['metric']}  {format_value(primary)}"
        + (f"  (chance {chance:.3f}; {primary['direction']})" if chance is not None else f"  ({primary['direction']})")
    ]
    lines += [f"warning [{w['code']}]: {w['message']}" for w in summary.get("warnings") or []]
    return lines + [""]


def format_summary(report: dict, metrics: Iterable[str]) -> str:
    """Pairs, failures, signature, the primary metric and warnings, then each of `metrics` (the headline ones,
    in order) the report has."""
    metrics = list(metrics)
    lines = [
        f"pairs: {report['job']['n_pairs']}  failed: {report['job']['n_failed']}",
        f"signature: {report['signature']}",
        "",
        *format_trust(report.get("summary")),
    ]
    width = max(len(m) for m in metrics)
    for name in metrics:
        metric = report["corpus"].get(name)
        if metric is not None:
            lines.append(f"{name:<{width}}  {format_value(metric)}")
    return "\n".join(lines)
