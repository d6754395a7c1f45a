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
  weight packed on first use (fp32 in, fp32 out, same values up to float rounding). Gradients,
  other devices and dtypes keep ``F.linear``.
- Under CPU bf16 autocast (fast mode), ``F.linear`` casts every weight to bf16 again in every
  forward. :func:`linear` computes what autocast would (bf16 input, weight and bias, bf16 out) on a
  bf16 weight made once: reordered for oneDNN where it has bf16 kernels (AVX512-BF16 / AMX CPUs,
  and AVX-512 ones that emulate them), else a plain bf16 copy through ``F.linear``
  (:data:`ONEDNN_BF16`). :func:`drop_packed` frees the copies of the precision a model no longer runs.

The grouped positional convolution stays on oneDNN (an im2col + bmm version was 2x slower).
"""

from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F
from torch import nn

_PACKED_LINEAR = hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()


def _onednn_bf16() -> bool:
    try:
        return _PACKED_LINEAR and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - odd builds
        return False


#: Whether oneDNN runs bf16 linears on this CPU (it needs AVX-512 or AVX-NE-CONVERT); without it
#: the bf16 weight is a plain bf16 tensor for ``F.linear``.
ONEDNN_BF16 = _onednn_bf16()


def _packed_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The dtype :func:`linear` runs on a packed weight here (float32, or bfloat16 under CPU bf16
    autocast), or None where only ``F.linear`` computes the same (gradients, other devices and dtypes)."""
    if not (
        x.device.type == "cpu"
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
    ):
        return None
    if not torch.is_autocast_enabled("cpu"):
        return torch.float32 if _PACKED_LINEAR and x.dtype == torch.float32 else None
    if torch.get_autocast_dtype("cpu") == torch.bfloat16 and x.dtype in (torch.float32, torch.bfloat16):
        return torch.bfloat16
    return None


def _packed_weight(owner: nn.Module, weight: torch.Tensor, weight_2d: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight_2d`` (out, in) in ``dtype``, reordered for oneDNN (fp32; bf16 where :data:`ONEDNN_BF16`),
    cached on ``owner`` per dtype and keyed on the parameter ``weight`` (its storage and version):
    made again when the weight is replaced or changed in place."""
    key = (weight.data_ptr(), weight._version, tuple(weight.shape))
    cache = owner.__dict__.setdefault("_emopres_packed", {})
    hit = cache.get(dtype)
    if hit is None or hit[0] != key:
        with torch.inference_mode(False), torch.no_grad():
            w = weight_2d.detach().to(dtype).contiguous()
            if dtype == torch.float32 or ONEDNN_BF16:
                w = torch.ops.mkldnn._reorder_linear_weight(w, None)
        hit = cache[dtype] = (key, w)
    return hit[1]


def drop_packed(modules, keep: torch.dtype | None = None) -> int:
    """Free the packed weights of every dtype but ``keep`` in ``modules`` (and their children);
    returns how many. They are made again if that precision runs later."""
    n = 0
    for module in modules:
        for sub in module.modules():
            cache = sub.__dict__.get("_emopres_packed")
            for dtype in [d for d in (cache or {}) if d != keep]:
                del cache[dtype]
                n += 1
    return n


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    owner: nn.Module,
    weight_2d: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.linear(x, weight_2d, bias)``, on a weight packed once and cached on ``owner`` where that is
    the same computation: CPU fp32 (oneDNN), or CPU bf16 autocast (bf16 in, weight, bias and out, as
    autocast computes it). ``weight_2d`` defaults to ``weight``; a conv passes its weight and that
    weight's (out, in * k) reshape."""
    w = weight if weight_2d is None else weight_2d
    dtype = _packed_dtype(x, weight)
    if dtype is None:
        return F.linear(x, w, bias)
    packed = _packed_weight(owner, weight, w, dtype)
    if dtype == torch.bfloat16:
        x = x.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        if not ONEDNN_BF16:
            return F.linear(x, packed, bias)
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


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
