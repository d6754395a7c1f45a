"""Plots of a report: PNG and SVG, drawn from the report dict alone.

* ``confusion_source`` / ``confusion_target``: gold vs predicted emotion per side (the paper's
  Fig. 1); cells coloured by row-normalised recall, annotated with counts.
* ``source_vs_target``: source prediction vs target prediction (needs no labels).
* ``uncertainty``: per pair, source vs target SER uncertainty, agreeing and disagreeing pairs
  marked apart (the paper's Fig. 2).
* ``per_emotion``: per-emotion preservation P(pred_t = k | pred_s = k) and, with gold labels,
  per-gold-class source/target recall.
* ``pause_rate`` / ``speech_rate``: source vs target per pair (corpus Pause / Rate = Spearman).
* ``dist_<metric>``: distribution of each pair metric of the catalogue (emo_sim, acoustic_sim, ...).

A plot whose metric is null (or has nothing to draw) is not drawn: :func:`plan_plots` lists it
under ``skipped`` with the reason. Every drawn plot carries ``data``: the numbers it shows,
so that callers (and tests) can check a picture against the report it came from.

Figures are ``matplotlib.figure.Figure`` objects rendered with the Agg canvas (no pyplot, no
global backend); one lock serialises drawing, which matplotlib does not make thread-safe.
SVG text stays text (``svg.fonttype: none``) and carries no date, so the same report gives the
same SVG.
"""

from __future__ import annotations

import io
import json
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.catalogue import BY_NAME, PAIR_METRICS
from core.confusion_plot import draw_confusion, literal_text, row_normalised
from emopres_client.numbers import finite_or_none
from worker.render.fit_text import fit_text

__all__ = [
    "FORMATS",
    "MIME",
    "PlotSpec",
    "PlotUnavailable",
    "plan_plots",
    "render",
    "render_plot",
    "write_plots",
    "plot_names",
]

FORMATS = ("png", "svg")
MIME = {"png": "image/png", "svg": "image/svg+xml"}
RATE_PLOTS = {"pause_rate": ("pause", "pause rate (pauses/s)"), "speech_rate": ("rate", "speech rate (syllables/s)")}
BASE_PLOTS = (
    "confusion_source",
    "confusion_target",
    "source_vs_target",
    "uncertainty",
    "per_emotion",
    "pause_rate",
    "speech_rate",
)
DPI = 100
RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "emopres",
    "font.size": 9,
    "axes.titlesize": 10,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
}
AGREE_COLOUR, DISAGREE_COLOUR = "#1b9e77", "#d95f02"
LEGEND_HEADROOM, UNIT_TICKS = 1.32, (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # shares in [0, 1], room above for labels
RATE_MARGIN = 0.04

_LOCK = threading.RLock()


class PlotUnavailable(Exception):
    """The plot cannot be drawn from this report; ``reason`` says why."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


@dataclass
class PlotSpec:
    """One drawable plot: ``data`` is what it shows (JSON-able); ``draw(fig)`` draws it."""

    name: str
    title: str
    data: dict
    draw: Callable[[Figure], None] = field(repr=False)
    size: tuple[float, float] = (6.0, 4.5)

    def figure(self) -> Figure:
        fig = Figure(figsize=self.size, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)  # the Agg canvas, whatever pyplot's backend is
        self.draw(fig)
        fit_text(fig)  # a long title or label is wrapped, never cut at the image's edges
        return fig


# ------------------------------------------------------------------------------------------ helpers


def _metric(report: dict, name: str) -> dict:
    entry = (report.get("corpus") or {}).get(name)
    return entry if isinstance(entry, dict) else {"value": None, "reason": f"the report has no {name!r} metric"}


def _metric_text(entry: dict) -> str:
    value = finite_or_none(entry.get("value"))
    if value is None:
        return "null"
    text = f"{value:.3f}"
    low, high = finite_or_none(entry.get("ci_low")), finite_or_none(entry.get("ci_high"))
    if low is not None and high is not None:
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def _pairs(report: dict) -> list[dict]:
    return [p for p in report.get("pairs") or [] if isinstance(p, dict)]


def _side(pair: dict, side: str) -> dict:
    value = pair.get(side)
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------------------------------ plot specs


def _confusion_spec(
    name: str, title: str, classes: list[str], matrix: list[list[int]], row_label: str, col_label: str
) -> PlotSpec:
    counts = [[int(c) for c in row] for row in matrix]
    data = {
        "classes": list(classes),
        "counts": counts,
        "row_normalised": row_normalised(counts),
        "rows": row_label,
        "columns": col_label,
    }

    def draw(fig: Figure) -> None:
        draw_confusion(fig, classes, counts, title, row_label, col_label)

    return PlotSpec(name, title, data, draw, size=(5.8, 5.0))


def _confusions(report: dict, specs: list[PlotSpec], skipped: dict[str, str]) -> None:
    ser = (report.get("corpus") or {}).get("ser") or {}
    classes = [str(c) for c in ser.get("classes") or []]
    for side in ("source", "target"):
        name = f"confusion_{side}"
        entry = ser.get(side) or {}
        if not classes:
            skipped[name] = "the report has no SER classes"
        elif entry.get("confusion") is None:
            skipped[name] = entry.get("reason") or "no confusion matrix in the report"
        else:
            ua = finite_or_none(entry.get("ua"))
            title = f"SER on the {side} side: gold vs predicted" + (f" (UA {ua:.3f})" if ua is not None else "")
            specs.append(
                _confusion_spec(name, title, classes, entry["confusion"], "gold emotion", f"predicted emotion ({side})")
            )
    name = "source_vs_target"
    if not classes or ser.get("source_vs_target") is None or not _pairs(report):
        skipped[name] = "no successfully evaluated pairs"
    else:
        epr = _metric(report, "epr")
        specs.append(
            _confusion_spec(
                name,
                f"Source vs target prediction (EPR {_metric_text(epr)})",
                classes,
                ser["source_vs_target"],
                "source prediction",
                "target prediction",
            )
        )


def uncertainty_plot(
    report: dict,
    specs: list[PlotSpec],
    skipped: dict[str, str],
    *,
    name: str = "uncertainty",
    scale: str = "entropy / log K",
    subtitle: str = "",
) -> None:
    """Fig. 2: source vs target uncertainty per pair, as the report's ``uncertainty`` values are scaled."""
    points = []
    for pair in _pairs(report):
        us, ut = (
            finite_or_none(_side(pair, "source").get("uncertainty")),
            finite_or_none(_side(pair, "target").get("uncertainty")),
        )
        agree = pair.get("agree")
        if agree is None and _side(pair, "source").get("pred") is not None:
            agree = _side(pair, "source").get("pred") == _side(pair, "target").get("pred")
        if us is not None and ut is not None and agree is not None:
            points.append((str(pair.get("pair_id")), us, ut, bool(agree)))
    if not points:
        skipped[name] = "no pair has source and target uncertainties"
        return
    data = {
        "pair_ids": [p[0] for p in points],
        "source_uncertainty": [p[1] for p in points],
        "target_uncertainty": [p[2] for p in points],
        "agree": [p[3] for p in points],
    }
    n_agree = sum(data["agree"])
    title = f"SER uncertainty per pair ({n_agree} of {len(points)} agree){subtitle}"

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        for flag, colour, marker, label in (
            (True, AGREE_COLOUR, "o", "agree"),
            (False, DISAGREE_COLOUR, "x", "disagree"),
        ):
            xs = [p[1] for p in points if p[3] is flag]
            ys = [p[2] for p in points if p[3] is flag]
            if xs:
                ax.scatter(
                    xs, ys, s=18, c=colour, marker=marker, alpha=0.75, label=f"{label} ({len(xs)})", linewidths=1.0
                )
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel(f"source uncertainty ({scale})")
        ax.set_ylabel(f"target uncertainty ({scale})")
        ax.set_title(title)
        ax.legend(loc="upper left", frameon=False)

    specs.append(PlotSpec(name, title, data, draw, size=(5.2, 5.0)))


def _per_emotion(report: dict, specs: list[PlotSpec], skipped: dict[str, str]) -> None:
    name = "per_emotion"
    per = (report.get("corpus") or {}).get("per_emotion") or {}
    by_pred = per.get("by_source_prediction") or {}
    by_gold = per.get("by_gold") or {}
    pred_rows = [
        (str(c), finite_or_none(e.get("value")), int(e.get("n") or 0))
        for c, e in by_pred.items()
        if isinstance(e, dict) and finite_or_none(e.get("value")) is not None
    ]
    gold_rows = [
        (str(c), finite_or_none(e.get("source_recall")), finite_or_none(e.get("target_recall")), int(e.get("n") or 0))
        for c, e in by_gold.items()
        if isinstance(e, dict) and int(e.get("n") or 0) > 0
    ]
    if not pred_rows and not gold_rows:
        skipped[name] = "no class has a pair (no successfully evaluated pairs)"
        return
    data = {
        "by_source_prediction": {c: {"value": v, "n": n} for c, v, n in pred_rows},
        "by_gold": {c: {"source_recall": s, "target_recall": t, "n": n} for c, s, t, n in gold_rows},
        "omitted": sorted(set(map(str, by_pred)) - {c for c, _, _ in pred_rows}),
    }
    title = "Per-emotion preservation"

    def draw(fig: Figure) -> None:
        axes = fig.subplots(1, 2 if gold_rows else 1, squeeze=False)[0]
        ax = axes[0]
        if pred_rows:
            xs = range(len(pred_rows))
            bars = ax.bar(xs, [v for _, v, _ in pred_rows], color="#4c72b0")
            ax.bar_label(bars, labels=[f"n={n}" for _, _, n in pred_rows], fontsize=8, padding=2)
            ax.set_xticks(list(xs), labels=[literal_text(c) for c, _, _ in pred_rows], rotation=45, ha="right")
        ax.set_ylim(0, LEGEND_HEADROOM)
        ax.set_yticks(UNIT_TICKS)
        ax.set_ylabel("P(target pred = k | source pred = k)")
        ax.set_title("by source prediction")
        if gold_rows:
            ax = axes[1]
            xs = list(range(len(gold_rows)))
            width = 0.4
            src = ax.bar(
                [x - width / 2 for x in xs],
                [s or 0.0 for _, s, _, _ in gold_rows],
                width,
                label="source recall",
                color="#55a868",
            )
            tgt = ax.bar(
                [x + width / 2 for x in xs],
                [t or 0.0 for _, _, t, _ in gold_rows],
                width,
                label="target recall",
                color="#c44e52",
            )
            ax.bar_label(tgt, labels=[f"n={n}" for *_, n in gold_rows], fontsize=8, padding=2)
            del src
            ax.set_xticks(xs, labels=[literal_text(c) for c, *_ in gold_rows], rotation=45, ha="right")
            ax.set_ylim(0, LEGEND_HEADROOM)
            ax.set_yticks(UNIT_TICKS)
            ax.set_ylabel("recall of the gold emotion")
            ax.set_title("by gold emotion")
            # in the headroom above 1, in one row: clear of the bars and of their n= labels
            ax.legend(loc="upper center", ncol=2, frameon=False, fontsize=8)
        fig.suptitle(title)

    specs.append(PlotSpec(name, title, data, draw, size=(11.0 if gold_rows else 5.5, 4.2)))


def _rates(report: dict, specs: list[PlotSpec], skipped: dict[str, str]) -> None:
    for name, (metric_name, axis_label) in RATE_PLOTS.items():
        metric = _metric(report, metric_name)
        if finite_or_none(metric.get("value")) is None:
            skipped[name] = f"{metric_name} is null: {metric.get('reason') or 'no value'}"
            continue
        ids, xs, ys = [], [], []
        for pair in _pairs(report):
            x, y = finite_or_none(_side(pair, "source").get(name)), finite_or_none(_side(pair, "target").get(name))
            if x is not None and y is not None:
                ids.append(str(pair.get("pair_id")))
                xs.append(x)
                ys.append(y)
        if not xs:
            skipped[name] = f"no pair has both source and target {axis_label.split(' (')[0]}s"
            continue
        title = f"{axis_label.split(' (')[0].capitalize()}: source vs target (Spearman {_metric_text(metric)})"
        data = {"pair_ids": ids, "source": xs, "target": ys, "spearman": finite_or_none(metric.get("value"))}

        def draw(fig: Figure, xs=xs, ys=ys, axis_label=axis_label, title=title) -> None:
            ax = fig.add_subplot()
            ax.scatter(xs, ys, s=16, alpha=0.7, color="#4c72b0")
            top = max(max(xs), max(ys)) * 1.05 or 1.0
            low = -RATE_MARGIN * top  # rates of 0 are common (no pause): keep their markers whole inside the axes
            ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--")
            ax.set_xlim(low, top)
            ax.set_ylim(low, top)
            ax.set_xlabel(f"source {axis_label}")
            ax.set_ylabel(f"target {axis_label}")
            ax.set_title(title)

        specs.append(PlotSpec(name, title, data, draw, size=(5.5, 5.0)))


def _similarities(report: dict, specs: list[PlotSpec], skipped: dict[str, str]) -> None:
    corpus = report.get("corpus") or {}
    for metric_name in PAIR_METRICS:
        if metric_name not in corpus:
            continue
        name = f"dist_{metric_name}"
        metric = _metric(report, metric_name)
        if finite_or_none(metric.get("value")) is None:
            skipped[name] = f"{metric_name} is null: {metric.get('reason') or 'no value'}"
            continue
        values = [v for v in (finite_or_none(p.get(metric_name)) for p in _pairs(report)) if v is not None]
        if not values:
            skipped[name] = f"no pair has a {metric_name} value"
            continue
        label = BY_NAME[metric_name].title
        title = f"{label}: mean {_metric_text(metric)}, n={len(values)}"
        data = {
            "metric": metric_name,
            "values": values,
            "mean": finite_or_none(metric.get("value")),
            "ci_low": finite_or_none(metric.get("ci_low")),
            "ci_high": finite_or_none(metric.get("ci_high")),
        }

        def draw(fig: Figure, values=values, data=data, label=label, title=title) -> None:
            ax = fig.add_subplot()
            bins = max(5, min(40, int(math.sqrt(len(values))) + 1))
            ax.hist(values, bins=bins, color="#8172b2", alpha=0.85, edgecolor="white")
            if data["ci_low"] is not None and data["ci_high"] is not None:
                ax.axvspan(data["ci_low"], data["ci_high"], color="#dd8452", alpha=0.25, label="95% CI of the mean")
            ax.axvline(data["mean"], color="#dd8452", lw=1.5, label="corpus mean")
            ax.set_xlabel(BY_NAME[data["metric"]].label)  # the title names it in full
            ax.set_ylabel("pairs")
            ax.set_title(title.replace(": mean ", "\nmean ", 1), fontsize=9)  # the numbers on a line of their own
            ax.legend(loc="best", fontsize=7)

        specs.append(PlotSpec(name, title, data, draw, size=(6.0, 4.0)))


# ------------------------------------------------------------------------------------------ public API


def plan_plots(report: dict) -> tuple[list[PlotSpec], dict[str, str]]:
    """The plots this report supports (in display order) and the skipped ones: ``{name: reason}``."""
    specs: list[PlotSpec] = []
    skipped: dict[str, str] = {}
    _confusions(report, specs, skipped)
    uncertainty_plot(report, specs, skipped)
    _per_emotion(report, specs, skipped)
    _rates(report, specs, skipped)
    _similarities(report, specs, skipped)
    order = {name: i for i, name in enumerate(plot_names(report))}
    specs.sort(key=lambda s: order.get(s.name, len(order)))
    return specs, skipped


def plot_names(report: dict | None = None) -> list[str]:
    """Every plot name (for a report: the similarity distributions of the metrics it has)."""
    corpus = (report or {}).get("corpus") or {}
    sims = [m for m in PAIR_METRICS if report is None or m in corpus]
    return list(BASE_PLOTS) + [f"dist_{m}" for m in sims]


def render(spec: PlotSpec, fmt: str = "png") -> bytes:
    """The plot as PNG or SVG bytes."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown plot format {fmt!r}; use one of {', '.join(FORMATS)}")
    with _LOCK, rc_context(RC):
        fig = spec.figure()
        buffer = io.BytesIO()
        metadata = {"Date": None} if fmt == "svg" else {"Software": "emopres"}
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata, facecolor="white")
    return buffer.getvalue()


def get_spec(report: dict, name: str) -> PlotSpec:
    """One plot's spec; KeyError for an unknown name, PlotUnavailable (with reason) for a skipped one."""
    specs, skipped = plan_plots(report)
    for spec in specs:
        if spec.name == name:
            return spec
    if name in skipped:
        raise PlotUnavailable(name, skipped[name])
    raise KeyError(name)


def render_plot(report: dict, name: str, fmt: str = "png") -> bytes:
    return render(get_spec(report, name), fmt)


def write_plots(report: dict, out_dir: str | Path, formats: Iterable[str] = FORMATS) -> dict:
    """Write every drawable plot as ``<name>.<fmt>`` and ``plots.json`` (what each shows, what was skipped).

    Returns the ``plots.json`` content: ``{"plots": {name: {"title", "files", "data"}}, "skipped": {name: reason}}``.
    """
    formats = list(formats)
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown plot format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs, skipped = plan_plots(report)
    index: dict[str, Any] = {"plots": {}, "skipped": skipped}
    for spec in specs:
        files = []
        for fmt in formats:
            path = out / f"{spec.name}.{fmt}"
            path.write_bytes(render(spec, fmt))
            files.append(path.name)
        index["plots"][spec.name] = {"title": spec.title, "files": files, "data": spec.data}
    (out / "plots.json").write_text(json.dumps(index, indent=1))
    return index
