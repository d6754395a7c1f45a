"""The HTML report as a person reads it: the baseline comparison's rows and numbers, the tables' order,
the plots' layout (no caption repeating a title, the wide plot across the row, legends clear of labels,
markers at 0 whole) and the models table in a reader's words."""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from tests.browser import find_browser, load_page
from tests.report_fixtures import make_report, make_rows
from worker.engine.compare import compare_reports
from worker.render.html_report import render_html
from worker.render.html_sections import METRIC_GROUPS
from worker.render.plots import plan_plots

needs_browser = pytest.mark.skipif(find_browser() is None, reason="no Chromium installed (apt-get install chromium)")


class Tables(HTMLParser):
    """Each table's rows (by table id) as lists of (tag, cell text, attributes)."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str, dict]]]] = {}
        self.figures: list[dict] = []
        self.captions = 0
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id") or f"table{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = [tag, "", attrs]
        elif tag == "figure":
            self.figures.append(attrs)
        elif tag == "figcaption":
            self.captions += 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append((self._cell[0], self._cell[1].strip(), self._cell[2]))
            self._cell = None
        elif tag == "table":
            self._table = None


def parse(page: str) -> Tables:
    parser = Tables()
    parser.feed(page)
    return parser


def _shown(value, digits=3, sign=False) -> str:
    return "–" if value is None else (f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}")


@pytest.fixture(scope="module")
def two_runs():
    ids = [f"u{i:02d}" for i in range(30)]
    baseline = make_report(make_rows(n=30, seed=1, keep=0.9, ids=ids), job_id="base")
    job = make_report(make_rows(n=30, seed=2, keep=0.4, ids=ids), job_id="new")
    return job, baseline, compare_reports(job, baseline, n_bootstrap=100)


def test_comparison_table_rows_and_numbers_are_the_compare_json(two_runs):
    job, baseline, comparison = two_runs
    page = render_html(job, comparison=comparison, baseline_label="base")
    rows = parse(page).tables["comparison"]
    body = [r for r in rows[1:] if r[0][2].get("colspan") is None]
    metrics = comparison["metrics"]
    shown = [name for _, names in METRIC_GROUPS for name in names if name in metrics]
    assert len(body) == len(shown) == len(metrics) > 10
    for row, name in zip(body, shown, strict=True):
        entry = metrics[name]
        cells = [text for _, text, _ in row]
        assert cells[1] == _shown(entry["baseline"]), (name, cells)
        assert cells[2] == _shown(entry["job"]), (name, cells)
        low, high = entry["ci_low"], entry["ci_high"]
        mark = " \u25b2" if low is not None and low > 0 else " \u25bc" if high is not None and high < 0 else ""
        assert cells[3] == _shown(entry["diff"], sign=True) + (mark if entry["diff"] is not None else ""), (name, cells)
        if entry["ci_low"] is not None:
            assert cells[4] == f"[{entry['ci_low']:+.3f}, {entry['ci_high']:+.3f}]"
        assert cells[5] == _shown(entry["p_value"], 4)
        assert cells[6] == str(entry["n"])
    # the numbers are real ones: this run keeps fewer emotions than the baseline
    assert metrics["epr"]["diff"] < 0 and metrics["epr"]["baseline"] > metrics["epr"]["job"]
    epr_row = next(r for r in body if r[0][1].startswith("EPR"))
    assert epr_row[1][1] == f"{metrics['epr']['baseline']:.3f}" != "–"


def test_headline_table_groups_ser_then_similarities_then_prosody():
    report = make_report(make_rows(n=20, seed=3, emo_sim=True))
    rows = parse(render_html(report)).tables["metrics"][1:]
    groups = [r[0][1] for r in rows if r[0][2].get("colspan")]
    assert groups == ["SER", "similarity", "prosody"]
    order = [r[0][1] for r in rows]
    labels = {
        "WA source": "SER",
        "UA target": "SER",
        "emo-sim (utterance)": "similarity",
        "acoustic sim (frame)": "similarity",
        "Pause (Spearman)": "prosody",
        "Rate (Spearman)": "prosody",
    }
    for label, group in labels.items():
        position = order.index(label)
        heading = max(i for i, r in enumerate(rows) if r[0][2].get("colspan") and i < position)
        assert rows[heading][0][1] == group, label
    assert order.index("WA target") < order.index("emo-sim (frame)") < order.index("Pause (Spearman)")
    assert order.index("emo-sim (frame)") + 1 == order.index("emo-sim (utterance)")


def test_plots_have_no_caption_repeating_their_title_and_the_wide_one_spans_the_row():
    report = make_report(make_rows(n=24, seed=4))
    parsed = parse(render_html(report))
    assert parsed.captions == 0
    wide = [f["id"] for f in parsed.figures if "wide" in (f.get("class") or "")]
    assert wide == ["plot-per_emotion"]


def test_models_table_describes_each_model_and_where_its_weights_came_from_with_no_command_line():
    """The heads' `source` is the command that built them (provenance in the JSON): the page says instead what each
    model does here and where its weights came from (old reports, without training corpora, too)."""
    report = make_report(make_rows(n=8, seed=5))
    common = dict(feature_set="egemaps-v02", classes=["anger", "joy"], sha256="ab" * 32, version="1")
    report["models"] = {
        "ser_head": {**common, "source": "bench/ser_quality.py --ship-multi none --ensemble 5"},
        "ser_head_side": {
            **common,
            "source": "bench/ser_quality.py --ship-multi linear|side|speaker --ensemble 5",
            "trained_on": ["ravdess", "jvnv", "emodb", "ased"],
            "trained": "2026-12-03",
            "members": 5,
            "normalised_per": {"source": "group", "target": "side"},
        },
        "egemaps": {"source": "openSMILE eGeMAPSv02 (opensmile package)", "sha256": None, "version": "2.6.0"},
        "egemaps_lld_stats": {"source": "egemaps_lld_stats.json", "sha256": "cd" * 32, "version": "1"},
    }
    rows = {r[0][1]: [cell[1] for cell in r[1:]] for r in parse(render_html(report)).tables["models"][1:]}
    assert set(rows) == set(report["models"])
    for name, (what, origin, *_) in rows.items():
        assert what and origin, name
        assert "bench/" not in what + origin and "--" not in what + origin and ".py" not in what + origin, name
    assert rows["ser_head"][0].startswith("Speech emotion recognition (SER) head of the absolute reading")
    assert "egemaps-v02 features to 2 emotions (anger, joy)" in rows["ser_head"][0]
    assert "side-normalised reading" in rows["ser_head_side"][0]
    assert "source: each speaker, target: the whole side" in rows["ser_head_side"][0]
    assert rows["ser_head_side"][1] == (
        "trained by emopres (2026-12-03) on the training speakers of RAVDESS, JVNV, EmoDB and ASED, "
        "5 networks averaged (research use: the corpora's licences)"
    )
    assert "openSMILE" in rows["egemaps"][1] and "RAVDESS and JVNV" in rows["egemaps_lld_stats"][1]


def _drawn(report, name):
    spec = next(s for s in plan_plots(report)[0] if s.name == name)
    fig = spec.figure()
    fig.canvas.draw()
    return fig


def test_the_per_emotion_legend_covers_no_bar_label():
    fig = _drawn(make_report(make_rows(n=40, seed=6)), "per_emotion")
    renderer = fig.canvas.get_renderer()
    gold_axes = fig.axes[1]
    legend = gold_axes.get_legend().get_window_extent(renderer)
    labels = [t.get_window_extent(renderer) for ax in fig.axes for t in ax.texts if t.get_text().startswith("n=")]
    assert labels
    assert not [b for b in labels if b.overlaps(legend)]
    bars = [p.get_window_extent(renderer) for p in gold_axes.patches]
    assert not [b for b in bars if b.height > 0 and b.overlaps(legend)]


def test_rate_markers_at_zero_are_whole_inside_the_axes():
    rows = make_rows(n=20, seed=7)
    for row in rows[:6]:
        row["source"]["pause_rate"], row["target"]["pause_rate"] = 0.0, 0.0
    report = make_report(rows)
    fig = _drawn(report, "pause_rate")
    ax = fig.axes[0]
    radius_px = (16**0.5) / 2 * fig.dpi / 72  # scatter s=16 points^2
    origin = ax.transData.transform((0.0, 0.0))
    assert origin[0] - ax.bbox.x0 >= radius_px and origin[1] - ax.bbox.y0 >= radius_px


@needs_browser
def test_report_page_in_chromium_wide_plot_full_width_comparison_filled(two_runs, tmp_path):
    job, _, comparison = two_runs
    html_file = tmp_path / "report.html"
    html_file.write_text(render_html(job, comparison=comparison, baseline_label="base"), encoding="utf-8")
    measure = (
        "JSON.stringify({grid: document.querySelector('.plots').getBoundingClientRect().width, "
        "wide: document.querySelector('#plot-per_emotion').getBoundingClientRect().width, "
        "other: document.querySelector('#plot-uncertainty, .plots figure:not(.wide)')"
        ".getBoundingClientRect().width, "
        "rows: document.querySelectorAll('#comparison tbody tr:not(.group)').length})"
    )
    result = load_page(html_file, evaluate={"layout": measure})
    assert result["errors"] == []
    layout = json.loads(result["values"]["layout"])
    assert layout["wide"] >= layout["grid"] - 1 > 0
    assert layout["other"] < 0.6 * layout["grid"]
    assert layout["rows"] == len(comparison["metrics"])
    assert re.search(r"EPR \(prediction agreement\)\s+0\.\d{3}\s+0\.\d{3}\s+-0\.\d{3}", result["text"])
    from PIL import Image

    shot = Image.open(io.BytesIO(result["screenshot"]))
    assert shot.width == 1280 and np.asarray(shot.convert("L")).std() > 10
