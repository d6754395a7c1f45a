"""Fig. 2 with uncertainty as nkululeko rescales it: entropy rescaled within the test set.

emopres reports each utterance's SER uncertainty as H / log K (entropy of the class probabilities
over its maximum; the report's ``uncertainty``, and the default Fig. 2). nkululeko's plot instead
rescales the entropy within the test set, (H - min H) / (log K - min H), so the most certain
utterance of the set sits at 0. With u = H / log K that is (u - min u) / (1 - min u). The minimum
is taken over every utterance of the test set, source and target sides together, so both axes
share one scale (the diagonal still means "as uncertain as the source").
"""

from __future__ import annotations

import copy
import math

SCALE_LABEL = "(H - min H) / (log K - min H), min over this test set"


class RescaleUndefined(ValueError):
    """Every utterance is at maximum entropy (min H = log K): nothing to rescale."""


def rescale(values: list[float], minimum: float) -> list[float]:
    if minimum >= 1.0:
        raise RescaleUndefined("every utterance has maximum entropy (uniform probabilities)")
    return [(value - minimum) / (1.0 - minimum) for value in values]


def _uncertainties(report: dict) -> list[float]:
    out = []
    for pair in report.get("pairs") or []:
        for side in ("source", "target"):
            value = (pair.get(side) or {}).get("uncertainty")
            if value is not None and math.isfinite(value):
                out.append(float(value))
    return out


def rescaled_report(report: dict) -> tuple[dict, float]:
    """A copy of ``report`` whose per-side ``uncertainty`` is rescaled within its pairs; and min H / log K."""
    values = _uncertainties(report)
    if not values:
        raise RescaleUndefined("no pair has an uncertainty")
    minimum = min(values)
    out = copy.deepcopy(report)
    for pair in out.get("pairs") or []:
        for side in ("source", "target"):
            entry = pair.get(side) or {}
            value = entry.get("uncertainty")
            if value is not None and math.isfinite(value):
                entry["uncertainty"] = rescale([float(value)], minimum)[0]
    return out, minimum


def rescaled_figure(report: dict):
    """The Fig. 2 plot spec (worker.render.plots) on rescaled uncertainties, labelled as such; None with a reason."""
    from worker.render.plots import PlotSpec, uncertainty_plot

    try:
        rescaled, minimum = rescaled_report(report)
    except RescaleUndefined as error:
        return None, str(error)
    specs: list[PlotSpec] = []
    skipped: dict[str, str] = {}
    uncertainty_plot(
        rescaled,
        specs,
        skipped,
        name="uncertainty_rescaled",
        scale="entropy rescaled in the test set",
        subtitle="\nas nkululeko: (H - min H) / (log K - min H)",
    )
    if not specs:
        return None, skipped.get("uncertainty_rescaled", "nothing to draw")
    spec = specs[0]
    spec.data["scale"] = SCALE_LABEL
    spec.data["min_normalised_entropy"] = minimum
    return spec, None
