"""The HTML report: self-contained, escaped, worst pairs with audio; rendered in headless Chromium."""

from __future__ import annotations

import base64
import io
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser import BrowserError, find_browser, load_page
from tests.report_fixtures import make_report, make_rows, real_run
from tests.service_support import wav_bytes
from worker.render.html_report import render_html
from worker.render.html_sections import clip_length, sniff_audio_mime, worst_pairs
from worker.render.plots import plan_plots

EVIL = '<script>alert("x")</script>'


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(page: str) -> list[tuple[str, dict]]:
    parser = Collect()
    parser.feed(page)
    return parser.tags


@pytest.fixture(scope="module")
def hostile_report():
    rows = make_rows(n=16, seed=5)
    # the hostile text goes into pairs the page lists (the worst ones), so that the page must show it escaped
    index = {row["pair_id"]: i for i, row in enumerate(rows)}
    shown = [index[pair["pair_id"]] for pair in worst_pairs(make_report(rows, n_bootstrap=0), 3)[0]]
    rows[shown[0]]["pair_id"] = EVIL
    rows[shown[1]]["label"] = '"><img src=x onerror=alert(1)>'
    rows[shown[2]]["warnings"] = ["<b>bold</b> warning"]
    report = make_report(
        rows, failures=[{"pair_id": "f<1>", "side": "target", "error": "cannot decode <x> & co"}], job_id="job-<1>"
    )
    return report


def test_page_is_self_contained_and_escapes_user_text(hostile_report):
    page = render_html(hostile_report, title="system <b>x</b>", plots={})
    tags = parse(page)
    assert "<script" not in page.lower()  # escaped everywhere, and the page has no script of its own
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # the pair id, escaped
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;b&gt;bold&lt;/b&gt; warning" in page
    assert "onerror" not in [k for _, attrs in tags for k in attrs]
    assert "system &lt;b&gt;x&lt;/b&gt;" in page and "cannot decode &lt;x&gt; &amp; co" in page
    assert {t for t, _ in tags} <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "h1",
        "h2",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "p",
        "div",
        "figure",
        "img",
        "figcaption",
        "details",
        "summary",
        "ul",
        "li",
        "code",
        "br",
        "audio",
        "span",
        "strong",
    }
    for tag, attrs in tags:  # nothing is fetched from anywhere
        for key in ("src", "href"):
            assert not attrs.get(key) or attrs[key].startswith("data:"), (tag, attrs)
    csp = [a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "script-src" not in csp[0]


def test_page_has_metrics_plots_per_emotion_failures_and_signature(hostile_report):
    page = render_html(hostile_report)
    tags = parse(page)
    specs, skipped = plan_plots(hostile_report)
    images = [a for t, a in tags if t == "img"]
    assert [a["alt"] for a in images] == [s.title for s in specs]
    for attrs in images:
        data = base64.b64decode(attrs["src"].split(",", 1)[1])
        Image.open(io.BytesIO(data)).verify()
    for name in skipped:
        assert f"<code>{name}</code>" in page
    corpus = hostile_report["corpus"]
    assert (
        f"{corpus['epr']['value']:.3f}" in page
        and f"[{corpus['epr']['ci_low']:.3f}, {corpus['epr']['ci_high']:.3f}]" in page
    )
    assert "needs the paper profile (wav2vec2 valence-arousal)" in page  # a null metric shows its reason
    assert 'id="per-emotion"' in page and 'id="failures"' in page
    assert hostile_report["signature"] in page


def test_worst_pairs_disagree_first_then_lowest_similarity():
    report = make_report(n=30, seed=2)
    ranked, rule = worst_pairs(report, 8)
    assert "acoustic_sim" in rule
    agree = [p["agree"] for p in ranked]
    assert agree == sorted(agree)  # False (disagree) first
    disagreeing = [p["acoustic_sim"] for p in ranked if not p["agree"]]
    assert disagreeing == sorted(disagreeing)
    all_disagreeing = sorted(p["acoustic_sim"] for p in report["pairs"] if not p["agree"])
    assert disagreeing == all_disagreeing[: len(disagreeing)]


def test_audio_players_only_for_the_worst_pairs_within_the_cap():
    report = make_report(n=12, seed=4)
    wav = b"RIFF\x24\x00\x00\x00WAVE" + b"\x00" * 64
    calls = []

    def audio(pair_id, side):
        calls.append((pair_id, side))
        if pair_id == report["pairs"][0]["pair_id"] and side == "target":
            raise FileNotFoundError("blob gone")
        return wav

    page = render_html(report, audio=audio, worst_n=3, plots={})  # plots={}: none drawn, faster
    worst = [p["pair_id"] for p in worst_pairs(report, 3)[0]]
    assert sorted(calls) == sorted((pid, side) for pid in worst for side in ("source", "target"))
    players = [a for t, a in parse(page) if t == "audio"]
    expected = 6 - (1 if report["pairs"][0]["pair_id"] in worst else 0)
    assert len(players) == expected and all(a["src"].startswith("data:audio/wav;base64,") for a in players)
    small = render_html(
        report, audio=lambda *_: (b"fLaC" + b"\x00" * 4000, None), worst_n=2, max_audio_bytes=1000, plots={}
    )
    assert "audio not embedded" in small and "<audio" not in small
    assert sniff_audio_mime(b"fLaC...") == "audio/flac" and sniff_audio_mime(b"OggS") == "audio/ogg"


def test_each_clip_shows_its_length_as_text_beside_a_player_that_preloads_its_metadata():
    """A data: URI player may show 0:00 until played: the length is written next to it, from the report's measured
    duration, else from the clip's header; the player preloads its metadata."""
    report = make_report(n=6, seed=4)
    worst = worst_pairs(report, 2)[0]
    worst[0]["source"]["duration_s"], worst[0]["target"]["duration_s"] = 3.4, 75.0
    worst[1]["source"]["duration_s"] = worst[1]["target"]["duration_s"] = None  # read from the header: 2.5 s
    page = render_html(report, audio=lambda *_: wav_bytes(2.5, seed=1), worst_n=2, plots={})
    players = [a for t, a in parse(page) if t == "audio"]
    assert len(players) == 4 and all(a["preload"] == "metadata" for a in players)
    lengths = re.findall(r'</audio><span class="length"[^>]*>([^<]*)</span>', page)
    assert lengths == ["3.4 s", "1:15", "2.5 s", "2.5 s"]
    assert clip_length(59.99) == "1:00" and clip_length(None) == ""


def test_a_report_without_pairs_still_renders():
    report = make_report([], failures=[{"pair_id": "a", "side": "source", "error": "empty file"}], n_bootstrap=0)
    page = render_html(report)
    assert "No successfully evaluated pairs" in page and "empty file" in page and "<img" not in page


# ------------------------------------------------------------------------------------------ in a real browser

needs_browser = pytest.mark.skipif(
    find_browser() is None, reason="no Chromium here (.ci/run installs Debian's chromium package)"
)


def _screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("EMOPRES_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@needs_browser
@pytest.mark.shared_data
def test_real_report_page_in_chromium(shared_data, random_lite_head, tmp_path, tmp_path_factory):
    """The page `emopres evaluate --html` wrote for real speech, opened in headless Chromium."""
    run = real_run(shared_data, random_lite_head, tmp_path_factory.mktemp("real"))
    report, html_file = run["report"], run["html"]
    page = html_file.read_text(encoding="utf-8")
    assert len(page) < 3_000_000
    assert page.count('<audio controls preload="metadata" src="data:audio/flac;base64,') == 2 * min(
        10, len(report["pairs"])
    )
    result = load_page(html_file)
    assert result["errors"] == []
    for pair in worst_pairs(report, 10)[0]:  # each clip's length is on the page as text, not 0:00
        for side in ("source", "target"):
            assert clip_length(pair[side]["duration_s"]) in result["text"]
    assert result["title"].startswith("emopres report")
    specs, _ = plan_plots(report)
    assert len(result["images"]) == len(specs) > 0
    assert all(i["complete"] and i["width"] > 100 and i["height"] > 100 for i in result["images"]), result["images"]
    for text in (
        "Summary",
        report["summary"]["primary"]["label"],
        "Every metric",
        "Per emotion",
        "Worst pairs",
        "Signature",
        report["signature"],
    ):
        assert text in result["text"]
    # the summary comes first: before the folded table of every metric and the job
    assert result["text"].index("Summary") < result["text"].index("Every metric") < result["text"].index("Plots")
    # the screenshot: a real rendering of the whole page (tall, mostly white, with coloured plots in it)
    shot = Image.open(io.BytesIO(result["screenshot"])).convert("RGB")
    (_screenshot_dir(tmp_path) / "report.png").write_bytes(result["screenshot"])
    assert shot.width == 1280 and shot.height > 2000
    pixels = np.asarray(shot).reshape(-1, 3).astype(int)
    assert (pixels == 255).all(axis=1).mean() > 0.4  # white page
    blue = (pixels[:, 2] - pixels[:, 0] > 60).mean()  # the confusion matrices' blues
    assert blue > 0.002


@needs_browser
def test_the_browser_check_catches_broken_images_and_console_errors(tmp_path):
    """Control: the harness is not blind; a broken image and a script error are reported."""
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>control</title></head><body>"
        "<img alt='broken' src='data:image/png;base64,AAAA'><img alt='missing' src='nope.png'>"
        "<script>console.error('boom'); undefined_function();</script></body></html>"
    )
    html_file = tmp_path / "control.html"
    html_file.write_text(page)
    try:
        result = load_page(html_file)
    except BrowserError as error:  # pragma: no cover - a broken browser install must show, not pass
        pytest.fail(str(error))
    assert [i["width"] for i in result["images"]] == [0, 0]
    joined = "\n".join(result["errors"])
    assert "boom" in joined and re.search(r"undefined_function", joined)
    assert "nope.png" in joined  # the failed load is logged


def test_a_comparison_marks_changes_whose_interval_excludes_zero_in_words_not_colour_alone():
    from worker.render.html_sections import SIGNIFICANT_BETTER, SIGNIFICANT_WORSE, comparison_section

    def entry(diff, low, high):
        return {"baseline": 0.5, "job": 0.5 + diff, "diff": diff, "ci_low": low, "ci_high": high, "p_value": 0.01}

    table = comparison_section(
        {
            "n_shared": 40,
            "metrics": {
                "epr": entry(0.1, 0.02, 0.18),
                "kappa": entry(-0.1, -0.2, -0.03),
                "bar": entry(0.01, -0.05, 0.07),
            },
        },
        "base",
    )
    rows = {m: re.search(rf'<tr id="compare-{m}">.*?</tr>', table).group(0) for m in ("epr", "kappa", "bar")}
    assert SIGNIFICANT_BETTER in rows["epr"] and SIGNIFICANT_WORSE in rows["kappa"]
    assert SIGNIFICANT_BETTER not in rows["bar"] and SIGNIFICANT_WORSE not in rows["bar"]
