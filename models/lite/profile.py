"""The lite profile: openSMILE eGeMAPS for SER and acoustic_sim; nothing to download.

artifacts/egemaps_lld_stats.json: mean and std (floored at 1e-6) of the 25 LLDs of Egemaps().extract over all
frames of the first 240 files of the RAVDESS + JVNV manifests (shared/data, in that order) after
random.Random(0).shuffle.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from core.catalogue import NEEDS_PAPER
from models import ARTIFACTS_DIR
from models.lite.egemaps import FEATURE_SET, Egemaps
from models.profile import Profile

LLD_STATS_FILE = ARTIFACTS_DIR / "egemaps_lld_stats.json"


def load_lld_stats(path: Path = LLD_STATS_FILE) -> tuple[np.ndarray, np.ndarray]:
    stats = json.loads(path.read_text())
    return np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)


class LiteProfile(Profile):
    name = "lite"

    @cached_property
    def _egemaps(self) -> Egemaps:
        return Egemaps()

    @cached_property
    def _lld_stats(self) -> tuple[np.ndarray, np.ndarray]:
        return load_lld_stats()

    def models_info(self) -> dict[str, dict]:
        import hashlib

        return {
            "egemaps": {
                "source": "openSMILE eGeMAPSv02 (opensmile package)",
                "sha256": None,
                "version": Egemaps.version(),
            },
            "egemaps_lld_stats": {
                "source": str(LLD_STATS_FILE.name),
                "sha256": hashlib.sha256(LLD_STATS_FILE.read_bytes()).hexdigest(),
                "version": "1",
            },
        }

    def signature_parts(self) -> list[str]:
        return [f"feat:{FEATURE_SET}", "acoustic:lld-z"]

    def unavailable(self) -> dict[str, str]:
        return {
            "emo_sim": NEEDS_PAPER.format(model="emotion2vec"),
            "emo_sim_utterance": NEEDS_PAPER.format(model="emotion2vec"),
            "va_sim": NEEDS_PAPER.format(model="wav2vec2 valence-arousal"),
            "va_sim_utterance": NEEDS_PAPER.format(model="wav2vec2 valence-arousal"),
            "vsim": NEEDS_PAPER.format(model="WavLM ECAPA-TDNN"),
            "autopcp": NEEDS_PAPER.format(model="AutoPCP"),
        }

    def utterance_features(self, waves: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        features = []
        for wave in waves:
            functionals, low_level = self._egemaps.extract(wave)
            features.append({"ser_input": functionals, "lld": low_level})
        return features

    def ser_input(self, feats: dict) -> np.ndarray:
        return feats["ser_input"]

    def pair_scores(self, src: dict, tgt: dict) -> tuple[dict, list[str]]:
        from core.metrics import MetricUndefined
        from core.similarity import frame_similarity, utterance_cosine

        mean, std = self._lld_stats
        source, target = (src["lld"] - mean) / std, (tgt["lld"] - mean) / std
        scores: dict[str, float | None] = {}
        warnings: list[str] = []
        for name, function in (("acoustic_sim", frame_similarity), ("acoustic_sim_utterance", utterance_cosine)):
            try:
                scores[name] = function(source, target)
            except MetricUndefined as error:
                scores[name] = None
                warnings.append(f"{name}: {error.reason}")
        return scores, warnings
