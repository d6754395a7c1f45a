"""core.metrics against scikit-learn / scipy and hand-worked cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    recall_score,
)

from core import metrics as M
from core.metrics import MetricUndefined

SEEDS = [0, 1, 2, 3, 4]
CLASSES = ["angry", "happy", "neutral", "sad"]
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _labels(rng, n, k=4, classes=CLASSES):
    return [classes[i] for i in rng.integers(0, k, n)]


label_lists = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from(CLASSES), min_size=n, max_size=n),
        st.lists(st.sampled_from(CLASSES), min_size=n, max_size=n),
        st.lists(st.sampled_from(CLASSES), min_size=n, max_size=n),
    )
)


# ------------------------------------------------------------------------------------ UA / WA


@pytest.mark.parametrize("seed", SEEDS)
def test_ua_wa_match_sklearn_random(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y, p = _labels(rng, n), _labels(rng, n)
    assert M.unweighted_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p), abs=1e-12)
    assert M.weighted_accuracy(y, p) == pytest.approx(accuracy_score(y, p), abs=1e-12)


def test_ua_ignores_classes_only_predicted_and_accepts_ints():
    y = [0, 0, 1, 1, 1]
    p = [0, 2, 1, 1, 2]  # class 2 never in y_true
    with pytest.warns(UserWarning):
        expected = balanced_accuracy_score(y, p)
    assert M.unweighted_accuracy(y, p) == pytest.approx(expected)
    assert M.unweighted_accuracy(np.array(y), np.array(p)) == pytest.approx((0.5 + 2 / 3) / 2)


@HYP
@given(label_lists)
def test_ua_wa_hypothesis(data):
    y, p, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn: "y_pred contains classes not in y_true"
        expected = balanced_accuracy_score(y, p)
    assert M.unweighted_accuracy(y, p) == pytest.approx(expected, abs=1e-12)
    assert M.weighted_accuracy(y, p) == pytest.approx(accuracy_score(y, p), abs=1e-12)


def test_ua_wa_empty_and_bad_input():
    for f in (M.unweighted_accuracy, M.weighted_accuracy):
        with pytest.raises(MetricUndefined) as exc:
            f([], [])
        assert exc.value.reason
        with pytest.raises(ValueError):
            f(["a", "b"], ["a"])
        with pytest.raises(ValueError):
            f(["a", None], ["a", "b"])


# ------------------------------------------------------------------------------------ BAR


@pytest.mark.parametrize("seed", SEEDS)
def test_bar_is_ratio_of_balanced_accuracies(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 200))
    y = _labels(rng, n)
    ps = [yy if rng.random() < 0.6 else CLASSES[rng.integers(4)] for yy in y]
    pt = _labels(rng, n)
    expected = balanced_accuracy_score(y, pt) / balanced_accuracy_score(y, ps)
    assert M.balanced_accuracy_ratio(y, ps, pt) == pytest.approx(expected, rel=1e-12)


def test_bar_undefined_when_ua_source_zero_or_empty():
    y = ["a", "a", "b", "b"]
    with pytest.raises(MetricUndefined, match="UA_source is 0"):
        M.balanced_accuracy_ratio(y, ["b", "b", "a", "a"], ["a", "a", "b", "b"])
    with pytest.raises(MetricUndefined):
        M.balanced_accuracy_ratio([], [], [])
    # perfect target over imperfect source may exceed 1
    assert M.balanced_accuracy_ratio(y, ["a", "b", "b", "b"], y) == pytest.approx(1 / 0.75)


# ------------------------------------------------------------------------------------ EPR / kappa


@pytest.mark.parametrize("seed", SEEDS)
def test_epr_and_kappa_random(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    s = _labels(rng, n)
    t = [x if rng.random() < 0.5 else CLASSES[rng.integers(4)] for x in s]
    assert M.emotion_preservation_rate(s, t) == pytest.approx(np.mean(np.array(s) == np.array(t)))
    assert M.cohen_kappa(s, t) == pytest.approx(cohen_kappa_score(s, t), abs=1e-12)


@HYP
@given(label_lists)
def test_kappa_hypothesis(data):
    _, s, t = data
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = cohen_kappa_score(s, t)
    if math.isnan(expected):
        with pytest.raises(MetricUndefined, match="p_e = 1"):
            M.cohen_kappa(s, t)
    else:
        assert M.cohen_kappa(s, t) == pytest.approx(expected, abs=1e-12)


def test_kappa_edge_cases():
    # both sides one identical class: p_e = 1 -> undefined (sklearn: NaN)
    with pytest.raises(MetricUndefined, match="p_e = 1"):
        M.cohen_kappa(["a"] * 5, ["a"] * 5)
    with pytest.raises(MetricUndefined):
        M.cohen_kappa([], [])
    # one side constant, other mixed: defined, as in sklearn
    s, t = ["a"] * 4, ["a", "b", "a", "b"]
    assert M.cohen_kappa(s, t) == pytest.approx(cohen_kappa_score(s, t))
    # all disagree on different single classes: kappa 0
    assert M.cohen_kappa(["a"] * 3, ["b"] * 3) == pytest.approx(0.0)
    # perfect agreement over two classes
    assert M.cohen_kappa(["a", "b", "a"], ["a", "b", "a"]) == pytest.approx(1.0)


def test_epr_edge_cases():
    assert M.emotion_preservation_rate(["a", "b"], ["a", "b"]) == 1.0
    assert M.emotion_preservation_rate(["a", "b"], ["b", "a"]) == 0.0
    with pytest.raises(MetricUndefined):
        M.emotion_preservation_rate([], [])


# ------------------------------------------------------------------------------------ confusion


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    y, p = _labels(rng, n, k=3), _labels(rng, n)
    cm = M.confusion(y, p, CLASSES)
    assert cm == confusion_matrix(y, p, labels=CLASSES).tolist()
    assert all(type(v) is int for row in cm for v in row)


def test_confusion_edge_cases():
    assert M.confusion([], [], ["a", "b"]) == [[0, 0], [0, 0]]
    assert M.confusion(["b"], ["a"], ["a", "b"]) == [[0, 0], [1, 0]]
    with pytest.raises(ValueError, match="not one of classes"):
        M.confusion(["a", "zzz"], ["a", "a"], ["a", "b"])


# ------------------------------------------------------------------------------------ per-emotion


def test_per_emotion_hand_example():
    s = ["a", "a", "a", "b", "b", "c"]
    t = ["a", "a", "b", "b", "a", "a"]
    y = ["a", "a", "b", "b", None, "c"]
    res = M.per_emotion_preservation(s, t, ["a", "b", "c", "d"], labels=y)
    bp = res["by_source_prediction"]
    assert bp["a"] == {"n": 3, "value": pytest.approx(2 / 3), "reason": None}
    assert bp["b"]["n"] == 2 and bp["b"]["value"] == pytest.approx(0.5)
    assert bp["c"]["n"] == 1 and bp["c"]["value"] == 0.0
    assert bp["d"]["n"] == 0 and bp["d"]["value"] is None and "d" in bp["d"]["reason"]
    bg = res["by_gold"]
    assert bg["a"]["n"] == 2 and bg["a"]["source_recall"] == 1.0
    assert bg["a"]["target_recall"] == 1.0 and bg["a"]["agreement"] == 1.0
    # gold b: pairs 2 (s=a,t=b) and 3 (s=b,t=b)
    assert bg["b"]["n"] == 2
    assert bg["b"]["source_recall"] == 0.5 and bg["b"]["target_recall"] == 1.0
    assert bg["b"]["agreement"] == 0.5
    assert bg["d"]["n"] == 0 and bg["d"]["agreement"] is None and bg["d"]["reason"]
    assert "by_gold" not in M.per_emotion_preservation(s, t, ["a", "b", "c", "d"])


@pytest.mark.parametrize("seed", SEEDS)
def test_per_emotion_by_gold_matches_sklearn_recall(seed):
    rng = np.random.default_rng(seed)
    n = 150
    y, s, t = _labels(rng, n), _labels(rng, n), _labels(rng, n)
    res = M.per_emotion_preservation(s, t, CLASSES, labels=y)
    rs = recall_score(y, s, labels=CLASSES, average=None, zero_division=0)
    rt = recall_score(y, t, labels=CLASSES, average=None, zero_division=0)
    for i, c in enumerate(CLASSES):
        g = res["by_gold"][c]
        assert g["source_recall"] == pytest.approx(rs[i])
        assert g["target_recall"] == pytest.approx(rt[i])
        sel = np.array(y) == c
        assert g["agreement"] == pytest.approx(np.mean(np.array(s)[sel] == np.array(t)[sel]))
        ms = np.array(s) == c
        assert res["by_source_prediction"][c]["value"] == pytest.approx(np.mean(np.array(t)[ms] == c))


# ------------------------------------------------------------------------------------ spearman


@pytest.mark.parametrize("seed", SEEDS)
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 200))
    x = rng.integers(0, 6, n).astype(float)  # many ties
    y = x + rng.normal(size=n)
    if np.all(x == x[0]):
        x[0] += 1
    assert M.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)


@HYP
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.just(float("nan")), st.integers(-5, 5).map(float)),
            st.one_of(st.none(), st.just(float("nan")), st.floats(-1e3, 1e3)),
        ),
        max_size=30,
    )
)
def test_spearman_hypothesis(pairs):
    x = [a for a, _ in pairs]
    y = [b for _, b in pairs]
    xf = np.array([np.nan if v is None else v for v in x], dtype=float)
    yf = np.array([np.nan if v is None else v for v in y], dtype=float)
    keep = np.isfinite(xf) & np.isfinite(yf)
    xk, yk = xf[keep], yf[keep]
    if keep.sum() < 3 or np.all(xk == xk[0]) or np.all(yk == yk[0]):
        with pytest.raises(MetricUndefined):
            M.spearman(x, y)
    else:
        assert M.spearman(x, y) == pytest.approx(spearmanr(xk, yk).statistic, abs=1e-9)


def test_spearman_edge_cases():
    with pytest.raises(MetricUndefined, match="fewer than 3"):
        M.spearman([1, 2], [3, 4])
    with pytest.raises(MetricUndefined, match="fewer than 3.*n=2"):
        M.spearman([1, 2, None, 4], [1, 2, 3, float("nan")])
    with pytest.raises(MetricUndefined, match=r"^x all equal 1, Spearman"):
        M.spearman([1, 1, 1, 1], [1, 2, 3, 4])
    with pytest.raises(MetricUndefined, match=r"^source rates all equal 1, Spearman"):
        M.spearman([1, 1, 1], [1, 2, 3], names=("source rates", "target rates"))
    with pytest.raises(MetricUndefined, match="x all equal .* and y all equal "):
        M.spearman([1, 1, 1], [2, 2, 2])
    assert M.spearman([1, None, 2, 3, 4], [4, 9, 3, 2, 1]) == pytest.approx(-1.0)


def test_average_ranks_matches_rankdata():
    rng = np.random.default_rng(7)
    for n in (1, 2, 5, 100):
        x = rng.integers(0, 4, n).astype(float)
        assert np.array_equal(M._average_ranks(x), rankdata(x))
