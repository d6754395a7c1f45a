"""Plots: valid PNG/SVG files whose content is the report's numbers (checked on the pixels, not only the data)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from core.confusion_plot import CMAP
from tests.report_fixtures import make_report, make_rows, real_run
from worker.render.plots import DPI, PlotUnavailable, get_spec, plan_plots, render, render_plot, write_plots

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def report():
    return make_report(n=24, seed=3)


def png_image(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    Image.open(io.BytesIO(data)).verify()  # CRCs and structure
    return Image.open(io.BytesIO(data)).convert("RGB")


def svg_root(data: bytes) -> ET.Element:
    root = ET.fromstring(data)
    assert root.tag == f"{SVG_NS}svg"
    return root


def svg_texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()).strip() for t in root.iter(f"{SVG_NS}text")]


def cell_colours(spec, png: bytes) -> np.ndarray:
    """The colour drawn in each confusion-matrix cell, read from the PNG (off-centre, away from the count text)."""
    fig = spec.figure()
    fig.canvas.draw()
    ax = fig.axes[0]
    image = png_image(png)
    assert image.size == (round(spec.size[0] * DPI), round(spec.size[1] * DPI))
    k = len(spec.data["classes"])
    out = np.zeros((k, k, 3))
    for i in range(k):
        for j in range(k):
            x, y = ax.transData.transform((j - 0.3, i - 0.3))
            out[i, j] = image.getpixel((int(round(x)), int(round(image.size[1] - y))))
    return out


def expected_colours(normalised) -> np.ndarray:
    cmap = colormaps[CMAP]
    return np.array([[np.array(cmap(v)[:3]) * 255 for v in row] for row in normalised])


def test_every_plot_is_a_valid_png_and_svg_with_plots_json(report, tmp_path):
    index = write_plots(report, tmp_path)
    assert set(index["plots"]) == {
        "confusion_source",
        "confusion_target",
        "source_vs_target",
        "uncertainty",
        "per_emotion",
        "pause_rate",
        "speech_rate",
        "dist_acoustic_sim",
        "dist_acoustic_sim_utterance",
        "dist_expected_agreement",
        "dist_bhattacharyya",
    }
    for name, entry in index["plots"].items():
        assert entry["files"] == [f"{name}.png", f"{name}.svg"]
        image = png_image((tmp_path / f"{name}.png").read_bytes())
        assert min(image.size) > 200 and np.asarray(image).std() > 5  # drawn, not blank
        texts = svg_texts(svg_root((tmp_path / f"{name}.svg").read_bytes()))
        assert any(t and t in entry["title"] for t in texts)  # SVG text stays text: the title is there
    assert json.loads((tmp_path / "plots.json").read_text()) == json.loads(json.dumps(index))


def test_confusion_matrices_show_the_reports_counts(report):
    ser = report["corpus"]["ser"]
    for name, matrix in (
        ("confusion_source", ser["source"]["confusion"]),
        ("confusion_target", ser["target"]["confusion"]),
        ("source_vs_target", ser["source_vs_target"]),
    ):
        spec = get_spec(report, name)
        assert spec.data["counts"] == matrix and spec.data["classes"] == ser["classes"]
        fig = spec.figure()
        drawn = np.asarray(fig.axes[0].images[0].get_array())
        rows = np.asarray(matrix, float).sum(axis=1, keepdims=True)
        assert np.allclose(drawn, np.divide(matrix, rows, out=np.zeros_like(drawn), where=rows > 0))
        # every cell's colour in the PNG is its row share; every non-zero count is written in the SVG
        png = render(spec, "png")
        assert np.abs(cell_colours(spec, png) - expected_colours(spec.data["row_normalised"])).max() <= 3
        texts = svg_texts(svg_root(render(spec, "svg")))
        annotated = sorted(int(t) for t in texts if t.isdigit() and t not in {"0"})
        assert annotated == sorted(c for row in matrix for c in row if c)
    assert sum(map(sum, ser["source"]["confusion"])) == report["corpus"]["ser"]["n_labelled"]


def test_other_plots_carry_the_reports_numbers(report):
    pairs = report["pairs"]
    unc = get_spec(report, "uncertainty")
    assert unc.data["agree"] == [p["agree"] for p in pairs]
    assert unc.data["source_uncertainty"] == [p["source"]["uncertainty"] for p in pairs]
    points = sum(len(c.get_offsets()) for c in unc.figure().axes[0].collections)
    assert points == len(pairs)

    per = get_spec(report, "per_emotion")
    by_pred = report["corpus"]["per_emotion"]["by_source_prediction"]
    assert per.data["by_source_prediction"] == {
        c: {"value": e["value"], "n": e["n"]} for c, e in by_pred.items() if e["value"] is not None
    }
    heights = [b.get_height() for b in per.figure().axes[0].containers[0]]
    assert heights == pytest.approx([e["value"] for e in by_pred.values() if e["value"] is not None])

    rate = get_spec(report, "speech_rate")
    assert rate.data["source"] == [p["source"]["speech_rate"] for p in pairs]
    assert rate.data["spearman"] == report["corpus"]["rate"]["value"]

    dist = get_spec(report, "dist_acoustic_sim")
    assert dist.data["values"] == [p["acoustic_sim"] for p in pairs]
    bars = dist.figure().axes[0].containers[0]  # the histogram's BarContainer
    assert sum(b.get_height() for b in bars) == len(pairs)


def test_null_metrics_are_skipped_with_their_reason_not_drawn_empty():
    report = make_report(make_rows(n=8, labels=False, acoustic=False), n_bootstrap=0)
    specs, skipped = plan_plots(report)
    names = {s.name for s in specs}
    assert "confusion_source" not in names and skipped["confusion_source"] == "no gold labels"
    assert skipped["dist_emo_sim"] == "emo_sim is null: needs the paper profile (emotion2vec)"
    assert skipped["dist_acoustic_sim"].startswith("acoustic_sim is null: ")
    assert {"source_vs_target", "uncertainty", "per_emotion"} <= names  # no labels needed
    assert not names & set(skipped)
    with pytest.raises(PlotUnavailable) as caught:
        render_plot(report, "dist_va_sim")
    assert "paper profile" in caught.value.reason
    with pytest.raises(KeyError):
        render_plot(report, "no_such_plot")


def test_a_report_without_pairs_draws_nothing_and_says_why(tmp_path):
    report = make_report([], failures=[{"pair_id": "a", "side": "source", "error": "undecodable"}], n_bootstrap=0)
    index = write_plots(report, tmp_path)
    assert index["plots"] == {}
    assert index["skipped"]["uncertainty"] and index["skipped"]["pause_rate"].startswith("pause is null")


def test_svg_is_reproducible_and_user_labels_are_drawn_literally():
    rows = make_rows(n=8, seed=1)
    for row in rows[:4]:
        row["label"] = "$\\frac{x}{0}$ <&>"  # a gold label outside the classes: mathtext would fail on it
    report = make_report(rows, n_bootstrap=0)
    spec = get_spec(report, "confusion_source")
    first, second = render(spec, "svg"), render(get_spec(report, "confusion_source"), "svg")
    assert first == second
    assert "$\\frac{x}{0}$ <&>" in svg_texts(svg_root(first))  # XML-escaped in the file, literal in the text


@pytest.mark.shared_data
def test_plots_of_a_real_report_written_by_evaluate(shared_data, random_lite_head, tmp_path_factory):
    """`emopres evaluate --plots DIR` on real speech: the files are the report's plots."""
    run = real_run(shared_data, random_lite_head, tmp_path_factory.mktemp("real"))
    report, out = run["report"], run["plots"]
    index = json.loads((out / "plots.json").read_text())
    specs, skipped = plan_plots(report)
    assert list(index["plots"]) == [s.name for s in specs] and index["skipped"] == skipped
    assert "confusion_source" in index["plots"] and "dist_va_sim" in index["skipped"]  # lite profile
    for name in index["plots"]:
        png_image((out / f"{name}.png").read_bytes())
        svg_root((out / f"{name}.svg").read_bytes())
    spec = get_spec(report, "confusion_source")
    assert index["plots"]["confusion_source"]["data"]["counts"] == report["corpus"]["ser"]["source"]["confusion"]
    colours = cell_colours(spec, (out / "confusion_source.png").read_bytes())
    assert np.abs(colours - expected_colours(spec.data["row_normalised"])).max() <= 3


LONG = " and, to be sure nothing is cut, a metric title that goes on for far longer than any figure is wide"


def drawn_texts(fig) -> list:
    """(text, pixel extent) of every text the drawn figure shows: titles, labels, legends, the drawn tick labels."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    ticks = {
        label
        for ax in fig.axes
        for axis in (ax.xaxis, ax.yaxis)
        for tick in axis.get_major_ticks() + axis.get_minor_ticks()
        for label in (tick.label1, tick.label2)
    }
    shown = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = (high - low) * 1e-6
            for where, label in zip(axis.get_ticklocs(), axis.get_ticklabels(), strict=True):
                if low - slack <= where <= high + slack:  # an axis keeps undrawn labels for ticks off its limits
                    shown.append(label)
    texts = [t for t in fig.findobj(Text) if t not in ticks] + shown
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_visible() and t.get_text().strip()]


def test_no_plot_text_is_cut_at_any_title_or_class_name_length(monkeypatch):
    """Every plot of a report whose metric titles and class names are very long: each text lies inside the figure
    (the old figures cut a long title at both edges) and the titles say all they said, over several lines."""
    import dataclasses

    from matplotlib import rc_context

    from core.catalogue import BY_NAME, PAIR_METRICS
    from worker.render.plots import RC

    for name in PAIR_METRICS:
        monkeypatch.setitem(BY_NAME, name, dataclasses.replace(BY_NAME[name], title=BY_NAME[name].title + LONG))
    text = json.dumps(make_report(n=24, seed=3))
    text = text.replace('"sadness"', '"sadness, quietly and at great length, as the annotators put it"')
    report = json.loads(text)
    specs, _ = plan_plots(report)
    assert {"confusion_source", "per_emotion", "dist_bhattacharyya", "dist_acoustic_sim"} <= {s.name for s in specs}
    for spec in specs:
        with rc_context(RC):
            fig = spec.figure()
            fig.canvas.draw()
            width, height = fig.bbox.width, fig.bbox.height
            for content, box in drawn_texts(fig):
                assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, (spec.name, content)
            tight = fig.get_tightbbox(fig.canvas.get_renderer())
            assert tight.x0 >= 0 and tight.y0 >= 0, spec.name
            assert tight.x1 <= fig.get_figwidth() and tight.y1 <= fig.get_figheight(), spec.name
            shown = " ".join(" ".join(c.split()) for c, _ in drawn_texts(fig))
            if spec.name.startswith("dist_"):
                assert LONG.split(",")[-1].strip().split()[-1] in shown and "mean" in shown, spec.name
            png = render(spec, "png")
            assert png_image(png).size == (round(spec.size[0] * DPI), round(spec.size[1] * DPI))
