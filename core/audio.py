"""Audio decoding: any common format, rate and channel count -> 16 kHz mono float32."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16_000
DEFAULT_MAX_SECONDS = 600.0


class AudioError(ValueError):
    """Audio that cannot be evaluated; the message says why, for the user."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_any(data: bytes) -> tuple[np.ndarray, int]:
    """Decode to (samples, channels) float32 and the native rate (libsndfile: WAV/FLAC/OGG/MP3)."""
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as error:
        # libsndfile names the in-memory file object ("Error opening <_io.BytesIO object at 0x...>: ..."):
        # keep only its reason, so the message is the same for the same bytes
        reason = str(error).rsplit(">: ", 1)[-1]
        raise AudioError(f"not decodable as audio: {reason}") from None
    return samples, rate


def decode_audio(data: bytes, *, max_seconds: float | None = None) -> np.ndarray:
    """Decode bytes of WAV/FLAC/OGG/MP3 to 16 kHz mono float32, or raise AudioError."""
    if not data:
        raise AudioError("empty file")
    samples, rate = _read_any(data)
    if samples.size == 0 or samples.shape[0] == 0:
        raise AudioError("audio has no samples")
    if rate <= 0:
        raise AudioError(f"invalid sample rate {rate}")
    duration = samples.shape[0] / rate
    if max_seconds is not None and duration > max_seconds:
        raise AudioError(f"audio is {duration:.1f} s long, over the {max_seconds:g} s cap")
    if not np.all(np.isfinite(samples)):
        raise AudioError("audio contains NaN or infinite samples")
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_audio_file(path, *, max_seconds: float | None = None) -> tuple[np.ndarray, str]:
    """Read a file, returning (16 kHz mono samples, sha256 of the file's bytes)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise AudioError(f"cannot read {path}: {error.strerror}") from None
    return decode_audio(data, max_seconds=max_seconds), sha256_bytes(data)
