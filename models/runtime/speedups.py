"""Same values, less time: CPU fast paths shared by the paper-profile models (issue 17).

Found by profiling one utterance through wav2vec2-large on CPU (1 thread, CPU time):

- The conv feature encoder (7 convolutions over the raw waveform, each followed by a layer norm
  over channels) was ~35% of the model. transformers and funasr run it channels-first: every
  layer norm transposes a (C, T) activation and copies it twice, and oneDNN's 1-D convolution is
  slow for these shapes. :func:`conv_stack_time_major` keeps the activation time-major (T, C):
  each convolution is an im2col view + one GEMM, the layer norm runs on the last dimension with
  no copy. 40% less time for the encoder, identical values up to float rounding (~1e-6).
- The weight-normed positional convolution recomputes ``g * v / |v|`` (8.4 M values) on every
  forward: :func:`cached_weights` computes it once per call of ours (7% of the model).
- An attention mask costs ~10% even when it masks nothing; the models pass one only when their
  batch actually holds padding (:func:`padding_mask`).
- fp32 ``F.linear`` goes to MKL's sgemm, which on AMD EPYC (Zen 4) runs 1.4-2x slower than
  oneDNN's matmul on a weight reordered once into its blocked layout (300x1024 @ 1024x4096, 2
  threads: 53 vs 29 ms). :func:`use_packed_linears` routes every ``nn.Linear`` of a model, and
  :func:`conv_time_major` its im2col GEMM, through ``torch.ops.mkldnn._linear_pointwise`` with a
  weight packed on first use (fp32 in, fp32 out, same values up to float rounding). bf16
  autocast, gradients, other devices and dtypes keep ``F.linear``.

The grouped positional convolution stays on oneDNN (an im2col + bmm version was 2x slower).
"""

from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F
from torch import nn

_PACKED_LINEAR = hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()


def _packed_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN's packed fp32 linear computes what ``F.linear`` would here."""
    return (
        _PACKED_LINEAR
        and x.device.type == "cpu"
        and weight.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
    )


def _packed_weight(owner: nn.Module, weight: torch.Tensor, weight_2d: torch.Tensor) -> torch.Tensor:
    """``weight_2d`` (out, in) reordered for oneDNN, cached on ``owner`` and keyed on the parameter
    ``weight`` (its storage and version): repacked when the weight is replaced or changed in place."""
    key = (weight.data_ptr(), weight._version, tuple(weight.shape))
    cached = getattr(owner, "_emopres_packed", None)
    if cached is None or cached[0] != key:
        with torch.inference_mode(False), torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(weight_2d.detach().contiguous(), None)
        cached = owner._emopres_packed = (key, packed)
    return cached[1]


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    owner: nn.Module,
    weight_2d: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.linear(x, weight_2d, bias)``, through oneDNN with a packed weight cached on ``owner`` where
    that is the same computation (CPU fp32, no autocast, no gradient). ``weight_2d`` defaults to
    ``weight``; a conv passes its weight and that weight's (out, in * k) reshape."""
    w = weight if weight_2d is None else weight_2d
    if _packed_ok(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, _packed_weight(owner, weight, w), bias, "none", [], "")
    return F.linear(x, w, bias)


def _packed_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, self.weight, self.bias, self)


def use_packed_linears(model: nn.Module) -> int:
    """Route every ``nn.Linear`` of ``model`` through :func:`linear` (same values); returns how many."""
    n = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.forward = types.MethodType(_packed_linear_forward, module)
            n += 1
    return n


def conv_time_major(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, owner: nn.Module | None = None
) -> torch.Tensor:
    """``conv1d`` (no padding, no dilation, one group) on a time-major input: (B, T, Cin) -> (B, T', Cout).
    With ``owner`` (the conv module) the GEMM runs through :func:`linear`'s packed weight."""
    cout, cin, kernel = weight.shape
    patches = x.unfold(1, kernel, stride)  # (B, T', Cin, k), a view
    b, t = patches.shape[:2]
    flat = patches.reshape(b * t, cin * kernel)
    if owner is not None:
        return linear(flat, weight, bias, owner, weight.reshape(cout, cin * kernel)).reshape(b, t, cout)
    w = weight.reshape(cout, cin * kernel).t()
    out = flat @ w if bias is None else torch.addmm(bias, flat, w)
    return out.reshape(b, t, cout)


def conv_stack_time_major(wave: torch.Tensor, layers) -> torch.Tensor:
    """A feature encoder of ``(conv, layer_norm, activation)`` triples on (B, L) audio -> (B, T, C)."""
    h = wave[:, :, None]
    for conv, norm, activation in layers:
        h = conv_time_major(h, conv.weight, conv.bias, conv.stride[0], conv)
        h = activation(F.layer_norm(h, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
    return h


def _is_plain_conv(conv) -> bool:
    return (
        isinstance(conv, nn.Conv1d)
        and conv.groups == 1
        and conv.dilation == (1,)
        and conv.padding == (0,)
        and conv.padding_mode == "zeros"
    )


def hf_conv_layers(feature_extractor) -> list | None:
    """(conv, layer_norm, activation) of a transformers wav2vec2/WavLM layer-norm feature encoder,
    or None when it is another kind (group norm, padded convs): that one keeps its own forward."""
    layers = []
    for layer in getattr(feature_extractor, "conv_layers", []):
        conv, norm = getattr(layer, "conv", None), getattr(layer, "layer_norm", None)
        if not (_is_plain_conv(conv) and isinstance(norm, nn.LayerNorm)) or not hasattr(layer, "activation"):
            return None
        layers.append((conv, norm, layer.activation))
    return layers or None


def _time_major_forward(self, input_values: torch.Tensor) -> torch.Tensor:
    # transformers transposes the (B, C, T) result to (B, T, C) next: hand it a transposed view of
    # the time-major tensor, so that transpose gives back the contiguous original (no copy).
    return conv_stack_time_major(input_values, self._emopres_layers).transpose(1, 2)


def use_time_major_features(model) -> bool:
    """Run a transformers wav2vec2/WavLM model's conv feature encoder time-major (same values).
    Returns False, changing nothing, for an encoder of another kind."""
    encoder = model.feature_extractor
    layers = hf_conv_layers(encoder)
    if layers is None:
        return False
    encoder._emopres_layers = layers
    encoder.forward = types.MethodType(_time_major_forward, encoder)
    return True


def cached_weights(module: nn.Module):
    """Compute parametrized weights (transformers' weight-normed positional conv) once for the block."""
    from torch.nn.utils import parametrize

    has_any = any(parametrize.is_parametrized(m) for m in module.modules())
    return parametrize.cached() if has_any else contextlib.nullcontext()


def padding_mask(lengths: torch.Tensor, width: int) -> torch.Tensor | None:
    """(B, width) long attention mask for transformers, or None when no item is padded."""
    if int(lengths.min()) == width:
        return None
    return (torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]).long()
