"""Syllable nuclei with Praat (parselmouth), after de Jong & Wempe (2009): no transcript needed.

Peaks of intensity above a threshold (0.99 quantile + silence dB), separated by a dip of at least
MIN_DIP_DB from the following peak, and voiced (a pitch is defined there), count as syllables.
"""
from __future__ import annotations

import numpy as np
import parselmouth

SAMPLE_RATE = 16_000
SILENCE_DB = -25.0
MIN_DIP_DB = 2.0
METHOD = "dejong-wempe-2009"


def _local_maxima(values: np.ndarray) -> np.ndarray:
    inner = (values[1:-1] > values[:-2]) & (values[1:-1] >= values[2:])
    return np.flatnonzero(inner) + 1


def syllable_times(wave: np.ndarray) -> np.ndarray:
    """Times (s) of syllable nuclei in the utterance."""
    if len(wave) < SAMPLE_RATE * 0.1:
        return np.zeros(0)
    sound = parselmouth.Sound(wave.astype(np.float64), sampling_frequency=SAMPLE_RATE)
    intensity = sound.to_intensity(minimum_pitch=50.0, time_step=0.016, subtract_mean=True)
    db = intensity.values[0]
    times = intensity.xs()
    if len(db) < 3:
        return np.zeros(0)
    threshold = max(np.quantile(db, 0.99) + SILENCE_DB, float(db.min()))
    peaks = [p for p in _local_maxima(db) if db[p] > threshold]
    nuclei = []
    for current, following in zip(peaks, peaks[1:] + [None]):
        dip = db[current:following].min() if following is not None else db[current:].min()
        if db[current] - dip > MIN_DIP_DB:
            nuclei.append(current)
    if not nuclei:
        return np.zeros(0)
    pitch = sound.to_pitch_ac(
        time_step=0.02, pitch_floor=30.0, max_number_of_candidates=4, very_accurate=False,
        silence_threshold=0.03, voicing_threshold=0.25, octave_cost=0.01,
        octave_jump_cost=0.35, voiced_unvoiced_cost=0.25, pitch_ceiling=450.0,
    )
    voiced = [times[p] for p in nuclei if np.isfinite(pitch.get_value_at_time(times[p]))
              and pitch.get_value_at_time(times[p]) > 0]
    return np.asarray(voiced, dtype=np.float64)


def count_in_segments(times: np.ndarray, segments: np.ndarray) -> int:
    """Syllable nuclei falling inside VAD speech segments."""
    if len(times) == 0 or len(segments) == 0:
        return 0
    inside = (times[:, None] >= segments[None, :, 0]) & (times[:, None] <= segments[None, :, 1])
    return int(inside.any(axis=1).sum())
