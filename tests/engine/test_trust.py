"""The report's summary (worker/engine/trust.py): chance levels against their definition and scikit-learn, the
primary metric, SER reading health and the warnings a user reads before the numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score

from core.catalogue import PRIMARY_FALLBACK, PRIMARY_METRIC
from core.metrics import (
    bhattacharyya,
    chance_bhattacharyya,
    chance_expected_agreement,
    chance_prediction_agreement,
    expected_agreement,
)
from worker.engine.corpus import compute_corpus
from worker.engine.report_schema import ReportSchemaError, validate_report
from worker.engine.trust import COLLAPSED_TOP_SHARE, MIN_PAIRS, near_chance_bound, summarise

CLASSES = ["anger", "joy", "neutral", "sadness"]
N_CLASSES = len(CLASSES)


def _probs(rng, n, k=N_CLASSES):
    return rng.dirichlet(np.ones(k) * 0.7, size=n)


@pytest.mark.parametrize("seed", range(5))
def test_chance_levels_are_the_mean_over_every_cross_pairing(seed):
    rng = np.random.default_rng(seed)
    ps, pt = _probs(rng, 23), _probs(rng, 23)
    brute_ea = np.mean([expected_agreement(a, b) for a in ps for b in pt])
    brute_bc = np.mean([bhattacharyya(a, b) for a in ps for b in pt])
    assert chance_expected_agreement(ps, pt) == pytest.approx(brute_ea, abs=1e-12)
    assert chance_bhattacharyya(ps, pt) == pytest.approx(brute_bc, abs=1e-12)
    a, b = rng.integers(0, 4, 40), rng.integers(0, 4, 40)
    brute_epr = np.mean([x == y for x in a for y in b])
    assert chance_prediction_agreement(a, b, 4) == pytest.approx(brute_epr, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_epr_chance_is_cohens_expected_agreement(seed):
    """scikit-learn's kappa = (p_o - p_e) / (1 - p_e): p_e recovered from it equals the EPR chance level."""
    rng = np.random.default_rng(100 + seed)
    a, b = rng.integers(0, 5, 60), rng.integers(0, 5, 60)
    p_o, kappa = accuracy_score(a, b), cohen_kappa_score(a, b)
    p_e = (p_o - kappa) / (1 - kappa)
    assert chance_prediction_agreement(a, b, 5) == pytest.approx(p_e, abs=1e-12)


def _row(i: int, pred_s: str, pred_t: str, label: str | None, rng, side_reading: bool = True) -> dict:
    def side(pred):
        probs = rng.dirichlet(np.ones(len(CLASSES)) * 0.5)
        probs[CLASSES.index(pred)] += 2.0
        probs /= probs.sum()
        out = {"pred": pred, "probs": dict(zip(CLASSES, probs.tolist(), strict=True)), "uncertainty": 0.5}
        if side_reading:
            out.update({"pred_side": pred, "probs_side": dict(zip(CLASSES, probs.tolist(), strict=True))})
        return out

    source, target = side(pred_s), side(pred_t)
    row = {
        "pair_id": f"p{i}",
        "label": label,
        "group": None,
        "source": source,
        "target": target,
        "agree": pred_s == pred_t,
        "warnings": [],
    }
    for reading, pred, probs in (("", "pred", "probs"), ("_side", "pred_side", "probs_side")):
        if pred in source:
            ps, pt = np.array(list(source[probs].values())), np.array(list(target[probs].values()))
            row[f"expected_agreement{reading}"] = expected_agreement(ps, pt)
            row[f"bhattacharyya{reading}"] = bhattacharyya(ps, pt)
    return row


def _report(rows: list[dict]) -> dict:
    corpus = compute_corpus(rows, CLASSES, n_bootstrap=50, seed=1)
    return {"corpus": corpus, "summary": summarise(corpus, rows)}


def _codes(summary: dict) -> list[tuple[str, str | None]]:
    return [(w["code"], w["side"]) for w in summary["warnings"]]


def test_a_well_read_identity_job_does_not_warn():
    rng = np.random.default_rng(0)
    labels = [CLASSES[i % 4] for i in range(60)]
    reads = [label if i % 5 else CLASSES[(i + 1) % 4] for i, label in enumerate(labels)]  # UA 0.8
    summary = _report([_row(i, r, r, label, rng) for i, (r, label) in enumerate(zip(reads, labels, strict=True))])[
        "summary"
    ]
    assert summary["warnings"] == []
    assert summary["primary"]["metric"] == PRIMARY_METRIC and summary["primary"]["value"] is not None
    health = summary["ser_health"]["absolute"]["target"]
    assert health["ua"] == pytest.approx(0.8) and health["ua_chance"] == pytest.approx(0.25)


def test_a_target_read_near_chance_and_collapsed_warns_with_its_side():
    rng = np.random.default_rng(1)
    labels = [CLASSES[i % 4] for i in range(60)]
    rows = [_row(i, label, "sadness" if i % 10 else label, label, rng) for i, label in enumerate(labels)]
    summary = _report(rows)["summary"]
    codes = _codes(summary)
    assert ("near_chance", "target") in codes and ("collapsed", "target") in codes
    assert not any(side == "source" for _, side in codes)
    target = summary["ser_health"]["absolute"]["target"]
    assert target["ua"] < near_chance_bound(target["ua_chance"])
    assert target["top_class"] == "sadness" and target["top_class_share"] > COLLAPSED_TOP_SHARE
    assert target["entropy"] < summary["ser_health"]["absolute"]["source"]["entropy"]


def test_one_class_that_dominates_the_gold_labels_too_is_not_a_collapse():
    rng = np.random.default_rng(2)
    labels = ["neutral"] * 45 + [CLASSES[i % 4] for i in range(15)]  # 80% neutral speech, read right
    summary = _report([_row(i, label, label, label, rng) for i, label in enumerate(labels)])["summary"]
    assert "collapsed" not in {code for code, _ in _codes(summary)}


def test_unlabelled_jobs_read_collapse_from_the_predictions_alone():
    rng = np.random.default_rng(3)
    rows = [_row(i, CLASSES[i % 4], "joy" if i % 4 else "anger", None, rng) for i in range(40)]
    summary = _report(rows)["summary"]
    assert ("collapsed", "target") in _codes(summary)
    assert summary["ser_health"]["absolute"]["target"]["ua"] is None


def test_few_pairs_warn_and_without_a_side_reading_the_primary_falls_back():
    rng = np.random.default_rng(4)
    rows = [
        _row(i, CLASSES[i % 4], CLASSES[i % 4], CLASSES[i % 4], rng, side_reading=False) for i in range(MIN_PAIRS - 5)
    ]
    report = _report(rows)
    summary = report["summary"]
    assert {"few_pairs", "primary_fallback"} <= {code for code, _ in _codes(summary)}
    assert summary["primary"]["metric"] == PRIMARY_FALLBACK
    assert summary["primary"]["value"] == report["corpus"][PRIMARY_FALLBACK]["value"]
    assert summary["ser_health"]["side"] is None


def test_chance_levels_in_the_summary_are_the_jobs_own():
    rng = np.random.default_rng(5)
    rows = [_row(i, CLASSES[i % 4], CLASSES[(i * 3) % 4], None, rng) for i in range(40)]
    summary = _report(rows)["summary"]
    ps = np.array([list(r["source"]["probs"].values()) for r in rows])
    pt = np.array([list(r["target"]["probs"].values()) for r in rows])
    assert summary["metrics"]["bhattacharyya"]["chance"] == pytest.approx(chance_bhattacharyya(ps, pt))
    assert summary["metrics"]["kappa"]["chance"] == 0.0
    assert summary["metrics"]["ua_target"] == {
        "direction": "higher = read better (not a preservation metric)",
        "chance": None,
    }
    assert summary["primary"]["chance"] == summary["metrics"][PRIMARY_METRIC]["chance"]


def test_the_schema_carries_the_summary():
    rng = np.random.default_rng(6)
    rows = [_row(i, CLASSES[i % 4], CLASSES[i % 4], CLASSES[i % 4], rng) for i in range(30)]
    report = _report(rows)
    full = {
        "schema_version": "1",
        "job": {
            "id": None,
            "status": "succeeded",
            "created_at": None,
            "finished_at": None,
            "n_pairs": 30,
            "n_failed": 0,
        },
        "signature": "profile:lite|ser:0123456789ab|x|emopres:0",
        "models": {},
        "summary": report["summary"],
        "corpus": report["corpus"],
        "pairs": rows,
        "failures": [],
    }
    validate_report(full)
    full["summary"]["primary"].pop("chance")
    with pytest.raises(ReportSchemaError, match="chance"):
        validate_report(full)


def test_a_job_with_two_emotions_read_well_does_not_warn_near_chance():
    """Chance is 0.5 with two gold classes: a reading at UA 0.8 is far from it (a multiple of chance would warn)."""
    rng = np.random.default_rng(7)
    labels = ["joy" if i % 2 else "sadness" for i in range(40)]
    reads = [label if i % 5 else ("sadness" if label == "joy" else "joy") for i, label in enumerate(labels)]
    summary = _report([_row(i, r, r, label, rng) for i, (r, label) in enumerate(zip(reads, labels, strict=True))])[
        "summary"
    ]
    assert summary["ser_health"]["absolute"]["target"]["ua_chance"] == 0.5
    assert "near_chance" not in {code for code, _ in _codes(summary)}
    below = [_row(i, label, "joy", label, rng) for i, label in enumerate(labels)]  # target UA 0.5: at chance
    assert ("near_chance", "target") in _codes(_report(below)["summary"])


def test_a_side_read_as_one_class_has_entropy_zero_shown_without_a_sign():
    from worker.render.html_sections import _fmt

    rng = np.random.default_rng(4)
    rows = [_row(i, CLASSES[i % 4], "joy", CLASSES[i % 4], rng) for i in range(40)]
    entropy = _report(rows)["summary"]["ser_health"]["absolute"]["target"]["entropy"]
    assert entropy == 0.0 and math.copysign(1.0, entropy) == 1.0
    assert _fmt(-0.0, 2) == "0.00"
