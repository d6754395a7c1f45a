"""What every SER quality study of bench/ shares: the labelled corpora of the shared data folder and their
splits, the MELD labels, the cached eGeMAPS functionals (with training-data augmentation) and per-group
standardisation.

The shared data folder is $EMOPRES_SHARED_DATA, else ../shared/data beside the repository (as tests/conftest.py).
Features are cached under .cache/features (extracted once per file and augmentation).
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.ser.training import extract_features, speed_perturb  # noqa: E402

DATA = Path(os.environ.get("EMOPRES_SHARED_DATA", ROOT.parent / "shared" / "data"))
CACHE = ROOT / ".cache" / "features"
RAVDESS_SPLIT = {"train": range(1, 15), "dev": range(15, 18), "test": range(18, 21)}


def ravdess_split(speaker: str) -> str:
    return next(name for name, members in RAVDESS_SPLIT.items() if int(speaker) in members)


def jvnv_split(number: str) -> str:
    return {0: "train", 1: "train", 2: "train", 3: "dev", 4: "test"}[int(number) % 5]


# EmoDB (5 speakers here): 03 (m) and 08 (f) are test speakers no choice looks at; 09, 10, 11 train; no dev speaker.
EMODB_SPLIT = {"03": "test", "08": "test", "09": "train", "10": "train", "11": "train"}


def emodb_split(speaker: str) -> str:
    return EMODB_SPLIT[speaker]


def ased_split(speaker: str) -> str:
    """ASED's 65 speakers: number % 5 == 0 test (13 speakers), == 1 dev (13), the other 39 train."""
    return {0: "test", 1: "dev"}.get(int(speaker) % 5, "train")


SPLIT_RULES = {
    "ravdess": lambda row: ravdess_split(row["speaker"]),
    "jvnv": lambda row: jvnv_split(row["number"]),
    "emodb": lambda row: emodb_split(row["speaker"]),
    "ased": lambda row: ased_split(row["speaker"]),
}
SPLIT_RULE_TEXT = (
    "RAVDESS: actors 01-14 train, 15-17 dev, 18-20 test (the split of pairs/en-ja.csv); "
    "JVNV (one speaker, F2): utterance number % 5 in {0,1,2} train, 3 dev, 4 test; "
    "EmoDB: speakers 09, 10, 11 train, 03 and 08 test (no dev speaker); "
    "ASED: speaker number % 5 == 0 test (13 speakers), == 1 dev (13), others train (39)"
)
CORPORA = ("ravdess", "jvnv", "emodb", "ased")


def load_all(corpora=("ravdess", "jvnv")) -> dict:
    rows = []
    for corpus in corpora:
        with open(DATA / corpus / "manifest.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                rows.append(
                    {
                        "path": DATA / corpus / row["path"],
                        "rel": f"{corpus}/{row['path']}",
                        "corpus": corpus,
                        "speaker": f"{corpus}:{row['speaker']}",
                        "emotion": row["emotion"],
                        "split": SPLIT_RULES[corpus](row),
                    }
                )
    return {
        key: np.array([r[key] for r in rows], dtype=object if key == "path" else None)
        for key in ("path", "rel", "corpus", "speaker", "emotion", "split")
    }


# ---------------------------------------------------------------- augmentation (training data only)


class Augmented:
    """Wraps an extractor: transform the wave first (its own cache key)."""

    def __init__(self, base, name: str):
        self.base, self.name = base, name
        self.feature_set = base.feature_set
        self.signature = f"{base.signature}|aug={name}"

    def transform(self, wave: np.ndarray) -> np.ndarray:
        kind, value = self.name.split(":")
        value = float(value)
        if kind == "speed":  # Kaldi-style speed perturbation: tempo, pitch and formants together
            return speed_perturb(wave, value)
        if kind == "pitch":  # semitones, tempo kept
            import librosa

            return librosa.effects.pitch_shift(wave, sr=16000, n_steps=value).astype(np.float32)
        if kind == "gain":  # dB
            return (wave * 10 ** (value / 20)).astype(np.float32)
        if kind == "noise":  # white noise at SNR dB, fixed seed per length
            rng = np.random.default_rng(len(wave))
            power = np.mean(wave**2) / 10 ** (value / 10)
            return (wave + rng.normal(0, np.sqrt(power), len(wave))).astype(np.float32)
        raise ValueError(self.name)

    def __call__(self, waves):
        return self.base([self.transform(w) for w in waves])


_EXTRACTOR = None


def extractor():
    global _EXTRACTOR
    if _EXTRACTOR is None:
        from models.ser.training import EgemapsExtractor

        _EXTRACTOR = EgemapsExtractor()
    return _EXTRACTOR


def features(paths, augmentation: str | None = None) -> np.ndarray:
    ex = extractor() if augmentation is None else Augmented(extractor(), augmentation)
    matrix, _ = extract_features(list(paths), ex, CACHE)
    return matrix


# ---------------------------------------------------------------- normalisation


def per_group(matrix: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = np.empty_like(matrix)
    for group in np.unique(groups):
        mask = groups == group
        mean, std = matrix[mask].mean(0), matrix[mask].std(0)
        out[mask] = (matrix[mask] - mean) / np.where(std > 1e-8, std, 1.0)
    return out


# ---------------------------------------------------------------- labels


def labels_for(emotions: np.ndarray, calm: str) -> np.ndarray:
    """MELD labels: RAVDESS calm merged into neutral (or dropped); EmoDB boredom (no MELD counterpart) dropped."""
    emotions = np.where(emotions == "boredom", "-", emotions)
    if calm == "neutral":
        return np.where(emotions == "calm", "neutral", emotions)
    if calm == "drop":
        return np.where(emotions == "calm", "-", emotions)
    raise ValueError(calm)
