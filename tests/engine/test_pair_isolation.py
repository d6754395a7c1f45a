"""A failure in any model step fails only the pair whose file caused it, with its reason (issue 26, 0b)."""

import json

import numpy as np
import pytest

from cli.main import main
from emopres_client.pairs import PairSpec
from models.lite.profile import LiteProfile
from models.prosody.vad import SileroVad
from models.registry import ProfileSpec
from models.ser.head import SerHead
from worker.engine import pipeline
from worker.engine.pipeline import Evaluator

BAD_SECONDS = 1.3  # the one file with this length is the bad one
BAD_SAMPLES = int(BAD_SECONDS * 16_000)


def _bad_wave(wave) -> bool:
    return len(wave) == BAD_SAMPLES


def _bad_features(features) -> bool:
    return abs(float(features["duration_s"]) - BAD_SECONDS) < 1e-6


def _inject(monkeypatch, step: str) -> None:
    def fail():
        raise RuntimeError(f"injected {step} failure")

    if step == "decode":
        original = pipeline.decode_audio

        def decode(data, **kwargs):
            wave = original(data, **kwargs)
            return fail() if _bad_wave(wave) else wave

        monkeypatch.setattr(pipeline, "decode_audio", decode)
    elif step == "features":
        original = LiteProfile.utterance_features
        monkeypatch.setattr(
            LiteProfile,
            "utterance_features",
            lambda self, waves: fail() if any(map(_bad_wave, waves)) else original(self, waves),
        )
    elif step == "vad":
        original = SileroVad.speech_segments
        monkeypatch.setattr(
            SileroVad, "speech_segments", lambda self, wave: fail() if _bad_wave(wave) else original(self, wave)
        )
    elif step == "syllables":
        original = pipeline.syllable_times
        monkeypatch.setattr(pipeline, "syllable_times", lambda wave: fail() if _bad_wave(wave) else original(wave))
    elif step == "ser":
        original = LiteProfile.ser_input
        monkeypatch.setattr(
            LiteProfile, "ser_input", lambda self, feats: fail() if _bad_features(feats) else original(self, feats)
        )
    elif step == "ser_batch":  # the head itself fails on a batch holding the bad file
        original = SerHead.predict_proba
        bad_rows = []
        original_input = LiteProfile.ser_input

        def ser_input(self, feats):
            row = original_input(self, feats)
            if _bad_features(feats):
                bad_rows.append(np.asarray(row))
            return row

        def predict_proba(self, inputs):
            if any(np.array_equal(row, bad) for row in np.asarray(inputs) for bad in bad_rows):
                fail()
            return original(self, inputs)

        monkeypatch.setattr(LiteProfile, "ser_input", ser_input)
        monkeypatch.setattr(SerHead, "predict_proba", predict_proba)
    elif step == "pair_metrics":
        original = LiteProfile.pair_scores
        monkeypatch.setattr(
            LiteProfile,
            "pair_scores",
            lambda self, src, tgt: fail() if _bad_features(tgt) else original(self, src, tgt),
        )
    else:
        raise AssertionError(step)


STEPS = ["decode", "features", "vad", "syllables", "ser", "ser_batch", "pair_metrics"]


@pytest.mark.parametrize("step", STEPS)
def test_a_failing_step_fails_only_its_pair(step, write_wav, tmp_path, random_lite_head, monkeypatch):
    for i in range(4):
        write_wav(f"s{i}.wav", seconds=1.5 + 0.1 * i, seed=i, pitch=110 + 20 * i)
        write_wav(f"t{i}.wav", seconds=1.6 + 0.1 * i, seed=10 + i, pitch=120 + 20 * i)
    write_wav("bad.wav", seconds=BAD_SECONDS, seed=99)
    pairs = [PairSpec(f"p{i}", f"s{i}.wav", f"t{i}.wav") for i in range(4)]
    pairs.insert(2, PairSpec("bad", "s0.wav", "bad.wav"))
    _inject(monkeypatch, step)
    with Evaluator(ProfileSpec(), SerHead.load(random_lite_head), n_jobs=1) as evaluator:
        rows, failures = evaluator.evaluate_pairs(pairs, lambda name: str(tmp_path / name))
    assert [r["pair_id"] for r in rows] == ["p0", "p1", "p2", "p3"]
    assert [f["pair_id"] for f in failures] == ["bad"]
    assert f"injected {step} failure" in failures[0]["error"]
    assert failures[0]["side"] == ("pair" if step == "pair_metrics" else "target")


def test_a_very_short_file_fails_only_its_pair_end_to_end(write_wav, tmp_path, random_lite_head, capsys):
    """0.1 s (1,600 samples) is shorter than Praat's analysis window: it raised outside the per-pair handling."""
    lines = ["pair_id,source,target"]
    for i in range(8):
        write_wav(f"audio/s{i}.wav", seconds=1.5 + 0.1 * i, seed=i, pitch=110 + 10 * i)
        write_wav(f"audio/t{i}.wav", seconds=1.6 + 0.1 * i, seed=20 + i, pitch=115 + 10 * i)
        lines.append(f"p{i},audio/s{i}.wav,audio/t{i}.wav")
    write_wav("audio/short.wav", seconds=0.1, seed=50)
    lines.append("short,audio/s0.wav,audio/short.wav")
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "report.json"
    status = main(
        [
            "evaluate",
            str(tmp_path / "pairs.csv"),
            "--out",
            str(out),
            "--head",
            str(random_lite_head),
            "--bootstrap",
            "0",
            "--jobs",
            "1",
            "--no-cache",
        ]
    )
    capsys.readouterr()
    assert status == 0
    report = json.loads(out.read_text())
    assert len(report["pairs"]) == 8 and report["job"]["n_failed"] == 1
    assert [(f["pair_id"], f["side"]) for f in report["failures"]] == [("short", "target")]
