"""The emotion2vec network (data2vec 2.0 audio encoder: conv feature extractor, conv positional encoder,
ALiBi transformer with extra tokens), rebuilt with funasr's module tree so its checkpoint keys load
unchanged; padding is masked so a batched utterance equals its one-at-a-time result (models.paper.emotion2vec
loads it and documents the folder and the batching)."""

from __future__ import annotations

import ast
import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.runtime.batching import conv_output_lengths, lengths_to_mask
from models.runtime.speedups import conv_stack_time_major


def _safe_eval_spec(spec: str) -> list[tuple[int, int, int]]:
    """Evaluate a fairseq ``feature_encoder_spec`` such as
    ``"[(512, 10, 5)] + [(512, 3, 2)] * 4"`` without ``eval`` (lists, tuples, ints, + and *)."""

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise ValueError(f"unsupported element in feature_encoder_spec: {ast.dump(node)}")

    layers = ev(ast.parse(spec, mode="eval"))
    if not layers or not all(isinstance(t, tuple) and len(t) == 3 for t in layers):
        raise ValueError(f"bad feature_encoder_spec: {spec!r}")
    return [tuple(int(v) for v in t) for t in layers]


class _E2VConfig:
    def __init__(self, raw: dict):
        if raw.get("model") not in (None, "Emotion2vec"):
            raise ValueError(f"config.yaml names model {raw.get('model')!r}, expected 'Emotion2vec'")
        mc = raw.get("model_conf")
        if not isinstance(mc, dict):
            raise ValueError("config.yaml has no model_conf mapping")
        audio = (mc.get("modalities") or {}).get("audio")
        if not isinstance(audio, dict):
            raise ValueError("config.yaml has no model_conf.modalities.audio mapping")
        self.raw = raw
        self.embed_dim = int(mc["embed_dim"])
        self.num_heads = int(mc["num_heads"])
        self.depth = int(mc["depth"])
        self.mlp_ratio = float(mc.get("mlp_ratio", 4.0))
        self.norm_eps = float(mc.get("norm_eps", 1e-5))
        self.norm_affine = bool(mc.get("norm_affine", True))
        self.layer_norm_first = bool(mc.get("layer_norm_first", False))
        self.normalize = bool(mc.get("normalize", False))
        if self.layer_norm_first:
            raise ValueError("layer_norm_first=True emotion2vec configs are not supported")
        self.conv_layers = _safe_eval_spec(
            audio.get("feature_encoder_spec", "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]")
        )
        self.extractor_mode = audio.get("extractor_mode", "layer_norm")
        if self.extractor_mode not in ("layer_norm", "default"):
            raise ValueError(f"unknown extractor_mode {self.extractor_mode!r}")
        self.conv_pos_width = int(audio.get("conv_pos_width", 95))
        self.conv_pos_depth = int(audio.get("conv_pos_depth", 5))
        self.conv_pos_groups = int(audio.get("conv_pos_groups", 16))
        self.conv_pos_pre_ln = bool(audio.get("conv_pos_pre_ln", False))
        self.prenet_depth = int(audio.get("prenet_depth", 4))
        self.num_extra_tokens = int(audio.get("num_extra_tokens", 0))
        self.use_alibi = bool(audio.get("use_alibi_encoder", False))
        self.num_alibi_heads = int(audio.get("num_alibi_heads", self.num_heads))
        self.alibi_per_layer = bool(audio.get("learned_alibi_scale_per_layer", False))
        self.alibi_per_head = bool(audio.get("learned_alibi_scale_per_head", False))
        self.alibi_init = float(audio.get("alibi_scale", 1.0))
        self.model_depth = int(audio.get("model_depth", self.depth))
        if audio.get("learned_alibi", False):
            raise ValueError("learned_alibi=True emotion2vec configs are not supported")
        if self.use_alibi and self.num_alibi_heads != self.num_heads:
            raise ValueError("num_alibi_heads must equal num_heads")
        self.scope_map = raw.get("scope_map") or []

    def describe(self) -> str:
        return (
            f"emotion2vec dim={self.embed_dim} heads={self.num_heads} "
            f"blocks={self.prenet_depth}+{self.depth} extra_tokens={self.num_extra_tokens}"
        )


# ----------------------------------------------------------------------------- public API


# ----------------------------------------------------------------------------- network
# Module tree mirrors funasr.models.emotion2vec so that state-dict keys match one to one.


class _Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(-2, -1)


class _Identity(nn.Module):
    def forward(self, x):
        return x


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if bias is None else bias.to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """data2vec 2.0 ``AltBlock`` with post-norm (``layer_norm_first=False``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float, affine: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, bias):
        x = self.norm1(x + self.attn(x, bias))
        return self.norm2(x + self.mlp(x))


class _BlockList(nn.Module):
    def __init__(self, blocks: list[nn.Module], norm: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.norm = norm


class _AudioEncoder(nn.Module):
    def __init__(self, cfg: _E2VConfig):
        super().__init__()
        d = cfg.embed_dim
        convs = []
        in_ch = 1
        for i, (ch, k, s) in enumerate(cfg.conv_layers):
            conv = nn.Conv1d(in_ch, ch, k, stride=s, bias=False)
            if cfg.extractor_mode == "layer_norm":
                norm = nn.Sequential(_Transpose(), nn.LayerNorm(ch), _Transpose())
            elif i == 0:
                norm = nn.GroupNorm(ch, ch, affine=True)
            else:
                norm = _Identity()
            convs.append(nn.Sequential(conv, _Identity(), norm, nn.GELU()))
            in_ch = ch
        self.local_encoder = nn.Module()
        self.local_encoder.conv_layers = nn.ModuleList(convs)
        self.project_features = nn.Sequential(_Transpose(), nn.LayerNorm(in_ch), nn.Linear(in_ch, d))
        k = max(3, cfg.conv_pos_width // cfg.conv_pos_depth)
        pos = nn.Sequential(
            _Transpose(),
            *[
                nn.Sequential(
                    nn.Conv1d(d, d, kernel_size=k, padding=k // 2, groups=cfg.conv_pos_groups),
                    _Identity(),
                    _Transpose(),
                    nn.LayerNorm(d, elementwise_affine=False),
                    _Transpose(),
                    nn.GELU(),
                )
                for _ in range(cfg.conv_pos_depth)
            ],
            _Transpose(),
        )
        self.relative_positional_encoder = nn.Sequential(nn.LayerNorm(d), pos) if cfg.conv_pos_pre_ln else pos
        blocks = [
            _Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps, cfg.norm_affine) for _ in range(cfg.prenet_depth)
        ]
        norm = nn.LayerNorm(d, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine)
        self.context_encoder = _BlockList(blocks, norm)
        self.extra_tokens = nn.Parameter(torch.zeros(1, cfg.num_extra_tokens, d)) if cfg.num_extra_tokens > 0 else None
        if cfg.use_alibi:
            n_layers = cfg.prenet_depth + cfg.model_depth if cfg.alibi_per_layer else 1
            n_heads = cfg.num_heads if cfg.alibi_per_head else 1
            self.alibi_scale = nn.Parameter(torch.full((n_layers, 1, n_heads, 1, 1), cfg.alibi_init))
        else:
            self.alibi_scale = None


class _Emotion2VecNet(nn.Module):
    def __init__(self, cfg: _E2VConfig, vocab_size: int = 0):
        super().__init__()
        self.cfg = cfg
        self.modality_encoders = nn.ModuleDict({"AUDIO": _AudioEncoder(cfg)})
        self.blocks = nn.ModuleList(
            [
                _Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps, cfg.norm_affine)
                for _ in range(cfg.depth)
            ]
        )
        self.proj = nn.Linear(cfg.embed_dim, vocab_size) if vocab_size > 0 else None

    def _time_major_convs(self) -> list | None:
        """(conv, layer_norm, GELU) of the ``layer_norm`` feature extractor, for the time-major fast path
        (models/runtime/speedups.py); None for the group-norm (``default``) extractor, which keeps the module path."""
        if self.cfg.extractor_mode != "layer_norm":
            return None
        return [
            (layer[0], layer[2][1], layer[3]) for layer in self.modality_encoders["AUDIO"].local_encoder.conv_layers
        ]

    # ------------------------------------------------------------------ exact batched forward

    def _positional(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Conv positional encoder; zeroes padded frames before every conv (the exactness fix). It runs in
        fp32 under a bf16 autocast too: in bf16 its five stacked grouped convolutions about doubled bf16's
        error on full-size emotion2vec (max |bf16 - fp32| 2.9e-2 of the largest value, 1.5e-2 with them in
        fp32, frame cosine 0.99987 -> 0.99993; 4 RAVDESS utterances, random weights, 2026-12-07). They take
        4.9% of emotion2vec's fp32 time (one 4 s utterance, 1 thread, Zen 3), so where the rest runs ~4x
        faster in bf16 this costs fast mode ~12% on emotion2vec (an estimate, not measured on AMX). The conv
        feature encoder runs in bf16: ~35% of the time (in fp32 too: 4.5e-3)."""
        keep = None if bool(valid.all()) else valid[:, None, :].float()  # (B, 1, T) for (B, C, T)

        def run(mod: nn.Module, h: torch.Tensor) -> torch.Tensor:
            if isinstance(mod, nn.Sequential) and len(mod) and isinstance(mod[0], nn.Conv1d):
                return mod(h if keep is None else h * keep)
            if isinstance(mod, nn.Sequential):
                for child in mod:
                    h = run(child, h)
                return h
            return mod(h)

        with torch.autocast(x.device.type, enabled=False):
            return run(self.modality_encoders["AUDIO"].relative_positional_encoder, x.float())

    def forward_frames(self, wav: torch.Tensor, lengths: torch.Tensor, context=None):
        """``wav`` (B, L) already normalised and zero-padded -> ((B, T, D) float32, frame lengths (B,)).
        ``context`` (e.g. fast mode's bf16 autocast) wraps the whole network: the conv feature encoder
        (~35% of the work), the positional convolutions and the transformer, as autocast wraps the
        transformers models (issue 29: an fp32 front end would cap bf16's gain at ~2x)."""
        with context or contextlib.nullcontext():
            return self._forward_frames(wav, lengths)

    def _forward_frames(self, wav: torch.Tensor, lengths: torch.Tensor):
        cfg = self.cfg
        enc = self.modality_encoders["AUDIO"]
        convs = self._time_major_convs()
        if convs is not None:
            h = conv_stack_time_major(wav, convs)  # (B, T, C): same values, no transposes
            x = enc.project_features[2](enc.project_features[1](h))  # project_features minus its transpose
        else:
            h = wav[:, None, :]
            for layer in enc.local_encoder.conv_layers:
                h = layer(h)
            x = enc.project_features(h)  # (B, T, D)
        b, t, _ = x.shape
        frames = conv_output_lengths(lengths, [(k, s) for _, k, s in cfg.conv_layers])
        valid = lengths_to_mask(frames, t)
        x = x + self._positional(x, valid)

        n_extra = cfg.num_extra_tokens
        if enc.extra_tokens is not None:
            x = torch.cat([enc.extra_tokens.expand(b, -1, -1).to(x.dtype), x], dim=1)
            valid = F.pad(valid, (n_extra, 0), value=True)
        # additive attention bias: ALiBi (+ per-layer scale) and -inf on padded keys
        key_bias = torch.zeros(b, 1, 1, t + n_extra, device=x.device)
        key_bias = key_bias.masked_fill(~valid[:, None, None, :], float("-inf"))
        base = None
        if enc.alibi_scale is not None:
            base = F.pad(_alibi(t, cfg.num_heads, x.device), (n_extra, 0, n_extra, 0))[None]
        scales = enc.alibi_scale.clamp_min(0) if enc.alibi_scale is not None else None

        shared = None if base is None or scales.size(0) > 1 else base * scales[0] + key_bias

        def bias_for(layer_idx: int) -> torch.Tensor:
            if base is None:
                return key_bias  # broadcasts over heads and queries
            if shared is not None:
                return shared  # (B, H, T', T')
            return base * scales[layer_idx] + key_bias

        ctx = enc.context_encoder
        x = ctx.norm(x)
        for i, blk in enumerate(ctx.blocks):
            x = blk(x, bias_for(i))
        for i, blk in enumerate(self.blocks):
            x = blk(x, bias_for(cfg.prenet_depth + i))
        return x[:, n_extra:].float(), frames


def _alibi_slopes(n: int) -> list[float]:
    def pow2(m: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(m) - 3)))
        return [start * start**i for i in range(m)]

    if math.log2(n).is_integer():
        return pow2(n)
    low = 2 ** math.floor(math.log2(n))
    return pow2(low) + _alibi_slopes(2 * low)[0::2][: n - low]


def _alibi(t: int, heads: int, device) -> torch.Tensor:
    """Symmetric ALiBi bias ``-slope_h * |i - j|`` as (H, T, T) float32."""
    pos = torch.arange(t, device=device)
    dist = -(pos[None, :] - pos[:, None]).abs().to(torch.float32)
    slopes = torch.tensor(_alibi_slopes(heads), device=device, dtype=torch.float32)
    return slopes[:, None, None] * dist[None]


def _map_checkpoint_keys(state: dict, scope_map: Sequence) -> dict:
    pairs = []
    items = list(scope_map) + ["module.", "none"]
    for i in range(0, len(items) - 1, 2):
        src = "" if str(items[i]).lower() == "none" else str(items[i])
        dst = "" if str(items[i + 1]).lower() == "none" else str(items[i + 1])
        if src:
            pairs.append((src, dst))
    out = {}
    for k, v in state.items():
        for src, dst in pairs:
            if k.startswith(src):
                k = dst + k[len(src) :]
                break
        out[k] = v
    return out
