"""One self-contained HTML page of a report: what a person opens in a browser.

Sections: the summary (the primary metric with its CI and chance level, warnings, how well each side was read),
every metric with its 95% CI, chance level and direction (folded), the job, the plots (PNG data URIs), the per-emotion
table, the worst pairs (disagreeing first, then lowest similarity) with source/target audio
players, failures, the signature and models. Everything that came from a user (pair ids,
labels, job names, error messages, metadata) is HTML-escaped; the page loads nothing from
anywhere (a Content-Security-Policy allows data: images and audio and the page's own style,
and no scripts).

Audio is embedded only when the caller passes ``audio(pair_id, side)`` returning the file's
bytes (or ``(bytes, mime)``), and only for the worst ``worst_n`` pairs, each clip up to
``max_audio_bytes``, to keep the page small. A resolver that finds a file over the cap before
reading it returns ``AudioSkipped(reason)`` instead (the page shows the reason): see
``audio_from_file``, and app.routes.reports for the blob store's.

This module assembles the page (its style, CSP and job table); the sections themselves, the worst-pair ranking
and ``AudioSkipped`` are in worker.render.html_sections.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from worker.render.html_models import models_section
from worker.render.html_sections import (
    AudioResolver,
    MiB,
    comparison_section,
    esc,
    failures_section,
    metric_rows,
    over_cap,
    per_emotion_table,
    plots_section,
    summary_section,
    worst_section,
)

__all__ = ["render_html", "write_outputs", "audio_from_file"]


def audio_from_file(path, max_bytes: int):
    """A file's bytes for the page, or AudioSkipped when it is over ``max_bytes`` (only its size is read)."""
    size = Path(path).stat().st_size
    if size > max_bytes:
        return over_cap(size, max_bytes)
    return Path(path).read_bytes()


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;\
padding:1rem 1.5rem;color:#1d1d1f;background:#fff}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;\
padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}\
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.null{color:#8a6d00}.muted{color:#666;font-size:.85rem}.bad{color:#b00020}.good{color:#1b7a3a}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:.75rem}
figure{margin:0}figure.wide{grid-column:1/-1}figure img{width:100%;height:auto;border:1px solid #eee}
tr.group th{background:#e8e8ee;font-size:.8rem;text-transform:uppercase;letter-spacing:.04em}\
code{font-size:.8rem;word-break:break-all;background:#f4f4f6;padding:.1rem .2rem}
.clip{display:flex;align-items:center;gap:.4rem;margin-top:.25rem}audio{display:block;width:240px;height:32px}\
.length{color:#444;font-size:.8rem;font-variant-numeric:tabular-nums;white-space:nowrap}
#models code,#worst-pairs code{word-break:normal;white-space:nowrap}.scroll{overflow-x:auto;max-width:100%}
.primary{font-size:1.6rem;font-weight:700}details{margin:.5rem 0}summary{cursor:pointer;font-weight:600}
""".strip()


def render_html(
    report: dict,
    *,
    title: str | None = None,
    plots: dict[str, bytes] | None = None,
    audio: AudioResolver | None = None,
    worst_n: int = 10,
    max_audio_bytes: int = 2 * MiB,
    comparison: dict | None = None,
    baseline_label: str | None = None,
) -> str:
    """The report as one HTML page (a str).

    ``plots``: PNG bytes by plot name, when the caller has them already (default: drawn here).
    ``audio(pair_id, side)``: the audio bytes (or ``(bytes, mime)``) of a worst pair's side.
    ``comparison``: a :func:`worker.engine.compare.compare_reports` result to show against a baseline.
    """
    job = report.get("job") or {}
    corpus = report.get("corpus") or {}
    heading = title or (f"emopres report {job.get('id')}" if job.get("id") else "emopres report")
    meta_rows = "".join(
        f'<tr><th scope="row">{esc(k)}</th><td>{esc(v)}</td></tr>'
        for k, v in (
            ("job", job.get("id") or "(offline run)"),
            ("name", job.get("name")),
            ("profile", job.get("profile")),
            ("metadata", json.dumps(job["metadata"], ensure_ascii=False) if job.get("metadata") else None),
            ("status", job.get("status")),
            ("created", job.get("created_at")),
            ("finished", job.get("finished_at")),
            ("pairs", job.get("n_pairs")),
            ("failed", job.get("n_failed")),
            ("schema version", report.get("schema_version")),
        )
        if v not in (None, "")
    )
    sections = [
        f"<h1>{esc(heading)}</h1>",
        "<h2>Summary</h2>",
        summary_section(report.get("summary")),
        '<details id="all-metrics"><summary>Every metric (the paper\'s BAR, EPR and kappa among them), with its '
        "95% CI, chance level and direction</summary>",
        metric_rows(corpus, report.get("summary")),
        "</details>",
        "<h2>Job</h2>",
        f'<table class="meta" id="job">{meta_rows}</table>',
    ]
    if comparison is not None:
        sections += ["<h2>Comparison with the baseline</h2>", comparison_section(comparison, baseline_label)]
    sections += [
        "<h2>Plots</h2>",
        plots_section(report, plots),
        "<h2>Per emotion</h2>",
        per_emotion_table(corpus),
        "<h2>Worst pairs</h2>",
        worst_section(report, worst_n, audio, max_audio_bytes),
        "<h2>Failures</h2>",
        failures_section(report),
        "<h2>Signature and models</h2>",
        models_section(report),
    ]
    style_hash = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    csp = (
        f"default-src 'none'; img-src data:; media-src data:; style-src 'sha256-{style_hash}'; "
        "base-uri 'none'; form-action 'none'"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(heading)}</title><style>{STYLE}</style></head><body>" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_outputs(
    report: dict, *, plots_dir=None, html_file=None, audio: AudioResolver | None = None, worst_n: int = 10
) -> None:
    """`emopres evaluate --plots DIR --html FILE`: the plots (PNG, SVG, plots.json) and/or the page.

    With both, the page embeds the PNGs just written instead of drawing them again.
    """
    from pathlib import Path

    from worker.render.plots import write_plots

    pngs = None
    if plots_dir:
        index = write_plots(report, plots_dir)
        pngs = {name: (Path(plots_dir) / f"{name}.png").read_bytes() for name in index["plots"]}
    if html_file:
        Path(html_file).write_text(render_html(report, plots=pngs, audio=audio, worst_n=worst_n), encoding="utf-8")
