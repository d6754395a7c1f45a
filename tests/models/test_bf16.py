"""bf16 fast mode on CPU (issue 29): packed bf16 weights compute what bf16 autocast computes, the
paper models batch padded utterances in bf16 and stay within the stated tolerance of one at a time.

bf16 arithmetic is emulated (slow) on CPUs without AVX512-BF16/AMX: tiny models, short inputs.
The oneDNN-packed bf16 path needs oneDNN bf16 kernels (AVX-512); where it has none, its test skips
and the plain bf16-copy path (the one that runs there) is checked instead."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
pytest.importorskip("funasr")

from models.runtime import speedups  # noqa: E402
from models.runtime.batching import CPU_BF16_BATCH_SECONDS  # noqa: E402
from models.runtime.precision import BF16_RELATIVE_TOL  # noqa: E402
from tests import paper_fixtures as fx  # noqa: E402

BF16 = torch.bfloat16
PATHS = [
    pytest.param(False, id="bf16-copy"),
    pytest.param(
        True,
        id="onednn-packed",
        marks=pytest.mark.skipif(
            not speedups.ONEDNN_BF16, reason="oneDNN has no bf16 kernels on this CPU (no AVX-512)"
        ),
    ),
]


def relative(a, b) -> float:
    """max |a - b| over all items, as a share of the largest |b|."""
    pairs = [(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in zip(a, b, strict=True)]
    return max(float(np.abs(x - y).max()) for x, y in pairs) / max(float(np.abs(y).max()) for _, y in pairs)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fx.build_model_dir(tmp_path_factory.mktemp("paper_models"))


@pytest.fixture(scope="module")
def waves():
    return fx.random_waves([0.3, 1.1, 2.05, 0.52, 1.1], seed=7)


@pytest.mark.parametrize("onednn", PATHS)
def test_packed_bf16_linear_and_conv_equal_autocast(monkeypatch, onednn):
    monkeypatch.setattr(speedups, "ONEDNN_BF16", onednn)
    g = torch.Generator().manual_seed(29)
    model = torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.GELU(), torch.nn.Linear(96, 24, bias=False))
    plain = copy.deepcopy(model)
    speedups.use_packed_linears(model)
    conv = torch.nn.Conv1d(6, 8, 3, stride=2)
    x, wave = torch.randn(2, 13, 48, generator=g), torch.randn(2, 41, 6, generator=g)
    tol = 0.0 if not onednn else BF16_RELATIVE_TOL  # the copy path is autocast's own computation
    with torch.inference_mode(), torch.autocast("cpu", dtype=BF16):
        got, expected = model(x), plain(x)
        assert got.dtype == expected.dtype == BF16
        assert relative([got.float()], [expected.float()]) <= tol
        packed = speedups.conv_time_major(wave, conv.weight, conv.bias, 2, conv)
        unpacked = speedups.conv_time_major(wave, conv.weight, conv.bias, 2)  # autocast's addmm
        reference = F.conv1d(wave.transpose(1, 2), conv.weight, conv.bias, stride=2).transpose(1, 2)
    assert packed.dtype == BF16
    assert relative([packed.float()], [unpacked.float()]) <= max(tol, 1e-2)  # addmm vs linear: own rounding
    assert relative([packed.float()], [reference.float()]) <= BF16_RELATIVE_TOL
    assert set(vars(model[0])["_emopres_packed"]) == {BF16}  # packed once, for bf16 only
    with torch.no_grad():  # a weight changed in place is packed again
        model[0].weight.mul_(-1)
        plain[0].weight.mul_(-1)
    with torch.inference_mode(), torch.autocast("cpu", dtype=BF16):
        assert relative([model(x).float()], [plain(x).float()]) <= tol
    assert speedups.drop_packed([model], keep=torch.float32) == 2
    assert all("_emopres_packed" not in vars(m) or not vars(m)["_emopres_packed"] for m in model)


def _wrappers(model_dir):
    from models.paper.autopcp import XlsrEncoder
    from models.paper.emotion2vec import Emotion2Vec
    from models.paper.speaker import SpeakerEncoder
    from models.paper.valence_arousal import ValenceArousal

    return {
        "emotion2vec": (
            lambda **k: Emotion2Vec.from_pretrained(model_dir / "emotion2vec_plus_large", **k),
            lambda m, ws: m.frame_features(ws),
        ),
        "valence-arousal": (
            lambda **k: ValenceArousal.from_pretrained(model_dir / "wav2vec2-large-robust-12-ft-emotion-msp-dim", **k),
            lambda m, ws: [np.concatenate([r.chunks.ravel(), r.utterance]) for r in m.analyse(ws)],
        ),
        "speaker": (
            lambda **k: SpeakerEncoder.from_pretrained(model_dir / "wavlm_large_finetune.pth", **k),
            lambda m, ws: list(m.embeddings(ws)),
        ),
        "xlsr": (
            lambda **k: XlsrEncoder.from_pretrained(model_dir / "wav2vec2-large-xlsr-53", **k),
            lambda m, ws: list(m.embeddings(ws)),
        ),
    }


NAMES = ["emotion2vec", "valence-arousal", "speaker", "xlsr"]


@pytest.mark.parametrize("name", NAMES)
def test_bf16_batches_on_cpu_and_equal_one_at_a_time(model_dir, waves, name):
    """bf16 on CPU batches a job's utterances (tall GEMMs) by default; a padded bf16 batch equals bf16 one
    utterance at a time, and bf16 equals exact fp32, within the stated tolerance."""
    load, run = _wrappers(model_dir)[name]
    model = load(precision="bf16")
    assert model.max_batch_seconds == CPU_BF16_BATCH_SECONDS
    sizes = []
    inner = model._run
    model._run = lambda ws: sizes.append(len(ws)) or inner(ws)
    batched = run(model, waves)
    assert sizes == [len(waves)]  # one padded forward for all five
    model.max_batch_seconds = 0.1
    alone = run(model, waves)
    assert sizes[1:] == [1] * len(waves)
    exact = load()
    assert exact.max_batch_seconds < 1.1  # fp32 on CPU: each real utterance alone
    reference = run(exact, waves)
    assert relative(batched, alone) <= BF16_RELATIVE_TOL
    assert relative(alone, reference) <= BF16_RELATIVE_TOL
    assert relative(batched, alone) > 0 or relative(alone, reference) > 0  # bf16 did run


@pytest.mark.parametrize("name", NAMES)
def test_bf16_wrappers_packed_equal_unpacked(model_dir, waves, monkeypatch, name):
    """The whole model in bf16 with packed weights equals the same model through plain autocast ``F.linear``."""
    load, run = _wrappers(model_dir)[name]
    model = load(precision="bf16")
    packed = run(model, waves[:2])
    assert any(BF16 in vars(m).get("_emopres_packed", {}) for net in model._networks() for m in net.modules())
    real = speedups._packed_dtype
    monkeypatch.setattr(speedups, "_packed_dtype", lambda x, w: None if real(x, w) == BF16 else real(x, w))
    unpacked = run(model, waves[:2])
    assert relative(packed, unpacked) <= (BF16_RELATIVE_TOL if speedups.ONEDNN_BF16 else 0.0)
