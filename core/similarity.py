"""Embedding similarity of a source and a target utterance (pure, no I/O).

* emo-sim / acoustic-sim = EmoCtrlTTS-Eval frame similarity: the target frames are aligned to the
  source's by nearest neighbour and cosines are averaged over source frames.
* the ``*_utterance`` variants and Vsim: cosine of (mean-pooled) vectors.

An undefined value raises :class:`core.metrics.MetricUndefined` with a reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.metrics import MetricUndefined

__all__ = ["nearest_neighbour_resample", "frame_similarity", "utterance_cosine", "vector_cosine"]


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
