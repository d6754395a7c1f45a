"""SER training features: the extractors (eGeMAPS functionals for lite, emotion2vec for paper, speed-perturbed
copies) and their extraction, cached in the one feature cache (core.feature_cache) by audio sha256 and the
extractor's signature."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from core.feature_cache import FeatureCache, default_cache_dir
from models.runtime.batching import file_sha256
from models.ser.data import TrainingError


class EgemapsExtractor:
    """openSMILE eGeMAPSv02 functionals (88), the lite profile's SER input."""

    def __init__(self) -> None:
        from models.lite.egemaps import FEATURE_SET, Egemaps

        self._egemaps = Egemaps()
        self.feature_set = FEATURE_SET
        self.signature = f"{FEATURE_SET}|{Egemaps.version()}"

    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        return [self._egemaps.functionals(w) for w in waves]


class Emotion2vecExtractor:
    """emotion2vec_plus_large utterance features (1024, the paper profile's `ser_input`).

    Only the emotion2vec model is needed (the other paper models may be absent); the cache key is
    the checkpoint's sha256 and the inference precision.
    """

    feature_set = "emotion2vec_plus_large"

    def __init__(self, model_dir) -> None:
        from models.paper.profile import PaperProfile

        try:
            self._profile = PaperProfile.from_model_dir(model_dir, allow_missing=True)
        except (FileNotFoundError, ValueError) as error:
            raise TrainingError(str(error)) from None
        encoder = getattr(self._profile, "emotion2vec", None)
        info = encoder.info() if encoder is not None and hasattr(encoder, "info") else {}
        if info.get("sha256"):
            self.signature = f"{self.feature_set}|e2v:{info['sha256']}|mode:{info.get('precision')}"
        else:
            self.signature = f"{self.feature_set}|" + "|".join(str(p) for p in self._profile.signature_parts())

    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        encoder = getattr(self._profile, "emotion2vec", None)
        if encoder is not None and hasattr(encoder, "features"):  # only emotion2vec, not every paper model
            _, utterance = encoder.features(waves)
            return [np.asarray(row, np.float32) for row in utterance]
        return [np.asarray(f["ser_input"], np.float32) for f in self._profile.utterance_features(waves)]


def speed_perturb(wave: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi-style speed perturbation: the utterance played `factor` times faster (tempo, pitch and formants
    change together), by resampling 16 kHz audio and reading it back at 16 kHz."""
    import soxr

    return soxr.resample(wave, 16000, int(round(16000 / factor))).astype(np.float32)


class SpeedPerturbed:
    """An extractor that speed-perturbs the waves first: extra training copies (never dev or test)."""

    def __init__(self, base, factor: float) -> None:
        self.base, self.factor = base, float(factor)
        self.feature_set = base.feature_set
        self.signature = f"{base.signature}|aug=speed:{self.factor:g}"  # its own feature cache

    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        return self.base([speed_perturb(w, self.factor) for w in waves])


def make_extractor(features: str, model_dir=None):
    if features == "egemaps":
        return EgemapsExtractor()
    if features == "emotion2vec":
        model_dir = model_dir or os.environ.get("EMOPRES_MODEL_DIR")
        if not model_dir:
            raise TrainingError(
                "--features emotion2vec needs the emotion2vec_plus_large model: set EMOPRES_MODEL_DIR "
                "or pass --model-dir (see `emopres models check`)"
            )
        if not Path(model_dir).is_dir():
            raise TrainingError(f"model directory {model_dir} does not exist")
        return Emotion2vecExtractor(model_dir)
    raise TrainingError(f"unknown feature set {features!r} (choose egemaps or emotion2vec)")


def extract_features(
    paths: Sequence[Path],
    extractor,
    cache_dir=None,
    *,
    batch_size: int = 8,
    progress: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """(N, D) features of audio files and their sha256s; each file is extracted once per extractor signature."""
    from core.audio import AudioError, load_audio_file

    cache = FeatureCache(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    hashes, results, todo = [], [None] * len(paths), []
    for i, path in enumerate(paths):
        try:
            sha = file_sha256(path)
        except OSError as error:
            raise TrainingError(f"cannot read {path}: {error.strerror}") from None
        hashes.append(sha)
        cached = cache.get(cache.key(sha, extractor.signature))
        if cached is not None and "features" in cached:
            results[i] = cached["features"]
        else:
            todo.append(i)
    started, done = time.monotonic(), 0
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        waves = []
        for i in chunk:
            try:
                waves.append(load_audio_file(paths[i])[0])
            except AudioError as error:
                raise TrainingError(f"{paths[i]}: {error}") from None
        for i, vector in zip(chunk, extractor(waves), strict=True):
            vector = np.asarray(vector, np.float32)
            cache.put(cache.key(hashes[i], extractor.signature), {"features": vector})
            results[i] = vector
        done += len(chunk)
        if progress:
            rate = done / max(time.monotonic() - started, 1e-9)
            progress(
                f"features {extractor.feature_set}: {done}/{len(todo)} extracted "
                f"({len(paths) - len(todo)} cached), {rate:.1f} files/s"
            )
    features = np.stack(results).astype(np.float32)
    if not np.all(np.isfinite(features)):
        bad = [str(paths[i]) for i in np.flatnonzero(~np.isfinite(features).all(axis=1))[:3]]
        raise TrainingError(f"non-finite features for {', '.join(bad)}")
    return features, hashes


def training_data_hash(
    hashes: Sequence[str], labels: Sequence[str], splits: Sequence[str], feature_signature: str
) -> str:
    """sha256 over (audio sha256, label, split) sorted, plus the feature extractor: what the head was fitted on."""
    digest = hashlib.sha256(feature_signature.encode())
    for row in sorted(zip(hashes, labels, splits, strict=True)):
        digest.update("\t".join(row).encode() + b"\n")
    return digest.hexdigest()
