"""SER from zero on the paper profile (issue 25, item 1): emotion2vec+'s own classifier read as a SER head.

Its probabilities equal funasr's ``AutoModel.generate`` scores mapped to MELD-ST's 7 classes; a model folder that
holds only emotion2vec evaluates (SER and emo-sim numbers, the other metrics null with their reason); errors name
the unset model directory, never a relative default.
"""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("funasr")

from cli.main import main  # noqa: E402
from models.ser.builtin import E2V_TO_MELD, emotion2vec_head  # noqa: E402
from tests import paper_fixtures as fx  # noqa: E402
from tests.service_support import write_dataset  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def e2v_folder(tmp_path_factory):
    """A tiny emotion2vec+ folder whose classifier's logits are spread (random init gives nearly uniform ones,
    which would hide a class mapped to the wrong row)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = fx.build_emotion2vec(tmp_path_factory.mktemp("models") / "emotion2vec_plus_large")
    checkpoint = torch.load(folder / "model.pt", weights_only=True)
    generator = torch.Generator().manual_seed(7)
    weight = checkpoint["model"]["proj.weight"]
    checkpoint["model"]["proj.weight"] = torch.randn(weight.shape, generator=generator) * 3.0
    checkpoint["model"]["proj.bias"] = torch.randn(weight.shape[0], generator=generator)
    torch.save(checkpoint, folder / "model.pt")
    return folder


def _funasr_scores(folder, waves) -> list[dict[str, float]]:
    from funasr import AutoModel

    root = logging.getLogger()
    saved = root.level, list(root.handlers), torch.get_num_threads(), torch.random.get_rng_state()
    try:  # funasr configures the root logger, reseeds torch and sets the thread count: undo it after
        model = AutoModel(
            model=str(folder),
            device="cpu",
            disable_update=True,
            disable_pbar=True,
            ncpu=torch.get_num_threads(),
            log_level="ERROR",
        )
        results = model.generate(waves, granularity="utterance", extract_embedding=False)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        torch.set_num_threads(saved[2])
        torch.random.set_rng_state(saved[3])
    return [dict(zip(r["labels"], r["scores"], strict=True)) for r in results]


def _mapped(scores: dict[str, float]) -> dict[str, float]:
    """funasr's 9 scores mapped as the issue says: the 7 MELD classes kept, renormalised."""
    kept = {
        E2V_TO_MELD[label.rsplit("/", 1)[-1]]: p
        for label, p in scores.items()
        if label.rsplit("/", 1)[-1] in E2V_TO_MELD
    }
    total = sum(kept.values())
    return {name: p / total for name, p in kept.items()}


def test_builtin_probabilities_equal_funasrs_mapped_scores(e2v_folder):
    from models.paper.emotion2vec import Emotion2Vec

    waves = fx.random_waves([0.7, 1.3, 2.1, 3.0], seed=3)
    head = emotion2vec_head(e2v_folder)
    assert head.classes == ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
    ours = head.predict_proba(Emotion2Vec.from_pretrained(e2v_folder).utterance_features(waves))
    reference = [_mapped(s) for s in _funasr_scores(e2v_folder, waves)]
    for row, expected in zip(ours, reference, strict=True):
        assert max(abs(row[head.classes.index(name)] - p) for name, p in expected.items()) <= TOL
    assert len({int(np.argmax(row)) for row in ours}) > 1 or ours.max() > 0.3  # not a flat, uninformative test


def test_a_folder_with_only_emotion2vec_evaluates(e2v_folder, tmp_path, capsys):
    manifest = write_dataset(tmp_path / "data", n_pairs=4)
    out = tmp_path / "report.json"
    code = main(
        [
            "evaluate",
            str(manifest),
            "--profile",
            "paper",
            "--model-dir",
            str(e2v_folder.parent),
            "--out",
            str(out),
            "--jobs",
            "1",
            "--no-cache",
            "--bootstrap",
            "50",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    corpus = report["corpus"]
    for name in ("epr", "expected_agreement", "kappa", "ua_source", "emo_sim", "emo_sim_utterance"):
        assert corpus[name]["value"] is not None or "chance agreement" in (corpus[name]["reason"] or ""), name
    assert corpus["emo_sim"]["value"] is not None
    for name in ("va_sim", "vsim", "autopcp"):
        assert corpus[name]["value"] is None and "not installed" in corpus[name]["reason"], corpus[name]
    assert "ser_head:emotion2vec_proj" in report["signature"]
    assert "built-in classifier" in report["models"]["ser_head"]["source"]
    assert report["summary"]["primary"]["metric"] == "bhattacharyya"  # 4 pairs: no side reading, and it says so


def test_a_trained_head_wins_over_the_builtin_one(e2v_folder, tmp_path, random_lite_head):
    from models.registry import ProfileSpec, load_head
    from models.ser.head import SerHead

    spec = ProfileSpec("paper", model_dir=str(e2v_folder.parent))
    assert load_head(spec).metadata["builtin"] == "emotion2vec_proj"
    trained = SerHead.new(
        emotion2vec_head(e2v_folder).n_features,
        list(E2V_TO_MELD.values()),
        "emotion2vec_plus_large",
        metadata={"source": "trained here"},
    )
    trained.save(tmp_path / "models" / "ser_head")
    (tmp_path / "models" / "emotion2vec_plus_large").symlink_to(e2v_folder)
    spec = ProfileSpec("paper", model_dir=str(tmp_path / "models"))
    assert load_head(spec).metadata["source"] == "trained here"


def test_without_a_model_directory_the_error_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EMOPRES_MODEL_DIR", raising=False)
    manifest = write_dataset(tmp_path / "data", n_pairs=2)
    code = main(["evaluate", str(manifest), "--profile", "paper", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "EMOPRES_MODEL_DIR" in err and "--model-dir" in err
    assert "ser_head is not" not in err


def test_models_check_lists_the_optional_head_and_what_reads_ser_without_it(e2v_folder, capsys):
    main(["models", "check", "--model-dir", str(e2v_folder.parent)])
    out = capsys.readouterr().out
    assert "ser_head (optional)" in out and "built-in classifier" in out
    main(["models", "check", "--model-dir", str(e2v_folder.parent), "--json"])
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["ser_head"]["optional"] is True and rows["ser_head"]["present"] is False
