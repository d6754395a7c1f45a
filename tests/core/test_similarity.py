"""core.similarity (emo-sim frame similarity, cosines) against scipy / scikit-learn and a reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.spatial.distance import cosine as scipy_cosine_distance
from sklearn.metrics.pairwise import cosine_similarity

from core import similarity as S
from core.metrics import MetricUndefined

SEEDS = [0, 1, 2, 3, 4]


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
