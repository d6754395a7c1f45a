"""The side-normalised SER reading (worker/engine/side_reading.py): its probabilities against a hand computation, its
corpus metrics against scikit-learn, and every case where it cannot be computed saying why."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

from core.catalogue import SIDE_PRED, SIDE_PROBS, SIDE_READING_METRICS, Metric
from core.profiles import NO_SIDE_HEAD
from models.registry import ProfileSpec, load_side_head
from models.ser.head import HeadError, SerHead
from models.ser.training import TrainConfig, train_one
from worker.engine.corpus import compute_corpus
from worker.engine.pipeline import check_side_head
from worker.engine.side_reading import MIN_SIDE_UTTERANCES, SER_INPUT, add_side_reading

CLASSES = ["anger", "joy", "neutral", "sadness"]
N_FEATURES = 12


def _train(normalization: str, tmp_path, seed: int = 3) -> SerHead:
    rng = np.random.default_rng(seed)
    targets = np.arange(160) % len(CLASSES)
    features = rng.normal(size=(160, N_FEATURES)).astype(np.float32) + targets[:, None] * 0.8
    splits = np.array(["train"] * 120 + ["dev"] * 40)
    run = train_one(
        features,
        targets,
        splits,
        CLASSES,
        feature_set="egemaps-v02",
        balance="none",
        config=TrainConfig(max_epochs=3, seed=seed),
        normalization=normalization,
        sides=np.array(["a"] * 60 + ["b"] * 60 + ["dev"] * 40),
    )
    folder = tmp_path / normalization
    run.head.save(folder)
    return SerHead.load(folder)


@pytest.fixture(scope="module")
def side_head(tmp_path_factory):
    return _train("per_side", tmp_path_factory.mktemp("side"))


def _rows(n_pairs: int, seed: int = 0, repeat_sources: int = 1) -> list[dict]:
    """Report rows with SER inputs; every `repeat_sources` consecutive pairs share one source file."""
    rng = np.random.default_rng(seed)
    sources = rng.normal(3.0, 2.0, size=(n_pairs, N_FEATURES)).astype(np.float32)
    targets = rng.normal(-1.0, 0.5, size=(n_pairs, N_FEATURES)).astype(np.float32)
    rows = []
    for i in range(n_pairs):
        source = sources[i - i % repeat_sources]
        rows.append(
            {
                "pair_id": f"p{i}",
                "label": CLASSES[i % len(CLASSES)],
                "group": None,
                "agree": True,
                "warnings": [],
                "source": {
                    "pred": "joy",
                    "probs": {c: 0.25 for c in CLASSES},
                    "uncertainty": 1.0,
                    SER_INPUT: source.tolist(),
                },
                "target": {
                    "pred": "joy",
                    "probs": {c: 0.25 for c in CLASSES},
                    "uncertainty": 1.0,
                    SER_INPUT: targets[i].tolist(),
                },
            }
        )
    return rows


def _by_hand(head: SerHead, vectors: np.ndarray, tmp_path) -> np.ndarray:
    """z-score the distinct vectors of a side (population std), then the same network read per utterance."""
    unique, index = np.unique(vectors, axis=0, return_inverse=True)
    z = (unique - unique.mean(0)) / unique.std(0)
    head.save(tmp_path)
    as_utterance = SerHead.load(tmp_path)
    as_utterance.metadata["normalization"] = "per_utterance"
    return as_utterance.predict_proba(z)[index.ravel()]


def test_side_probabilities_equal_a_hand_computation(side_head, tmp_path):
    rows = _rows(60, repeat_sources=3)  # 20 distinct sources, the minimum
    read, normalised_per, unavailable = add_side_reading(rows, side_head)
    assert unavailable == {}
    assert normalised_per == {"source": "side", "target": "side"}  # no groups
    for side in ("source", "target"):
        vectors = np.array([r[side][SER_INPUT] for r in rows], np.float32)
        expected = _by_hand(side_head, vectors, tmp_path / side)
        got = np.array([[r[side][SIDE_PROBS][c] for c in CLASSES] for r in read])
        assert np.allclose(got, expected, atol=1e-5)
        assert [r[side][SIDE_PRED] for r in read] == [CLASSES[k] for k in expected.argmax(1)]
        assert all(SER_INPUT not in r[side] for r in read)
    for r in read:
        p_s = np.array([r["source"][SIDE_PROBS][c] for c in CLASSES])
        p_t = np.array([r["target"][SIDE_PROBS][c] for c in CLASSES])
        assert r["expected_agreement_side"] == pytest.approx(float(p_s @ p_t))
        assert r["bhattacharyya_side"] == pytest.approx(float(np.sqrt(p_s * p_t).sum()))
    assert SER_INPUT in rows[0]["source"]  # the caller's rows are left as they were


def _grouped(rows: list[dict], sizes: list[int]) -> list[dict]:
    """The rows with groups g0, g1, ... of these sizes, in order; group g shifted by 5*g (a louder voice)."""
    names = [f"g{g}" for g, size in enumerate(sizes) for _ in range(size)]
    out = []
    for row, name in zip(rows, names, strict=True):
        shift = 5.0 * int(name[1:])
        out.append(
            {
                **row,
                "group": name,
                **{
                    side: {**row[side], SER_INPUT: (np.asarray(row[side][SER_INPUT]) + shift).tolist()}
                    for side in ("source", "target")
                },
            }
        )
    return out


def test_each_group_is_normalised_on_its_own_when_every_group_is_large_enough(side_head, tmp_path):
    rows = _grouped(_rows(50, seed=7), [MIN_SIDE_UTTERANCES, 30])
    read, normalised_per, unavailable = add_side_reading(rows, side_head)
    assert unavailable == {} and normalised_per == {"source": "group", "target": "group"}
    for side in ("source", "target"):
        got = np.array([[r[side][SIDE_PROBS][c] for c in CLASSES] for r in read])
        for group, members in (("g0", slice(0, 20)), ("g1", slice(20, 50))):
            vectors = np.array([r[side][SER_INPUT] for r in rows[members]], np.float32)
            expected = _by_hand(side_head, vectors, tmp_path / side / group)
            assert np.allclose(got[members], expected, atol=1e-5)
    whole_side = add_side_reading([{**r, "group": None} for r in rows], side_head)[0]
    assert any(a["target"][SIDE_PRED] != b["target"][SIDE_PRED] for a, b in zip(read, whole_side, strict=True))


def test_a_small_group_or_a_missing_one_normalises_the_whole_side(side_head, tmp_path):
    rows = _grouped(_rows(50, seed=7), [MIN_SIDE_UTTERANCES - 1, 31])
    read, normalised_per, _ = add_side_reading(rows, side_head)
    assert normalised_per == {"source": "side", "target": "side"}
    vectors = np.array([r["target"][SER_INPUT] for r in rows], np.float32)
    got = np.array([[r["target"][SIDE_PROBS][c] for c in CLASSES] for r in read])
    assert np.allclose(got, _by_hand(side_head, vectors, tmp_path / "whole"), atol=1e-5)
    rows = _grouped(_rows(50, seed=7), [25, 25])
    rows[0] = {**rows[0], "group": None}
    assert add_side_reading(rows, side_head)[1] == {"source": "side", "target": "side"}
    # a source side of 20 distinct files per group but targets repeated: each side decides on its own
    rows = _grouped(_rows(50, seed=7), [25, 25])
    for row in rows[1:25]:
        row["target"] = rows[0]["target"]
    assert add_side_reading(rows, side_head)[1] == {"source": "group", "target": "side"}


def test_side_corpus_metrics_equal_sklearn(side_head):
    read, _, unavailable = add_side_reading(_rows(80, seed=5), side_head)
    corpus = compute_corpus(read, CLASSES, n_bootstrap=200, seed=1, unavailable=unavailable)
    gold = [r["label"] for r in read]
    source = [r["source"][SIDE_PRED] for r in read]
    target = [r["target"][SIDE_PRED] for r in read]
    assert corpus["epr_side"]["value"] == pytest.approx(np.mean([s == t for s, t in zip(source, target, strict=True)]))
    assert len(set(source)) > 1 and len(set(target)) > 1  # kappa is defined: the check below always runs
    assert corpus["kappa_side"]["value"] == pytest.approx(cohen_kappa_score(source, target))
    assert corpus["ua_target_side"]["value"] == pytest.approx(balanced_accuracy_score(gold, target))
    ua_source = balanced_accuracy_score(gold, source)
    assert ua_source > 0  # BAR is defined: the check below always runs
    assert corpus["bar_side"]["value"] == pytest.approx(balanced_accuracy_score(gold, target) / ua_source)
    assert corpus["expected_agreement_side"]["value"] == pytest.approx(
        np.mean([r["expected_agreement_side"] for r in read])
    )
    # the absolute reading is still there, from the rows' own predictions
    assert corpus["epr"]["value"] == 1.0


def _reasons(rows, head) -> dict:
    read, normalised_per, unavailable = add_side_reading(rows, head)
    assert normalised_per == {}
    assert all(SER_INPUT not in r[side] for r in read for side in ("source", "target"))
    corpus = compute_corpus(read, CLASSES, n_bootstrap=0, unavailable=unavailable)
    assert corpus["epr"]["value"] == 1.0  # the absolute reading is never lost
    for name in SIDE_READING_METRICS:
        assert corpus[name]["value"] is None and corpus[name]["reason"], name
    return {corpus[name]["reason"] for name in SIDE_READING_METRICS}


def test_too_few_utterances_on_a_side_says_so(side_head):
    (reason,) = _reasons(_rows(MIN_SIDE_UTTERANCES - 1), side_head)
    assert f"at least {MIN_SIDE_UTTERANCES} distinct source utterances" in reason
    # a source paired with many targets counts once
    (reason,) = _reasons(_rows(60, repeat_sources=4), side_head)
    assert "this job has 15" in reason


def test_no_side_head_or_no_inputs_says_so(side_head):
    (reason,) = _reasons(_rows(30), None)
    assert "no side-normalised SER head" in reason
    rows = _rows(30)
    del rows[3]["target"][SER_INPUT]
    (reason,) = _reasons(rows, side_head)
    assert "re-run the job" in reason


def test_a_side_head_must_be_per_side_and_read_the_same_classes(side_head, tmp_path):
    absolute = _train("per_utterance", tmp_path)
    check_side_head(absolute, side_head)
    with pytest.raises(HeadError, match="needs per_side"):
        check_side_head(absolute, absolute)
    other = _train("per_side", tmp_path / "other")
    other.classes = ["anger", "joy", "neutral", "fear"]
    with pytest.raises(HeadError, match="does not read what the SER head reads"):
        check_side_head(absolute, other)


def test_a_side_head_without_hidden_layers_is_softmax_of_one_linear_map(tmp_path):
    """The lite side head's recipe since 2026-12-03 (no hidden layer): saved and loaded, a side's probabilities
    are softmax(W x + b) of the side-standardised, scaled features, computed here from the saved tensors."""
    from safetensors.numpy import load_file
    from scipy.special import softmax

    rng = np.random.default_rng(5)
    targets = np.arange(160) % len(CLASSES)
    features = rng.normal(size=(160, N_FEATURES)).astype(np.float32) + targets[:, None] * 0.8
    run = train_one(
        features,
        targets,
        np.array(["train"] * 120 + ["dev"] * 40),
        CLASSES,
        feature_set="egemaps-v02",
        balance="none",
        config=TrainConfig(hidden=(), max_epochs=3, seed=5, ensemble=2),
        normalization="per_side",
        sides=np.array(["a"] * 60 + ["b"] * 60 + ["dev"] * 40),
    )
    run.head.save(tmp_path)
    head = SerHead.load(tmp_path)
    assert head.hidden == () and head.normalization == "per_side"
    tensors = load_file(str(tmp_path / "head.safetensors"))
    side = rng.normal(2.0, 3.0, size=(25, N_FEATURES)).astype(np.float32)
    z = (side - side.mean(0)) / side.std(0)
    x = (z - tensors["scaler.mean"]) / tensors["scaler.scale"]
    members = [
        softmax(x @ tensors[f"network.members.{m}.0.weight"].T + tensors[f"network.members.{m}.0.bias"], axis=1)
        for m in range(2)
    ]
    assert not any(name.startswith("network.members.0.1") for name in tensors)  # one Linear per member, nothing else
    assert np.allclose(head.predict_proba_side(side), np.mean(members, axis=0), atol=1e-5)


def test_load_side_head(tmp_path, side_head):
    lite = ProfileSpec("lite")
    assert load_side_head(lite, NO_SIDE_HEAD) is None
    assert load_side_head(lite).normalization == "per_side"  # the shipped one
    assert load_side_head(ProfileSpec("paper", model_dir=str(tmp_path))) is None  # the paper profile's is optional
    absolute = _train("per_utterance", tmp_path)
    with pytest.raises(HeadError, match="needs per_side"):
        load_side_head(lite, tmp_path / "per_utterance")
    with pytest.raises(HeadError):
        load_side_head(lite, tmp_path / "missing")
    # a head of the user's own with other classes: the profile's side head is left out, not an error
    assert load_side_head(lite, None, absolute) is None


def test_only_ser_metrics_have_a_side_reading():
    with pytest.raises(ValueError, match="only SER metrics"):
        Metric("x", "x", "x", "pair", False, "emotion2vec", lambda c: None, reading="side")
    with pytest.raises(ValueError, match="unknown reading"):
        Metric("x", "x", "x", "pair", False, "SER head", lambda c: None, reading="sideways")
