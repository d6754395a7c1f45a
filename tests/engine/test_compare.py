"""Comparing two runs: paired bootstrap p-values on constructed cases whose answer is known."""

from __future__ import annotations

import copy

import pytest

from tests.report_fixtures import CLASSES, make_report, make_rows
from worker.engine.compare import compare_reports

B = 2000


def with_agreement(rows, agree_ids):
    """Copy of rows where exactly the pairs in agree_ids keep the source prediction."""
    out = copy.deepcopy(rows)
    for row in out:
        source = row["source"]["pred"]
        other = CLASSES[(CLASSES.index(source) + 1) % len(CLASSES)]
        row["target"]["pred"] = source if row["pair_id"] in agree_ids else other
        row["agree"] = row["pair_id"] in agree_ids
    return out


@pytest.fixture(scope="module")
def rows():
    return make_rows(n=10, seed=7)


def test_one_pair_gained_known_p_value_and_ci(rows):
    """Job agrees on all 10 pairs, the baseline on 9. Resampled EPR difference = (draws of that pair) / 10,
    which is <= 0 exactly when the pair is not drawn: P = 0.9^10 = 0.3487, and never < 0, so the
    two-sided p = 2 * 0.3487 = 0.697 (sampling error at B=2000: sd 0.021). Its 95% CI: [0, 0.3]
    (Binomial(10, 0.1): P(X <= 2) = 0.930, P(X <= 3) = 0.987)."""
    ids = [r["pair_id"] for r in rows]
    baseline = make_report(with_agreement(rows, set(ids[1:])), job_id="base")
    job = make_report(with_agreement(rows, set(ids)), job_id="new")
    result = compare_reports(job, baseline, n_bootstrap=B, seed=1, metrics=("epr", "kappa"))
    epr = result["metrics"]["epr"]
    assert epr["baseline"] == pytest.approx(0.9) and epr["job"] == pytest.approx(1.0)
    assert epr["diff"] == pytest.approx(0.1)
    assert epr["p_value"] == pytest.approx(2 * 0.9**10, abs=0.07)
    assert epr["ci_low"] == pytest.approx(0.0) and epr["ci_high"] == pytest.approx(0.3)
    assert result["flipped"] == {"agree_to_disagree": [], "disagree_to_agree": [ids[0]]}
    assert result["n_shared"] == 10 and result["diff"] == "job - baseline"
    assert result["job_id"] == "new" and result["baseline_id"] == "base"


def test_a_shift_in_every_pair_has_the_smallest_p_value(rows):
    """acoustic_sim higher by 0.05 in every pair: every resample's difference is 0.05 -> p = 2 / (B + 1)."""
    shifted = copy.deepcopy(rows)
    for row in shifted:
        row["acoustic_sim"] += 0.05
    result = compare_reports(make_report(shifted), make_report(rows), n_bootstrap=B, seed=1, metrics=("acoustic_sim",))
    sim = result["metrics"]["acoustic_sim"]
    assert sim["diff"] == pytest.approx(0.05)
    assert sim["p_value"] == pytest.approx(2 / (B + 1))
    assert sim["ci_low"] == pytest.approx(0.05) and sim["ci_high"] == pytest.approx(0.05)


def test_identical_runs_have_p_one_and_a_balanced_swap_is_not_significant(rows):
    ids = [r["pair_id"] for r in rows]
    same = compare_reports(make_report(rows), make_report(copy.deepcopy(rows)), n_bootstrap=200)
    assert same["metrics"]["epr"]["diff"] == 0 and same["metrics"]["epr"]["p_value"] == 1.0
    assert same["metrics"]["acoustic_sim"]["p_value"] == 1.0
    # five pairs gained agreement, five lost it: diff 0, p close to 1; the five losses are named
    baseline = make_report(with_agreement(rows, set(ids[:5])))
    job = make_report(with_agreement(rows, set(ids[5:])))
    swap = compare_reports(job, baseline, n_bootstrap=B, seed=2, metrics=("epr",))
    assert swap["metrics"]["epr"]["diff"] == pytest.approx(0.0)
    assert swap["metrics"]["epr"]["p_value"] > 0.9
    assert swap["flipped"]["agree_to_disagree"] == ids[:5]


def test_only_shared_pairs_count_and_null_metrics_say_why(rows):
    other = make_rows(n=14, seed=7, ids=[r["pair_id"] for r in rows] + [f"extra{i}" for i in range(4)])
    result = compare_reports(make_report(other), make_report(rows), n_bootstrap=100)
    assert result["n_shared"] == 10 and result["n_only_job"] == 4 and result["n_only_baseline"] == 0
    assert result["metrics"]["va_sim"]["diff"] is None
    assert result["metrics"]["va_sim"]["reason"] == (
        "not computed: both runs ran the lite profile, which has no wav2vec2 valence-arousal"
    )


def test_a_metric_one_run_lacks_says_which_run_and_why_in_plain_words(rows):
    """A paper-profile job against a lite baseline: autoPCP is missing because the baseline ran the lite profile,
    said so (not "run a: needs the paper profile"); a reason both runs share is said once."""
    scored = copy.deepcopy(rows)
    for i, row in enumerate(scored):
        row["autopcp"] = 2.0 + 0.2 * i
    job = make_report(scored, job_id="paper-job")
    job["job"]["profile"] = "paper"
    baseline = make_report(rows, job_id="lite-base")
    result = compare_reports(job, baseline, n_bootstrap=50, metrics=("autopcp", "epr"))
    assert (
        result["metrics"]["autopcp"]["reason"]
        == "not computed: the baseline ran the lite profile, which has no AutoPCP"
    )
    assert result["metrics"]["epr"]["diff"] is not None
    reversed_ = compare_reports(baseline, job, n_bootstrap=50, metrics=("autopcp",))
    assert (
        reversed_["metrics"]["autopcp"]["reason"] == "not computed: this run ran the lite profile, which has no AutoPCP"
    )
    unlabelled = make_report(make_rows(n=10, seed=7, labels=False))
    no_labels = compare_reports(unlabelled, unlabelled, n_bootstrap=50, metrics=("bar",))
    assert no_labels["metrics"]["bar"]["reason"] == "not computed in either run: no gold labels"


def test_different_evaluators_are_warned_about(rows):
    a, b = make_report(rows), make_report(rows)
    b["signature"] = b["signature"].replace("ser:000000000000", "ser:111111111111")
    result = compare_reports(a, b, n_bootstrap=50)
    assert any("ser" in w for w in result["warnings"])
    disjoint = compare_reports(make_report(make_rows(n=3, ids=["x", "y", "z"])), make_report(rows), n_bootstrap=50)
    assert disjoint["n_shared"] == 0 and any("share no pair ids" in w for w in disjoint["warnings"])
