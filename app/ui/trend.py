"""A system's trend as an inline SVG (no script, no CDN): one point per version with its 95% CI as a whisker,
failed and running versions marked on the axis. Text is sized to the chart, never clipped: long version
labels are shortened with the full label in a tooltip (<title>)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 20, 76  # margins: the y labels, the rotated version labels
MAX_LABEL = 18  # characters of a version label drawn; the whole label is in the tooltip


@dataclass(frozen=True)
class TrendPoint:
    label: str  # the version (the job name after "@"), or the date when the name has none
    status: str  # succeeded, failed, running, queued
    value: float | None
    ci_low: float | None
    ci_high: float | None
    href: str | None = None  # the version's report


def _finite(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def _range(points: list[TrendPoint]) -> tuple[float, float]:
    values = [v for p in points for v in (p.value, p.ci_low, p.ci_high) if _finite(v) is not None]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    pad = max((high - low) * 0.1, 0.02)
    return low - pad, high + pad


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "\u2026"


def trend_svg(points: list[TrendPoint], metric_label: str) -> str:
    """The chart; an empty list gives a chart that says there is nothing to draw."""
    low, high = _range(points)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / max(len(points), 1))

    def y(v: float) -> float:
        return TOP + plot_h * (1 - (v - low) / (high - low))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(metric_label)} by version">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for tick in _ticks(low, high):
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e4e4e4"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11" fill="#555">{tick:.3f}</text>'
        )
    if not points:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle" fill="#777">'
            "no versions yet</text>"
        )
    line = [(x(i), y(p.value)) for i, p in enumerate(points) if p.value is not None and _finite(p.value) is not None]
    if len(line) > 1:
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in line)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#8aa9d6" stroke-width="1.5"/>')
    for i, point in enumerate(points):
        parts.append(_point(point, x(i), y, TOP + plot_h, metric_label))
    parts.append("</svg>")
    return "".join(parts)


def _point(point: TrendPoint, px: float, y, axis_y: float, metric_label: str) -> str:
    label = escape(point.label)
    tip = f"{label}: {escape(point.status)}"
    drawn = []
    value, low, high = _finite(point.value), _finite(point.ci_low), _finite(point.ci_high)
    if point.status == "succeeded" and value is not None:
        tip = f"{label}: {escape(metric_label)} {value:.3f}"
        if low is not None and high is not None:
            tip += f" [{low:.3f}, {high:.3f}]"
            drawn.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y(low):.1f}" y2="{y(high):.1f}" stroke="#1f4e96"/>')
            for end in (low, high):
                drawn.append(
                    f'<line x1="{px - 4:.1f}" x2="{px + 4:.1f}" y1="{y(end):.1f}" y2="{y(end):.1f}" stroke="#1f4e96"/>'
                )
        drawn.append(f'<circle class="version ok" cx="{px:.1f}" cy="{y(value):.1f}" r="4" fill="#1f4e96"/>')
    else:
        colour = {"failed": "#b3261e", "succeeded": "#777"}.get(point.status, "#b8860b")
        mark = "\u2715" if point.status == "failed" else "\u25cb"
        if point.status == "succeeded":
            tip += " (no value for this metric)"
        drawn.append(
            f'<text class="version {escape(point.status)}" x="{px:.1f}" y="{axis_y - 6:.1f}" text-anchor="middle" '
            f'font-size="13" fill="{colour}">{mark}</text>'
        )
    drawn.append(
        f'<text x="{px:.1f}" y="{axis_y + 12:.1f}" font-size="11" fill="#333" text-anchor="end" '
        f'transform="rotate(-35 {px:.1f} {axis_y + 12:.1f})">{escape(_short(point.label))}</text>'
    )
    body = f"<title>{tip}</title>" + "".join(drawn)
    if point.href:
        return f'<a href="{escape(point.href)}">{body}</a>'
    return f"<g>{body}</g>"
