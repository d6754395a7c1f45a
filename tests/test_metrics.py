"""core.metrics against scikit-learn / scipy and hand-worked cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.interpolate import interp1d
from scipy.spatial.distance import cosine as scipy_cosine_distance
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    recall_score,
)
from sklearn.metrics.pairwise import cosine_similarity

from core import bootstrap as B
from core import metrics as M
from core import similarity as S
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
        assert res["by_source_prediction"][c]["value"] == pytest.approx(
            np.mean(np.array(t)[ms] == c)
        )


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


# ------------------------------------------------------------------------------------ emo-sim


def _reference_emo_sim(es, et):
    """EmoCtrlTTS-Eval: interp1d nearest alignment + sklearn cosine per frame."""
    if et.shape[0] == 1:
        et2 = np.repeat(et, es.shape[0], axis=0)
    else:
        f = interp1d(np.linspace(0, 1, len(et)), et, axis=0, kind="nearest")
        et2 = f(np.linspace(0, 1, es.shape[0]))
    sims = [cosine_similarity(es[i : i + 1], et2[i : i + 1])[0, 0] for i in range(es.shape[0])]
    return float(np.mean(sims))


@pytest.mark.parametrize("seed", SEEDS)
def test_nearest_neighbour_resample_matches_interp1d_and_round(seed):
    rng = np.random.default_rng(seed)
    t_t, n_rows, d = int(rng.integers(2, 120)), int(rng.integers(1, 150)), 3
    frames = rng.normal(size=(t_t, d))
    out = S.nearest_neighbour_resample(frames, n_rows)
    assert out.shape == (n_rows, d)
    if n_rows > 1:
        f = interp1d(np.linspace(0, 1, t_t), frames, axis=0, kind="nearest")
        assert np.array_equal(out, f(np.linspace(0, 1, n_rows)))
    pos = np.linspace(0, 1, n_rows) * (t_t - 1)
    not_tie = np.abs(pos - np.floor(pos) - 0.5) > 1e-9
    idx = np.round(pos).astype(int)
    assert np.array_equal(out[not_tie], frames[idx[not_tie]])


def test_nearest_neighbour_resample_edge_cases():
    frames = np.arange(8.0).reshape(4, 2)
    # T_t = 4 -> 3 rows: positions 0, 1.5, 3; the half-way one goes down, as interp1d does
    assert S.nearest_neighbour_resample(frames, 3)[:, 0].tolist() == [0.0, 2.0, 6.0]
    assert np.array_equal(S.nearest_neighbour_resample(frames, 4), frames)
    assert S.nearest_neighbour_resample(frames, 1).tolist() == [[0.0, 1.0]]
    assert S.nearest_neighbour_resample(frames[:1], 5).tolist() == [[0.0, 1.0]] * 5
    assert S.nearest_neighbour_resample(frames, 0).shape == (0, 2)
    with pytest.raises(ValueError):
        S.nearest_neighbour_resample(np.zeros(3), 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_frame_similarity_matches_reference(seed):
    rng = np.random.default_rng(seed)
    d = 16
    es = rng.normal(size=(int(rng.integers(1, 80)), d))
    et = rng.normal(size=(int(rng.integers(1, 80)), d))
    et[rng.random(et.shape[0]) < 0.1] = 0.0  # some silent (zero) frames count as cosine 0
    if np.all(et == 0):
        et[0, 0] = 1.0
    expected = _reference_emo_sim(es, et)
    assert S.frame_similarity(es, et) == pytest.approx(expected, abs=1e-12)


def test_frame_similarity_edge_cases():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(10, 4))
    assert S.frame_similarity(e, e) == pytest.approx(1.0)
    assert S.frame_similarity(e, -e) == pytest.approx(-1.0)
    # same trajectory at twice the frame rate aligns back to ~identity
    assert S.frame_similarity(e, np.repeat(e, 2, axis=0)) > 0.5
    half_zero = e.copy()
    half_zero[:5] = 0
    assert S.frame_similarity(e, half_zero) == pytest.approx(0.5)
    with pytest.raises(MetricUndefined, match="zero-norm"):
        S.frame_similarity(np.zeros((3, 4)), e)
    with pytest.raises(MetricUndefined, match="NaN"):
        S.frame_similarity(e, np.full((3, 4), np.nan))
    with pytest.raises(MetricUndefined, match="no frames"):
        S.frame_similarity(np.zeros((0, 4)), e)
    with pytest.raises(ValueError):
        S.frame_similarity(e, rng.normal(size=(10, 5)))
    with pytest.raises(ValueError):
        S.frame_similarity(e[0], e)


@pytest.mark.parametrize("seed", SEEDS)
def test_utterance_and_vector_cosine(seed):
    rng = np.random.default_rng(seed)
    es, et = rng.normal(size=(30, 8)), rng.normal(size=(17, 8))
    expected = 1 - scipy_cosine_distance(es.mean(0), et.mean(0))
    assert S.utterance_cosine(es, et) == pytest.approx(expected, abs=1e-12)
    a, b = rng.normal(size=8), rng.normal(size=8)
    assert S.utterance_cosine(a, b) == pytest.approx(1 - scipy_cosine_distance(a, b), abs=1e-12)
    assert S.vector_cosine(a, b) == pytest.approx(1 - scipy_cosine_distance(a, b), abs=1e-12)
    assert S.utterance_cosine(es, es.mean(0)) == pytest.approx(1.0)


def test_cosine_edge_cases():
    with pytest.raises(MetricUndefined, match="zero-norm"):
        S.vector_cosine([0, 0], [1, 0])
    with pytest.raises(MetricUndefined):
        S.vector_cosine([], [])
    with pytest.raises(MetricUndefined):
        S.vector_cosine([np.nan, 1], [1, 0])
    with pytest.raises(ValueError):
        S.vector_cosine([1, 2], [1, 2, 3])
    with pytest.raises(MetricUndefined, match="zero-norm"):
        S.utterance_cosine(np.array([[1.0, 0], [-1.0, 0]]), np.ones((2, 2)))
    with pytest.raises(MetricUndefined, match="no frames"):
        S.utterance_cosine(np.zeros((0, 3)), np.ones(3))
    assert S.vector_cosine([1, 0], [-2, 0]) == -1.0


# ------------------------------------------------------------------------------------ bootstrap


def _mean_stat(x):
    return lambda idx: float(x[idx].mean())


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, 200)
    stat = _mean_stat(x)
    low, high, n_valid = B.bootstrap_ci(stat, x.size, n_resamples=500, seed=3)
    assert n_valid == 500
    assert low < x.mean() < high
    # ~ normal-theory interval
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert B.bootstrap_ci(stat, x.size, n_resamples=500, seed=3) == (low, high, n_valid)
    assert B.bootstrap_ci(stat, x.size, n_resamples=500, seed=4)[:2] != (low, high)
    wider = B.bootstrap_ci(stat, x.size, n_resamples=500, seed=3, confidence=0.99)
    assert wider[0] < low and wider[1] > high


def test_bootstrap_ci_replays_with_default_rng():
    x = np.arange(20.0) ** 2
    low, high, _ = B.bootstrap_ci(_mean_stat(x), x.size, n_resamples=300, seed=99)
    rng = np.random.default_rng(99)
    vals = [x[rng.integers(0, x.size, size=x.size)].mean() for _ in range(300)]
    assert (low, high) == tuple(np.percentile(vals, [2.5, 97.5]))


def test_bootstrap_ci_skips_undefined_resamples():
    x = np.arange(50.0)

    def stat(idx):  # undefined whenever item 0 was drawn (~64% of resamples)
        if np.any(idx == 0):
            raise MetricUndefined("item 0 drawn")
        return float(x[idx].mean())

    with pytest.raises(MetricUndefined, match="bootstrap resamples"):
        B.bootstrap_ci(stat, x.size, n_resamples=200, seed=1)

    def stat2(idx):  # undefined when item 0 drawn at least 3 times (~1.4%)
        if np.count_nonzero(idx == 0) >= 3:
            raise MetricUndefined("x")
        return float(x[idx].mean())

    rng = np.random.default_rng(1)
    expected_valid = sum(
        np.count_nonzero(rng.integers(0, 50, size=50) == 0) < 3 for _ in range(400)
    )
    assert expected_valid < 400
    assert B.bootstrap_ci(stat2, x.size, n_resamples=400, seed=1)[2] == expected_valid
    with pytest.raises(MetricUndefined):
        B.bootstrap_ci(_mean_stat(x), 0)


def test_bootstrap_groups_draw_whole_groups():
    groups = np.array(["a"] * 5 + ["b"] * 1 + ["c"] * 3 + ["d"] * 7)
    rng = np.random.default_rng(0)
    groups = groups[rng.permutation(groups.size)]  # groups need not be contiguous
    seen = []

    def stat(idx):
        seen.append(idx.copy())
        return float(idx.size)

    B.bootstrap_ci(stat, groups.size, groups=groups, n_resamples=200, seed=5)
    sizes = {g: int(np.sum(groups == g)) for g in set(groups)}
    lengths = set()
    for idx in seen:
        counts = np.bincount(idx, minlength=groups.size)
        for g, size in sizes.items():
            c = counts[groups == g]
            assert np.all(c == c[0])  # every member of a drawn group taken equally often
        draws = {g: counts[groups == g][0] for g in sizes}
        assert sum(draws.values()) == len(sizes)  # G groups drawn with replacement
        assert idx.size == sum(draws[g] * sizes[g] for g in sizes)
        lengths.add(idx.size)
    assert len(lengths) > 3  # cluster resamples vary in size
    with pytest.raises(ValueError):
        B.bootstrap_ci(stat, groups.size, groups=groups[:-1])


def test_group_bootstrap_is_wider_for_clustered_data():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(20), 10)
    x = rng.normal(size=20)[groups] + 0.1 * rng.normal(size=200)  # strongly clustered
    pl, ph, _ = B.bootstrap_ci(_mean_stat(x), x.size, n_resamples=400, seed=1)
    gl, gh, _ = B.bootstrap_ci(_mean_stat(x), x.size, groups=groups, n_resamples=400, seed=1)
    assert (gh - gl) > 2 * (ph - pl)
    assert gl < x.mean() < gh


def test_paired_bootstrap_identical_runs():
    x = np.random.default_rng(0).random(100)
    res = B.paired_bootstrap(_mean_stat(x), _mean_stat(x), x.size, n_resamples=300)
    assert res["diff"] == 0.0 and res["ci_low"] == 0.0 and res["ci_high"] == 0.0
    assert res["p_value"] == 1.0 and res["n"] == 100 and res["n_valid"] == 300


def test_paired_bootstrap_clearly_better_and_no_difference():
    rng = np.random.default_rng(1)
    a = rng.random(200) < 0.5
    b = a | (rng.random(200) < 0.4)  # b agrees on every pair a agrees on, and more
    sa, sb = _mean_stat(a.astype(float)), _mean_stat(b.astype(float))
    res = B.paired_bootstrap(sa, sb, 200, n_resamples=500, seed=7)
    assert res["diff"] == pytest.approx(b.mean() - a.mean())
    assert res["ci_low"] > 0
    assert res["p_value"] == pytest.approx(2 / 501)
    rev = B.paired_bootstrap(sb, sa, 200, n_resamples=500, seed=7)
    assert rev["diff"] == pytest.approx(-res["diff"]) and rev["ci_high"] < 0
    assert rev["p_value"] == pytest.approx(2 / 501)
    # b = a with random symmetric noise: no real difference
    x = rng.normal(size=300)
    y = x + rng.normal(scale=0.5, size=300)
    y -= y.mean() - x.mean()
    res0 = B.paired_bootstrap(_mean_stat(x), _mean_stat(y), 300, n_resamples=500, seed=7)
    assert res0["diff"] == pytest.approx(0.0, abs=1e-12)
    assert res0["p_value"] > 0.5
    assert res0["ci_low"] < 0 < res0["ci_high"]


def test_paired_bootstrap_p_value_formula_and_undefined():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=60), rng.normal(0.2, size=60)
    res = B.paired_bootstrap(_mean_stat(a), _mean_stat(b), 60, n_resamples=400, seed=11)
    r = np.random.default_rng(11)
    d = []
    for _ in range(400):
        idx = r.integers(0, 60, size=60)
        d.append(b[idx].mean() - a[idx].mean())
    d = np.array(d)
    expected = min(1.0, 2 * (min((d <= 0).sum(), (d >= 0).sum()) + 1) / 401)
    assert res["p_value"] == pytest.approx(expected)
    assert 0 < res["p_value"] < 1

    def undefined(idx):
        raise MetricUndefined("nope")

    with pytest.raises(MetricUndefined, match="run a: nope"):
        B.paired_bootstrap(undefined, _mean_stat(b), 60, n_resamples=10)
    with pytest.raises(MetricUndefined, match="run b: nope"):
        B.paired_bootstrap(_mean_stat(a), undefined, 60, n_resamples=10)
