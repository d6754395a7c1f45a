"""The metric catalogue: every corpus and pair metric of the report, declared once.

Each :class:`Metric` says what the metric is called (``name``: the key in the report's
``corpus`` object and, for pair metrics, in each pair row), how people see it (``label`` in tables,
``title`` on plot axes), its ``kind`` (which pairs it is computed from, see :data:`KINDS`), whether
it is a headline metric, which model's output it needs, and its ``statistic``: the corpus value on
a subset of pairs. The bootstrap CI and the paired comparison of two runs both resample that same
statistic (over pairs, or over groups with ``use_groups``), so declaring the statistic declares
them too.

The pipeline, the corpus metrics, the report and its schema, the plots, the HTML page, ``validate``,
the listings and the CI gates all read this module; adding a metric is its function (in
:mod:`core.metrics` or :mod:`core.similarity`) plus one entry below (plus its model, if new).
Definitions: docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.metrics import (
    bar_codes,
    bhattacharyya,
    chance_bhattacharyya,
    chance_expected_agreement,
    chance_prediction_agreement,
    epr_codes,
    expected_agreement,
    kappa_codes,
    spearman_finite,
    ua_codes,
    wa_codes,
)

__all__ = [
    "Metric",
    "Columns",
    "KINDS",
    "READINGS",
    "SECTIONS",
    "CATALOGUE",
    "BY_NAME",
    "METRICS",
    "HEADLINE_METRICS",
    "PAIR_METRICS",
    "LABEL_METRICS",
    "RANK_METRICS",
    "VALIDATED_METRICS",
    "SIDE_READING_METRICS",
    "SIDE_PRED",
    "SIDE_PROBS",
    "metric",
    "Readings",
    "PRIMARY_METRIC",
    "PRIMARY_FALLBACK",
    "PRESERVED",
    "READ_BETTER",
]

Stat = Callable[[np.ndarray], float]  # indices into the subset -> the statistic on those pairs

# kind -> which pairs a metric of that kind is computed from
KINDS = {
    "label": "pairs with a gold label (needs labels)",
    "prediction": "every pair (SER predictions only, no labels)",
    "pair": "pairs with a per-pair value (the mean of that value; the value is a field of each pair row)",
    "rank": "pairs with both the source and the target utterance value (Spearman between the sides)",
}


# which SER reading a SER metric is computed from (worker/engine/side_reading.py, docs/metrics.md)
READINGS = {
    "absolute": "every utterance read on its own by the SER head (per-file predictions)",
    "side": "every side of the job (all sources, all targets) z-scored with its own statistics, then read by the "
    "per-side SER head: immune to a shift the whole side shares (channel, language), blind to it too",
}

# the sections tables group metrics in, in order; a metric's section defaults to its kind's
SECTIONS = ("SER", "similarity", "prosody")
_KIND_SECTION = {"label": "SER", "prediction": "SER", "pair": "similarity", "rank": "prosody"}


SER = "SER head"
# the fields of a report row's side that hold the side reading (set by worker/engine/side_reading.py)
SIDE_PRED, SIDE_PROBS = "pred_side", "probs_side"


@dataclass(frozen=True)
class Columns:
    """What a statistic reads, restricted to the pairs the metric is computed from (integer class codes)."""

    n_classes: int
    gold: np.ndarray  # -1 = unlabelled (never, for kind "label")
    pred_s: np.ndarray
    pred_t: np.ndarray
    value: np.ndarray | None = None  # kind "pair": the per-pair values
    source: np.ndarray | None = None  # kind "rank": the source and target utterance values
    target: np.ndarray | None = None


@dataclass(frozen=True)
class Readings:
    """One SER reading (absolute or side) of both sides of a job's pairs: what a chance level is computed from."""

    n_classes: int
    pred_s: np.ndarray  # int codes
    pred_t: np.ndarray
    probs_s: np.ndarray  # (n, n_classes)
    probs_t: np.ndarray


Chance = Callable[[Readings], float]
PRESERVED = "higher = more preserved"
NEEDS_PAPER = "needs the paper profile ({model})"  # why a lite report has no value for a metric of `model`
READ_BETTER = "higher = read better (not a preservation metric)"


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # short: tables, summaries
    title: str  # long: plot axes, listings
    kind: str  # a key of KINDS
    headline: bool
    model: str  # whose output it needs
    statistic: Callable[[Columns], Stat]
    # kind "pair": computed from the two sides' SER probabilities (p_s, p_t) -> value of its reading (by the
    # pipeline, or for the side reading by worker/engine/side_reading.py); None = the profile's pair_scores computes it
    # from its model's features
    from_probabilities: Callable[[np.ndarray, np.ndarray], float] | None = None
    utterance_field: str | None = None  # kind "rank": the per-utterance field compared
    noun: str | None = None  # kind "rank": plural noun used in reasons ("pause rates")
    validated: bool = True  # `emopres validate` expects it to follow the simulated preservation rate
    section: str = ""  # one of SECTIONS; "" = its kind's
    reading: str = "absolute"  # a key of READINGS: which SER predictions (and per-pair field) it reads
    direction: str = PRESERVED  # how to read a larger value
    # the value under independent readings of the two sides (None: not defined for this metric)
    chance: Chance | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name!r}: unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.kind == "rank" and not (self.utterance_field and self.noun):
            raise ValueError(f"metric {self.name!r}: a rank metric needs utterance_field and noun")
        if self.from_probabilities is not None and self.kind != "pair":
            raise ValueError(f"metric {self.name!r}: only pair metrics are computed per pair")
        if self.reading not in READINGS:
            raise ValueError(f"metric {self.name!r}: unknown reading {self.reading!r}; known: {', '.join(READINGS)}")
        if self.reading != "absolute" and (self.model != SER or self.kind == "rank"):
            raise ValueError(f"metric {self.name!r}: only SER metrics have a side reading (computed per job)")
        if not self.section:
            object.__setattr__(self, "section", _KIND_SECTION[self.kind])
        if self.section not in SECTIONS:
            raise ValueError(f"metric {self.name!r}: unknown section {self.section!r}; known: {', '.join(SECTIONS)}")


# ---------------------------------------------------------------------------------------------- statistics


def _bar(c: Columns) -> Stat:
    return lambda idx: bar_codes(c.gold[idx], c.pred_s[idx], c.pred_t[idx], c.n_classes)


def _ua(side: str) -> Callable[[Columns], Stat]:
    def make(c: Columns) -> Stat:
        pred = c.pred_s if side == "source" else c.pred_t
        return lambda idx: ua_codes(c.gold[idx], pred[idx], c.n_classes)

    return make


def _wa(side: str) -> Callable[[Columns], Stat]:
    def make(c: Columns) -> Stat:
        pred = c.pred_s if side == "source" else c.pred_t
        return lambda idx: wa_codes(c.gold[idx], pred[idx])

    return make


def _epr(c: Columns) -> Stat:
    return lambda idx: epr_codes(c.pred_s[idx], c.pred_t[idx])


def _kappa(c: Columns) -> Stat:
    return lambda idx: kappa_codes(c.pred_s[idx], c.pred_t[idx], c.n_classes)


def _present(array: np.ndarray | None, what: str) -> np.ndarray:
    if array is None:
        raise ValueError(f"this statistic reads the pairs' {what}, which the columns do not carry")
    return array


def _mean(c: Columns) -> Stat:
    value = _present(c.value, "values")
    return lambda idx: float(value[idx].mean())


def _spearman(noun: str) -> Callable[[Columns], Stat]:
    names = (f"source {noun}", f"target {noun}")

    def make(c: Columns) -> Stat:
        source, target = _present(c.source, "source values"), _present(c.target, "target values")
        return lambda idx: spearman_finite(source[idx], target[idx], names=names)

    return make


def _chance_epr(r: Readings) -> float:
    return chance_prediction_agreement(r.pred_s, r.pred_t, r.n_classes)


def _chance_expected_agreement(r: Readings) -> float:
    return chance_expected_agreement(r.probs_s, r.probs_t)


def _chance_bhattacharyya(r: Readings) -> float:
    return chance_bhattacharyya(r.probs_s, r.probs_t)


def _chance_kappa(r: Readings) -> float:
    return 0.0  # kappa is agreement beyond chance by construction


def _pair(name: str, label: str, title: str, model: str, *, headline: bool, **extra) -> Metric:
    return Metric(name, label, title, "pair", headline, model, _mean, **extra)


def _rank(name: str, label: str, title: str, field: str, noun: str) -> Metric:
    return Metric(
        name,
        label,
        title,
        "rank",
        True,
        "Silero VAD + syllable nuclei",
        _spearman(noun),
        utterance_field=field,
        noun=noun,
    )


# the report's order: corpus keys, summaries, tables and plots follow it
CATALOGUE: tuple[Metric, ...] = (
    Metric(
        "bar", "BAR (UA target / UA source)", "BAR: UA of the target over UA of the source", "label", True, SER, _bar
    ),
    Metric(
        "epr",
        "EPR (prediction agreement)",
        "EPR: share of pairs whose predictions agree",
        "prediction",
        True,
        SER,
        _epr,
        chance=_chance_epr,
    ),
    _pair(
        "expected_agreement",
        "expected agreement (SER probabilities)",
        "expected agreement: sum over classes of p_source * p_target",
        SER,
        headline=True,
        from_probabilities=expected_agreement,
        section="SER",
        chance=_chance_expected_agreement,
    ),
    _pair(
        "bhattacharyya",
        "Bhattacharyya coefficient (SER probabilities)",
        "Bhattacharyya coefficient: sum over classes of sqrt(p_source * p_target)",
        SER,
        headline=True,
        from_probabilities=bhattacharyya,
        section="SER",
        chance=_chance_bhattacharyya,
    ),
    Metric(
        "kappa",
        "Cohen's kappa",
        "Cohen's kappa of source and target predictions",
        "prediction",
        True,
        SER,
        _kappa,
        chance=_chance_kappa,
    ),
    Metric(
        "ua_source",
        "UA source",
        "UA (balanced accuracy) of the source side",
        "label",
        True,
        SER,
        _ua("source"),
        validated=False,
        direction=READ_BETTER,
    ),
    Metric(
        "ua_target",
        "UA target",
        "UA (balanced accuracy) of the target side",
        "label",
        True,
        SER,
        _ua("target"),
        direction=READ_BETTER,
    ),
    Metric(
        "wa_source",
        "WA source",
        "WA (accuracy) of the source side",
        "label",
        False,
        SER,
        _wa("source"),
        validated=False,
        direction=READ_BETTER,
    ),
    Metric(
        "wa_target",
        "WA target",
        "WA (accuracy) of the target side",
        "label",
        False,
        SER,
        _wa("target"),
        validated=False,
        direction=READ_BETTER,
    ),
    # the side reading of the same SER metrics (the lite profile's per-side head; READINGS)
    Metric(
        "bar_side",
        "BAR, side-normalised",
        "BAR of the side-normalised SER reading",
        "label",
        True,
        SER,
        _bar,
        reading="side",
    ),
    Metric(
        "epr_side",
        "EPR, side-normalised",
        "EPR of the side-normalised SER reading",
        "prediction",
        True,
        SER,
        _epr,
        reading="side",
        chance=_chance_epr,
    ),
    _pair(
        "expected_agreement_side",
        "expected agreement, side-normalised",
        "expected agreement of the side-normalised SER reading",
        SER,
        headline=True,
        from_probabilities=expected_agreement,
        section="SER",
        reading="side",
        chance=_chance_expected_agreement,
    ),
    _pair(
        "bhattacharyya_side",
        "Bhattacharyya coefficient, side-normalised",
        "Bhattacharyya coefficient of the side-normalised SER reading",
        SER,
        headline=True,
        from_probabilities=bhattacharyya,
        section="SER",
        reading="side",
        chance=_chance_bhattacharyya,
    ),
    Metric(
        "kappa_side",
        "Cohen's kappa, side-normalised",
        "Cohen's kappa of the side-normalised SER reading",
        "prediction",
        True,
        SER,
        _kappa,
        reading="side",
        chance=_chance_kappa,
    ),
    Metric(
        "ua_target_side",
        "UA target, side-normalised",
        "UA of the target side, side-normalised SER reading",
        "label",
        False,
        SER,
        _ua("target"),
        reading="side",
        direction=READ_BETTER,
    ),
    _pair("emo_sim", "emo-sim (frame)", "emo-sim (frame cosine, emotion2vec)", "emotion2vec", headline=True),
    _pair("emo_sim_utterance", "emo-sim (utterance)", "emo-sim, utterance cosine", "emotion2vec", headline=False),
    _pair(
        "acoustic_sim",
        "acoustic sim (frame)",
        "acoustic similarity (frame eGeMAPS LLD cosine)",
        "eGeMAPS LLD",
        headline=True,
    ),
    _pair(
        "acoustic_sim_utterance",
        "acoustic sim (utterance)",
        "acoustic similarity, utterance cosine",
        "eGeMAPS LLD",
        headline=False,
    ),
    _pair("va_sim", "va-sim", "va-sim (valence-arousal cosine)", "wav2vec2 valence-arousal", headline=True),
    _pair(
        "va_sim_utterance", "va-sim (utterance)", "va-sim, utterance cosine", "wav2vec2 valence-arousal", headline=False
    ),
    _pair("vsim", "Vsim", "Vsim (speaker embedding cosine)", "WavLM ECAPA-TDNN", headline=True),
    _pair("autopcp", "autoPCP", "autoPCP (1 = different, 5 = same)", "AutoPCP", headline=True),
    _rank("pause", "Pause (Spearman)", "Pause: Spearman of source and target pause rates", "pause_rate", "pause rates"),
    _rank("rate", "Rate (Spearman)", "Rate: Spearman of source and target speech rates", "speech_rate", "speech rates"),
)

# the preservation metric a CI gate should use (docs/validation.md, "The primary metric": chosen by the
# leave-one-corpus-out protocol among the agreement metrics and readings), and the one read when the job has no
# side reading (fewer than 20 distinct utterances a side, or no per-side head)
PRIMARY_METRIC = "bhattacharyya_side"
PRIMARY_FALLBACK = "bhattacharyya"

BY_NAME: dict[str, Metric] = {m.name: m for m in CATALOGUE}
assert len(BY_NAME) == len(CATALOGUE), "two catalogue entries share a name"


def metric(name: str) -> Metric:
    """The catalogue entry of ``name``; ValueError naming the known metrics otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def _names(keep: Callable[[Metric], bool]) -> tuple[str, ...]:
    return tuple(m.name for m in CATALOGUE if keep(m))


METRICS = _names(lambda m: True)
HEADLINE_METRICS = _names(lambda m: m.headline)
LABEL_METRICS = _names(lambda m: m.kind == "label")
PAIR_METRICS = _names(lambda m: m.kind == "pair")  # per-pair fields of the report rows
RANK_METRICS = _names(lambda m: m.kind == "rank")
VALIDATED_METRICS = _names(lambda m: m.validated)
SIDE_READING_METRICS = _names(lambda m: m.reading == "side")
