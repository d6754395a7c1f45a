"""core.bootstrap: percentile intervals, group resampling, the paired bootstrap and its p-value."""

from __future__ import annotations

import numpy as np
import pytest

from core import bootstrap as B
from core.metrics import MetricUndefined

SEEDS = [0, 1, 2, 3, 4]


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
    expected_valid = sum(np.count_nonzero(rng.integers(0, 50, size=50) == 0) < 3 for _ in range(400))
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
        for g in sizes:
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
