"""Label-level metric functions: UA, WA, BAR, EPR, kappa, confusion, per-emotion preservation,
Spearman (pure, no I/O). Embedding similarities are in :mod:`core.similarity`, bootstrap intervals
in :mod:`core.bootstrap`.

Every function here is a pure function over numpy arrays or sequences of labels (strings or
ints). A value that is mathematically undefined raises :class:`MetricUndefined` with a human
readable ``reason``; no function returns NaN, and none returns 0 in place of "undefined".
Malformed input (mismatched lengths, wrong dimensionality, ``None`` inside a label sequence,
a label outside ``classes``) raises ``ValueError``.

Definitions follow docs/metrics.md and the paper (Atmaja et al.):

* UA  = balanced accuracy (mean per-class recall over the classes present in ``y_true``),
  identical to ``sklearn.metrics.balanced_accuracy_score``.
* WA  = plain accuracy, identical to ``sklearn.metrics.accuracy_score``.
* BAR = UA_target / UA_source.
* EPR = share of pairs whose source and target predictions agree.
* kappa = Cohen's kappa between the two prediction sequences
  (``sklearn.metrics.cohen_kappa_score``).

Fast kernels over integer class codes (``*_codes``) are used by :mod:`worker.engine.corpus` inside
1000-resample bootstraps; the public functions encode labels once and call them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MetricUndefined",
    "unweighted_accuracy",
    "weighted_accuracy",
    "balanced_accuracy_ratio",
    "emotion_preservation_rate",
    "cohen_kappa",
    "confusion",
    "per_emotion_preservation",
    "expected_agreement",
    "bhattacharyya",
    "spearman",
    "encode_labels",
]


class MetricUndefined(Exception):
    """A metric has no defined value for the given input; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# label encoding


def _as_label_array(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 0:
        raise ValueError(f"{name} must be a 1-D sequence of labels")
    if arr.ndim != 1:
        # e.g. a list of equal-length strings is still 1-D; anything else is a caller bug
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == object and any(v is None for v in arr):
        raise ValueError(f"{name} contains None; drop unlabelled items before calling")
    if arr.dtype.kind == "f" and arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN/inf labels")
    return arr


def encode_labels(*seqs: Any, classes: Sequence[Any] | None = None) -> tuple[list[np.ndarray], list[Any]]:
    """Encode label sequences as int64 codes over one shared class list.

    With ``classes`` the codes index into ``classes`` and a label outside it raises
    ``ValueError``. Without, the class list is the sorted union of the labels seen.
    Returns ``(codes_per_sequence, class_list)``.
    """
    arrays = [_as_label_array(s, f"labels[{i}]") for i, s in enumerate(seqs)]
    sizes = [a.size for a in arrays]
    non_empty = [a for a in arrays if a.size]
    if not non_empty:
        cls = list(classes) if classes is not None else []
        return [np.zeros(0, dtype=np.int64) for _ in arrays], cls
    allv = np.concatenate(non_empty) if len(non_empty) > 1 else non_empty[0]
    try:
        uniq, inv = np.unique(allv, return_inverse=True)
    except TypeError as exc:  # mixed, unorderable object labels
        raise ValueError(f"labels are not mutually comparable: {exc}") from None
    inv = inv.reshape(-1).astype(np.int64)
    if classes is None:
        cls = uniq.tolist()
        codes = inv
    else:
        cls = list(classes)
        lookup = {c: i for i, c in enumerate(cls)}
        if len(lookup) != len(cls):
            raise ValueError("classes contains duplicates")
        mapping = np.empty(len(uniq), dtype=np.int64)
        for j, u in enumerate(uniq.tolist()):
            if u not in lookup:
                raise ValueError(f"label {u!r} is not one of classes {cls!r}")
            mapping[j] = lookup[u]
        codes = mapping[inv]
    out: list[np.ndarray] = []
    pos = 0
    for n in sizes:
        out.append(codes[pos : pos + n] if n else np.zeros(0, dtype=np.int64))
        pos += n
    return out, cls


def _same_length(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{what}: lengths differ ({a.shape[0]} vs {b.shape[0]})")


# --------------------------------------------------------------------------------------------
# kernels over integer codes (no validation; used inside bootstraps)


def ua_codes(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Balanced accuracy over int codes in ``[0, n_classes)``."""
    if y_true.size == 0:
        raise MetricUndefined("no items")
    support = np.bincount(y_true, minlength=n_classes)
    hits = np.bincount(y_true[y_true == y_pred], minlength=n_classes)
    present = support > 0
    return float(np.mean(hits[present] / support[present]))


def wa_codes(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Plain accuracy over codes."""
    if y_true.size == 0:
        raise MetricUndefined("no items")
    return float(np.count_nonzero(y_true == y_pred) / y_true.size)


def bar_codes(y_true: np.ndarray, pred_s: np.ndarray, pred_t: np.ndarray, n_classes: int) -> float:
    """UA_target / UA_source over codes."""
    if y_true.size == 0:
        raise MetricUndefined("no items")
    ua_s = ua_codes(y_true, pred_s, n_classes)
    if ua_s == 0.0:
        raise MetricUndefined("UA_source is 0 (no source prediction matches its gold label), BAR = UA_t/UA_s undefined")
    return ua_codes(y_true, pred_t, n_classes) / ua_s


def epr_codes(pred_s: np.ndarray, pred_t: np.ndarray) -> float:
    if pred_s.size == 0:
        raise MetricUndefined("no pairs")
    return float(np.count_nonzero(pred_s == pred_t) / pred_s.size)


def expected_agreement(probs_source: Any, probs_target: Any) -> float:
    """sum_k p_s(k) p_t(k): the probability that a class drawn from the source's SER distribution and one
    drawn independently from the target's are the same (EPR's per-pair indicator, in probabilities)."""
    ps, pt = _probability_vectors(probs_source, probs_target, "expected_agreement")
    return float(ps @ pt)


def _probability_vectors(probs_source: Any, probs_target: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    ps = np.asarray(probs_source, dtype=np.float64)
    pt = np.asarray(probs_target, dtype=np.float64)
    if ps.ndim != 1 or ps.shape != pt.shape:
        raise ValueError(f"{name} needs two probability vectors of one length, got {ps.shape} and {pt.shape}")
    if not (np.all(np.isfinite(ps)) and np.all(np.isfinite(pt))):
        raise MetricUndefined("SER probabilities contain NaN/inf values")
    if np.any(ps < 0) or np.any(pt < 0):
        raise ValueError(f"{name} needs probabilities, got a negative value")
    return ps, pt


def bhattacharyya(probs_source: Any, probs_target: Any) -> float:
    """sum_k sqrt(p_s(k) p_t(k)): the Bhattacharyya coefficient of the two SER distributions (1 for the same
    distribution, 0 for disjoint ones; 1 - BC is the squared Hellinger distance)."""
    ps, pt = _probability_vectors(probs_source, probs_target, "bhattacharyya")
    return float(np.sqrt(ps * pt).sum())


# ---------------------------------------------------------------------------------------------- chance levels
# What an agreement metric is, in expectation, when the target side is read independently of the source: its
# mean over every (source i, target j) pairing of the job's own readings. Each has a closed form in the two
# sides' marginals, O(n K) instead of O(n^2).


def _probability_matrices(probs_source: Any, probs_target: Any) -> tuple[np.ndarray, np.ndarray]:
    ps = np.asarray(probs_source, dtype=np.float64)
    pt = np.asarray(probs_target, dtype=np.float64)
    if ps.ndim != 2 or pt.ndim != 2 or ps.shape[1] != pt.shape[1] or not len(ps) or not len(pt):
        raise ValueError(f"chance levels need two non-empty (n, K) probability matrices, got {ps.shape} and {pt.shape}")
    return ps, pt


def chance_prediction_agreement(pred_source: np.ndarray, pred_target: np.ndarray, n_classes: int) -> float:
    """EPR under independent readings: sum_k q_s(k) q_t(k), q the share of each side's predictions in class k
    (Cohen's kappa's expected agreement p_e)."""
    if pred_source.size == 0 or pred_target.size == 0:
        raise MetricUndefined("no items")
    q_s = np.bincount(pred_source, minlength=n_classes) / pred_source.size
    q_t = np.bincount(pred_target, minlength=n_classes) / pred_target.size
    return float(q_s @ q_t)


def chance_expected_agreement(probs_source: Any, probs_target: Any) -> float:
    """Expected agreement under independent readings: sum_k mean_i p_s,i(k) * mean_j p_t,j(k)."""
    ps, pt = _probability_matrices(probs_source, probs_target)
    return float(ps.mean(axis=0) @ pt.mean(axis=0))


def chance_bhattacharyya(probs_source: Any, probs_target: Any) -> float:
    """The Bhattacharyya coefficient under independent readings: sum_k mean_i sqrt(p_s,i(k)) * mean_j
    sqrt(p_t,j(k))."""
    ps, pt = _probability_matrices(probs_source, probs_target)
    return float(np.sqrt(ps).mean(axis=0) @ np.sqrt(pt).mean(axis=0))


def kappa_codes(a: np.ndarray, b: np.ndarray, n_classes: int) -> float:
    """Cohen's kappa over codes: (p_o - p_e) / (1 - p_e)."""
    n = a.size
    if n == 0:
        raise MetricUndefined("no pairs")
    ca = np.bincount(a, minlength=n_classes)
    cb = np.bincount(b, minlength=n_classes)
    # p_e == 1 exactly when both sides put every item on the same single class
    if np.any((ca == n) & (cb == n)):
        raise MetricUndefined("chance agreement p_e = 1 (both sides predict one and the same class), kappa undefined")
    p_o = np.count_nonzero(a == b) / n
    p_e = float(ca @ cb) / (float(n) * float(n))
    return float((p_o - p_e) / (1.0 - p_e))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties averaged (== ``scipy.stats.rankdata(x)``, faster for small x)."""
    n = x.size
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(xs[1:], xs[:-1], out=first[1:])
    block = np.cumsum(first) - 1
    bounds = np.append(np.flatnonzero(first), n)
    avg = (bounds[:-1] + bounds[1:] + 1) / 2.0
    ranks = np.empty(n)
    ranks[order] = avg[block]
    return ranks


def spearman_finite(x: np.ndarray, y: np.ndarray, names: tuple[str, str] = ("x", "y")) -> float:
    """Spearman's rho over finite float arrays of equal length (average ranks for ties)."""
    n = x.size
    if n < 3:
        raise MetricUndefined(f"fewer than 3 finite pairs (n={n}), Spearman correlation undefined")
    x_const = bool(np.all(x == x[0]))
    y_const = bool(np.all(y == y[0]))
    if x_const or y_const:
        which = " and ".join(
            f"{nm} all equal {v[0]:g}" for nm, v, c in zip(names, (x, y), (x_const, y_const), strict=True) if c
        )
        raise MetricUndefined(f"{which}, Spearman correlation undefined")
    rx = _average_ranks(x)
    ry = _average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    r = float(rx @ ry) / float(np.sqrt((rx @ rx) * (ry @ ry)))
    return float(min(1.0, max(-1.0, r)))


# --------------------------------------------------------------------------------------------
# classification metrics


def _encode_two(a: Any, b: Any, what: str) -> tuple[np.ndarray, np.ndarray, int]:
    (ca, cb), cls = encode_labels(a, b)
    _same_length(ca, cb, what)
    return ca, cb, len(cls)


def unweighted_accuracy(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """UA: balanced accuracy, the mean recall over the classes present in ``y_true``.

    Equals ``sklearn.metrics.balanced_accuracy_score``. Empty input -> MetricUndefined.
    """
    t, p, k = _encode_two(y_true, y_pred, "unweighted_accuracy")
    if t.size == 0:
        raise MetricUndefined("no labelled items, UA undefined")
    return ua_codes(t, p, k)


def weighted_accuracy(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """WA: plain accuracy (the paper's naming). Equals ``sklearn.metrics.accuracy_score``."""
    t, p, _ = _encode_two(y_true, y_pred, "weighted_accuracy")
    if t.size == 0:
        raise MetricUndefined("no labelled items, WA undefined")
    return wa_codes(t, p)


def balanced_accuracy_ratio(y_true: Sequence[Any], pred_source: Sequence[Any], pred_target: Sequence[Any]) -> float:
    """BAR = UA(y, pred_target) / UA(y, pred_source).

    Undefined when there are no items or UA_source is 0.
    """
    (t, s, g), cls = encode_labels(y_true, pred_source, pred_target)
    _same_length(t, s, "balanced_accuracy_ratio (y_true vs pred_source)")
    _same_length(t, g, "balanced_accuracy_ratio (y_true vs pred_target)")
    if t.size == 0:
        raise MetricUndefined("no labelled items, BAR undefined")
    return bar_codes(t, s, g, len(cls))


def emotion_preservation_rate(pred_source: Sequence[Any], pred_target: Sequence[Any]) -> float:
    """EPR = mean over pairs of [pred_source == pred_target]."""
    s, t, _ = _encode_two(pred_source, pred_target, "emotion_preservation_rate")
    if s.size == 0:
        raise MetricUndefined("no pairs, EPR undefined")
    return epr_codes(s, t)


def cohen_kappa(pred_source: Sequence[Any], pred_target: Sequence[Any]) -> float:
    """Cohen's kappa between the two prediction sequences.

    Equals ``sklearn.metrics.cohen_kappa_score``; undefined (instead of sklearn's NaN) when the
    chance agreement p_e is 1, i.e. both sides predict a single identical class, or when empty.
    """
    s, t, k = _encode_two(pred_source, pred_target, "cohen_kappa")
    if s.size == 0:
        raise MetricUndefined("no pairs, kappa undefined")
    return kappa_codes(s, t, k)


def confusion(y_true: Sequence[Any], y_pred: Sequence[Any], classes: Sequence[Any]) -> list[list[int]]:
    """Confusion matrix, rows = true, columns = predicted, in the order of ``classes``.

    Equals ``sklearn.metrics.confusion_matrix(y_true, y_pred, labels=classes)`` for labels
    within ``classes``. Unlike sklearn, a label outside ``classes`` raises ``ValueError``
    instead of being silently dropped. Empty input gives an all-zero matrix.
    """
    (t, p), cls = encode_labels(y_true, y_pred, classes=classes)
    _same_length(t, p, "confusion")
    k = len(cls)
    cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    return cm.astype(int).tolist()


def per_emotion_preservation(
    pred_source: Sequence[Any],
    pred_target: Sequence[Any],
    classes: Sequence[Any],
    labels: Sequence[Any] | None = None,
) -> dict:
    """Per-class preservation.

    ``by_source_prediction[k]``: ``n`` = pairs with pred_source == k, ``value`` =
    P(pred_target = k | pred_source = k) (None with ``reason`` when n = 0).

    ``by_gold[k]`` (only when ``labels`` is given): ``n`` = pairs with gold k,
    ``source_recall`` = P(pred_source = k | gold k), ``target_recall`` =
    P(pred_target = k | gold k), ``agreement`` = P(pred_source == pred_target | gold k);
    all None with ``reason`` when n = 0. ``None`` entries in ``labels`` are unlabelled pairs
    and are left out of ``by_gold``.
    """
    cls = list(classes)
    (s, t), _ = encode_labels(pred_source, pred_target, classes=cls)
    _same_length(s, t, "per_emotion_preservation")
    k = len(cls)
    n_s = np.bincount(s, minlength=k)
    kept = np.bincount(s[s == t], minlength=k)
    by_pred: dict[Any, dict] = {}
    for i, c in enumerate(cls):
        n = int(n_s[i])
        if n == 0:
            by_pred[c] = {
                "n": 0,
                "value": None,
                "reason": f"no pair has source prediction {c!r}",
            }
        else:
            by_pred[c] = {"n": n, "value": float(kept[i] / n), "reason": None}
    out: dict[str, Any] = {"by_source_prediction": by_pred}
    if labels is not None:
        lab = list(labels)
        if len(lab) != s.size:
            raise ValueError(f"per_emotion_preservation: labels length {len(lab)} != {s.size} pairs")
        keep = np.array([v is not None for v in lab], dtype=bool)
        (y,), _ = encode_labels([v for v in lab if v is not None], classes=cls)
        ss, tt = s[keep], t[keep]
        n_y = np.bincount(y, minlength=k)
        src_hit = np.bincount(y[ss == y], minlength=k)
        tgt_hit = np.bincount(y[tt == y], minlength=k)
        agree = np.bincount(y[ss == tt], minlength=k)
        by_gold: dict[Any, dict] = {}
        for i, c in enumerate(cls):
            n = int(n_y[i])
            if n == 0:
                by_gold[c] = {
                    "n": 0,
                    "source_recall": None,
                    "target_recall": None,
                    "agreement": None,
                    "reason": f"no pair has gold label {c!r}",
                }
            else:
                by_gold[c] = {
                    "n": n,
                    "source_recall": float(src_hit[i] / n),
                    "target_recall": float(tgt_hit[i] / n),
                    "agreement": float(agree[i] / n),
                    "reason": None,
                }
        out["by_gold"] = by_gold
    return out


# --------------------------------------------------------------------------------------------
# correlation


def _as_float_vector(values: Any, name: str) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        arr = values.astype(np.float64, copy=False)
    else:
        arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D")
    return arr


def spearman(x: Sequence[Any], y: Sequence[Any], *, names: tuple[str, str] = ("x", "y")) -> float:
    """Spearman rank correlation (== ``scipy.stats.spearmanr(x, y).statistic``).

    Pairs where either value is None/NaN/inf are dropped first. Undefined with fewer than 3
    remaining pairs or when either side is constant; the reason names the constant side using
    ``names``.
    """
    xa = _as_float_vector(x, "x")
    ya = _as_float_vector(y, "y")
    _same_length(xa, ya, "spearman")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return spearman_finite(xa[keep], ya[keep], names=names)
