"""Issue acceptance on real speech: en-ja test split, a preserving and a swapping system."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score

from emopres_client.pairs import PairSpec
from models.registry import ProfileSpec, load_head, load_side_head
from tests.conftest import read_csv
from worker.engine.pipeline import Evaluator
from worker.engine.report import report_for_evaluator


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # features, shared by every evaluation of this module


@pytest.fixture(scope="module")
def two_systems(shared_data, cache):
    rows = [r for r in read_csv(shared_data / "pairs" / "en-ja.csv") if r["split"] == "test"]
    resolve = lambda relative: str(shared_data / relative)  # noqa: E731
    reports = {}
    lite = ProfileSpec("lite")
    with Evaluator(lite, load_head(lite), n_jobs=2, cache_dir=cache, side_head=load_side_head(lite)) as evaluator:
        for column in ("target_preserved", "target_swapped"):
            pairs = [PairSpec(r["pair_id"], r["source"], r[column], r["emotion"], r["speaker"]) for r in rows]
            rows_out, failures = evaluator.evaluate_pairs(pairs, resolve)
            reports[column] = report_for_evaluator(
                evaluator,
                rows=rows_out,
                failures=failures,
                pair_order=[p.pair_id for p in pairs],
                job={"id": column},
                n_bootstrap=300,
                seed=1,
                use_groups=True,
            )
    return reports


def test_every_pair_is_evaluated(two_systems):
    for report in two_systems.values():
        assert report["failures"] == [] and len(report["pairs"]) == 144


def test_preserving_system_scores_higher(two_systems):
    kept, lost = (two_systems[c]["corpus"] for c in ("target_preserved", "target_swapped"))
    assert kept["bar"]["value"] > lost["bar"]["value"]
    assert kept["epr"]["value"] > lost["epr"]["value"]
    assert kept["kappa"]["value"] > lost["kappa"]["value"]


@pytest.mark.parametrize("column", ["target_preserved", "target_swapped"])
def test_corpus_numbers_equal_sklearn_on_the_reports_own_rows(two_systems, column):
    report = two_systems[column]
    pairs, corpus = report["pairs"], report["corpus"]
    gold = [p["label"] for p in pairs]
    source = [p["source"]["pred"] for p in pairs]
    target = [p["target"]["pred"] for p in pairs]
    ua_s, ua_t = balanced_accuracy_score(gold, source), balanced_accuracy_score(gold, target)
    assert corpus["ua_source"]["value"] == pytest.approx(ua_s)
    assert corpus["wa_target"]["value"] == pytest.approx(accuracy_score(gold, target))
    assert corpus["bar"]["value"] == pytest.approx(ua_t / ua_s)
    assert corpus["epr"]["value"] == pytest.approx(np.mean([s == t for s, t in zip(source, target, strict=True)]))
    assert corpus["kappa"]["value"] == pytest.approx(cohen_kappa_score(source, target))
    assert corpus["acoustic_sim"]["value"] == pytest.approx(np.mean([p["acoustic_sim"] for p in pairs]))
    both = [
        (p["source"]["speech_rate"], p["target"]["speech_rate"])
        for p in pairs
        if p["source"]["speech_rate"] is not None and p["target"]["speech_rate"] is not None
    ]
    assert corpus["rate"]["value"] == pytest.approx(spearmanr(*zip(*both, strict=True)).statistic)
    assert corpus["rate"]["n"] == len(both)
    for metric in ("bar", "epr", "kappa"):
        entry = corpus[metric]
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    # the side reading (144 pairs: enough utterances per side), from the same rows' side predictions
    source_side = [p["source"]["pred_side"] for p in pairs]
    target_side = [p["target"]["pred_side"] for p in pairs]
    assert corpus["epr_side"]["value"] == pytest.approx(
        np.mean([s == t for s, t in zip(source_side, target_side, strict=True)])
    )
    assert corpus["kappa_side"]["value"] == pytest.approx(cohen_kappa_score(source_side, target_side))
    assert corpus["bar_side"]["value"] == pytest.approx(
        balanced_accuracy_score(gold, target_side) / balanced_accuracy_score(gold, source_side)
    )


def _identity_report(shared_data, cache, head) -> dict:
    """The en-ja test sources (English, unseen speakers) as both sides of every pair: nothing can be lost."""
    rows = [r for r in read_csv(shared_data / "pairs" / "en-ja.csv") if r["split"] == "test"]
    lite = ProfileSpec("lite")
    pairs = [PairSpec(r["pair_id"], r["source"], r["source"], r["emotion"], r["speaker"]) for r in rows]
    with Evaluator(lite, head, n_jobs=2, cache_dir=cache, side_head=load_side_head(lite)) as evaluator:
        rows_out, failures = evaluator.evaluate_pairs(pairs, lambda relative: str(shared_data / relative))
        return report_for_evaluator(
            evaluator,
            rows=rows_out,
            failures=failures,
            pair_order=[p.pair_id for p in pairs],
            job={"id": "identity"},
            n_bootstrap=200,
            seed=1,
            use_groups=False,
        )


def test_a_well_read_identity_job_gives_no_warning(shared_data, cache):
    summary = _identity_report(shared_data, cache, load_head(ProfileSpec("lite")))["summary"]
    assert summary["warnings"] == [], summary["warnings"]
    assert summary["primary"]["value"] > summary["primary"]["chance"]


def test_a_head_that_reads_at_chance_warns_on_both_sides(shared_data, cache, random_lite_head):
    from models.ser.head import SerHead

    summary = _identity_report(shared_data, cache, SerHead.load(random_lite_head))["summary"]
    codes = {(w["code"], w["side"]) for w in summary["warnings"]}
    assert {("near_chance", "source"), ("near_chance", "target")} <= codes, summary["ser_health"]
