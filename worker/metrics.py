"""Array-level metric functions and bootstrap helpers (pure, no I/O).

Every function here is a pure function over numpy arrays or sequences of labels (strings or
ints). A value that is mathematically undefined raises :class:`MetricUndefined` with a human
readable ``reason``; no function returns NaN, and none returns 0 in place of "undefined".
Malformed input (mismatched lengths, wrong dimensionality, ``None`` inside a label sequence,
a label outside ``classes``) raises ``ValueError``.

Definitions follow DESIGN.md ("Metric definitions") and the paper (Atmaja et al.):

* UA  = balanced accuracy (mean per-class recall over the classes present in ``y_true``),
  identical to ``sklearn.metrics.balanced_accuracy_score``.
* WA  = plain accuracy, identical to ``sklearn.metrics.accuracy_score``.
* BAR = UA_target / UA_source.
* EPR = share of pairs whose source and target predictions agree.
* kappa = Cohen's kappa between the two prediction sequences
  (``sklearn.metrics.cohen_kappa_score``).
* emo-sim = EmoCtrlTTS-Eval frame similarity: the target frames are aligned to the source's
  by nearest neighbour and cosines are averaged over source frames.

Fast kernels over integer class codes (``*_codes``) are used by :mod:`worker.corpus` inside
1000-resample bootstraps; the public functions encode labels once and call them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    "spearman",
    "nearest_neighbour_resample",
    "frame_similarity",
    "utterance_cosine",
    "vector_cosine",
    "bootstrap_ci",
    "paired_bootstrap",
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


def encode_labels(
    *seqs: Any, classes: Sequence[Any] | None = None
) -> tuple[list[np.ndarray], list[Any]]:
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


def bar_codes(
    y_true: np.ndarray, pred_s: np.ndarray, pred_t: np.ndarray, n_classes: int
) -> float:
    """UA_target / UA_source over codes."""
    if y_true.size == 0:
        raise MetricUndefined("no items")
    ua_s = ua_codes(y_true, pred_s, n_classes)
    if ua_s == 0.0:
        raise MetricUndefined(
            "UA_source is 0 (no source prediction matches its gold label), BAR = UA_t/UA_s undefined"
        )
    return ua_codes(y_true, pred_t, n_classes) / ua_s


def epr_codes(pred_s: np.ndarray, pred_t: np.ndarray) -> float:
    if pred_s.size == 0:
        raise MetricUndefined("no pairs")
    return float(np.count_nonzero(pred_s == pred_t) / pred_s.size)


def kappa_codes(a: np.ndarray, b: np.ndarray, n_classes: int) -> float:
    """Cohen's kappa over codes: (p_o - p_e) / (1 - p_e)."""
    n = a.size
    if n == 0:
        raise MetricUndefined("no pairs")
    ca = np.bincount(a, minlength=n_classes)
    cb = np.bincount(b, minlength=n_classes)
    # p_e == 1 exactly when both sides put every item on the same single class
    if np.any((ca == n) & (cb == n)):
        raise MetricUndefined(
            "chance agreement p_e = 1 (both sides predict one and the same class), kappa undefined"
        )
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


def spearman_finite(
    x: np.ndarray, y: np.ndarray, names: tuple[str, str] = ("x", "y")
) -> float:
    """Spearman's rho over finite float arrays of equal length (average ranks for ties)."""
    n = x.size
    if n < 3:
        raise MetricUndefined(f"fewer than 3 finite pairs (n={n}), Spearman correlation undefined")
    x_const = bool(np.all(x == x[0]))
    y_const = bool(np.all(y == y[0]))
    if x_const or y_const:
        which = " and ".join(f"{nm} all equal {v[0]:g}" for nm, v, c in zip(names, (x, y), (x_const, y_const)) if c)
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


def balanced_accuracy_ratio(
    y_true: Sequence[Any], pred_source: Sequence[Any], pred_target: Sequence[Any]
) -> float:
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


def confusion(
    y_true: Sequence[Any], y_pred: Sequence[Any], classes: Sequence[Any]
) -> list[list[int]]:
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
            raise ValueError(
                f"per_emotion_preservation: labels length {len(lab)} != {s.size} pairs"
            )
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


# --------------------------------------------------------------------------------------------
# embedding similarity


def _as_frames(frames: Any, name: str) -> np.ndarray:
    arr = np.asarray(frames, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (frames x dims), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise MetricUndefined(f"{name} has no frames")
    if not np.all(np.isfinite(arr)):
        raise MetricUndefined(f"{name} contains NaN/inf values")
    return arr


def nearest_neighbour_resample(frames: Any, n_rows: int) -> np.ndarray:
    """Resample ``frames`` (T_t, D) to (n_rows, D) by nearest neighbour (EmoCtrlTTS-Eval).

    Output row r is input row round(linspace(0, 1, n_rows)[r] * (T_t - 1)). Exact half-way
    positions go to the lower index, as in EmoCtrlTTS-Eval's
    ``scipy.interpolate.interp1d(linspace(0, 1, T_t), frames, kind="nearest")``; the indices are
    computed the same way as there, so they are identical to the reference implementation.
    """
    arr = np.asarray(frames)
    if arr.ndim != 2:
        raise ValueError(f"frames must be 2-D (frames x dims), got shape {arr.shape}")
    n_rows = int(n_rows)
    if n_rows < 0:
        raise ValueError("n_rows must be >= 0")
    t_t = arr.shape[0]
    if t_t == 0:
        raise ValueError("frames has no rows to resample from")
    if t_t == 1:
        idx = np.zeros(n_rows, dtype=np.intp)
    else:
        x = np.linspace(0.0, 1.0, t_t) / 2.0
        bounds = x[1:] + x[:-1]
        idx = np.searchsorted(bounds, np.linspace(0.0, 1.0, n_rows), side="left")
        idx = np.clip(idx, 0, t_t - 1)
    return arr[idx]


def frame_similarity(E_s: Any, E_t: Any) -> float:
    """emo-sim: mean over source frames of cos(E_s[t], E_t'[t]), E_t' = E_t resampled to T_s.

    Zero-norm rows: a row where either side has zero norm contributes cosine 0 (as in the
    EmoCtrlTTS-Eval reference, which uses sklearn's ``cosine_similarity``); the score is
    undefined only when no row has a non-zero vector on both sides. NaN/inf features or an
    empty side are undefined; a dimension mismatch is a ``ValueError``.
    """
    es = _as_frames(E_s, "E_s")
    et = _as_frames(E_t, "E_t")
    if es.shape[1] != et.shape[1]:
        raise ValueError(f"feature dimensions differ ({es.shape[1]} vs {et.shape[1]})")
    et2 = nearest_neighbour_resample(et, es.shape[0])
    ns = np.linalg.norm(es, axis=1)
    nt = np.linalg.norm(et2, axis=1)
    valid = (ns > 0) & (nt > 0)
    if not np.any(valid):
        raise MetricUndefined("every aligned frame pair has a zero-norm vector, emo-sim undefined")
    cos = np.zeros(es.shape[0])
    cos[valid] = np.einsum("ij,ij->i", es[valid], et2[valid]) / (ns[valid] * nt[valid])
    return float(np.clip(cos.mean(), -1.0, 1.0))


def vector_cosine(a: Any, b: Any) -> float:
    """Cosine of two 1-D vectors; undefined when either has zero norm or non-finite values."""
    va = np.asarray(a, dtype=np.float64)
    vb = np.asarray(b, dtype=np.float64)
    if va.ndim != 1 or vb.ndim != 1:
        raise ValueError("vector_cosine expects 1-D vectors")
    if va.shape != vb.shape:
        raise ValueError(f"vector lengths differ ({va.size} vs {vb.size})")
    if va.size == 0:
        raise MetricUndefined("empty vectors, cosine undefined")
    if not (np.all(np.isfinite(va)) and np.all(np.isfinite(vb))):
        raise MetricUndefined("vector contains NaN/inf values, cosine undefined")
    na = float(np.linalg.norm(va))
    nb = float(np.linalg.norm(vb))
    if na == 0.0 or nb == 0.0:
        raise MetricUndefined("zero-norm vector, cosine undefined")
    return float(np.clip(float(va @ vb) / (na * nb), -1.0, 1.0))


def utterance_cosine(E_s: Any, E_t: Any) -> float:
    """cos(mean over rows of E_s, mean over rows of E_t); 1-D inputs are used as they are."""
    vecs = []
    for name, e in (("E_s", E_s), ("E_t", E_t)):
        arr = np.asarray(e, dtype=np.float64)
        if arr.ndim == 2:
            if arr.shape[0] == 0:
                raise MetricUndefined(f"{name} has no frames")
            arr = arr.mean(axis=0)
        elif arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
        vecs.append(arr)
    return vector_cosine(vecs[0], vecs[1])


# --------------------------------------------------------------------------------------------
# bootstrap


def _sampler(n_items: int, groups: Any, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    if groups is None:
        return lambda: rng.integers(0, n_items, size=n_items)
    g = np.asarray(groups)
    if g.ndim != 1 or g.size != n_items:
        raise ValueError(f"groups must have one id per item ({n_items}), got shape {g.shape}")
    if g.dtype == object and any(v is None for v in g):
        raise ValueError("groups contains None")
    _, inv = np.unique(g, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    counts = np.bincount(inv)
    starts = np.cumsum(counts) - counts
    n_groups = counts.size

    def draw() -> np.ndarray:
        chosen = rng.integers(0, n_groups, size=n_groups)
        lengths = counts[chosen]
        total = int(lengths.sum())
        offsets = np.cumsum(lengths) - lengths
        pos = np.repeat(starts[chosen] - offsets, lengths) + np.arange(total)
        return order[pos]

    return draw


def _check_bootstrap_args(n_items: int, n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError("n_resamples must be >= 1")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    if n_items < 0:
        raise ValueError("n_items must be >= 0")


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n_items: int,
    groups: Any = None,
    n_resamples: int = 1000,
    seed: int = 12345,
    confidence: float = 0.95,
) -> tuple[float, float, int]:
    """Percentile bootstrap confidence interval of ``statistic``.

    ``statistic(idx)`` receives an int array of item indices (with repetitions) and returns a
    float; it may raise MetricUndefined for a resample, which is then skipped (a non-finite
    return is skipped too). With ``groups`` (one id per item) whole groups are resampled with
    replacement and all items of each drawn group are taken (cluster bootstrap), so resamples
    vary in size. Randomness: ``numpy.random.default_rng(seed)``.

    Returns ``(low, high, n_valid)``; raises MetricUndefined when there are no items or fewer
    than half of the resamples gave a value.
    """
    _check_bootstrap_args(n_items, n_resamples, confidence)
    if n_items == 0:
        raise MetricUndefined("no items to resample")
    rng = np.random.default_rng(seed)
    draw = _sampler(n_items, groups, rng)
    vals = np.empty(n_resamples)
    n_valid = 0
    for _ in range(n_resamples):
        idx = draw()
        try:
            v = float(statistic(idx))
        except MetricUndefined:
            continue
        if np.isfinite(v):
            vals[n_valid] = v
            n_valid += 1
    if 2 * n_valid < n_resamples:
        raise MetricUndefined(
            f"only {n_valid} of {n_resamples} bootstrap resamples had a defined value"
        )
    low, high = _percentile_interval(vals[:n_valid], confidence)
    return low, high, n_valid


def paired_bootstrap(
    statistic_a: Callable[[np.ndarray], float],
    statistic_b: Callable[[np.ndarray], float],
    n_items: int,
    groups: Any = None,
    n_resamples: int = 1000,
    seed: int = 12345,
    confidence: float = 0.95,
) -> dict:
    """Paired bootstrap of the difference statistic_b - statistic_a.

    Both statistics receive the same resampled index array in every resample (the caller has
    aligned the two runs item by item). ``diff`` = statistic_b(all) - statistic_a(all); the
    interval is the percentile interval of the resampled differences. Resamples where either
    statistic is undefined are skipped; fewer than half valid -> MetricUndefined.

    p-value (two-sided, H0: no difference), by inverting the percentile interval:
    ``p = min(1, 2 * min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (B + 1))`` over the B valid resampled
    differences d*. Identical runs give p = 1; a run better in every resample gives
    p = 2 / (B + 1).

    Returns ``{"diff", "ci_low", "ci_high", "p_value", "n", "n_valid"}`` (n = items,
    n_valid = resamples used).
    """
    _check_bootstrap_args(n_items, n_resamples, confidence)
    if n_items == 0:
        raise MetricUndefined("no items to resample")
    full = np.arange(n_items)
    try:
        a0 = float(statistic_a(full))
    except MetricUndefined as exc:
        raise MetricUndefined(f"run a: {exc.reason}") from None
    try:
        b0 = float(statistic_b(full))
    except MetricUndefined as exc:
        raise MetricUndefined(f"run b: {exc.reason}") from None
    rng = np.random.default_rng(seed)
    draw = _sampler(n_items, groups, rng)
    diffs = np.empty(n_resamples)
    n_valid = 0
    for _ in range(n_resamples):
        idx = draw()
        try:
            d = float(statistic_b(idx)) - float(statistic_a(idx))
        except MetricUndefined:
            continue
        if np.isfinite(d):
            diffs[n_valid] = d
            n_valid += 1
    if 2 * n_valid < n_resamples:
        raise MetricUndefined(
            f"only {n_valid} of {n_resamples} paired bootstrap resamples had a defined value"
        )
    d = diffs[:n_valid]
    low, high = _percentile_interval(d, confidence)
    n_le = int(np.count_nonzero(d <= 0.0))
    n_ge = int(np.count_nonzero(d >= 0.0))
    p = min(1.0, 2.0 * (min(n_le, n_ge) + 1) / (n_valid + 1))
    return {
        "diff": b0 - a0,
        "ci_low": low,
        "ci_high": high,
        "p_value": p,
        "n": int(n_items),
        "n_valid": n_valid,
    }
