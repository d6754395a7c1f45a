"""models/runtime/speedups.py: the CPU fast paths give the values of the plain library computation.

References are independent of the code under test: ``F.conv1d`` for one convolution, and a
second, unpatched load of the same checkpoint (transformers' own forward) for whole models.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from models.runtime.speedups import (  # noqa: E402
    conv_time_major,
    padding_mask,
    use_packed_linears,
    use_time_major_features,
)
from tests import paper_fixtures as fx  # noqa: E402

TOL = 1e-4


@pytest.mark.parametrize("kernel,stride,bias", [(10, 5, True), (3, 2, False), (2, 2, True), (1, 1, False)])
def test_conv_time_major_equals_conv1d(kernel, stride, bias):
    g = torch.Generator().manual_seed(kernel * 10 + stride)
    x = torch.randn(3, 7, 101, generator=g)  # (B, Cin, T)
    weight = torch.randn(5, 7, kernel, generator=g)
    b = torch.randn(5, generator=g) if bias else None
    expected = F.conv1d(x, weight, b, stride=stride)
    got = conv_time_major(x.transpose(1, 2).contiguous(), weight, b, stride).transpose(1, 2)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    conv = torch.nn.Conv1d(7, 5, kernel, stride, bias=bias)  # the packed oneDNN GEMM
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias:
            conv.bias.copy_(b)
        packed = conv_time_major(x.transpose(1, 2).contiguous(), conv.weight, conv.bias, stride, conv).transpose(1, 2)
    assert torch.allclose(packed, expected, atol=1e-5, rtol=1e-5)


def test_packed_linears_equal_f_linear_and_follow_the_weights():
    g = torch.Generator().manual_seed(7)
    model = torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.GELU(), torch.nn.Linear(96, 24, bias=False))
    plain = copy.deepcopy(model)
    assert use_packed_linears(model) == 2
    x = torch.randn(2, 13, 48, generator=g)
    with torch.inference_mode():
        assert torch.allclose(model(x), plain(x), atol=1e-5, rtol=1e-5)
        assert torch.allclose(model(x.transpose(0, 1)), plain(x.transpose(0, 1)), atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a weight changed in place or replaced is repacked
        model[0].weight.mul_(2)
        plain[0].weight.mul_(2)
        model[2].weight = torch.nn.Parameter(torch.randn(24, 96, generator=g))
        plain[2].weight = torch.nn.Parameter(model[2].weight.detach().clone())
        assert torch.allclose(model(x), plain(x), atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast keeps F.linear (bf16 out)
            assert model(x).dtype == plain(x).dtype == torch.bfloat16
    out = model(x)  # gradients flow as through F.linear
    out.sum().backward()
    assert model[0].weight.grad is not None


def _wave_batch(seconds=(1.3, 0.9)):
    waves = fx.random_waves(list(seconds), seed=3)
    width = max(len(w) for w in waves)
    return torch.stack([torch.from_numpy(np.pad(w, (0, width - len(w)))) for w in waves])


@pytest.mark.parametrize("kind", ["wav2vec2", "wavlm"])
def test_time_major_feature_encoder_equals_transformers(kind):
    from transformers import Wav2Vec2Model, WavLMConfig, WavLMModel

    torch.manual_seed(0)
    if kind == "wav2vec2":
        model = Wav2Vec2Model(fx.tiny_wav2vec2_config())
    else:
        model = WavLMModel(WavLMConfig(**{**fx.tiny_wav2vec2_config().to_dict(), "conv_bias": False}))
    fx._randomise(model, 5, scale=0.1)
    model.eval()
    plain = copy.deepcopy(model)
    assert use_time_major_features(model)
    x = _wave_batch()
    with torch.inference_mode():
        assert torch.allclose(model.feature_extractor(x), plain.feature_extractor(x), atol=1e-5)
        assert torch.allclose(model(x)[0], plain(x)[0], atol=TOL)


def test_group_norm_encoder_keeps_its_own_forward():
    from transformers import Wav2Vec2Model

    model = Wav2Vec2Model(fx.tiny_wav2vec2_config(feat_extract_norm="group", do_stable_layer_norm=False)).eval()
    before = model.feature_extractor.forward
    assert not use_time_major_features(model)
    assert model.feature_extractor.forward == before


def test_padding_mask_only_when_something_is_padded():
    assert padding_mask(torch.tensor([6, 6]), 6) is None
    mask = padding_mask(torch.tensor([6, 4]), 6)
    assert mask.dtype == torch.long
    assert mask.tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]


def test_paper_wrappers_equal_an_unpatched_load(tmp_path):
    """The wrappers run the fast paths (their model's encoder is patched) with transformers' values."""
    from transformers import Wav2Vec2Model

    from models.paper.autopcp import XlsrEncoder
    from models.paper.valence_arousal import ValenceArousal, _model_classes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        va_dir = fx.build_valence_arousal(tmp_path / "va")
        xlsr_dir = fx.build_xlsr(tmp_path / "xlsr")
    waves = fx.random_waves([1.2, 0.7], seed=11)
    x = torch.from_numpy(waves[0])[None]

    va = ValenceArousal.from_pretrained(va_dir)
    _, EmotionModel = _model_classes()
    plain_va = EmotionModel.from_pretrained(str(va_dir), local_files_only=True).eval()
    xlsr = XlsrEncoder.from_pretrained(xlsr_dir)
    plain_xlsr = Wav2Vec2Model.from_pretrained(str(xlsr_dir), local_files_only=True).eval()
    with torch.inference_mode():
        for ours, plain in ((va.model.wav2vec2, plain_va.wav2vec2), (xlsr.model, plain_xlsr)):
            assert "_emopres_layers" in vars(ours.feature_extractor)  # the fast path is in use
            assert torch.allclose(ours.feature_extractor(x), plain.feature_extractor(x), atol=1e-5)
        assert torch.allclose(va.model.wav2vec2(x)[0], plain_va.wav2vec2(x)[0], atol=TOL)
