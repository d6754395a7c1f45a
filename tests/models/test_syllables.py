"""Syllable nuclei against de Jong & Wempe's Praat script (issue 15, point 3), and the VAD settings
behind Pause.

The reference is a Praat script run by Praat's own interpreter (parselmouth.praat.run): the
published algorithm's steps written in Praat's language from the script's description
(models/prosody/syllables.py lists them), so the Python port's loop, threshold and peak picking are
checked against an execution that shares none of its Python."""

from __future__ import annotations

import numpy as np
import pytest

from models.prosody.syllables import MIN_DIP_DB, SAMPLE_RATE, SILENCE_DB, syllable_times

# The published steps in Praat's own language. It prints one line per voiced nucleus.
REFERENCE_SCRIPT = """
form Nuclei
  real silencedb -25
  real mindip 2
endform
sound = selected("Sound")
intensity = To Intensity: 50, 0, "yes"
minint = Get minimum: 0, 0, "Parabolic"
q99 = Get quantile: 0, 0, 0.99
threshold = q99 + silencedb
if threshold < minint
  threshold = minint
endif
matrix = Down to Matrix
contour = To Sound (slice): 1
points = To PointProcess (extrema): "Left", "yes", "no", "Sinc70"
n = Get number of points
count = 0
for i to n
  selectObject: points
  t = Get time from index: i
  selectObject: contour
  v = Get value at time: t, "Cubic"
  if v > threshold
    count = count + 1
    peaktime[count] = t
    peakvalue[count] = v
  endif
endfor
valid = 0
if count > 0
  here = peakvalue[1]
endif
selectObject: intensity
for p to count - 1
  lowest = Get minimum: peaktime[p], peaktime[p + 1], "None"
  if abs(here - lowest) > mindip
    valid = valid + 1
    validtime[valid] = peaktime[p]
  endif
  here = Get value at time: peaktime[p + 1], "Cubic"
endfor
selectObject: sound
pitch = To Pitch (ac): 0.02, 30, 4, "no", 0.03, 0.25, 0.01, 0.35, 0.25, 450
writeInfo: ""
for k to valid
  f0 = Get value at time: validtime[k], "Hertz", "Linear"
  if f0 <> undefined
    appendInfoLine: fixed$(validtime[k], 9)
  endif
endfor
"""


def praat_reference(wave: np.ndarray) -> np.ndarray:
    import parselmouth

    sound = parselmouth.Sound(np.asarray(wave, dtype=np.float64), sampling_frequency=SAMPLE_RATE)
    _, text = parselmouth.praat.run(sound, REFERENCE_SCRIPT, SILENCE_DB, MIN_DIP_DB, capture_output=True)
    return np.array([float(line) for line in text.split()], dtype=np.float64)


def bursts(n: int, on: float = 0.15, off: float = 0.15, seed: int = 0) -> np.ndarray:
    """``n`` voiced bursts (140 Hz harmonics under a raised-cosine envelope) separated by near-silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(on * SAMPLE_RATE)) / SAMPLE_RATE
    tone = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6)) * np.sin(np.pi * t / on) ** 2
    gap = np.zeros(int(off * SAMPLE_RATE))
    wave = np.concatenate([gap] + [np.concatenate([0.3 * tone, gap]) for _ in range(n)])
    return (wave + 0.001 * rng.standard_normal(len(wave))).astype(np.float32)


def test_the_last_intensity_peak_is_never_a_nucleus():
    wave = bursts(5)
    times = syllable_times(wave)
    starts = 0.15 + 0.3 * np.arange(5)
    assert len(times) == 4  # five bursts, five peaks above the threshold, the last one never tested
    assert np.all(np.abs(times - (starts[:4] + 0.075)) < 0.03)
    assert len(praat_reference(wave)) == 4


def test_nuclei_equal_the_praat_script_on_real_speech(shared_data):
    from core.audio import load_audio_file
    from tests.conftest import read_csv

    rows = read_csv(shared_data / "ravdess" / "manifest.csv")[:4] + read_csv(shared_data / "jvnv" / "manifest.csv")[:4]
    folders = ["ravdess"] * 4 + ["jvnv"] * 4
    total = 0
    for folder, row in zip(folders, rows, strict=True):
        wave = load_audio_file(shared_data / folder / row["path"])[0]
        ours, reference = syllable_times(wave), praat_reference(wave)
        assert len(ours) == len(reference), row["path"]
        np.testing.assert_allclose(ours, reference, atol=1e-8)
        total += len(ours)
    assert total > 20  # real speech: many nuclei compared, not an empty agreement


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nuclei_equal_the_praat_script_on_speechlike_signals(seed):
    from tests.conftest import synthetic_speechlike

    wave = synthetic_speechlike(3.0, seed=seed, pitch=120 + 20 * seed)
    reference = praat_reference(wave)
    assert len(reference) >= 3
    np.testing.assert_allclose(syllable_times(wave), reference, atol=1e-8)


def test_vad_drops_speech_shorter_than_its_minimum_and_merges_short_silences(shared_data):
    """Pause is defined on silero-vad's segments: every segment lasts at least MIN_SPEECH_S (silero's
    min_speech_duration_ms, 250 ms, passed explicitly) and every gap at least MIN_PAUSE_S."""
    from core.audio import load_audio_file
    from models.prosody.vad import MIN_PAUSE_S, MIN_SPEECH_S, SileroVad
    from tests.conftest import read_csv

    assert MIN_SPEECH_S == 0.25
    vad = SileroVad()
    row = read_csv(shared_data / "ravdess" / "manifest.csv")[0]
    speech = load_audio_file(shared_data / "ravdess" / row["path"])[0]
    segments = vad.speech_segments(speech)
    assert len(segments) >= 1
    # a 120 ms slice of speech alone between silences is shorter than the minimum: no segment
    start = int(segments[0, 0] * SAMPLE_RATE)
    blip = np.concatenate(
        [np.zeros(SAMPLE_RATE), speech[start : start + int(0.12 * SAMPLE_RATE)], np.zeros(SAMPLE_RATE)]
    )
    assert len(vad.speech_segments(blip)) == 0
    both = np.concatenate([speech, np.zeros(SAMPLE_RATE // 2), speech])
    found = vad.speech_segments(both)
    assert np.all(found[:, 1] - found[:, 0] >= MIN_SPEECH_S - 1e-9)
    assert np.all(found[1:, 0] - found[:-1, 1] >= MIN_PAUSE_S - 1e-9)
