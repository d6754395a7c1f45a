"""Corpus metrics and run comparison from per-pair report rows (pure, no I/O).

:func:`compute_corpus` builds the report's ``"corpus"`` object from the succeeded pairs' rows
(docs/metrics.md); :func:`compare_runs` compares two runs that share pair ids with a
paired bootstrap.

Every scalar metric is reported as ``{"value", "ci_low", "ci_high", "n", "reason"}``:

* ``value`` null -> ``reason`` says why (no gold labels, no pair had a value, UA_source = 0,
  p_e = 1, constant rates, ...); ``ci_low``/``ci_high`` are then null too.
* ``value`` set but the bootstrap could not produce an interval (fewer than half of the
  resamples defined, e.g. kappa on a handful of pairs) -> ``ci_low``/``ci_high`` null and
  ``reason`` starts with ``"confidence interval undefined: "``.
* otherwise ``reason`` is null. (``n_bootstrap=0`` switches CIs off: null CIs, null reason.)

``n`` is the number of pairs the value was computed from (labelled pairs for label metrics,
pairs with a value for similarities, pairs with both rates for Pause/Rate).

Each metric is bootstrapped over the pairs it was computed from (or over their groups), with
the same seed for every metric, so reports are reproducible. Which metrics exist, which pairs each
is computed from and its statistic come from the catalogue (:mod:`core.catalogue`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.bootstrap import bootstrap_ci, paired_bootstrap
from core.catalogue import CATALOGUE, METRICS, SIDE_PRED, Columns, Metric
from core.catalogue import metric as catalogue_entry
from core.metrics import MetricUndefined, confusion, per_emotion_preservation, ua_codes, wa_codes
from emopres_client.numbers import finite_or_none

__all__ = ["NO_PAIRS_REASON", "compute_corpus", "compare_runs"]

NO_PAIRS_REASON = "no successfully evaluated pairs"
NO_LABELS_REASON = "no gold labels"
NO_VALUE_REASON = "no pair had a value"
NO_SIDE_READING_REASON = "no pair has a side-normalised SER reading"
RUN = "{run}"  # in compare_runs' reasons: replaced by the name of the run the reason is about
CI_REASON_PREFIX = "confidence interval undefined: "


# --------------------------------------------------------------------------------------------
# encoding


def _missing_label(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "")


def _float_or_nan(v: Any) -> float:
    number = finite_or_none(v)
    return np.nan if number is None else number


def _side(pair: dict, side: str) -> dict:
    s = pair.get(side)
    if not isinstance(s, dict):
        raise ValueError(f"pair {pair.get('pair_id')!r} has no {side!r} object")
    return s


def _extended_classes(classes: Sequence[str], pair_lists: Sequence[Sequence[dict]]) -> list:
    """``classes`` followed by any other predicted/gold label seen (sorted), so that a gold
    label the model cannot predict still counts as a class with recall 0."""
    cls = list(classes)
    if len(set(cls)) != len(cls):
        raise ValueError("classes contains duplicates")
    known = set(cls)
    extra: set = set()
    for pairs in pair_lists:
        for p in pairs:
            for v in (_side(p, "source").get("pred"), _side(p, "target").get("pred")):
                if v is None:
                    raise ValueError(f"pair {p.get('pair_id')!r} lacks a prediction")
                if v not in known:
                    extra.add(v)
            for v in (_side(p, "source").get(SIDE_PRED), _side(p, "target").get(SIDE_PRED)):
                if v is not None and v not in known:
                    extra.add(v)
            lab = p.get("label")
            if not _missing_label(lab) and lab not in known:
                extra.add(lab)
    return cls + sorted(extra, key=str)


@dataclass
class _Encoded:
    n: int
    n_classes: int
    pred_s: np.ndarray  # int codes
    pred_t: np.ndarray
    pred_s_side: np.ndarray  # int codes of the side reading, -1 = the pair has none
    pred_t_side: np.ndarray
    gold: np.ndarray  # int codes, -1 = unlabelled
    values: dict[str, np.ndarray]  # metric / rate field -> float array, NaN = null
    groups: list | None  # one id per pair, or None when some pair lacks one


def _encode(pairs: Sequence[dict], classes_ext: list) -> _Encoded:
    lookup = {c: i for i, c in enumerate(classes_ext)}
    n = len(pairs)
    pred_s = np.fromiter((lookup[_side(p, "source")["pred"]] for p in pairs), np.int64, n)
    pred_t = np.fromiter((lookup[_side(p, "target")["pred"]] for p in pairs), np.int64, n)
    side_codes = [
        np.fromiter((lookup.get(_side(p, side).get(SIDE_PRED), -1) for p in pairs), np.int64, n)
        for side in ("source", "target")
    ]
    gold = np.fromiter(
        (-1 if _missing_label(p.get("label")) else lookup[p["label"]] for p in pairs),
        np.int64,
        n,
    )
    values: dict[str, np.ndarray] = {}
    for m in CATALOGUE:
        if m.kind == "pair":
            values[m.name] = np.fromiter((_float_or_nan(p.get(m.name)) for p in pairs), np.float64, n)
        elif m.kind == "rank":
            for side in ("source", "target"):
                values[f"{side}.{m.utterance_field}"] = np.fromiter(
                    (_float_or_nan(_side(p, side).get(m.utterance_field)) for p in pairs), np.float64, n
                )
    raw_groups = [p.get("group") for p in pairs]
    groups = None
    if n and all(not _missing_label(g) for g in raw_groups):
        groups = [str(g) for g in raw_groups]
    return _Encoded(n, len(classes_ext), pred_s, pred_t, *side_codes, gold, values, groups)


# --------------------------------------------------------------------------------------------
# per-metric statistics

Stat = Callable[[np.ndarray], float]


@dataclass
class _Spec:
    mask: np.ndarray  # which pairs the metric is computed from
    make: Callable[[np.ndarray], Stat]  # subset indices -> statistic over that subset
    empty_reason: str  # reason when the mask selects nothing


def _mask_and_reason(enc: _Encoded, m: Metric, unavailable: dict[str, str]) -> tuple[np.ndarray, str]:
    """Which pairs metric ``m`` is computed from (by its kind) and the reason when there are none."""
    read = (enc.pred_s_side >= 0) & (enc.pred_t_side >= 0) if m.reading == "side" else np.ones(enc.n, dtype=bool)
    if m.reading == "side" and not read.any():
        return read, unavailable.get(m.name, NO_SIDE_READING_REASON)
    if m.kind == "label":
        return (enc.gold >= 0) & read, unavailable.get(m.name, NO_LABELS_REASON)
    if m.kind == "prediction":
        return read, NO_PAIRS_REASON
    if m.kind == "pair":
        return np.isfinite(enc.values[m.name]), unavailable.get(m.name, NO_VALUE_REASON)
    xs, xt = enc.values[f"source.{m.utterance_field}"], enc.values[f"target.{m.utterance_field}"]
    return np.isfinite(xs) & np.isfinite(xt), unavailable.get(m.name, f"no pair had both source and target {m.noun}")


def _spec(enc: _Encoded, name: str, unavailable: dict[str, str]) -> _Spec:
    m = catalogue_entry(name)
    mask, empty_reason = _mask_and_reason(enc, m, unavailable)

    pred_s, pred_t = (enc.pred_s_side, enc.pred_t_side) if m.reading == "side" else (enc.pred_s, enc.pred_t)

    def make(sub: np.ndarray) -> Stat:
        columns = Columns(
            enc.n_classes,
            enc.gold[sub],
            pred_s[sub],
            pred_t[sub],
            value=enc.values[m.name][sub] if m.kind == "pair" else None,
            source=enc.values[f"source.{m.utterance_field}"][sub] if m.kind == "rank" else None,
            target=enc.values[f"target.{m.utterance_field}"][sub] if m.kind == "rank" else None,
        )
        return m.statistic(columns)

    return _Spec(mask, make, empty_reason)


def _null(reason: str, n: int) -> dict:
    return {"value": None, "ci_low": None, "ci_high": None, "n": int(n), "reason": reason}


def _bootstrap_unit(
    encs: Sequence[_Encoded], use_groups: bool, n_bootstrap: int, seed: int, confidence: float
) -> tuple[dict, list | None]:
    """Decide pair vs group resampling; returns the report entry and the group ids (or None)."""
    info: dict[str, Any] = {
        "n_resamples": int(n_bootstrap),
        "seed": int(seed),
        "unit": "pair",
        "confidence": confidence,
        "note": None,
    }
    if not use_groups:
        return info, None
    groups = encs[0].groups if encs else None
    if groups is None or any(e.groups is None for e in encs):
        info["note"] = "group bootstrap requested but some pair has no group; resampled pairs"
        return info, None
    if len(set(groups)) < 2:
        info["note"] = "group bootstrap requested but fewer than 2 groups; resampled pairs"
        return info, None
    info["unit"] = "group"
    info["n_groups"] = len(set(groups))
    return info, groups


def _metric_entry(
    stat: Stat,
    n: int,
    groups: np.ndarray | None,
    n_bootstrap: int,
    seed: int,
    confidence: float,
) -> dict:
    try:
        value = float(stat(np.arange(n)))
    except MetricUndefined as exc:
        return _null(exc.reason, n)
    entry = {"value": value, "ci_low": None, "ci_high": None, "n": int(n), "reason": None}
    if n_bootstrap > 0:
        try:
            low, high, _ = bootstrap_ci(
                stat, n, groups=groups, n_resamples=n_bootstrap, seed=seed, confidence=confidence
            )
            entry["ci_low"], entry["ci_high"] = low, high
        except MetricUndefined as exc:
            entry["reason"] = CI_REASON_PREFIX + exc.reason
    return entry


def _codes_to_labels(codes: np.ndarray, classes_ext: list) -> list:
    return [classes_ext[c] for c in codes.tolist()]


# --------------------------------------------------------------------------------------------
# public API


def compute_corpus(
    pairs: list[dict],
    classes: list[str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 12345,
    use_groups: bool = False,
    unavailable: dict[str, str] | None = None,
    confidence: float = 0.95,
) -> dict:
    """The report's ``"corpus"`` object from the succeeded pairs' report rows.

    ``classes``: the SER class list (confusion matrix order). A gold label or prediction
    outside it is appended (sorted) so it still counts; ``ser.classes`` gives the final order.
    ``unavailable``: metric -> reason used when no pair has a value for that metric (e.g.
    ``{"va_sim": "needs the paper profile"}``).
    """
    unavailable = dict(unavailable or {})
    classes_ext = _extended_classes(classes, [pairs])
    enc = _encode(pairs, classes_ext)
    boot, groups = _bootstrap_unit([enc], use_groups, n_bootstrap, seed, confidence)
    garr = np.asarray(groups) if groups is not None else None

    out: dict[str, Any] = {"n_pairs": enc.n}
    for name in METRICS:
        if enc.n == 0:
            out[name] = _null(NO_PAIRS_REASON, 0)
            continue
        spec = _spec(enc, name, unavailable)
        sub = np.flatnonzero(spec.mask)
        if sub.size == 0:
            out[name] = _null(spec.empty_reason, 0)
            continue
        out[name] = _metric_entry(
            spec.make(sub),
            sub.size,
            garr[sub] if garr is not None else None,
            n_bootstrap,
            seed,
            confidence,
        )

    pred_s = _codes_to_labels(enc.pred_s, classes_ext)
    pred_t = _codes_to_labels(enc.pred_t, classes_ext)
    labelled = enc.gold >= 0
    n_lab = int(labelled.sum())
    gold_or_none = [classes_ext[c] if c >= 0 else None for c in enc.gold.tolist()]
    out["per_emotion"] = per_emotion_preservation(pred_s, pred_t, classes_ext, labels=gold_or_none if n_lab else None)

    ser: dict[str, Any] = {"classes": classes_ext, "n_labelled": n_lab}
    for side, codes in (("source", enc.pred_s), ("target", enc.pred_t)):
        if n_lab:
            y, p = enc.gold[labelled], codes[labelled]
            ser[side] = {
                "ua": ua_codes(y, p, enc.n_classes),
                "wa": wa_codes(y, p),
                "confusion": confusion(_codes_to_labels(y, classes_ext), _codes_to_labels(p, classes_ext), classes_ext),
            }
        else:
            ser[side] = {
                "ua": None,
                "wa": None,
                "confusion": None,
                "reason": NO_PAIRS_REASON if enc.n == 0 else NO_LABELS_REASON,
            }
    ser["source_vs_target"] = confusion(pred_s, pred_t, classes_ext)
    out["ser"] = ser
    out["bootstrap"] = boot
    return out


def _lacking(reason: str, run: str) -> str:
    """'not computed' and why, for one run (or both): a reason naming its run by RUN reads as a sentence."""
    return f"not computed: {reason.replace(RUN, run)}" if RUN in reason else f"not computed for {run}: {reason}"


def _missing_reason(spec_a: _Spec, spec_b: _Spec, name_a: str, name_b: str) -> str:
    """Why a comparison has no pair to compute a metric from: which run lacks it, and that run's reason."""
    empty_a, empty_b = not spec_a.mask.any(), not spec_b.mask.any()
    if empty_a and empty_b:
        if spec_a.empty_reason == spec_b.empty_reason:
            reason = spec_a.empty_reason
            return _lacking(reason, "both runs") if RUN in reason else f"not computed in either run: {reason}"
        return f"{_lacking(spec_a.empty_reason, name_a)}; {_lacking(spec_b.empty_reason, name_b)}"
    if empty_a:
        return _lacking(spec_a.empty_reason, name_a)
    if empty_b:
        return _lacking(spec_b.empty_reason, name_b)
    return f"no shared pair had a value in both {name_a} and {name_b}"


def compare_runs(
    pairs_a: list[dict],
    pairs_b: list[dict],
    classes: list[str],
    metrics: Sequence[str] = METRICS,
    *,
    n_bootstrap: int = 1000,
    seed: int = 12345,
    use_groups: bool = False,
    unavailable: dict[str, str] | None = None,
    confidence: float = 0.95,
    unavailable_b: dict[str, str] | None = None,
    names: tuple[str, str] = ("run a", "run b"),
) -> dict:
    """Paired comparison of run b (e.g. a new system) against run a (the baseline).

    Pairs are aligned by shared ``pair_id`` (run a's order); pairs in only one run are
    counted and ignored. For each metric, the pairs used are those where the metric's input is
    present in *both* runs (gold label, similarity value, both rates), so ``a``/``b`` below can
    differ from each run's own corpus value when the runs cover different pairs.
    Gold labels and groups are taken from run a, or from run b where a has none.

    Returns ``{metric: {"a", "b", "diff", "ci_low", "ci_high", "p_value", "n", "reason"}, ...,
    "flipped": {"agree_to_disagree": [...], "disagree_to_agree": [...]}, "n_shared",
    "n_only_a", "n_only_b", "warnings", "bootstrap"}`` with diff = b - a and the p-value of
    :func:`core.bootstrap.paired_bootstrap`. ``unavailable``: why a metric is missing, for run a and, unless
    ``unavailable_b`` says otherwise, for run b; ``names``: how the reasons name the two runs.
    """
    unavailable = dict(unavailable or {})
    unavailable_b = unavailable if unavailable_b is None else dict(unavailable_b)
    name_a, name_b = names
    for tag, ps in (("a", pairs_a), ("b", pairs_b)):
        ids = [p.get("pair_id") for p in ps]
        if len(set(ids)) != len(ids):
            raise ValueError(f"run {tag} has duplicate pair_id values")
    by_b = {p["pair_id"]: p for p in pairs_b}
    ids_a = {p["pair_id"] for p in pairs_a}
    aligned_a: list[dict] = []
    aligned_b: list[dict] = []
    warnings: list[str] = []
    n_label_mismatch = 0
    for pa in pairs_a:
        pb = by_b.get(pa["pair_id"])
        if pb is None:
            continue
        la, lb = pa.get("label"), pb.get("label")
        label = lb if _missing_label(la) else la
        if not _missing_label(la) and not _missing_label(lb) and la != lb:
            n_label_mismatch += 1
        ga, gb = pa.get("group"), pb.get("group")
        group = gb if _missing_label(ga) else ga
        aligned_a.append({**pa, "label": label, "group": group})
        aligned_b.append({**pb, "label": label, "group": group})
    if n_label_mismatch:
        warnings.append(f"{n_label_mismatch} shared pairs have different gold labels; used run a's")
    n = len(aligned_a)

    classes_ext = _extended_classes(classes, [aligned_a, aligned_b])
    enc_a = _encode(aligned_a, classes_ext)
    enc_b = _encode(aligned_b, classes_ext)
    boot, groups = _bootstrap_unit([enc_a, enc_b], use_groups, n_bootstrap, seed, confidence)
    garr = np.asarray(groups) if groups is not None else None

    out: dict[str, Any] = {
        "n_shared": n,
        "n_only_a": len(ids_a) - n,
        "n_only_b": len(by_b) - n,
    }
    for name in metrics:
        entry: dict[str, Any] = {
            "a": None,
            "b": None,
            "diff": None,
            "ci_low": None,
            "ci_high": None,
            "p_value": None,
            "n": 0,
            "reason": None,
        }
        out[name] = entry
        catalogue_entry(name)  # ValueError for an unknown metric
        if n == 0:
            entry["reason"] = "the runs share no pair ids"
            continue
        spec_a = _spec(enc_a, name, unavailable)
        spec_b = _spec(enc_b, name, unavailable_b)
        sub = np.flatnonzero(spec_a.mask & spec_b.mask)
        entry["n"] = int(sub.size)
        if sub.size == 0:
            entry["reason"] = _missing_reason(spec_a, spec_b, name_a, name_b)
            continue
        stat_a, stat_b = spec_a.make(sub), spec_b.make(sub)
        full = np.arange(sub.size)
        try:
            entry["a"] = float(stat_a(full))
        except MetricUndefined as exc:
            entry["reason"] = f"undefined for {name_a}: {exc.reason}"
            continue
        try:
            entry["b"] = float(stat_b(full))
        except MetricUndefined as exc:
            entry["reason"] = f"undefined for {name_b}: {exc.reason}"
            continue
        entry["diff"] = entry["b"] - entry["a"]
        if n_bootstrap <= 0:
            continue
        try:
            res = paired_bootstrap(
                stat_a,
                stat_b,
                sub.size,
                groups=garr[sub] if garr is not None else None,
                n_resamples=n_bootstrap,
                seed=seed,
                confidence=confidence,
            )
        except MetricUndefined as exc:
            entry["reason"] = CI_REASON_PREFIX + exc.reason
            continue
        entry.update(diff=res["diff"], ci_low=res["ci_low"], ci_high=res["ci_high"], p_value=res["p_value"])

    agree_a = enc_a.pred_s == enc_a.pred_t
    agree_b = enc_b.pred_s == enc_b.pred_t
    ids = [p["pair_id"] for p in aligned_a]
    out["flipped"] = {
        "agree_to_disagree": [ids[i] for i in np.flatnonzero(agree_a & ~agree_b).tolist()],
        "disagree_to_agree": [ids[i] for i in np.flatnonzero(~agree_a & agree_b).tolist()],
    }
    out["warnings"] = warnings
    out["bootstrap"] = boot
    return out
