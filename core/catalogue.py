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

from core.metrics import bar_codes, epr_codes, expected_agreement, kappa_codes, spearman_finite, ua_codes, wa_codes

__all__ = ["Metric", "Columns", "KINDS", "SECTIONS", "CATALOGUE", "BY_NAME", "METRICS", "HEADLINE_METRICS", "PAIR_METRICS",
           "LABEL_METRICS", "RANK_METRICS", "VALIDATED_METRICS", "metric"]

Stat = Callable[[np.ndarray], float]  # indices into the subset -> the statistic on those pairs

# kind -> which pairs a metric of that kind is computed from
KINDS = {
    "label": "pairs with a gold label (needs labels)",
    "prediction": "every pair (SER predictions only, no labels)",
    "pair": "pairs with a per-pair value (the mean of that value; the value is a field of each pair row)",
    "rank": "pairs with both the source and the target utterance value (Spearman between the sides)",
}


# the sections tables group metrics in, in order; a metric's section defaults to its kind's
SECTIONS = ("SER", "similarity", "prosody")
_KIND_SECTION = {"label": "SER", "prediction": "SER", "pair": "similarity", "rank": "prosody"}


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
class Metric:
    name: str
    label: str  # short: tables, summaries
    title: str  # long: plot axes, listings
    kind: str  # a key of KINDS
    headline: bool
    model: str  # whose output it needs
    statistic: Callable[[Columns], Stat]
    # kind "pair": computed by the pipeline from the two sides' SER probabilities (p_s, p_t) -> value;
    # None = the profile's pair_scores computes it from its model's features
    from_probabilities: Callable[[np.ndarray, np.ndarray], float] | None = None
    utterance_field: str | None = None  # kind "rank": the per-utterance field compared
    noun: str | None = None  # kind "rank": plural noun used in reasons ("pause rates")
    validated: bool = True  # `emopres validate` expects it to follow the simulated preservation rate
    section: str = ""  # one of SECTIONS; "" = its kind's

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name!r}: unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.kind == "rank" and not (self.utterance_field and self.noun):
            raise ValueError(f"metric {self.name!r}: a rank metric needs utterance_field and noun")
        if self.from_probabilities is not None and self.kind != "pair":
            raise ValueError(f"metric {self.name!r}: only pair metrics are computed per pair")
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


def _mean(c: Columns) -> Stat:
    return lambda idx: float(c.value[idx].mean())


def _spearman(noun: str) -> Callable[[Columns], Stat]:
    names = (f"source {noun}", f"target {noun}")

    def make(c: Columns) -> Stat:
        return lambda idx: spearman_finite(c.source[idx], c.target[idx], names=names)
    return make


def _pair(name: str, label: str, title: str, model: str, *, headline: bool, **extra) -> Metric:
    return Metric(name, label, title, "pair", headline, model, _mean, **extra)


def _rank(name: str, label: str, title: str, field: str, noun: str) -> Metric:
    return Metric(name, label, title, "rank", True, "Silero VAD + syllable nuclei", _spearman(noun),
                  utterance_field=field, noun=noun)


SER = "SER head"
# the report's order: corpus keys, summaries, tables and plots follow it
CATALOGUE: tuple[Metric, ...] = (
    Metric("bar", "BAR (UA target / UA source)", "BAR: UA of the target over UA of the source", "label", True, SER,
           _bar),
    Metric("epr", "EPR (prediction agreement)", "EPR: share of pairs whose predictions agree", "prediction", True,
           SER, _epr),
    _pair("expected_agreement", "expected agreement (SER probabilities)",
          "expected agreement: sum over classes of p_source * p_target", SER, headline=True,
          from_probabilities=expected_agreement, section="SER"),
    Metric("kappa", "Cohen's kappa", "Cohen's kappa of source and target predictions", "prediction", True, SER,
           _kappa),
    Metric("ua_source", "UA source", "UA (balanced accuracy) of the source side", "label", True, SER,
           _ua("source"), validated=False),
    Metric("ua_target", "UA target", "UA (balanced accuracy) of the target side", "label", True, SER, _ua("target")),
    Metric("wa_source", "WA source", "WA (accuracy) of the source side", "label", False, SER, _wa("source"),
           validated=False),
    Metric("wa_target", "WA target", "WA (accuracy) of the target side", "label", False, SER, _wa("target"),
           validated=False),
    _pair("emo_sim", "emo-sim (frame)", "emo-sim (frame cosine, emotion2vec)", "emotion2vec", headline=True),
    _pair("emo_sim_utterance", "emo-sim (utterance)", "emo-sim, utterance cosine", "emotion2vec", headline=False),
    _pair("acoustic_sim", "acoustic sim (frame)", "acoustic similarity (frame eGeMAPS LLD cosine)", "eGeMAPS LLD",
          headline=True),
    _pair("acoustic_sim_utterance", "acoustic sim (utterance)", "acoustic similarity, utterance cosine",
          "eGeMAPS LLD", headline=False),
    _pair("va_sim", "va-sim", "va-sim (valence-arousal cosine)", "wav2vec2 valence-arousal", headline=True),
    _pair("va_sim_utterance", "va-sim (utterance)", "va-sim, utterance cosine", "wav2vec2 valence-arousal",
          headline=False),
    _pair("vsim", "Vsim", "Vsim (speaker embedding cosine)", "WavLM ECAPA-TDNN", headline=True),
    _pair("autopcp", "autoPCP", "autoPCP (1 = different, 5 = same)", "AutoPCP", headline=True),
    _rank("pause", "Pause (Spearman)", "Pause: Spearman of source and target pause rates", "pause_rate",
          "pause rates"),
    _rank("rate", "Rate (Spearman)", "Rate: Spearman of source and target speech rates", "speech_rate",
          "speech rates"),
)

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
