"""Syllable nuclei as de Jong & Wempe's Praat script finds them (2009; the 2010-09-17 revision by
Quené, Persoon and de Jong, "Praat Script Syllable Nuclei v2"), run through Praat itself
(parselmouth), no transcript needed.

Step by step as the script does it, with the same Praat commands:

1. ``To Intensity... 50 0 yes`` (minimum pitch 50 Hz, Praat's default time step, mean subtracted);
2. threshold = the contour's 0.99 quantile (Praat's ``Get quantile``) + SILENCE_DB (-25 dB), but
   not below its minimum (``Get minimum``, parabolic);
3. candidate peaks: ``Down to Matrix`` -> ``To Sound (slice)`` -> ``To PointProcess (extrema)``
   (maxima only, sinc-70 interpolation), each peak's level read with cubic interpolation; peaks at
   or below the threshold are dropped;
4. a peak is a nucleus when the intensity falls by more than MIN_DIP_DB (2 dB) between it and the
   next peak (``Get minimum`` over that span, no interpolation). The script's loop runs to the
   second-to-last peak, so the last peak above the threshold is never a nucleus;
5. voiced: the pitch (``To Pitch (ac)... 0.02 30 4 no 0.03 0.25 0.01 0.35 0.25 450``) is defined
   at the peak.

One difference, on purpose: the script also drops nuclei in the silences of Praat's ``To TextGrid
(silences)``; emopres counts nuclei inside silero-vad's speech segments instead
(:func:`count_in_segments`), the same segments that define Pause and the speech time Rate divides
by, so the syllables counted and the time they are divided by come from one speech detector.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import parselmouth
from parselmouth.praat import call

SAMPLE_RATE = 16_000
SILENCE_DB = -25.0
MIN_DIP_DB = 2.0
METHOD = "dejong-wempe-2010-praat"  # in the feature signature: a change here invalidates cached syllables


def _peaks_above_threshold(intensity) -> list[tuple[float, float]]:
    """(time, level) of every intensity maximum above the script's threshold (steps 2 and 3)."""
    minimum = call(intensity, "Get minimum", 0, 0, "Parabolic")
    threshold = max(call(intensity, "Get quantile", 0, 0, 0.99) + SILENCE_DB, minimum)
    contour = call(call(intensity, "Down to Matrix"), "To Sound (slice)", 1)
    maxima = call(contour, "To PointProcess (extrema)", "Left", "yes", "no", "Sinc70")
    peaks = []
    for index in range(1, call(maxima, "Get number of points") + 1):
        time = call(maxima, "Get time from index", index)
        level = call(contour, "Get value at time", time, "Cubic")
        if level > threshold:
            peaks.append((time, level))
    return peaks


def _nuclei_with_a_dip(intensity, peaks: list[tuple[float, float]]) -> list[float]:
    """Step 4: peaks followed by a dip of more than MIN_DIP_DB before the next peak; never the last peak."""
    nuclei = []
    level = peaks[0][1] if peaks else None
    for (time, _), (next_time, _) in pairwise(peaks):
        dip = call(intensity, "Get minimum", time, next_time, "None")
        if abs(level - dip) > MIN_DIP_DB:
            nuclei.append(time)
        level = call(intensity, "Get value at time", next_time, "Cubic")  # the script re-reads the next level here
    return nuclei


def syllable_times(wave: np.ndarray) -> np.ndarray:
    """Times (s) of syllable nuclei in the utterance (16 kHz mono)."""
    if len(wave) < SAMPLE_RATE * 0.1:
        return np.zeros(0)
    sound = parselmouth.Sound(np.asarray(wave, dtype=np.float64), sampling_frequency=SAMPLE_RATE)
    intensity = call(sound, "To Intensity", 50, 0, "yes")
    if call(intensity, "Get number of frames") < 2:
        return np.zeros(0)
    nuclei = _nuclei_with_a_dip(intensity, _peaks_above_threshold(intensity))
    if not nuclei:
        return np.zeros(0)
    pitch = call(sound, "To Pitch (ac)", 0.02, 30, 4, "no", 0.03, 0.25, 0.01, 0.35, 0.25, 450)
    voiced = [t for t in nuclei if np.isfinite(call(pitch, "Get value at time", t, "Hertz", "Linear"))]
    return np.asarray(voiced, dtype=np.float64)


def count_in_segments(times: np.ndarray, segments: np.ndarray) -> int:
    """Syllable nuclei falling inside VAD speech segments."""
    if len(times) == 0 or len(segments) == 0:
        return 0
    inside = (times[:, None] >= segments[None, :, 0]) & (times[:, None] <= segments[None, :, 1])
    return int(inside.any(axis=1).sum())
