"""The side-normalised SER reading of a job (docs/metrics.md, "Two SER readings").

The absolute reading is per file: each utterance goes through the SER head on its own, and its prediction
is cached with the file. A head that never heard a corpus reads that corpus's level, channel and speaker
pool as emotion and collapses onto one or two classes (models/artifacts/ser_lite/MODEL_CARD.md). The side
reading removes that shift: every side of a job (all its source utterances, all its target utterances)
is z-scored with its own statistics, then read by a head trained that way (``normalization: per_side``).
It needs the whole side at once, so it runs when a report is built, from the SER inputs the pipeline keeps
in each row (``SER_INPUT``), and never enters the per-file cache. It cannot see a shift the whole side
shares (a system that flattens every target): that is what the absolute reading, reported next to it,
still shows.

When the pairs carry groups (a speaker id: the manifest's group column) and every group has at least
MIN_SIDE_UTTERANCES distinct utterances on a side, each group of that side is z-scored on its own instead:
one voice's level and range no longer read as emotion either (chosen on selection data, MODEL_CARD of
ser_lite_side). A target is grouped with its source's group: a system speaks each source speaker's
translations in one voice, its own or the speaker's.
"""

from __future__ import annotations

import numpy as np

from core.catalogue import CATALOGUE, SIDE_PRED, SIDE_PROBS, SIDE_READING_METRICS

__all__ = ["SER_INPUT", "MIN_SIDE_UTTERANCES", "add_side_reading", "strip_ser_inputs"]

SER_INPUT = "ser_input"  # a row side's SER head input (the features it reads), kept for the side reading
# fewer distinct utterances on a side than this: its mean and spread are too loose to standardise with
MIN_SIDE_UTTERANCES = 20
SIDE_PAIR_METRICS = tuple(m for m in CATALOGUE if m.reading == "side" and m.kind == "pair")


def strip_ser_inputs(rows: list[dict]) -> list[dict]:
    """The rows without the SER inputs (copies): reports carry predictions, not feature vectors."""
    return [
        {**row, **{side: {k: v for k, v in row[side].items() if k != SER_INPUT} for side in ("source", "target")}}
        for row in rows
    ]


def _distinct(vectors: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct vector once (a file paired twice counts once in its side's statistics) and the row -> index."""
    keys: dict[bytes, int] = {}
    index = np.array([keys.setdefault(v.tobytes(), len(keys)) for v in vectors], dtype=np.int64)
    unique = np.empty((len(keys), len(vectors[0])), np.float32)
    for vector, i in zip(vectors, index, strict=True):
        unique[i] = vector
    return unique, index


def _unavailable(reason: str) -> dict[str, str]:
    return {name: reason for name in SIDE_READING_METRICS}


def _group_members(rows: list[dict]) -> dict | None:
    """Row indexes per group, or None when some pair has no group or there is only one."""
    groups = [row.get("group") for row in rows]
    if any(g is None or g == "" for g in groups):
        return None
    members: dict = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    return members if len(members) > 1 else None


def _read_side(
    head, vectors: list[np.ndarray], whole: tuple[np.ndarray, np.ndarray], members: dict | None
) -> tuple[np.ndarray, str]:
    """Probabilities of one side's rows and what they were normalised over: each group on its own when every
    group has MIN_SIDE_UTTERANCES distinct utterances, else the whole side (`whole`: its distinct vectors)."""
    if members is not None:
        parts = {group: _distinct([vectors[i] for i in rows]) for group, rows in members.items()}
        if all(len(unique) >= MIN_SIDE_UTTERANCES for unique, _ in parts.values()):
            probs = np.empty((len(vectors), len(head.classes)), np.float32)
            for group, rows in members.items():
                unique, index = parts[group]
                probs[rows] = head.predict_proba_side(unique)[index]
            return probs, "group"
    unique, index = whole
    return head.predict_proba_side(unique)[index], "side"


def add_side_reading(rows: list[dict], head) -> tuple[list[dict], dict[str, str], dict[str, str]]:
    """The rows (copies, SER inputs removed) with each side's ``pred_side``/``probs_side`` and the pair's
    ``expected_agreement_side``, read by ``head`` (a per_side models.ser.head.SerHead, or None); the reason
    per side-reading metric when there is no side reading; and what each side was normalised over
    ({"source": "group" or "side", "target": ...}; empty without a reading)."""
    if head is None:
        return (
            strip_ser_inputs(rows),
            {},
            _unavailable(
                "no side-normalised SER head is loaded (the profile has none, "
                "or not for this SER head's classes; pass one with --side-head)"
            ),
        )
    if not rows:
        return [], {}, {}
    if any(SER_INPUT not in row[side] for row in rows for side in ("source", "target")):
        return (
            strip_ser_inputs(rows),
            {},
            _unavailable(
                "some pairs were evaluated without their SER inputs (before the side reading existed): re-run the job"
            ),
        )
    read: dict[str, np.ndarray] = {}
    normalised_per: dict[str, str] = {}
    members = _group_members(rows)
    for side in ("source", "target"):
        vectors = [np.asarray(row[side][SER_INPUT], np.float32) for row in rows]
        whole = _distinct(vectors)
        if len(whole[0]) < MIN_SIDE_UTTERANCES:
            return (
                strip_ser_inputs(rows),
                {},
                _unavailable(
                    f"the side-normalised reading needs at least {MIN_SIDE_UTTERANCES} distinct {side} utterances; "
                    f"this job has {len(whole[0])}"
                ),
            )
        read[side], normalised_per[side] = _read_side(head, vectors, whole, members)
    out = []
    for i, row in enumerate(strip_ser_inputs(rows)):
        probs = {side: read[side][i] for side in ("source", "target")}
        for side in ("source", "target"):
            row[side][SIDE_PRED] = head.classes[int(np.argmax(probs[side]))]
            row[side][SIDE_PROBS] = {c: float(p) for c, p in zip(head.classes, probs[side], strict=True)}
        for m in SIDE_PAIR_METRICS:
            row[m.name] = float(m.from_probabilities(probs["source"], probs["target"]))
        out.append(row)
    return out, normalised_per, {}
