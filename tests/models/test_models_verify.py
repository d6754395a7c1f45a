"""`emopres models verify` on tiny random-weight checkpoints in the published formats (tests/paper_fixtures.py):
every model agrees with its reference implementation; our path perturbed fails naming that model; a model
missing from the folder, or whose reference library is not installed, is named as not checked."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

pytest.importorskip("transformers")

from models.paper import verify  # noqa: E402
from tests import paper_fixtures as fx  # noqa: E402

ALL = list(verify.TOLERANCES)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fx.build_model_dir(tmp_path_factory.mktemp("verify_models"))


def run_cli(capsys, *args) -> tuple[int, str]:
    from cli.main import main

    code = main(["models", "verify", *args])
    return code, capsys.readouterr().out


def expected_checked(names=ALL) -> list[str]:
    """The models this machine can check: their reference library installed."""
    return [n for n in names if not verify.LIBRARIES[n] or verify.library_available(verify.LIBRARIES[n])]


def test_tiny_checkpoints_agree_with_their_references(model_dir, capsys):
    code, out = run_cli(capsys, "--model-dir", str(model_dir))
    assert code == 0, out
    assert out.splitlines()[0].startswith(ALL[0]), out  # stdout holds the table only (funasr's notices go to stderr)
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in ALL}
    assert set(lines) == set(ALL)
    for name in expected_checked():
        assert "PASSED" in lines[name] and "max |ours - reference|" in lines[name], lines[name]
        assert f"tolerance {verify.TOLERANCES[name]:.0e}" in lines[name]
    assert "0 failed" in out


def test_a_perturbed_model_fails_naming_it(model_dir, capsys, monkeypatch):
    """Our valence-arousal output moved by 1e-3 (10x its tolerance): exit 1, that model failed, the rest pass."""
    from models.paper.valence_arousal import ValenceArousal

    analyse = ValenceArousal.analyse

    def shifted(self, waves):
        results = analyse(self, waves)
        for r in results:
            r.chunks = r.chunks + np.float32(1e-3)
        return results

    monkeypatch.setattr(ValenceArousal, "analyse", shifted)
    small = model_dir.parent / "perturbed"
    shutil.copytree(model_dir, small)
    shutil.rmtree(small / "emotion2vec_plus_large")  # funasr is slow to start: not needed here
    code, out = run_cli(capsys, "--model-dir", str(small), "--json")
    assert code == 1
    report = json.loads(out)
    rows = {r["name"]: r for r in report["models"]}
    assert report["passed"] is False
    assert rows["valence_arousal"]["status"] == "failed"
    assert rows["valence_arousal"]["max_abs_diff"] == pytest.approx(1e-3, rel=0.05)
    assert rows["valence_arousal"]["tolerance"] == verify.TOLERANCES["valence_arousal"]
    for name in expected_checked(["speaker_wavlm_ecapa", "xlsr_53", "autopcp_comparator"]):
        assert rows[name]["status"] == "passed", rows[name]
    assert rows["emotion2vec_plus_large"]["status"] == "not checked"

    code, out = run_cli(capsys, "--model-dir", str(small))  # the table names it too
    assert code == 1
    assert any(line.startswith("valence_arousal") and "FAILED" in line for line in out.splitlines())


def test_missing_models_and_libraries_are_named_not_failed(model_dir, tmp_path, capsys, monkeypatch):
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial)
    for name in ("emotion2vec_plus_large", "wav2vec2-large-robust-12-ft-emotion-msp-dim", "wav2vec2-large-xlsr-53"):
        shutil.rmtree(partial / name)
    real = verify.library_available
    monkeypatch.setattr(verify, "library_available", lambda lib: lib != "s3prl" and real(lib))
    code, out = run_cli(capsys, "--model-dir", str(partial))
    assert code == 0, out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in ALL}
    for name in ("emotion2vec_plus_large", "valence_arousal", "xlsr_53"):
        assert "not checked: missing" in lines[name], lines[name]
    assert "not checked: reference library s3prl not installed" in lines["speaker_wavlm_ecapa"]
    assert "not checked" in lines["autopcp_comparator"] and "xlsr_53" in lines["autopcp_comparator"]
    assert "0 passed, 0 failed, 5 not checked" in out


def test_a_model_that_cannot_run_is_an_error(model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copytree(model_dir / "AutoPCP-multilingual-v2", broken / "AutoPCP-multilingual-v2")
    shutil.copytree(model_dir / "wav2vec2-large-xlsr-53", broken / "wav2vec2-large-xlsr-53")
    config = next((broken / "AutoPCP-multilingual-v2").rglob("*.config"))
    import torch

    torch.save({**torch.load(config, weights_only=True), "idim": 7}, config)  # does not fit the encoder
    code, out = run_cli(capsys, "--model-dir", str(broken), "--json")
    rows = {r["name"]: r for r in json.loads(out)["models"]}
    assert code == 1
    assert rows["autopcp_comparator"]["status"] == "error" and "Error" in rows["autopcp_comparator"]["reason"]
    assert rows["xlsr_53"]["status"] == "passed"  # the encoder is still checked on its own


def test_user_audio_and_errors(model_dir, tmp_path, capsys, write_wav):
    from cli.main import main

    only = tmp_path / "only_xlsr"
    only.mkdir()
    shutil.copytree(model_dir / "wav2vec2-large-xlsr-53", only / "wav2vec2-large-xlsr-53")
    code, out = run_cli(
        capsys, "--model-dir", str(only), "--audio", str(write_wav("a.wav", seconds=1.5, rate=22050)), "--json"
    )
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["models"]}
    assert rows["xlsr_53"]["status"] == "passed" and rows["xlsr_53"]["max_abs_diff"] <= 1e-4
    assert main(["models", "verify", "--model-dir", str(tmp_path / "nowhere")]) == 2
    assert main(["models", "verify", "--model-dir", str(only), "--audio", str(tmp_path / "none.wav")]) == 2
