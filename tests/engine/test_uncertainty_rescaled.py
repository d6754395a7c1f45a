"""Fig. 2's uncertainty as nkululeko rescales it (issue 15, point 5), against scipy's entropy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy

from models.ser.head import entropy_uncertainty
from worker.render.uncertainty_rescaled import SCALE_LABEL, RescaleUndefined, rescaled_figure, rescaled_report


def _report(probabilities: np.ndarray) -> dict:
    """Pairs whose sides carry the report's default uncertainty (H / log K) of the given probabilities."""
    u = entropy_uncertainty(probabilities)
    n = len(probabilities) // 2
    return {
        "pairs": [
            {
                "pair_id": f"p{i}",
                "agree": bool(i % 2),
                "source": {"uncertainty": float(u[i]), "pred": "a"},
                "target": {"uncertainty": float(u[n + i]), "pred": "a" if i % 2 else "b"},
            }
            for i in range(n)
        ]
    }


def test_rescaled_entropy_is_nkululekos_formula_within_the_test_set():
    rng = np.random.default_rng(3)
    k = 5
    probabilities = rng.dirichlet(np.full(k, 0.7), size=24)
    report = _report(probabilities)
    rescaled, minimum = rescaled_report(report)
    h = entropy(probabilities, axis=1)  # natural log, scipy
    expected = (h - h.min()) / (np.log(k) - h.min())
    got = [p[side]["uncertainty"] for side in ("source", "target") for p in rescaled["pairs"]]
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert minimum == pytest.approx(h.min() / np.log(k))
    assert min(got) == pytest.approx(0.0) and max(got) <= 1.0
    # the default stays H / log K: the report itself is not changed
    assert report["pairs"][0]["source"]["uncertainty"] == pytest.approx(h[0] / np.log(k))


def test_rescaled_figure_is_labelled_and_undefined_when_every_utterance_is_uniform():
    rng = np.random.default_rng(4)
    spec, reason = rescaled_figure(_report(rng.dirichlet(np.ones(4), size=10)))
    assert reason is None and spec.name == "uncertainty_rescaled"
    assert spec.data["scale"] == SCALE_LABEL and "nkululeko" in spec.title
    assert min(spec.data["source_uncertainty"] + spec.data["target_uncertainty"]) == pytest.approx(0.0)
    spec, reason = rescaled_figure(_report(np.full((6, 4), 0.25)))
    assert spec is None and "maximum entropy" in reason
    with pytest.raises(RescaleUndefined):
        rescaled_report({"pairs": []})
