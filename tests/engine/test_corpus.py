"""worker.engine.corpus: corpus metrics from report rows, checked against scikit-learn / scipy."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
)

from core.catalogue import METRICS
from core.catalogue import PAIR_METRICS as SIMILARITY_METRICS
from worker.engine.corpus import NO_PAIRS_REASON, compare_runs, compute_corpus

CLASSES = ["angry", "happy", "neutral", "sad"]
SEEDS = [0, 1, 2]
FAST = 200  # bootstrap resamples in most tests


def _side(pred, pause=None, rate=None, pred_side=None):
    return {
        "pred": pred,
        "pred_side": pred_side if pred_side is not None else pred,
        "probs": {c: 0.25 for c in CLASSES},
        "uncertainty": 1.0,
        "duration_s": 2.0,
        "pause_rate": pause,
        "speech_rate": rate,
    }


def make_pairs(n, seed=0, *, keep=0.7, acc=0.7, n_groups=None, null_share=0.0):
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        y = CLASSES[rng.integers(4)]
        ps = y if rng.random() < acc else CLASSES[rng.integers(4)]
        pt = ps if rng.random() < keep else CLASSES[rng.integers(4)]
        # the side reading: another, noisier reading of the same pair
        ps_side = ps if rng.random() < 0.8 else CLASSES[rng.integers(4)]
        pt_side = ps_side if rng.random() < keep - 0.1 else CLASSES[rng.integers(4)]
        pause = float(rng.random())
        rate_s = float(rng.uniform(2, 6))
        row = {
            "pair_id": f"p{i:04d}",
            "label": y,
            "group": f"g{i % n_groups}" if n_groups else None,
            "source": _side(ps, pause, rate_s, ps_side),
            "target": _side(pt, pause + float(rng.normal(0, 0.2)), rate_s + float(rng.normal(0, 1)), pt_side),
            "agree": ps == pt,
            "warnings": [],
        }
        for m in SIMILARITY_METRICS:
            row[m] = None if rng.random() < null_share else float(rng.uniform(-0.2, 1))
        pairs.append(row)
    return pairs


def col(pairs, side, key):
    return [p[side][key] for p in pairs]


def _ba(y, p):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return balanced_accuracy_score(y, p)


# ------------------------------------------------------------------------------------ values


@pytest.mark.parametrize("seed", SEEDS)
def test_corpus_values_match_sklearn_scipy(seed):
    pairs = make_pairs(120, seed, null_share=0.2)
    c = compute_corpus(pairs, CLASSES, n_bootstrap=FAST, seed=seed)
    y = [p["label"] for p in pairs]
    ps, pt = col(pairs, "source", "pred"), col(pairs, "target", "pred")
    assert c["n_pairs"] == 120
    assert c["ua_source"]["value"] == pytest.approx(_ba(y, ps), abs=1e-12)
    assert c["ua_target"]["value"] == pytest.approx(_ba(y, pt), abs=1e-12)
    assert c["wa_source"]["value"] == pytest.approx(accuracy_score(y, ps), abs=1e-12)
    assert c["wa_target"]["value"] == pytest.approx(accuracy_score(y, pt), abs=1e-12)
    assert c["bar"]["value"] == pytest.approx(_ba(y, pt) / _ba(y, ps), rel=1e-12)
    assert c["epr"]["value"] == pytest.approx(np.mean(np.array(ps) == np.array(pt)))
    assert c["kappa"]["value"] == pytest.approx(cohen_kappa_score(ps, pt), abs=1e-12)
    for name in ("bar", "epr", "kappa", "ua_source", "wa_target"):
        assert c[name]["n"] == 120 and c[name]["reason"] is None
    # the side reading: the same definitions on each side's pred_side
    qs, qt = col(pairs, "source", "pred_side"), col(pairs, "target", "pred_side")
    assert qs != ps and qt != pt  # the two readings differ, so a mix-up would show
    assert c["ua_target_side"]["value"] == pytest.approx(_ba(y, qt), abs=1e-12)
    assert c["bar_side"]["value"] == pytest.approx(_ba(y, qt) / _ba(y, qs), rel=1e-12)
    assert c["epr_side"]["value"] == pytest.approx(np.mean(np.array(qs) == np.array(qt)))
    assert c["kappa_side"]["value"] == pytest.approx(cohen_kappa_score(qs, qt), abs=1e-12)
    for m in SIMILARITY_METRICS:
        vals = [p[m] for p in pairs if p[m] is not None]
        assert c[m]["value"] == pytest.approx(np.mean(vals))
        assert c[m]["n"] == len(vals) < 120
    for name, field in (("pause", "pause_rate"), ("rate", "speech_rate")):
        expected = spearmanr(col(pairs, "source", field), col(pairs, "target", field)).statistic
        assert c[name]["value"] == pytest.approx(expected, abs=1e-12)
        assert c[name]["n"] == 120
    ser = c["ser"]
    assert ser["classes"] == CLASSES and ser["n_labelled"] == 120
    assert ser["source"]["confusion"] == confusion_matrix(y, ps, labels=CLASSES).tolist()
    assert ser["target"]["confusion"] == confusion_matrix(y, pt, labels=CLASSES).tolist()
    assert ser["source_vs_target"] == confusion_matrix(ps, pt, labels=CLASSES).tolist()
    assert ser["source"]["ua"] == pytest.approx(c["ua_source"]["value"])
    assert ser["target"]["wa"] == pytest.approx(c["wa_target"]["value"])
    pe = c["per_emotion"]
    for k in CLASSES:
        sel = np.array(ps) == k
        assert pe["by_source_prediction"][k]["n"] == int(sel.sum())
        assert pe["by_source_prediction"][k]["value"] == pytest.approx(np.mean(np.array(pt)[sel] == k))
        assert pe["by_gold"][k]["n"] == y.count(k)
    assert c["bootstrap"] == {
        "n_resamples": FAST,
        "seed": seed,
        "unit": "pair",
        "confidence": 0.95,
        "note": None,
    }


def test_metric_entry_shape():
    c = compute_corpus(make_pairs(30), CLASSES, n_bootstrap=50)
    for name in METRICS:
        assert set(c[name]) == {"value", "ci_low", "ci_high", "n", "reason"}, name


def test_nan_similarity_treated_as_null_and_partial_labels():
    pairs = make_pairs(60, 4)
    pairs[0]["emo_sim"] = float("nan")
    pairs[1]["emo_sim"] = None
    for p in pairs[:25]:
        p["label"] = None
    pairs[25]["label"] = ""  # empty string counts as missing too
    c = compute_corpus(pairs, CLASSES, n_bootstrap=FAST)
    assert c["emo_sim"]["n"] == 58
    assert c["emo_sim"]["value"] == pytest.approx(np.mean([p["emo_sim"] for p in pairs[2:]]))
    lab = pairs[26:]
    y = [p["label"] for p in lab]
    assert c["ua_source"]["n"] == len(lab) == 34
    assert c["ua_source"]["value"] == pytest.approx(_ba(y, col(lab, "source", "pred")))
    assert c["bar"]["value"] == pytest.approx(_ba(y, col(lab, "target", "pred")) / _ba(y, col(lab, "source", "pred")))
    assert c["epr"]["n"] == 60  # label-free metrics keep every pair
    assert c["ser"]["n_labelled"] == 34
    assert sum(map(sum, c["ser"]["source"]["confusion"])) == 34
    assert sum(v["n"] for v in c["per_emotion"]["by_gold"].values()) == 34


def test_gold_label_outside_classes_is_appended_and_counts():
    pairs = make_pairs(40, 5)
    pairs[0]["label"] = "disgust"
    pairs[1]["label"] = "disgust"
    c = compute_corpus(pairs, CLASSES, n_bootstrap=FAST)
    y = [p["label"] for p in pairs]
    assert c["ser"]["classes"] == CLASSES + ["disgust"]
    assert c["ua_source"]["value"] == pytest.approx(_ba(y, col(pairs, "source", "pred")))
    assert c["per_emotion"]["by_gold"]["disgust"]["source_recall"] == 0.0
    assert len(c["ser"]["source"]["confusion"]) == 5


# ------------------------------------------------------------------------------------ edge cases


def test_zero_pairs_every_metric_null():
    c = compute_corpus([], CLASSES, n_bootstrap=FAST)
    for name in METRICS:
        assert c[name] == {
            "value": None,
            "ci_low": None,
            "ci_high": None,
            "n": 0,
            "reason": NO_PAIRS_REASON,
        }
    assert c["ser"]["source"]["ua"] is None and c["ser"]["target"]["confusion"] is None
    assert c["ser"]["source_vs_target"] == [[0] * 4 for _ in range(4)]
    assert all(v["value"] is None for v in c["per_emotion"]["by_source_prediction"].values())


def test_no_labels_and_unavailable_reasons():
    pairs = make_pairs(20)
    for p in pairs:
        p["label"] = None
        p["va_sim"] = None
        p["vsim"] = None
        p["source"]["pause_rate"] = None
    c = compute_corpus(
        pairs,
        CLASSES,
        n_bootstrap=FAST,
        unavailable={"va_sim": "needs the paper profile"},
    )
    for name in ("bar", "ua_source", "ua_target", "wa_source", "wa_target"):
        assert c[name]["value"] is None and c[name]["reason"] == "no gold labels"
        assert c[name]["n"] == 0
    assert c["ser"]["source"]["ua"] is None and c["ser"]["source"]["wa"] is None
    assert c["ser"]["source"]["confusion"] is None
    assert "by_gold" not in c["per_emotion"]
    assert c["va_sim"]["reason"] == "needs the paper profile"
    assert c["vsim"]["reason"] == "no pair had a value" and c["vsim"]["value"] is None
    assert c["pause"]["value"] is None and "pause rates" in c["pause"]["reason"]
    assert c["epr"]["value"] is not None


def test_all_agree_single_class():
    pairs = make_pairs(15)
    for p in pairs:
        p["source"]["pred"] = p["target"]["pred"] = "happy"
    c = compute_corpus(pairs, CLASSES, n_bootstrap=FAST)
    assert c["epr"]["value"] == 1.0 and (c["epr"]["ci_low"], c["epr"]["ci_high"]) == (1.0, 1.0)
    assert c["kappa"]["value"] is None and "p_e = 1" in c["kappa"]["reason"]
    assert c["kappa"]["n"] == 15
    assert c["bar"]["value"] == pytest.approx(1.0)


def test_all_disagree_and_ua_source_zero():
    pairs = make_pairs(20)
    for i, p in enumerate(pairs):
        p["label"] = CLASSES[i % 2]
        p["source"]["pred"] = CLASSES[(i + 1) % 2]  # always wrong
        p["target"]["pred"] = CLASSES[i % 2]  # always right, always differs from source
    c = compute_corpus(pairs, CLASSES, n_bootstrap=FAST)
    assert c["epr"]["value"] == 0.0 and (c["epr"]["ci_low"], c["epr"]["ci_high"]) == (0.0, 0.0)
    assert c["ua_source"]["value"] == 0.0
    assert c["bar"]["value"] is None and "UA_source is 0" in c["bar"]["reason"]
    ps, pt = col(pairs, "source", "pred"), col(pairs, "target", "pred")
    assert c["kappa"]["value"] == pytest.approx(cohen_kappa_score(ps, pt))


def test_constant_and_too_few_rates():
    pairs = make_pairs(10)
    for p in pairs:
        p["source"]["pause_rate"] = 0.0
    pairs[0]["target"]["speech_rate"] = None
    for p in pairs[3:]:
        p["source"]["speech_rate"] = float("nan")
    c = compute_corpus(pairs, CLASSES, n_bootstrap=FAST)
    assert c["pause"]["value"] is None
    assert c["pause"]["reason"].startswith("source pause rates all equal ")
    assert c["pause"]["n"] == 10
    assert c["rate"]["value"] is None and "fewer than 3" in c["rate"]["reason"]
    assert c["rate"]["n"] == 2


def test_ci_null_with_reason_when_most_resamples_undefined():
    # 3 pairs: a resample has a constant side with probability 17/27, so the value is defined
    # but fewer than half of the resamples are
    pairs = make_pairs(3)
    for p, xs, xt in zip(pairs, [0.0, 0.0, 1.0], [0.0, 1.0, 1.0], strict=True):
        p["source"]["pause_rate"], p["target"]["pause_rate"] = xs, xt
    c = compute_corpus(pairs, CLASSES, n_bootstrap=FAST)
    assert c["pause"]["value"] == pytest.approx(spearmanr([0, 0, 1], [0, 1, 1]).statistic)
    assert c["pause"]["ci_low"] is None and c["pause"]["ci_high"] is None
    assert c["pause"]["reason"].startswith("confidence interval undefined: only ")


def test_no_bootstrap():
    c = compute_corpus(make_pairs(20), CLASSES, n_bootstrap=0)
    assert c["epr"]["value"] is not None
    assert c["epr"]["ci_low"] is None and c["epr"]["reason"] is None
    assert c["bootstrap"]["n_resamples"] == 0


# ------------------------------------------------------------------------------------ CIs


def test_cis_contain_estimate_and_are_seeded():
    pairs = make_pairs(200, 7)
    c1 = compute_corpus(pairs, CLASSES, n_bootstrap=FAST, seed=1)
    c1b = compute_corpus(pairs, CLASSES, n_bootstrap=FAST, seed=1)
    c2 = compute_corpus(pairs, CLASSES, n_bootstrap=FAST, seed=2)
    for name in METRICS:
        e = c1[name]
        assert e["value"] is not None, name
        assert e["ci_low"] <= e["value"] <= e["ci_high"], name
        assert e["ci_low"] < e["ci_high"], name
        assert c1b[name] == e, name
        assert (c2[name]["ci_low"], c2[name]["ci_high"]) != (e["ci_low"], e["ci_high"]), name
        assert c2[name]["value"] == e["value"]


def test_group_bootstrap_unit_and_fallback():
    pairs = make_pairs(120, 3, n_groups=12)
    cg = compute_corpus(pairs, CLASSES, n_bootstrap=FAST, use_groups=True)
    cp = compute_corpus(pairs, CLASSES, n_bootstrap=FAST, use_groups=False)
    assert cg["bootstrap"]["unit"] == "group" and cg["bootstrap"]["n_groups"] == 12
    assert cg["bootstrap"]["note"] is None
    assert cp["bootstrap"]["unit"] == "pair"
    assert cg["epr"]["value"] == cp["epr"]["value"]
    assert (cg["epr"]["ci_low"], cg["epr"]["ci_high"]) != (cp["epr"]["ci_low"], cp["epr"]["ci_high"])
    assert cg["epr"]["ci_low"] <= cg["epr"]["value"] <= cg["epr"]["ci_high"]

    pairs[5]["group"] = None
    cf = compute_corpus(pairs, CLASSES, n_bootstrap=FAST, use_groups=True)
    assert cf["bootstrap"]["unit"] == "pair" and "no group" in cf["bootstrap"]["note"]
    assert cf["epr"] == cp["epr"]


def test_group_bootstrap_widens_for_clustered_preservation():
    # preservation decided per group: the cluster bootstrap must see the between-group spread
    rng = np.random.default_rng(0)
    pairs = make_pairs(200, 9, n_groups=10)
    keep_group = {f"g{g}": rng.random() < 0.5 for g in range(10)}
    for p in pairs:
        if keep_group[p["group"]]:
            p["target"]["pred"] = p["source"]["pred"]
        else:
            p["target"]["pred"] = next(c for c in CLASSES if c != p["source"]["pred"])
    cg = compute_corpus(pairs, CLASSES, n_bootstrap=FAST, use_groups=True)
    cp = compute_corpus(pairs, CLASSES, n_bootstrap=FAST)
    width = lambda e: e["ci_high"] - e["ci_low"]  # noqa: E731
    assert width(cg["epr"]) > 3 * width(cp["epr"])


def test_500_pairs_in_50_groups_get_group_bootstrap_intervals():
    """Size, not speed (timings belong in bench/): a corpus of CI size gets every interval."""
    pairs = make_pairs(500, 11, null_share=0.1, n_groups=50)
    c = compute_corpus(pairs, CLASSES, n_bootstrap=1000, use_groups=True)
    assert c["bootstrap"]["unit"] == "group"
    for name in ("epr", "kappa", "bar"):
        assert c[name]["ci_low"] <= c[name]["value"] <= c[name]["ci_high"], (name, c[name])


# ------------------------------------------------------------------------------------ hypothesis


corpora = st.lists(
    st.tuples(
        st.sampled_from(CLASSES[:3]),
        st.sampled_from(CLASSES[:3]),
        st.one_of(st.none(), st.sampled_from(CLASSES[:3])),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpora)
def test_corpus_hypothesis_against_sklearn(rows):
    pairs = []
    for i, (ps, pt, y) in enumerate(rows):
        p = make_pairs(1)[0]
        p.update(pair_id=str(i), label=y)
        p["source"]["pred"], p["target"]["pred"] = ps, pt
        pairs.append(p)
    c = compute_corpus(pairs, CLASSES, n_bootstrap=20)
    if not rows:
        assert all(c[m]["reason"] == NO_PAIRS_REASON for m in METRICS)
        return
    ps = [r[0] for r in rows]
    pt = [r[1] for r in rows]
    assert c["epr"]["value"] == pytest.approx(np.mean(np.array(ps) == np.array(pt)))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        kappa = cohen_kappa_score(ps, pt)
    if np.isnan(kappa):
        assert c["kappa"]["value"] is None and c["kappa"]["reason"]
    else:
        assert c["kappa"]["value"] == pytest.approx(kappa, abs=1e-12)
    lab = [r for r in rows if r[2] is not None]
    if not lab:
        assert c["bar"]["reason"] == "no gold labels"
    else:
        y = [r[2] for r in lab]
        ua_s, ua_t = _ba(y, [r[0] for r in lab]), _ba(y, [r[1] for r in lab])
        assert c["ua_source"]["value"] == pytest.approx(ua_s) and c["ua_source"]["n"] == len(lab)
        if ua_s == 0:
            assert c["bar"]["value"] is None and c["bar"]["reason"]
        else:
            assert c["bar"]["value"] == pytest.approx(ua_t / ua_s)
    for name in METRICS:
        e = c[name]
        assert (e["value"] is None) <= (e["reason"] is not None)
        if e["value"] is None:
            assert e["ci_low"] is None and e["ci_high"] is None


# ------------------------------------------------------------------------------------ compare


def test_compare_identical_runs():
    pairs = make_pairs(80, 1)
    res = compare_runs(pairs, pairs, CLASSES, n_bootstrap=FAST)
    assert res["n_shared"] == 80 and res["n_only_a"] == 0 and res["n_only_b"] == 0
    for name in METRICS:
        e = res[name]
        assert e["diff"] == 0.0 and e["p_value"] == 1.0, name
        assert e["a"] == e["b"]
    assert res["flipped"] == {"agree_to_disagree": [], "disagree_to_agree": []}


def test_compare_better_run_alignment_and_flips():
    base = make_pairs(150, 2, keep=0.4)
    better = [dict(p, target=dict(p["target"])) for p in base]
    flipped_up = []
    for p in better:
        if p["source"]["pred"] != p["target"]["pred"] and int(p["pair_id"][1:]) % 3:
            p["target"]["pred"] = p["source"]["pred"]
            flipped_up.append(p["pair_id"])
    # one pair gets worse, some pairs exist only in one run, order is shuffled
    worse_id = next(
        p["pair_id"] for p in better if p["source"]["pred"] == p["target"]["pred"] and p["pair_id"] not in flipped_up
    )
    w = next(p for p in better if p["pair_id"] == worse_id)
    w["target"]["pred"] = next(c for c in CLASSES if c != w["source"]["pred"])
    extra_b = make_pairs(3, 99)
    for i, p in enumerate(extra_b):
        p["pair_id"] = f"only-b-{i}"
    b_run = better[5:] + extra_b
    random.Random(0).shuffle(b_run)
    res = compare_runs(base, b_run, CLASSES, n_bootstrap=FAST)
    assert res["n_shared"] == 145 and res["n_only_a"] == 5 and res["n_only_b"] == 3
    shared_up = [i for i in flipped_up if int(i[1:]) >= 5]
    assert res["flipped"]["disagree_to_agree"] == shared_up
    assert res["flipped"]["agree_to_disagree"] == ([worse_id] if int(worse_id[1:]) >= 5 else [])
    a_sh, b_sh = base[5:], sorted(better[5:], key=lambda p: p["pair_id"])
    epr_a = np.mean([p["source"]["pred"] == p["target"]["pred"] for p in a_sh])
    epr_b = np.mean([p["source"]["pred"] == p["target"]["pred"] for p in b_sh])
    e = res["epr"]
    assert e["a"] == pytest.approx(epr_a) and e["b"] == pytest.approx(epr_b)
    assert e["diff"] == pytest.approx(epr_b - epr_a) and e["n"] == 145
    assert e["ci_low"] > 0 and e["p_value"] < 0.01
    assert res["kappa"]["diff"] > 0 and res["kappa"]["p_value"] < 0.01
    # similarity inputs are the same: no difference
    assert res["emo_sim"]["diff"] == 0.0 and res["emo_sim"]["p_value"] == 1.0


def test_compare_undefined_metrics_and_label_merge():
    a = make_pairs(30, 4)
    b = make_pairs(30, 5)
    for p in a:
        p["va_sim"] = None
    for p in b:
        p["label"] = None  # labels come from run a
    b[0]["label"] = "sad" if a[0]["label"] != "sad" else "happy"  # a mismatch, run a wins
    res = compare_runs(a, b, CLASSES, metrics=("bar", "va_sim", "epr"), n_bootstrap=FAST)
    assert set(res) >= {"bar", "va_sim", "epr", "flipped", "bootstrap", "warnings"}
    assert "kappa" not in res
    assert res["va_sim"]["diff"] is None and res["va_sim"]["reason"] == "not computed for run a: no pair had a value"
    y = [p["label"] for p in a]
    ua = lambda run: _ba(y, col(run, "source", "pred"))  # noqa: E731
    uat = lambda run: _ba(y, col(run, "target", "pred"))  # noqa: E731
    assert res["bar"]["a"] == pytest.approx(uat(a) / ua(a))
    assert res["bar"]["b"] == pytest.approx(uat(b) / ua(b))
    assert res["bar"]["n"] == 30
    assert len(res["warnings"]) == 1
    none = compare_runs(a, make_pairs(0), CLASSES, n_bootstrap=FAST)
    assert none["n_shared"] == 0 and none["epr"]["reason"] == "the runs share no pair ids"
    with pytest.raises(ValueError, match="duplicate"):
        compare_runs(a + a[:1], b, CLASSES)
    with pytest.raises(ValueError, match="unknown metric"):
        compare_runs(a, b, CLASSES, metrics=("nope",))


def test_compare_uses_pairs_with_values_in_both_runs():
    a = make_pairs(30, 6)
    b = make_pairs(30, 7)
    for p in a[:10]:
        p["emo_sim"] = None
    for p in b[20:]:
        p["emo_sim"] = None
    res = compare_runs(a, b, CLASSES, metrics=("emo_sim",), n_bootstrap=FAST)
    e = res["emo_sim"]
    assert e["n"] == 10
    assert e["a"] == pytest.approx(np.mean([p["emo_sim"] for p in a[10:20]]))
    assert e["b"] == pytest.approx(np.mean([p["emo_sim"] for p in b[10:20]]))
    assert e["diff"] == pytest.approx(e["b"] - e["a"])
    assert e["ci_low"] <= e["diff"] <= e["ci_high"] and 0 < e["p_value"] <= 1
