"""The metric catalogue: every entry reaches the report, its schema, the tables and the gates; the
expected agreement metric (added through the catalogue alone) against a direct numpy computation."""

from __future__ import annotations

import numpy as np
import pytest

from core.catalogue import BY_NAME, CATALOGUE, HEADLINE_METRICS, METRICS, PAIR_METRICS, SECTIONS, SIDE_READING_METRICS
from core.metrics import MetricUndefined, bhattacharyya, expected_agreement
from worker.engine.corpus import compare_runs, compute_corpus
from worker.engine.report_schema import report_schema

CLASSES = ["anger", "joy", "neutral", "sadness"]


def _rows(n: int, seed: int, keep: float) -> list[dict]:
    """Report rows with SER probabilities; the target keeps the source's emotion with probability `keep`."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ps = rng.dirichlet(np.ones(len(CLASSES)) * 0.5)
        pt = ps if rng.random() < keep else rng.dirichlet(np.ones(len(CLASSES)) * 0.5)
        pt = 0.7 * pt + 0.3 * rng.dirichlet(np.ones(len(CLASSES)))
        side = lambda p: {"pred": CLASSES[int(np.argmax(p))], "probs": dict(zip(CLASSES, p.tolist(), strict=True))}  # noqa: E731
        rows.append(
            {
                "pair_id": f"p{i}",
                "label": CLASSES[i % 4],
                "source": side(ps),
                "target": side(pt),
                "expected_agreement": expected_agreement(ps, pt),
                "bhattacharyya": bhattacharyya(ps, pt),
            }
        )
    return rows


def _direct(rows: list[dict]) -> np.ndarray:
    """sum_k p_s(k) p_t(k) per pair, straight from the rows' probability dicts."""
    return np.array([sum(r["source"]["probs"][c] * r["target"]["probs"][c] for c in CLASSES) for r in rows])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expected_agreement_is_the_dot_product_of_the_probabilities(seed):
    rng = np.random.default_rng(seed)
    ps, pt = rng.dirichlet(np.ones(7), size=50), rng.dirichlet(np.ones(7), size=50)
    reference = np.einsum("ik,ik->i", ps, pt)
    assert [expected_agreement(a, b) for a, b in zip(ps, pt, strict=True)] == pytest.approx(
        reference.tolist(), abs=1e-12
    )
    one_hot = np.eye(7)
    assert expected_agreement(one_hot[2], one_hot[2]) == 1.0 and expected_agreement(one_hot[2], one_hot[3]) == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_bhattacharyya_is_one_minus_the_squared_hellinger_distance(seed):
    from scipy.spatial.distance import euclidean

    rng = np.random.default_rng(seed)
    ps, pt = rng.dirichlet(np.ones(7) * 0.5, size=40), rng.dirichlet(np.ones(7) * 0.5, size=40)
    hellinger = np.array([euclidean(np.sqrt(a), np.sqrt(b)) / np.sqrt(2) for a, b in zip(ps, pt, strict=True)])
    assert [bhattacharyya(a, b) for a, b in zip(ps, pt, strict=True)] == pytest.approx(
        (1 - hellinger**2).tolist(), abs=1e-12
    )
    one_hot = np.eye(7)
    assert bhattacharyya(ps[0], ps[0]) == pytest.approx(1.0) and bhattacharyya(one_hot[1], one_hot[4]) == 0.0
    with pytest.raises(ValueError):
        bhattacharyya([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="negative"):
        bhattacharyya([1.2, -0.2], [0.5, 0.5])
    with pytest.raises(MetricUndefined):
        bhattacharyya([np.nan, 1.0], [0.5, 0.5])


def test_paired_comparison_of_bhattacharyya_is_the_mean_difference():
    preserving, swapping = _rows(80, seed=6, keep=0.9), _rows(80, seed=6, keep=0.1)
    entry = compare_runs(swapping, preserving, CLASSES, ["bhattacharyya"], n_bootstrap=300, seed=1)["bhattacharyya"]

    def direct(rows):
        return np.array(
            [sum(np.sqrt(r["source"]["probs"][c] * r["target"]["probs"][c]) for c in CLASSES) for r in rows]
        )

    assert entry["diff"] == pytest.approx((direct(preserving) - direct(swapping)).mean(), abs=1e-12)
    assert entry["ci_low"] > 0 and entry["p_value"] < 0.05
    corpus = compute_corpus(preserving, CLASSES, n_bootstrap=200, seed=2)["bhattacharyya"]
    assert corpus["value"] == pytest.approx(direct(preserving).mean(), abs=1e-12)


def test_expected_agreement_refuses_bad_input():
    with pytest.raises(ValueError):
        expected_agreement([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(MetricUndefined):
        expected_agreement([np.nan, 1.0], [0.5, 0.5])


def test_corpus_expected_agreement_is_the_mean_with_a_bootstrap_interval():
    rows = _rows(120, seed=3, keep=0.6)
    entry = compute_corpus(rows, CLASSES, n_bootstrap=300, seed=5)["expected_agreement"]
    values = _direct(rows)
    assert entry["value"] == pytest.approx(values.mean(), abs=1e-12) and entry["n"] == 120
    # the same percentile bootstrap over pairs, computed directly
    rng = np.random.default_rng(5)
    means = [values[rng.integers(0, values.size, values.size)].mean() for _ in range(300)]
    low, high = np.percentile(means, [2.5, 97.5])
    assert entry["ci_low"] < values.mean() < entry["ci_high"]
    assert entry["ci_high"] - entry["ci_low"] == pytest.approx(high - low, rel=0.25)


def test_paired_comparison_of_expected_agreement_is_the_mean_difference():
    preserving, swapping = _rows(80, seed=4, keep=0.9), _rows(80, seed=4, keep=0.1)
    entry = compare_runs(swapping, preserving, CLASSES, ["expected_agreement", "epr"], n_bootstrap=300, seed=1)
    diff = _direct(preserving) - _direct(swapping)
    assert entry["expected_agreement"]["diff"] == pytest.approx(diff.mean(), abs=1e-12)
    assert entry["expected_agreement"]["ci_low"] > 0 and entry["expected_agreement"]["p_value"] < 0.05


def test_every_catalogue_metric_is_in_the_corpus_and_the_schema():
    report_corpus = compute_corpus(_rows(10, seed=0, keep=0.5), CLASSES, n_bootstrap=0)
    schema = report_schema()
    corpus_schema = schema["properties"]["corpus"]
    pair_schema = schema["$defs"]["pair"]["properties"]
    for m in CATALOGUE:
        assert m.name in report_corpus, f"{m.name} missing from compute_corpus"
        assert m.name in corpus_schema["required"] and m.name in corpus_schema["properties"], (
            f"{m.name} missing from the report schema's corpus"
        )
        if m.kind == "pair":
            assert m.name in pair_schema, f"pair metric {m.name} missing from the schema's pair rows"
    assert set(METRICS) == set(BY_NAME) and set(HEADLINE_METRICS) <= set(METRICS)
    assert "expected_agreement" in PAIR_METRICS and "expected_agreement" in HEADLINE_METRICS
    assert "bhattacharyya" in PAIR_METRICS and "bhattacharyya_side" in SIDE_READING_METRICS


def test_every_catalogue_metric_has_a_table_row_and_a_gate():
    from emopres_client.gates import parse_gate
    from worker.render.html_sections import METRIC_GROUPS

    shown = [name for _, names in METRIC_GROUPS for name in names]
    assert sorted(shown) == sorted(METRICS) and [g for g, _ in METRIC_GROUPS] == list(SECTIONS)
    for name in METRICS:
        assert parse_gate(f"{name}>=0", METRICS).metric == name


def test_the_pipeline_writes_every_pair_metric(files_and_head):
    from emopres_client.pairs import PairSpec
    from models.registry import ProfileSpec
    from worker.engine.pipeline import Evaluator

    root, head = files_and_head
    with Evaluator(ProfileSpec(), head, n_jobs=1) as evaluator:
        rows, failures = evaluator.evaluate_pairs(
            [PairSpec("p1", "a.wav", "b.wav"), PairSpec("p2", "a.wav", "a.wav")], lambda relative: str(root / relative)
        )
    assert not failures
    for row in rows:
        per_file = [name for name in PAIR_METRICS if name not in SIDE_READING_METRICS]
        assert all(name in row for name in per_file)
        assert not any(name in row for name in SIDE_READING_METRICS)  # those need the whole job: at report time
        direct = sum(row["source"]["probs"][c] * row["target"]["probs"][c] for c in head.classes)
        assert row["expected_agreement"] == pytest.approx(direct, abs=1e-9)
        direct = sum(np.sqrt(row["source"]["probs"][c] * row["target"]["probs"][c]) for c in head.classes)
        assert row["bhattacharyya"] == pytest.approx(direct, abs=1e-9)


@pytest.fixture
def files_and_head(write_wav, tmp_path):
    from models.ser.head import SHIPPED_LITE_HEAD, SerHead

    for i, name in enumerate(["a", "b"]):
        write_wav(f"{name}.wav", seconds=2.0 + i * 0.3, seed=i, pitch=110 + 30 * i)
    return tmp_path, SerHead.load(SHIPPED_LITE_HEAD)  # a trained head: soft probabilities, not one-hot
