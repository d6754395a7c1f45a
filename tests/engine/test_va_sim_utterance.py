"""va-sim's utterance variant (issue 15, point 2): EmoCtrlTTS-Eval's ``arousal_valance_sim_utt``,
the cosine of the two utterances' (arousal, valence) - 0.5 from the card's utterance-level output,
reported beside the chunk-level va-sim as emo-sim's utterance variant is."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("funasr")

from tests import paper_fixtures as fx  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fx.build_model_dir(tmp_path_factory.mktemp("paper_models"))


def _card_utterance_point(va, folder, wave) -> np.ndarray:
    """The card's EmotionModel on one whole utterance (no batching, no mask), as EmoCtrlTTS-Eval runs it:
    logits of the regression head on the mean of all frames, (arousal, valence) - 0.5."""
    from transformers import Wav2Vec2FeatureExtractor

    fex = Wav2Vec2FeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    x = torch.from_numpy(fex(wave, sampling_rate=16000)["input_values"][0]).reshape(1, -1)
    with torch.no_grad():
        logits = va.model(x)[1][0].numpy().astype(np.float64)
    return logits[[0, 2]] - 0.5


def test_va_sim_utterance_is_the_cosine_of_the_card_utterance_points(model_dir):
    from sklearn.metrics.pairwise import cosine_similarity

    from models.paper.profile import PAIR_METRICS, PaperProfile

    profile = PaperProfile.from_model_dir(model_dir)
    waves = fx.random_waves([0.9, 1.6, 2.3], seed=21)
    feats = profile.utterance_features(waves)
    folder = model_dir / "wav2vec2-large-robust-12-ft-emotion-msp-dim"
    points = [_card_utterance_point(profile.valence_arousal, folder, w) for w in waves]
    assert "va_sim_utterance" in PAIR_METRICS
    for i, j in ((0, 1), (1, 2), (0, 2)):
        scores, _ = profile.pair_scores(feats[i], feats[j])
        expected = float(cosine_similarity(points[i][None], points[j][None])[0, 0])
        assert scores["va_sim_utterance"] == pytest.approx(expected, abs=1e-5)
        assert scores["va_sim_utterance"] != pytest.approx(scores["va_sim"], abs=1e-6)  # another number
    same, _ = profile.pair_scores(feats[1], feats[1])
    assert same["va_sim_utterance"] == pytest.approx(1.0)


def test_without_the_model_or_on_lite_the_variant_is_null_with_a_reason(model_dir, tmp_path):
    import shutil

    from models.lite.profile import LiteProfile
    from models.paper.profile import PaperProfile

    assert "paper profile" in LiteProfile().unavailable()["va_sim_utterance"]
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial)
    shutil.rmtree(partial / "wav2vec2-large-robust-12-ft-emotion-msp-dim")
    profile = PaperProfile.from_model_dir(partial, allow_missing=True)
    assert "model not installed" in profile.unavailable()["va_sim_utterance"]
    feats = profile.utterance_features(fx.random_waves([1.0, 1.2], seed=2))
    scores, _ = profile.pair_scores(feats[0], feats[1])
    assert scores["va_sim_utterance"] is None


def test_the_report_carries_va_sim_utterance_per_pair_and_for_the_corpus(model_dir, tmp_path):
    """Through the pipeline and the corpus metrics, as emo_sim_utterance: each pair row's value, the
    corpus mean with a CI, and the line under reproduce's Table 1."""
    import soundfile

    from emopres_client.pairs import PairSpec
    from models.registry import ProfileSpec
    from models.ser.head import SerHead
    from worker.engine.pipeline import Evaluator
    from worker.engine.report import report_for_evaluator
    from worker.research.tables import format_table1, table1_rows

    torch.manual_seed(0)
    head = SerHead.new(32, ["anger", "joy", "sadness"], "emotion2vec_plus_large", metadata={"source": "random"})
    waves = fx.random_waves([0.9, 1.4, 1.7, 2.1, 1.2, 1.9], seed=31)
    paths = []
    for i, wave in enumerate(waves):
        paths.append(tmp_path / f"u{i}.wav")
        soundfile.write(paths[-1], wave, 16000)
    pairs = [PairSpec(f"p{i}", str(paths[2 * i]), str(paths[2 * i + 1]), None, None) for i in range(3)]
    with Evaluator(ProfileSpec("paper", str(model_dir)), head, n_jobs=1) as evaluator:
        rows, failures = evaluator.evaluate_pairs(pairs, lambda path: path)
        report = report_for_evaluator(
            evaluator,
            rows=rows,
            failures=failures,
            pair_order=[p.pair_id for p in pairs],
            job={"id": "t"},
            n_bootstrap=50,
            seed=1,
            use_groups=False,
        )
    assert not failures
    values = [row["va_sim_utterance"] for row in report["pairs"]]
    assert all(isinstance(v, float) and -1.0 <= v <= 1.0 for v in values)
    entry = report["corpus"]["va_sim_utterance"]
    assert entry["value"] == pytest.approx(np.mean(values)) and entry["n"] == 3 and entry["ci_low"] is not None
    assert values != [row["va_sim"] for row in report["pairs"]]
    text = format_table1(
        table1_rows(report, "ENG_JPN"),
        pair="ENG_JPN",
        report=report,
        heads="shared",
        balance="clustercentroids",
        profile="paper",
    )
    assert f"va-sim {entry['value']:.3f} [" in text and "utterance-level variants" in text
