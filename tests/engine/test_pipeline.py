"""The lite pipeline on synthetic audio: plumbing, caching, failure isolation, parallelism."""

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile

from emopres_client.pairs import PairSpec
from models.lite.profile import LiteProfile
from models.registry import ProfileSpec
from models.ser.head import SerHead
from worker.engine.pipeline import Evaluator


@pytest.fixture
def files(write_wav, tmp_path):
    for i, name in enumerate(["a", "b", "c", "d"]):
        write_wav(f"{name}.wav", seconds=2.0 + i * 0.3, seed=i, pitch=110 + 30 * i)
    soundfile.write(tmp_path / "silence.wav", np.zeros(16_000, np.float32), 16_000)
    (tmp_path / "garbage.wav").write_bytes(b"not audio" * 100)
    return tmp_path


def resolver(root):
    return lambda relative: str(root / relative)


@pytest.fixture
def head(random_lite_head):
    return SerHead.load(random_lite_head)


def count_feature_calls(monkeypatch):
    calls = []
    original = LiteProfile.utterance_features

    def spy(self, waves):
        calls.append(len(waves))
        return original(self, waves)

    monkeypatch.setattr(LiteProfile, "utterance_features", spy)
    return calls


def test_each_file_is_analysed_once_even_when_shared_by_pairs(files, head, monkeypatch):
    calls = count_feature_calls(monkeypatch)
    pairs = [
        PairSpec("p1", "a.wav", "b.wav", "joy"),
        PairSpec("p2", "a.wav", "c.wav", "anger"),
        PairSpec("p3", "b.wav", "a.wav", "joy"),
    ]
    with Evaluator(ProfileSpec(), head, n_jobs=1) as evaluator:
        rows, failures = evaluator.evaluate_pairs(pairs, resolver(files))
    assert failures == [] and [r["pair_id"] for r in rows] == ["p1", "p2", "p3"]
    assert sum(calls) == 3  # a, b, c once each
    assert rows[0]["source"] == rows[1]["source"]  # same file, same analysis
    for row in rows:
        probs = np.array(list(row["source"]["probs"].values()))
        assert abs(probs.sum() - 1) < 1e-9 and row["source"]["pred"] == head.classes[int(probs.argmax())]
        assert 0 <= row["source"]["uncertainty"] <= 1
        assert row["agree"] == (row["source"]["pred"] == row["target"]["pred"])
        assert row["emo_sim"] is None and row["va_sim"] is None  # lite profile: not computed
        assert -1 <= row["acoustic_sim"] <= 1 and row["source"]["pause_rate"] is not None


def test_identical_files_are_fully_similar(files, head):
    with Evaluator(ProfileSpec(), head, n_jobs=1) as evaluator:
        rows, _ = evaluator.evaluate_pairs([PairSpec("same", "a.wav", "a.wav")], resolver(files))
    assert rows[0]["acoustic_sim"] == pytest.approx(1.0) and rows[0]["acoustic_sim_utterance"] == pytest.approx(1.0)
    assert rows[0]["agree"] is True


def test_cache_serves_the_second_run(files, head, monkeypatch, tmp_path):
    calls = count_feature_calls(monkeypatch)
    pairs = [PairSpec("p1", "a.wav", "b.wav"), PairSpec("p2", "c.wav", "d.wav")]
    with Evaluator(ProfileSpec(), head, n_jobs=1, cache_dir=tmp_path / "cache") as evaluator:
        first, _ = evaluator.evaluate_pairs(pairs, resolver(files))
        assert sum(calls) == 4
        second, _ = evaluator.evaluate_pairs(pairs, resolver(files))
    assert sum(calls) == 4 and first == second


def test_bad_audio_fails_only_its_pair(files, head):
    pairs = [
        PairSpec("ok", "a.wav", "b.wav"),
        PairSpec("bad", "a.wav", "garbage.wav"),
        PairSpec("gone", "missing.wav", "b.wav"),
    ]
    with Evaluator(ProfileSpec(), head, n_jobs=1) as evaluator:
        rows, failures = evaluator.evaluate_pairs(pairs, resolver(files))
    assert [r["pair_id"] for r in rows] == ["ok"]
    assert {(f["pair_id"], f["side"]) for f in failures} == {("bad", "target"), ("gone", "source")}
    assert any("not decodable" in f["error"] for f in failures)
    assert any("cannot read" in f["error"] for f in failures)


def test_a_model_failing_on_one_utterance_fails_only_that_pair(files, head, monkeypatch):
    original = LiteProfile.utterance_features

    def flaky(self, waves):
        if any(len(w) == 16_000 * 2 + 4_800 for w in waves):  # b.wav is 2.3 s long
            if len(waves) == 1:
                raise RuntimeError("injected model fault")
            raise RuntimeError("injected batch fault")
        return original(self, waves)

    monkeypatch.setattr(LiteProfile, "utterance_features", flaky)
    pairs = [PairSpec("p1", "a.wav", "b.wav"), PairSpec("p2", "c.wav", "d.wav")]
    with Evaluator(ProfileSpec(), head, n_jobs=1) as evaluator:
        rows, failures = evaluator.evaluate_pairs(pairs, resolver(files))
    assert [r["pair_id"] for r in rows] == ["p2"]
    assert failures == [
        {"pair_id": "p1", "side": "target", "error": "feature extraction failed: RuntimeError: injected model fault"}
    ]


def test_silence_is_evaluated_with_warnings(files, head):
    with Evaluator(ProfileSpec(), head, n_jobs=1) as evaluator:
        rows, failures = evaluator.evaluate_pairs([PairSpec("s", "silence.wav", "a.wav")], resolver(files))
    assert failures == []
    source = rows[0]["source"]
    assert source["pause_rate"] is None and source["speech_rate"] is None
    assert any(w.startswith("source: no speech found") for w in rows[0]["warnings"])


def test_process_parallel_equals_in_process(files, head):
    pairs = [
        PairSpec(f"p{i}", a, b)
        for i, (a, b) in enumerate([("a.wav", "b.wav"), ("c.wav", "d.wav"), ("b.wav", "c.wav"), ("d.wav", "a.wav")])
    ]
    with Evaluator(ProfileSpec(), head, n_jobs=1) as serial:
        expected, _ = serial.evaluate_pairs(pairs, resolver(files))
    with Evaluator(ProfileSpec(), head, n_jobs=2, chunk_size=1) as parallel:
        actual, _ = parallel.evaluate_pairs(pairs, resolver(files))
    assert actual == expected


def test_pool_schedule_runs_longest_files_first_and_ends_on_single_files(tmp_path):
    from worker.engine.pipeline import schedule_chunks

    sizes = [5, 50, 20, 40, 10, 30, 60, 15, 25, 35, 45]
    paths = []
    for i, size in enumerate(sizes):
        (tmp_path / f"f{i}").write_bytes(b"x" * size)
        paths.append(str(tmp_path / f"f{i}"))
    paths.append(str(tmp_path / "missing"))  # unreadable: scheduled last, fails in the worker with its reason
    chunks = schedule_chunks(paths, chunk_size=2, n_jobs=2)
    flat = [p for chunk in chunks for p in chunk]
    assert sorted(flat) == sorted(paths)
    assert [int(Path(p).stat().st_size) for p in flat[:-1]] == sorted(sizes, reverse=True)
    assert flat[-1].endswith("missing")
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 1, 1, 1, 1]


def test_decode_windows_overlap_inference_and_change_nothing(files, head, monkeypatch):
    """The reader thread decodes the next window while the models run on this one; results are as with one window."""
    from worker.engine.pipeline import UtteranceAnalyzer

    names = ["a.wav", "garbage.wav", "b.wav", "c.wav", "missing.wav", "d.wav", "silence.wav"]
    paths = [str(files / name) for name in names]
    whole = UtteranceAnalyzer(ProfileSpec(), decode_window=100).analyze(paths)

    events, second_window = [], threading.Event()
    original_load, original_features = UtteranceAnalyzer._load_window, LiteProfile.utterance_features

    def load(self, window):
        events.append(("load", len(window), threading.current_thread().name))
        if [kind for kind, *_ in events].count("load") == 2:
            second_window.set()
        return original_load(self, window)

    def features(self, waves):
        events.append(("features start", len(waves), threading.current_thread().name))
        # a slow model: busy until the next window's decoding has begun (decoding that waited for the models would
        # leave it here until the guard, then fail the order check below)
        second_window.wait(60)
        out = original_features(self, waves)
        events.append(("features end", len(waves), threading.current_thread().name))
        return out

    monkeypatch.setattr(UtteranceAnalyzer, "_load_window", load)
    monkeypatch.setattr(LiteProfile, "utterance_features", features)
    windowed = UtteranceAnalyzer(ProfileSpec(), decode_window=3).analyze(paths)

    assert [u.sha256 for u in windowed] == [u.sha256 for u in whole]
    assert [u.error for u in windowed] == [u.error for u in whole]
    assert windowed[1].error and windowed[4].error and windowed[0].error is None
    assert [u.features is None for u in windowed] == [u.features is None for u in whole]
    assert sum(u.features is not None for u in whole) >= 4  # a, b, c and d at least: the comparison below is real
    for mine, reference in zip(windowed, whole, strict=True):
        if reference.features is not None:
            assert mine.features.keys() == reference.features.keys()
            for key, value in reference.features.items():
                np.testing.assert_array_equal(mine.features[key], value)
    kinds = [kind for kind, *_ in events]
    assert kinds.count("load") == 3 and all(
        thread.startswith("emopres-decode") for kind, _, thread in events if kind == "load"
    )
    # window 2 was being decoded before the models finished window 1
    assert kinds.index("load", 1) < kinds.index("features end")
