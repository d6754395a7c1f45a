"""How far a report can be trusted: its ``summary`` object (docs/metrics.md, "Summary").

* ``primary``: the one preservation number a CI gate should read (core.catalogue.PRIMARY_METRIC, or its
  fallback when the job has no side reading), with its CI, its chance level and its direction.
* ``ser_health``: per SER reading and side, how well the SER head read that side: UA against chance when the
  pairs carry gold labels; always, the share of the most predicted class and the entropy of the predicted
  classes. A target side read near chance looks like poor preservation: this says which it is.
* ``metrics``: each corpus metric's direction and, for the agreement metrics, its chance level (the value
  under independent readings of the two sides, from the job's own readings).
* ``warnings``: ``{"code", "side", "message"}`` for what makes the numbers weak (thresholds below).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from core.catalogue import (
    BY_NAME,
    CATALOGUE,
    PRIMARY_FALLBACK,
    PRIMARY_METRIC,
    READINGS,
    SIDE_PRED,
    SIDE_PROBS,
    Readings,
)
from core.metrics import MetricUndefined

SIDES = ("source", "target")
# A side is read "near chance" when its UA covers less than this share of the way from chance (1 / the number of
# gold classes) to perfect: (UA - chance) / (1 - chance) < NEAR_CHANCE_SHARE. A share, not a multiple of chance,
# so that a job with two emotions (chance 0.5) is judged like one with seven. Chosen on selection data
# (models/artifacts/ser_lite/MODEL_CARD.md): corpora the head never heard, their non-test part, reached shares of
# 0.07-0.17 (RAVDESS 0.262, JVNV 0.254, EmoDB 0.225, ASED 0.332); corpora it was trained on, 0.30 and more
# (EmoDB test 0.418 is the lowest).
NEAR_CHANCE_SHARE = 0.2
# A side is "collapsed" when one class takes more than this share of its predictions, and (with labels) more
# than twice that class's share of the gold labels: a reader that puts most utterances in one class.
COLLAPSED_TOP_SHARE = 0.6
# Intervals from fewer pairs, or resampled from fewer groups, are too wide or too coarse to decide much.
MIN_PAIRS = 30
MIN_GROUPS = 10
READING_FIELDS = {"absolute": ("pred", "probs"), "side": (SIDE_PRED, SIDE_PROBS)}


def _readings(pairs: list[dict], classes: list[str], reading: str) -> Readings | None:
    """One reading of both sides as codes and probability matrices (None when no pair carries it)."""
    pred_field, probs_field = READING_FIELDS[reading]
    rows = [p for p in pairs if all(pred_field in p[side] and probs_field in p[side] for side in SIDES)]
    if not rows:
        return None
    lookup = {c: i for i, c in enumerate(classes)}

    def codes(side: str) -> np.ndarray:
        return np.array([lookup[row[side][pred_field]] for row in rows], np.int64)

    def probs(side: str) -> np.ndarray:
        matrix = np.zeros((len(rows), len(classes)))
        for i, row in enumerate(rows):
            for name, p in row[side][probs_field].items():
                matrix[i, lookup[name]] = p
        return matrix

    return Readings(len(classes), codes("source"), codes("target"), probs("source"), probs("target"))


def _gold(pairs: list[dict], classes: list[str]) -> np.ndarray | None:
    lookup = {c: i for i, c in enumerate(classes)}
    labels = [p.get("label") for p in pairs]
    if not any(label not in (None, "") for label in labels):
        return None
    return np.array([lookup[label] if label not in (None, "") else -1 for label in labels], np.int64)


def side_health(pred: np.ndarray, gold: np.ndarray | None, classes: list[str]) -> dict:
    """How one side was read: UA against chance (labelled pairs), the top class's share, the normalised entropy
    of the predicted classes (1 = every class equally often, 0 = one class)."""
    shares = np.bincount(pred, minlength=len(classes)) / pred.size
    top = int(np.argmax(shares))
    nonzero = shares[shares > 0]
    entropy = float((nonzero * -np.log(nonzero)).sum() / math.log(len(classes))) if len(classes) > 1 else 0.0
    health: dict[str, Any] = {
        "n": int(pred.size),
        "top_class": classes[top],
        "top_class_share": float(shares[top]),
        "entropy": entropy,
        "ua": None,
        "ua_chance": None,
        "gold_top_class_share": None,
    }
    if gold is not None and (gold >= 0).any():
        labelled = gold >= 0
        y, p = gold[labelled], pred[labelled]
        support = np.bincount(y, minlength=len(classes))
        present = support > 0
        hits = np.bincount(y[y == p], minlength=len(classes))
        health["ua"] = float(np.mean(hits[present] / support[present]))
        health["ua_chance"] = 1.0 / int(present.sum())
        health["gold_top_class_share"] = float(support[top] / y.size)
    return health


def near_chance_bound(chance: float) -> float:
    """The UA below which a side with this chance level is read near chance."""
    return chance + NEAR_CHANCE_SHARE * (1.0 - chance)


def _health_warnings(reading: str, side: str, health: dict) -> list[dict]:
    warnings = []
    where = f"the {side} side ({reading} SER reading)"
    if health["ua"] is not None and health["ua"] < near_chance_bound(health["ua_chance"]):
        warnings.append(
            {
                "code": "near_chance",
                "side": side,
                "message": (
                    f"{where} is read near chance: UA {health['ua']:.3f} against a chance level of "
                    f"{health['ua_chance']:.3f} (below {near_chance_bound(health['ua_chance']):.3f}); a low "
                    "agreement here may be the "
                    "SER head failing on this speech, not lost emotion"
                ),
            }
        )
    gold_share = health["gold_top_class_share"]
    if health["top_class_share"] > COLLAPSED_TOP_SHARE and (
        gold_share is None or health["top_class_share"] > 2 * gold_share
    ):
        warnings.append(
            {
                "code": "collapsed",
                "side": side,
                "message": (
                    f"{where} collapsed onto one class: {health['top_class_share']:.0%} of its utterances read as "
                    f"'{health['top_class']}'"
                    + (f" ({gold_share:.0%} of the gold labels)" if gold_share is not None else "")
                    + "; agreement metrics then measure how often the other side says the same"
                ),
            }
        )
    return warnings


def _chances(readings: dict[str, Readings | None]) -> dict[str, float | None]:
    out = {}
    for m in CATALOGUE:
        if m.chance is None or readings.get(m.reading) is None:
            continue
        try:
            out[m.name] = float(m.chance(readings[m.reading]))
        except (MetricUndefined, ValueError):
            out[m.name] = None
    return out


def _primary(corpus: dict, chances: dict) -> tuple[dict, list[dict]]:
    name, warnings = PRIMARY_METRIC, []
    entry = corpus.get(name) or {}
    if entry.get("value") is None:
        warnings.append(
            {
                "code": "primary_fallback",
                "side": None,
                "message": (
                    f"the primary metric {name} is not available ({entry.get('reason') or 'not computed'}); "
                    f"the summary reads {PRIMARY_FALLBACK} instead (the absolute SER reading)"
                ),
            }
        )
        name = PRIMARY_FALLBACK
        entry = corpus.get(name) or {}
    m = BY_NAME[name]
    primary = {
        "metric": name,
        "label": m.label,
        "direction": m.direction,
        "chance": chances.get(name),
        **{key: entry.get(key) for key in ("value", "ci_low", "ci_high", "n", "reason")},
    }
    if primary["value"] is None:
        warnings.append(
            {
                "code": "no_primary",
                "side": None,
                "message": f"no primary preservation number: {entry.get('reason') or 'not computed'}",
            }
        )
    return primary, warnings


def _size_warnings(corpus: dict) -> list[dict]:
    warnings = []
    n = int(corpus.get("n_pairs") or 0)
    if 0 < n < MIN_PAIRS:
        warnings.append(
            {
                "code": "few_pairs",
                "side": None,
                "message": (
                    f"only {n} pairs were evaluated: intervals are wide (at least {MIN_PAIRS} are needed for them to "
                    "separate systems that keep emotion from systems that lose it)"
                ),
            }
        )
    boot = corpus.get("bootstrap") or {}
    groups = boot.get("n_groups")
    if boot.get("unit") == "group" and groups is not None and groups < MIN_GROUPS:
        warnings.append(
            {
                "code": "few_groups",
                "side": None,
                "message": (f"the intervals resample {groups} groups: with fewer than {MIN_GROUPS} they are coarse"),
            }
        )
    return warnings


def summarise(corpus: dict, pairs: list[dict]) -> dict:
    """The report's ``summary`` object from its ``corpus`` object and its pair rows."""
    classes = list(corpus.get("ser", {}).get("classes") or [])
    readings = {reading: _readings(pairs, classes, reading) if classes else None for reading in READINGS}
    gold = _gold(pairs, classes) if classes else None
    health: dict[str, dict | None] = {}
    warnings: list[dict] = []
    for reading, read in readings.items():
        if read is None:
            health[reading] = None
            continue
        pairs_read = [p for p in pairs if READING_FIELDS[reading][0] in p["source"]]
        reading_gold = _gold(pairs_read, classes) if gold is not None else None
        health[reading] = {
            side: side_health(read.pred_s if side == "source" else read.pred_t, reading_gold, classes) for side in SIDES
        }
        for side in SIDES:
            warnings += _health_warnings(reading, side, health[reading][side])
    chances = _chances(readings)
    primary, primary_warnings = _primary(corpus, chances)
    return {
        "primary": primary,
        "ser_health": health,
        "metrics": {
            m.name: {"direction": m.direction, "chance": chances.get(m.name)} for m in CATALOGUE if m.name in corpus
        },
        "warnings": primary_warnings + warnings + _size_warnings(corpus),
    }
