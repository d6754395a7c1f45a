"""Pairs with known preservation for the SER studies: English RAVDESS sources, each with a target of the same
emotion (preserved) and of another (swapped) from a target corpus, and how far a head's readings separate the
preserving system from the swapping one (EPR, expected agreement, Bhattacharyya coefficient; paired bootstrap)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from ser_common import CORPORA, DATA, ROOT, labels_for

PAIR_NAMES = {"jvnv": "en-ja", "emodb": "en-de", "ased": "en-am"}
PAIR_COLUMNS = (
    "pair_id",
    "source",
    "target_preserved",
    "target_swapped",
    "emotion",
    "swapped_emotion",
    "speaker",
    "split",
)
PAIRS_CACHE = ROOT / ".cache" / "pairs"
PAIR_VOICES = {"": "random", "+1voice": "one-per-speaker"}  # score-key suffix -> build_pairs voices


def build_pairs(data: dict, target: str, seed: int = 20261201, voices: str = "random") -> list[dict]:
    """English RAVDESS sources paired with a `target`-corpus utterance of the same emotion (preserved) and of a
    different one (swapped), as pairs/en-ja.csv is built; split by English speaker (01-14 / 15-17 / 18-20).

    Unlike en-ja.csv, targets follow the target corpus's own split: test sources get targets from its test
    speakers/utterances only, train and dev sources from the rest, so the test pairs are unseen on both sides
    and a choice made on dev pairs never looks at a test target. Sources: every RAVDESS utterance (calm excluded:
    no MELD counterpart) whose emotion the target's pool has. Each row keeps the data indexes (_s, _p, _w).

    voices="random": each target from any speaker of the pool (pairs/en-de.csv's way).
    voices="one-per-speaker": all targets of one source speaker from one target speaker (assigned in turn), as a
    system speaks each speaker's translations in one voice; en-ja.csv is that way too (JVNV has one speaker here).
    """
    rng = np.random.default_rng(seed + CORPORA.index(target) + (0 if voices == "random" else 1000))
    labels = labels_for(data["emotion"], "drop")
    is_target = data["corpus"] == target
    parts = {"test": is_target & (data["split"] == "test"), "rest": is_target & (data["split"] != "test")}
    voice_of = {}
    if voices == "one-per-speaker":
        for side, part in parts.items():
            sources = (data["corpus"] == "ravdess") & ((data["split"] == "test") == (side == "test"))
            pool_speakers = sorted(set(data["speaker"][part]))
            for k, speaker in enumerate(sorted(set(data["speaker"][sources]))):
                voice_of[speaker] = pool_speakers[k % len(pool_speakers)]
    elif voices != "random":
        raise ValueError(f"voices: random or one-per-speaker, not {voices!r}")
    rows = []
    for i in np.flatnonzero((data["corpus"] == "ravdess") & (labels != "-")):
        part = parts["test" if data["split"][i] == "test" else "rest"]
        if voice_of:
            part = part & (data["speaker"] == voice_of[data["speaker"][i]])
        pool = {e: np.flatnonzero(part & (labels == e)) for e in sorted(set(labels[part])) if e != "-"}
        emotion = labels[i]
        if emotion not in pool:
            continue
        other = str(rng.choice([e for e in pool if e != emotion]))
        preserved, swapped = int(rng.choice(pool[emotion])), int(rng.choice(pool[other]))
        rows.append(
            {
                "pair_id": f"{PAIR_NAMES[target].replace('-', '')}-{len(rows):04d}",
                "source": data["rel"][i],
                "target_preserved": data["rel"][preserved],
                "target_swapped": data["rel"][swapped],
                "emotion": emotion,
                "swapped_emotion": other,
                "speaker": data["speaker"][i].split(":")[1],
                "split": data["split"][i],
                "_s": int(i),
                "_p": preserved,
                "_w": swapped,
            }
        )
    return rows


def write_pairs(rows: list[dict], path: Path) -> Path:
    """The pairs as a path-only CSV shaped like pairs/en-ja.csv (paths relative to ../shared/data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PAIR_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def pair_expected_agreement(p_source: np.ndarray, p_target: np.ndarray) -> np.ndarray:
    """The report's per-pair expected agreement (core.metrics.expected_agreement), row by row."""
    from core.metrics import expected_agreement

    return np.array([expected_agreement(s, t) for s, t in zip(p_source, p_target, strict=True)])


def pair_bhattacharyya(p_source: np.ndarray, p_target: np.ndarray) -> np.ndarray:
    """The report's per-pair Bhattacharyya coefficient (core.metrics.bhattacharyya), row by row."""
    from core.metrics import bhattacharyya

    return np.array([bhattacharyya(s, t) for s, t in zip(p_source, p_target, strict=True)])


def separation(p_source, p_preserved, p_swapped, *, n_bootstrap: int = 2000, seed: int = 1) -> dict:
    """Preserving vs swapping system over the same sources, for EPR (argmax agreement), expected agreement and the
    Bhattacharyya coefficient:
    each system's value, the paired difference (preserved - swapped) with paired-bootstrap 95% CI, z and p."""
    from core.bootstrap import paired_bootstrap
    from worker.research.validation import z_from_interval

    per_pair = {
        "epr": (p_source.argmax(1) == p_preserved.argmax(1), p_source.argmax(1) == p_swapped.argmax(1)),
        "expected_agreement": (
            pair_expected_agreement(p_source, p_preserved),
            pair_expected_agreement(p_source, p_swapped),
        ),
        "bhattacharyya": (pair_bhattacharyya(p_source, p_preserved), pair_bhattacharyya(p_source, p_swapped)),
    }
    out = {"n": int(len(p_source))}
    for name, (kept, swapped) in per_pair.items():
        kept, swapped = np.asarray(kept, np.float64), np.asarray(swapped, np.float64)
        res = paired_bootstrap(
            lambda idx, swapped=swapped: swapped[idx].mean(),
            lambda idx, kept=kept: kept[idx].mean(),
            len(kept),
            n_resamples=n_bootstrap,
            seed=seed,
        )
        out[name] = {
            "preserved": float(kept.mean()),
            "swapped": float(swapped.mean()),
            "diff": res["diff"],
            "ci_low": res["ci_low"],
            "ci_high": res["ci_high"],
            "p_value": res["p_value"],
            "z": z_from_interval(res["diff"], res["ci_low"], res["ci_high"]),
        }
    return out


def shared_pairs(data: dict, name: str, split: str = "test") -> list[dict]:
    """Rows of the shared data folder's pairs/NAME.csv (one split) with the data indexes of their three files."""
    where = {rel: i for i, rel in enumerate(data["rel"])}
    with open(DATA / "pairs" / f"{name}.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == split]
    return [
        dict(r, _s=where[r["source"]], _p=where[r["target_preserved"]], _w=where[r["target_swapped"]]) for r in rows
    ]
