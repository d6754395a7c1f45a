"""`emopres validate`'s sensitivity: the preserved-vs-swapped paired difference of every metric, its CI, z
and p, checked against direct computations (scipy's paired bootstrap and paired t-test)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from worker.research.validation import format_table, sensitivity, z_from_interval

CLASSES = ["anger", "joy", "neutral", "sadness"]
B = 4000


def _side(pred):
    return {
        "pred": pred,
        "probs": {c: 0.25 for c in CLASSES},
        "uncertainty": 1.0,
        "duration_s": 2.0,
        "pause_rate": None,
        "speech_rate": None,
    }


def systems(n, keep_preserved, keep_swapped, seed=0):
    """Rows of a preserving and a swapping system over the same n sources; each target keeps the source's
    predicted class with the given probability. Returns (preserved rows, swapped rows, agreement arrays)."""
    rng = np.random.default_rng(seed)
    preserved, swapped, agree_p, agree_s = [], [], [], []
    for i in range(n):
        label = CLASSES[rng.integers(4)]
        source = label if rng.random() < 0.7 else CLASSES[rng.integers(4)]
        for rows, keep, agree in ((preserved, keep_preserved, agree_p), (swapped, keep_swapped, agree_s)):
            target = source if rng.random() < keep else CLASSES[(CLASSES.index(source) + 1 + rng.integers(3)) % 4]
            rows.append(
                {
                    "pair_id": f"p{i:03d}",
                    "label": label,
                    "group": None,
                    "source": _side(source),
                    "target": _side(target),
                    "agree": source == target,
                    "warnings": [],
                    "emo_sim": float(rng.normal(0.5 if keep == keep_preserved else 0.4, 0.3)),
                }
            )
            agree.append(float(source == target))
    return preserved, swapped, np.array(agree_p), np.array(agree_s)


@pytest.mark.parametrize("seed", [0, 1])
def test_epr_difference_ci_z_and_p_match_direct_computations(seed):
    """A moderate separation (true EPR 0.45 vs 0.30, 150 pairs): the difference is the mean paired difference,
    the CI matches scipy's paired percentile bootstrap, z the paired t statistic, p the t-test's p."""
    preserved, swapped, agree_p, agree_s = systems(150, 0.45, 0.30, seed)
    row = sensitivity(preserved, swapped, CLASSES, ["epr", "emo_sim"], n_bootstrap=B, seed=seed)["epr"]
    d = agree_p - agree_s
    assert row["preserved"] == pytest.approx(agree_p.mean()) and row["swapped"] == pytest.approx(agree_s.mean())
    assert row["diff"] == pytest.approx(d.mean(), abs=1e-12)
    reference = stats.bootstrap(
        (agree_p, agree_s),
        lambda a, b: np.mean(a - b),
        paired=True,
        vectorized=False,
        n_resamples=B,
        method="percentile",
        random_state=seed,
    )
    assert row["ci_low"] == pytest.approx(reference.confidence_interval.low, abs=0.02)
    assert row["ci_high"] == pytest.approx(reference.confidence_interval.high, abs=0.02)
    t = stats.ttest_rel(agree_p, agree_s)
    assert row["z"] == pytest.approx(t.statistic, rel=0.12)
    assert row["p_value"] == pytest.approx(t.pvalue, abs=0.02)
    assert row["n"] == 150 and row["reason"] is None


def test_no_separation_gives_small_z_and_large_p():
    preserved, swapped, agree_p, agree_s = systems(200, 0.4, 0.4, seed=3)
    row = sensitivity(preserved, swapped, CLASSES, ["epr"], n_bootstrap=2000, seed=3)["epr"]
    assert abs(row["z"]) < 2.5 and row["p_value"] > 0.01
    assert row["p_value"] == pytest.approx(stats.ttest_rel(agree_p, agree_s).pvalue, abs=0.03)


def test_similarity_metric_difference_matches_scipy():
    preserved, swapped, _, _ = systems(120, 0.5, 0.3, seed=4)
    row = sensitivity(preserved, swapped, CLASSES, ["emo_sim"], n_bootstrap=B, seed=4)["emo_sim"]
    a = np.array([r["emo_sim"] for r in preserved])
    b = np.array([r["emo_sim"] for r in swapped])
    assert row["diff"] == pytest.approx((a - b).mean(), abs=1e-12)
    assert row["z"] == pytest.approx(stats.ttest_rel(a, b).statistic, rel=0.12)


def test_without_bootstrap_the_difference_stays_and_z_says_why_not():
    preserved, swapped, agree_p, agree_s = systems(40, 0.8, 0.1)
    row = sensitivity(preserved, swapped, CLASSES, ["epr", "kappa"], n_bootstrap=0, seed=1)["epr"]
    assert row["diff"] == pytest.approx((agree_p - agree_s).mean())
    assert row["z"] is None and row["p_value"] is None and "--bootstrap 0" in row["reason"]


def test_z_from_interval():
    assert z_from_interval(0.2, 0.1, 0.3) == pytest.approx(0.2 / (0.2 / (2 * stats.norm.ppf(0.975))))
    from core.metrics import MetricUndefined

    with pytest.raises(MetricUndefined):
        z_from_interval(0.0, 0.5, 0.5)


def test_table_prints_sensitivity_columns():
    preserved, swapped, _, _ = systems(60, 0.8, 0.1)
    sens = sensitivity(preserved, swapped, CLASSES, ["epr"], n_bootstrap=500, seed=1)["epr"]
    table = {"epr": {"values": [0.1, 0.5, 0.8], "spearman": 1.0, "reason": None, "sensitivity": sens}}
    text = format_table([0.0, 0.5, 1.0], table)
    header, line = text.splitlines()
    for column in ("spearman", "diff(1-0)", "95% CI", "z", "p"):
        assert column in header
    assert f"{sens['diff']:.3f}" in line and f"{sens['z']:.2f}" in line and f"[{sens['ci_low']:.3f}," in line
