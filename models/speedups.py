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

The grouped positional convolution stays on oneDNN (an im2col + bmm version was 2x slower).
"""
from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F
from torch import nn


def conv_time_major(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """``conv1d`` (no padding, no dilation, one group) on a time-major input: (B, T, Cin) -> (B, T', Cout)."""
    cout, cin, kernel = weight.shape
    patches = x.unfold(1, kernel, stride)  # (B, T', Cin, k), a view
    b, t = patches.shape[:2]
    flat = patches.reshape(b * t, cin * kernel)
    w = weight.reshape(cout, cin * kernel).t()
    out = flat @ w if bias is None else torch.addmm(bias, flat, w)
    return out.reshape(b, t, cout)


def conv_stack_time_major(wave: torch.Tensor, layers) -> torch.Tensor:
    """A feature encoder of ``(conv, layer_norm, activation)`` triples on (B, L) audio -> (B, T, C)."""
    h = wave[:, :, None]
    for conv, norm, activation in layers:
        h = conv_time_major(h, conv.weight, conv.bias, conv.stride[0])
        h = activation(F.layer_norm(h, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
    return h


def _is_plain_conv(conv) -> bool:
    return (isinstance(conv, nn.Conv1d) and conv.groups == 1 and conv.dilation == (1,)
            and conv.padding == (0,) and conv.padding_mode == "zeros")


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
