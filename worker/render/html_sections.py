"""The sections of the HTML report page (summary, metric table, plots, per-emotion, worst pairs with audio,
failures, models, comparison) and the helpers they share; worker.render.html_report assembles them."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.catalogue import BY_NAME, CATALOGUE, SECTIONS
from emopres_client.numbers import finite_or_none
from worker.render.plots import plan_plots, render


@dataclass(frozen=True)
class AudioSkipped:
    """A clip left out unread (over the per-clip cap, or the page's audio budget spent): why, shown on the page."""

    reason: str


AudioResolver = Callable[[str, str], "bytes | tuple[bytes, str | None] | AudioSkipped | None"]


def over_cap(size: int, max_bytes: int) -> AudioSkipped:
    return AudioSkipped(f"{size / (1024 * 1024):.1f} MiB > {max_bytes / (1024 * 1024):.1f} MiB cap")


SIMILARITY_ORDER = ("emo_sim", "va_sim", "autopcp", "vsim", "acoustic_sim")
# the metric tables' rows, grouped by catalogue section (SER agreement, similarities, prosody), each in
# catalogue order
METRIC_GROUPS = tuple((section, tuple(m.name for m in CATALOGUE if m.section == section)) for section in SECTIONS)
MiB = 1024 * 1024
WIDE_ASPECT = 1.6  # a plot wider than this (several panels) takes the whole row, not half of it


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    number = finite_or_none(value)
    return "&ndash;" if number is None else f"{number + 0.0:.{digits}f}"  # + 0.0: no "-0.00" for a negative zero


def sniff_audio_mime(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:4] == b"fLaC":
        return "audio/flac"
    if data[:4] == b"OggS":
        return "audio/ogg"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    return "application/octet-stream"


def _primary_similarity(report: dict) -> str | None:
    corpus = report.get("corpus") or {}
    for name in SIMILARITY_ORDER:
        if finite_or_none((corpus.get(name) or {}).get("value")) is not None:
            return name
    return None


def worst_pairs(report: dict, n: int = 10) -> tuple[list[dict], str]:
    """The ``n`` worst pairs: disagreeing first, then by lowest similarity, then highest target uncertainty.

    Returns the pairs and a sentence saying how they were ranked.
    """
    metric = _primary_similarity(report)
    pairs = [p for p in report.get("pairs") or [] if isinstance(p, dict)]

    def key(item):
        index, pair = item
        sim = finite_or_none(pair.get(metric)) if metric else None
        uncertainty = finite_or_none((pair.get("target") or {}).get("uncertainty"))
        return (
            bool(pair.get("agree")),
            math.inf if sim is None else sim,
            -(uncertainty if uncertainty is not None else 0.0),
            index,
        )

    ranked = [pair for _, pair in sorted(enumerate(pairs), key=key)][: max(0, n)]
    rule = (
        "disagreeing predictions first, then "
        + (f"lowest {metric}" if metric else "(no similarity metric in this report)")
        + ", then highest target uncertainty"
    )
    return ranked, rule


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _grouped_rows(entries: dict, row, columns: int) -> list[str]:
    """Table rows of the metrics in `entries`, a heading row before each group; row(name, entry) -> <tr>."""
    rows = []
    for group, names in METRIC_GROUPS:
        present = [n for n in names if isinstance(entries.get(n), dict)]
        if present:
            rows.append(f'<tr class="group"><th colspan="{columns}">{esc(group)}</th></tr>')
            rows += [row(name, entries[name]) for name in present]
    return rows


def summary_section(summary: dict | None) -> str:
    """The report's summary first: the primary metric with its CI and chance level, the warnings, and how well
    the SER head read each side."""
    if not summary:
        return '<p class="muted">This report was made before reports carried a summary: read the table below.</p>'
    primary = summary["primary"]
    value, chance = finite_or_none(primary.get("value")), finite_or_none(primary.get("chance"))
    low, high = finite_or_none(primary.get("ci_low")), finite_or_none(primary.get("ci_high"))
    number = (
        f'<span class="primary">{value:.3f}</span>'
        if value is not None
        else f'<span class="primary null">null</span> {esc(primary.get("reason"))}'
    )
    ci = f" 95% CI [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    lines = [
        f'<p id="primary"><strong>{esc(primary["label"])}</strong> (<code>{esc(primary["metric"])}</code>): '
        f"{number}{esc(ci)}, n={esc(primary.get('n'))}. "
        + (f"Chance level (sides read independently): {chance:.3f}. " if chance is not None else "")
        + f"{esc(primary['direction']).capitalize()}.</p>"
    ]
    warnings = summary.get("warnings") or []
    lines.append(
        '<ul id="warnings">'
        + "".join(f'<li class="bad"><code>{esc(w["code"])}</code> {esc(w["message"])}</li>' for w in warnings)
        + "</ul>"
        if warnings
        else '<p id="warnings" class="good">No warnings: both sides were read well and there are enough '
        "pairs for the intervals.</p>"
    )
    rows = []
    for reading, sides in (summary.get("ser_health") or {}).items():
        for side, health in (sides or {}).items():
            ua, ua_chance = finite_or_none(health.get("ua")), finite_or_none(health.get("ua_chance"))
            rows.append(
                f"<tr><td>{esc(reading)}</td><td>{esc(side)}</td>"
                f'<td class="num">{_fmt(ua)}</td><td class="num">{_fmt(ua_chance)}</td>'
                f"<td>{esc(health.get('top_class'))} ({_fmt(health.get('top_class_share'), 2)})</td>"
                f'<td class="num">{_fmt(health.get("entropy"), 2)}</td></tr>'
            )
    if rows:
        lines.append(
            '<table id="ser-health"><thead><tr><th>SER reading</th><th>side</th><th>UA</th>'
            "<th>chance UA</th><th>most predicted (share)</th><th>entropy of predictions</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    return "".join(lines)


def metric_rows(corpus: dict, summary: dict | None = None) -> str:
    described = (summary or {}).get("metrics") or {}

    def row(name: str, entry: dict) -> str:
        value = finite_or_none(entry.get("value"))
        low, high = finite_or_none(entry.get("ci_low")), finite_or_none(entry.get("ci_high"))
        ci = f"[{low:.3f}, {high:.3f}]" if low is not None and high is not None else "&ndash;"
        reason = entry.get("reason")
        value_cell = f'<td class="num">{value:.3f}</td>' if value is not None else '<td class="num null">null</td>'
        return (
            f'<tr id="metric-{esc(name)}"><th scope="row">{esc(BY_NAME[name].label)}</th>{value_cell}'
            f'<td class="num">{ci}</td><td class="num">{_fmt((described.get(name) or {}).get("chance"))}</td>'
            f'<td class="muted">{esc(BY_NAME[name].direction)}</td><td class="num">{esc(entry.get("n"))}</td>'
            f'<td class="muted">{esc(reason) if reason else ""}</td></tr>'
        )

    return (
        '<table id="metrics"><thead><tr><th>metric</th><th>value</th><th>95% CI</th><th>chance</th>'
        "<th>direction</th><th>n</th><th>note</th></tr></thead><tbody>"
        + "".join(_grouped_rows(corpus, row, 7))
        + "</tbody></table>"
    )


def plots_section(report: dict, plots: dict[str, bytes] | None) -> str:
    specs, skipped = plan_plots(report)
    figures = []
    for spec in specs:
        png = plots.get(spec.name) if plots is not None else render(spec, "png")
        if png is None:
            continue
        # the title is drawn in the image already: no caption repeating it
        wide = ' class="wide"' if spec.size[0] / spec.size[1] > WIDE_ASPECT else ""
        figures.append(
            f'<figure id="plot-{esc(spec.name)}"{wide}><img alt="{esc(spec.title)}" '
            f'src="{_data_uri("image/png", png)}"></figure>'
        )
    out = (
        f'<div class="plots">{"".join(figures)}</div>'
        if figures
        else '<p class="muted">No plot could be drawn from this report.</p>'
    )
    if skipped:
        items = "".join(f"<li><code>{esc(name)}</code>: {esc(reason)}</li>" for name, reason in skipped.items())
        out += (
            f'<details id="skipped-plots"><summary>{len(skipped)} plot(s) not drawn</summary><ul>{items}</ul></details>'
        )
    return out


def per_emotion_table(corpus: dict) -> str:
    per = corpus.get("per_emotion") or {}
    by_pred = per.get("by_source_prediction") or {}
    by_gold = per.get("by_gold")
    if not by_pred and not by_gold:
        return '<p class="muted">No per-emotion results.</p>'
    classes = list(dict.fromkeys([*by_pred, *(by_gold or {})]))
    head = "<tr><th>emotion</th><th>pairs (source pred)</th><th>preserved</th>"
    if by_gold is not None:
        head += "<th>pairs (gold)</th><th>source recall</th><th>target recall</th><th>agreement</th>"
    rows = []
    for cls in classes:
        p = by_pred.get(cls) or {}
        cells = (
            f'<th scope="row">{esc(cls)}</th><td class="num">{esc(p.get("n", 0))}</td>'
            f'<td class="num">{_fmt(p.get("value"))}</td>'
        )
        if by_gold is not None:
            g = by_gold.get(cls) or {}
            cells += (
                f'<td class="num">{esc(g.get("n", 0))}</td><td class="num">{_fmt(g.get("source_recall"))}</td>'
                f'<td class="num">{_fmt(g.get("target_recall"))}</td><td class="num">{_fmt(g.get("agreement"))}</td>'
            )
        rows.append(f"<tr>{cells}</tr>")
    note = (
        '<p class="muted">preserved = P(target prediction = k | source prediction = k); '
        "recall = P(prediction = k | gold k); agreement = P(source prediction = target prediction | gold k).</p>"
    )
    return f'<table id="per-emotion"><thead>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>{note}'


def clip_length(seconds: float | None) -> str:
    """A clip's length as the page writes it beside its player ("2.4 s", "1:05")."""
    if seconds is None:
        return ""
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


def _seconds(data: bytes, known: Any) -> float | None:
    """The clip's length: the report's (measured on the decoded audio), else its header's."""
    seconds = finite_or_none(known)
    if seconds is None:
        from core.audio import AudioError, read_header

        try:
            seconds = read_header(data).seconds
        except AudioError:
            return None
    return seconds


def _audio_cell(audio: AudioResolver | None, pair_id: str, side: str, max_bytes: int, seconds: Any = None) -> str:
    if audio is None:
        return ""
    try:
        got = audio(pair_id, side)
    except Exception as error:  # a missing blob must not cost the whole page
        return f'<div class="muted">audio unavailable: {esc(type(error).__name__)}: {esc(error)}</div>'
    if got is None:
        return '<div class="muted">audio unavailable</div>'
    if isinstance(got, AudioSkipped):
        return f'<div class="muted">audio not embedded: {esc(got.reason)}</div>'
    data, mime = got if isinstance(got, tuple) else (got, None)
    if len(data) > max_bytes:
        return (
            f'<div class="muted">audio not embedded: {len(data) / MiB:.1f} MiB &gt; {max_bytes / MiB:.1f} MiB cap</div>'
        )
    mime = mime or sniff_audio_mime(data)
    # the length is written as text: a player of a data: URI may show 0:00 until played, whatever its preload
    length = clip_length(_seconds(data, seconds))
    return (
        f'<div class="clip"><audio controls preload="metadata" src="{_data_uri(mime, data)}" '
        f'title="{esc(side)} {esc(pair_id)}"></audio>'
        + (f'<span class="length" title="length of the clip">{esc(length)}</span>' if length else "")
        + "</div>"
    )


def worst_section(report: dict, n: int, audio: AudioResolver | None, max_audio_bytes: int) -> str:
    ranked, rule = worst_pairs(report, n)
    if not ranked:
        return '<p class="muted">No successfully evaluated pairs.</p>'
    sims = [m for m in SIMILARITY_ORDER if any(finite_or_none(p.get(m)) is not None for p in ranked)]
    head = (
        "<tr><th>pair</th><th>gold</th><th>source pred (unc.)</th><th>target pred (unc.)</th><th>agree</th>"
        + "".join(f"<th>{esc(m)}</th>" for m in sims)
        + ("<th>warnings</th>" if any(p.get("warnings") for p in ranked) else "")  # no column of empty cells
        + "</tr>"
    )
    rows = []
    for pair in ranked:
        pid = str(pair.get("pair_id"))
        s, t = pair.get("source") or {}, pair.get("target") or {}
        agree = pair.get("agree")
        warnings = "<br>".join(esc(w) for w in pair.get("warnings") or [])
        rows.append(
            f"<tr><td><code>{esc(pid)}</code></td><td>{esc(pair.get('label') or '')}</td>"
            f"<td>{esc(s.get('pred'))} ({_fmt(s.get('uncertainty'), 2)})"
            f"{_audio_cell(audio, pid, 'source', max_audio_bytes, s.get('duration_s'))}</td>"
            f"<td>{esc(t.get('pred'))} ({_fmt(t.get('uncertainty'), 2)})"
            f"{_audio_cell(audio, pid, 'target', max_audio_bytes, t.get('duration_s'))}</td>"
            f'<td class="{"good" if agree else "bad"}">{"yes" if agree else "no"}</td>'
            + "".join(f'<td class="num">{_fmt(pair.get(m))}</td>' for m in sims)
            + (f'<td class="muted">{warnings}</td>' if "warnings</th>" in head else "")
            + "</tr>"
        )
    total = len(report.get("pairs") or [])
    return (
        f'<p class="muted">{len(ranked)} of {total} pairs, ranked by {esc(rule)}. '
        "Uncertainty: entropy / log K.</p>"
        f'<div class="scroll"><table id="worst-pairs"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div>'
    )


def failures_section(report: dict) -> str:
    failures = report.get("failures") or []
    if not failures:
        return '<p class="muted" id="no-failures">No failures.</p>'
    rows = "".join(
        f"<tr><td><code>{esc(f.get('pair_id'))}</code></td><td>{esc(f.get('side'))}</td>"
        f"<td>{esc(f.get('error'))}</td></tr>"
        for f in failures
        if isinstance(f, dict)
    )
    return (
        '<table id="failures"><thead><tr><th>pair</th><th>side</th><th>error</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


SIGNIFICANT_BETTER = " &#9650;"  # in words too, not by colour alone
SIGNIFICANT_WORSE = " &#9660;"


def comparison_section(comparison: dict, baseline_label: str | None) -> str:
    """The table of worker.engine.compare.compare_reports: metrics[m] has baseline, job, diff (job - baseline), CI, p,
    n."""

    def row(name: str, entry: dict) -> str:
        low, high = finite_or_none(entry.get("ci_low")), finite_or_none(entry.get("ci_high"))
        ci = f"[{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else "&ndash;"
        diff = finite_or_none(entry.get("diff"))
        worse = diff is not None and high is not None and high < 0
        better = diff is not None and low is not None and low > 0
        diff_class = "num bad" if worse else "num good" if better else "num"
        mark = SIGNIFICANT_WORSE if worse else SIGNIFICANT_BETTER if better else ""
        return (
            f'<tr id="compare-{esc(name)}"><th scope="row">{esc(BY_NAME[name].label)}</th>'
            f'<td class="num">{_fmt(entry.get("baseline"))}</td><td class="num">{_fmt(entry.get("job"))}</td>'
            f'<td class="{diff_class}">{"&ndash;" if diff is None else f"{diff:+.3f}{mark}"}</td>'
            f'<td class="num">{ci}</td>'
            f'<td class="num">{_fmt(entry.get("p_value"), 4)}</td><td class="num">{esc(entry.get("n"))}</td>'
            f'<td class="muted">{esc(entry.get("reason") or "")}</td></tr>'
        )

    rows = _grouped_rows(comparison.get("metrics") or {}, row, 8)
    warnings = "".join(f'<p class="bad">{esc(w)}</p>' for w in comparison.get("warnings") or [])
    flipped = comparison.get("flipped") or {}
    lost = flipped.get("agree_to_disagree") or []
    return (
        f'<p class="muted">Against baseline {esc(baseline_label or "")}: paired bootstrap over '
        f"{esc(comparison.get('n_shared'))} shared pairs (diff = this run - baseline). A change whose 95% CI "
        f"excludes zero is marked{SIGNIFICANT_BETTER} (better) or{SIGNIFICANT_WORSE} (worse).</p>{warnings}"
        '<table id="comparison"><thead><tr><th>metric</th><th>baseline</th><th>this run</th><th>diff</th>'
        "<th>95% CI</th><th>p</th><th>n</th><th>note</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        f"<p>{len(lost)} pair(s) flipped from agree to disagree"
        + (
            ": " + ", ".join(f"<code>{esc(p)}</code>" for p in lost[:50]) + (" &hellip;" if len(lost) > 50 else "")
            if lost
            else ""
        )
        + "</p>"
    )
