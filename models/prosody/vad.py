"""silero-vad speech segments (the ONNX model shipped inside the silero-vad package, run by onnxruntime)."""

from __future__ import annotations

import numpy as np
import torch
from silero_vad import get_speech_timestamps, load_silero_vad

SAMPLE_RATE = 16_000
MIN_PAUSE_S = 0.1  # silences shorter than this are merged into the speech around them
MIN_SPEECH_S = 0.25  # silero-vad's min_speech_duration_ms default (250 ms): shorter speech is dropped


class SileroVad:
    def __init__(self) -> None:
        self._model = load_silero_vad(onnx=True)  # 1.8x faster than the JIT model on CPU, same segments

    def speech_segments(self, wave: np.ndarray) -> np.ndarray:
        """(S, 2) float array of [start_s, end_s] speech segments.

        No padding around segments, and silences shorter than MIN_PAUSE_S are merged, so every gap
        between two returned segments is a pause in the paper's sense (>= 0.1 s). Speech shorter than
        MIN_SPEECH_S (silero's ``min_speech_duration_ms``, 250 ms, its default, passed explicitly) is
        not a segment: a lone sound under 250 ms (a click, a short "uh") counts as silence, so the
        pause around it counts once, not twice.
        """
        timestamps = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
            self._model,
            sampling_rate=SAMPLE_RATE,
            min_silence_duration_ms=int(MIN_PAUSE_S * 1000),
            min_speech_duration_ms=int(MIN_SPEECH_S * 1000),
            speech_pad_ms=0,
        )
        self._model.reset_states()
        segments = [(t["start"] / SAMPLE_RATE, t["end"] / SAMPLE_RATE) for t in timestamps]
        return np.asarray(segments, dtype=np.float64).reshape(-1, 2)

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return f"silero-vad-{version('silero-vad')}"


def pause_rate(segments: np.ndarray) -> float | None:
    """Pause: pauses per second of the first-to-last speech span. A pause is a gap >= MIN_PAUSE_S (0.1 s)
    between two silero-vad speech segments, each segment at least MIN_SPEECH_S (0.25 s) long."""
    if len(segments) == 0:
        return None
    span = float(segments[-1, 1] - segments[0, 0])
    if span <= 0:
        return None
    gaps = segments[1:, 0] - segments[:-1, 1]
    return float(np.sum(gaps >= MIN_PAUSE_S - 1e-9)) / span


def speech_seconds(segments: np.ndarray) -> float:
    return float(np.sum(segments[:, 1] - segments[:, 0])) if len(segments) else 0.0
