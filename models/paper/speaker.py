"""Speaker embeddings for Vsim as Seamless computes it: WavLM-Large + ECAPA-TDNN from UniSpeech's
``wavlm_large_finetune.pth``, on transformers' WavLM, batched and exact.

The checkpoint (``{"model": state_dict}``) holds the whole UniSpeech ``ECAPA_TDNN_SMALL``:
the fine-tuned WavLM under ``feature_extract.model.*`` (fairseq/unilm key names), the
``feature_weight`` layer weights and the ECAPA-TDNN. Here the WavLM part is loaded into
``transformers.WavLMModel`` by renaming keys (no s3prl, no download; its architecture is read
off the tensor shapes), and the ECAPA-TDNN is rebuilt with UniSpeech's module names so its keys
load unchanged. Seamless' VSim (stopes ``vocal_style_similarity``, model type ``valle``) is the
cosine of the two utterances' embeddings.

Forward, as UniSpeech/s3prl: layer-normalise the waveform (WavLM-Large's ``normalize``), take
the 25 hidden states s3prl exposes (the input of each of the 24 transformer layers and the
encoder's final layer-normed output), sum them with softmax(``feature_weight``), add 1e-6,
instance-normalise over time, ECAPA-TDNN -> embedding (256-d for the published model).

Exact batching: WavLM's layer-norm conv encoder is per frame, transformers zeroes padded frames
before the positional conv and masks padded keys. ECAPA-TDNN reads across time in five places,
each made padding-blind here: instance-norm statistics over real frames only, padded frames
zeroed before every convolution that spans time (first conv and each Res2 dilated conv), the
SE block's time mean over real frames, and the attentive statistics pooling softmax set to
zero weight on padded frames.
"""

from __future__ import annotations

import logging
import re
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.paper.backend import PaperBackend
from models.runtime.batching import (
    autocast_context,
    file_sha256,
    hf_frame_lengths,
    hf_min_samples,
    lengths_to_mask,
    load_torch_file,
    pad_waves,
)
from models.runtime.speedups import cached_weights, padding_mask, use_packed_linears, use_time_major_features

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "wavlm_large_finetune.pth"
WAVLM_PREFIX = "feature_extract.model."
STANDARD_STRIDES = {(10, 3, 3, 3, 3, 2, 2): (5, 2, 2, 2, 2, 2, 2)}


# ----------------------------------------------------------------------------- ECAPA-TDNN
# Module and attribute names follow UniSpeech downstreams/speaker_verification/models/ecapa_tdnn.py


def _masked(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return x if keep is None else x * keep


class Conv1dReluBn(nn.Module):
    def __init__(self, cin, cout, kernel_size=1, padding=0, dilation=1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel_size, 1, padding, dilation, bias=True)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x):
        return self.bn(F.relu(self.conv(x)))


class Res2Conv1dReluBn(nn.Module):
    def __init__(self, channels, kernel_size, padding, dilation, scale):
        super().__init__()
        self.scale = scale
        self.width = channels // scale
        self.nums = scale if scale == 1 else scale - 1
        self.convs = nn.ModuleList(
            [nn.Conv1d(self.width, self.width, kernel_size, 1, padding, dilation, bias=True) for _ in range(self.nums)]
        )
        self.bns = nn.ModuleList([nn.BatchNorm1d(self.width) for _ in range(self.nums)])

    def forward(self, x, keep):
        parts = torch.split(x, self.width, 1)
        out = []
        sp = None
        for i in range(self.nums):
            sp = parts[i] if i == 0 else sp + parts[i]
            sp = self.bns[i](F.relu(self.convs[i](_masked(sp, keep))))
            out.append(sp)
        if self.scale != 1:
            out.append(parts[self.nums])
        return torch.cat(out, dim=1)


class SE_Connect(nn.Module):
    def __init__(self, channels, bottleneck):
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x, keep, n):
        m = x.mean(dim=2) if keep is None else (x * keep).sum(dim=2) / n
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(m))))
        return x * gate.unsqueeze(2)


class SE_Res2Block(nn.Module):
    def __init__(self, cin, cout, kernel_size, padding, dilation, scale, bottleneck):
        super().__init__()
        self.Conv1dReluBn1 = Conv1dReluBn(cin, cout)
        self.Res2Conv1dReluBn = Res2Conv1dReluBn(cout, kernel_size, padding, dilation, scale)
        self.Conv1dReluBn2 = Conv1dReluBn(cout, cout)
        self.SE_Connect = SE_Connect(cout, bottleneck)
        self.shortcut = nn.Conv1d(cin, cout, kernel_size=1) if cin != cout else None

    def forward(self, x, keep, n):
        residual = self.shortcut(x) if self.shortcut is not None else x
        x = self.Conv1dReluBn1(x)
        x = self.Res2Conv1dReluBn(x, keep)
        x = self.Conv1dReluBn2(x)
        return self.SE_Connect(x, keep, n) + residual


class AttentiveStatsPool(nn.Module):
    def __init__(self, dim, attention_channels):
        super().__init__()
        self.linear1 = nn.Conv1d(dim, attention_channels, kernel_size=1)
        self.linear2 = nn.Conv1d(attention_channels, dim, kernel_size=1)

    def forward(self, x, keep):
        logits = self.linear2(torch.tanh(self.linear1(x)))
        if keep is not None:
            logits = logits.masked_fill(keep == 0, float("-inf"))
        alpha = torch.softmax(logits, dim=2)
        mean = torch.sum(alpha * x, dim=2)
        var = torch.sum(alpha * x * x, dim=2) - mean * mean
        return torch.cat([mean, torch.sqrt(var.clamp(min=1e-9))], dim=1)


class EcapaTdnn(nn.Module):
    """UniSpeech's ECAPA-TDNN head (``ECAPA_TDNN_SMALL``, no global-context attention)."""

    def __init__(
        self,
        feat_dim,
        n_states,
        channels=512,
        last_channels=1536,
        emb_dim=256,
        scale=8,
        se_bottleneck=128,
        attention_channels=128,
    ):
        super().__init__()
        self.feature_weight = nn.Parameter(torch.zeros(n_states))
        self.layer1 = Conv1dReluBn(feat_dim, channels, kernel_size=5, padding=2)
        self.layer2 = SE_Res2Block(channels, channels, 3, 2, 2, scale, se_bottleneck)
        self.layer3 = SE_Res2Block(channels, channels, 3, 3, 3, scale, se_bottleneck)
        self.layer4 = SE_Res2Block(channels, channels, 3, 4, 4, scale, se_bottleneck)
        self.conv = nn.Conv1d(channels * 3, last_channels, kernel_size=1)
        self.pooling = AttentiveStatsPool(last_channels, attention_channels)
        self.bn = nn.BatchNorm1d(last_channels * 2)
        self.linear = nn.Linear(last_channels * 2, emb_dim)

    @classmethod
    def from_state(cls, state: dict) -> EcapaTdnn:
        w = state["layer1.conv.weight"]
        n_res2 = len([k for k in state if re.fullmatch(r"layer2\.Res2Conv1dReluBn\.convs\.\d+\.weight", k)])
        if state["pooling.linear1.weight"].shape[1] != state["conv.weight"].shape[0]:
            raise ValueError("ECAPA-TDNN with global-context attention is not supported")
        return cls(
            feat_dim=w.shape[1],
            n_states=state["feature_weight"].numel(),
            channels=w.shape[0],
            last_channels=state["conv.weight"].shape[0],
            emb_dim=state["linear.weight"].shape[0],
            scale=n_res2 + 1,
            se_bottleneck=state["layer2.SE_Connect.linear1.weight"].shape[0],
            attention_channels=state["pooling.linear1.weight"].shape[0],
        )

    def forward(self, x: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, D, T) weighted WavLM features (+1e-6); ``frames`` (B,) real lengths."""
        keep = n = None
        if frames is not None and int(frames.min()) < x.shape[2]:
            keep = lengths_to_mask(frames, x.shape[2])[:, None, :].to(x.dtype)
            n = frames[:, None].to(x.dtype)
        # InstanceNorm1d (no affine, eps 1e-5) over real frames
        if keep is None:
            mean = x.mean(dim=2, keepdim=True)
            var = ((x - mean) ** 2).mean(dim=2, keepdim=True)
        else:
            mean = (x * keep).sum(dim=2, keepdim=True) / n[..., None]
            var = (((x - mean) ** 2) * keep).sum(dim=2, keepdim=True) / n[..., None]
        x = (x - mean) / torch.sqrt(var + 1e-5)
        out1 = self.layer1(_masked(x, keep))
        out2 = self.layer2(out1, keep, n)
        out3 = self.layer3(out2, keep, n)
        out4 = self.layer4(out3, keep, n)
        out = F.relu(self.conv(torch.cat([out2, out3, out4], dim=1)))
        return self.linear(self.bn(self.pooling(out, keep)))


# ----------------------------------------------------------------------------- WavLM mapping

# fairseq/unilm -> transformers key names; the inverse is derived (hf_wavlm_to_fairseq)
_CONV_PARTS = {  # conv layer i: "feature_extractor.conv_layers.{i}.<part>" (the group-norm encoder's layer 0: "2.")
    "0.weight": "conv.weight",
    "0.bias": "conv.bias",
    "2.1.weight": "layer_norm.weight",
    "2.1.bias": "layer_norm.bias",
    "2.weight": "layer_norm.weight",
    "2.bias": "layer_norm.bias",
}
_LAYER_PARTS = [  # transformer layer i: "encoder.layers.{i}.<part>"; a part ending in "." is a prefix, else a name
    *((f"self_attn.{p}_proj.", f"attention.{p}_proj.") for p in ("q", "k", "v", "out")),
    ("self_attn.grep_linear.", "attention.gru_rel_pos_linear."),
    ("self_attn.grep_a", "attention.gru_rel_pos_const"),
    ("self_attn.relative_attention_bias.", "attention.rel_attn_embed."),
    ("self_attn_layer_norm.", "layer_norm."),
    ("fc1.", "feed_forward.intermediate_dense."),
    ("fc2.", "feed_forward.output_dense."),
    ("final_layer_norm.", "final_layer_norm."),
]
_TOP_LEVEL = {
    "layer_norm.weight": "feature_projection.layer_norm.weight",
    "layer_norm.bias": "feature_projection.layer_norm.bias",
    "post_extract_proj.weight": "feature_projection.projection.weight",
    "post_extract_proj.bias": "feature_projection.projection.bias",
    "mask_emb": "masked_spec_embed",
    "encoder.pos_conv.0.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv.0.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.conv.bias",
    "encoder.layer_norm.weight": "encoder.layer_norm.weight",
    "encoder.layer_norm.bias": "encoder.layer_norm.bias",
}


def _inverted(names: dict[str, str]) -> dict[str, str]:
    """new name -> the first old name that maps to it."""
    out: dict[str, str] = {}
    for old, new in names.items():
        out.setdefault(new, old)
    return out


def _rename(
    state: dict, conv_parts: dict[str, str], layer_parts: list[tuple[str, str]], top_level: dict[str, str]
) -> dict:
    """``state`` with its WavLM keys renamed by the three tables; keys no table names are dropped."""
    out = {}
    for k, v in state.items():
        m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.(.+)", k)
        if m:
            i, part = m.groups()
            if part in conv_parts:
                out[f"feature_extractor.conv_layers.{i}.{conv_parts[part]}"] = v
            continue
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", k)
        if m:
            i, rest = m.groups()
            for old, new in layer_parts:
                if rest == old or (old.endswith(".") and rest.startswith(old)):
                    out[f"encoder.layers.{i}.{new}{rest[len(old) :]}"] = v
                    break
            continue
        if k in top_level:
            out[top_level[k]] = v
        # anything else (label_embs_concat, final_proj, ...) is pre-training only
    return out


def fairseq_wavlm_to_hf(state: dict) -> dict:
    """Rename unilm/fairseq WavLM keys (as in s3prl and UniSpeech checkpoints) to transformers'."""
    return _rename(state, _CONV_PARTS, _LAYER_PARTS, _TOP_LEVEL)


def hf_wavlm_to_fairseq(state: dict) -> dict:
    """Inverse of :func:`fairseq_wavlm_to_hf` (used to write test checkpoints in UniSpeech layout; conv
    layer norms go to the layer-norm encoder's "2.1." names)."""
    return _rename(state, _inverted(_CONV_PARTS), [(new, old) for old, new in _LAYER_PARTS], _inverted(_TOP_LEVEL))


def wavlm_config_from_state(state: dict):
    """transformers ``WavLMConfig`` read off a fairseq-layout WavLM state dict's tensor shapes.

    Strides are not stored in weights: the standard wav2vec2/WavLM encoder (kernels 10,3,3,3,3,2,2
    with strides 5,2,2,2,2,2,2) is required. As in every WavLM release, the layer-norm conv encoder
    goes with pre-norm ("stable") transformer layers and waveform normalisation (WavLM-Large), the
    group-norm encoder with post-norm layers (WavLM Base/Base+).
    """
    from transformers import WavLMConfig

    convs = sorted(
        int(m.group(1)) for k in state if (m := re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.0\.weight", k))
    )
    if not convs:
        raise ValueError("no WavLM conv feature extractor weights found")
    conv_dim = [state[f"feature_extractor.conv_layers.{i}.0.weight"].shape[0] for i in convs]
    kernels = tuple(state[f"feature_extractor.conv_layers.{i}.0.weight"].shape[2] for i in convs)
    if kernels not in STANDARD_STRIDES:
        raise ValueError(f"unexpected WavLM conv kernels {kernels}; strides cannot be inferred")
    layer_norm_convs = "feature_extractor.conv_layers.1.2.1.weight" in state
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.fc1\.weight", k))})
    rel = state["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    pos_v = state["encoder.pos_conv.0.weight_v"]
    hidden = state["post_extract_proj.weight"].shape[0]
    return WavLMConfig(
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=rel.shape[1],
        intermediate_size=state["encoder.layers.0.fc1.weight"].shape[0],
        conv_dim=conv_dim,
        conv_kernel=list(kernels),
        conv_stride=list(STANDARD_STRIDES[kernels]),
        conv_bias="feature_extractor.conv_layers.0.0.bias" in state,
        feat_extract_norm="layer" if layer_norm_convs else "group",
        do_stable_layer_norm=layer_norm_convs,
        num_conv_pos_embeddings=pos_v.shape[2],
        num_conv_pos_embedding_groups=hidden // pos_v.shape[1],
        num_buckets=rel.shape[0],
        max_bucket_distance=800,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
    )


def _wavlm_attention_forward(self, hidden_states, attention_mask=None, position_bias=None, index=0, **kwargs):
    """transformers' ``WavLMAttention.forward`` with the same math through ``nn.Linear`` modules (so
    the packed oneDNN linears of models/runtime/speedups.py apply) and ``F.scaled_dot_product_attention``.

    transformers hands the projection weights to ``F.multi_head_attention_forward``, which runs
    them through plain ``F.linear`` on a (time, batch, dim) view and, since it must return the
    averaged attention weights, an explicit baddbmm/softmax/bmm; WavLMEncoderLayer discards those
    weights. Here: q, k, v and out projections as the modules, the gated relative position bias
    exactly as transformers computes it, padded keys at -inf (as ``key_padding_mask`` does), and
    SDPA's default scale 1/sqrt(head_dim) (multi_head_attention_forward's). Returns
    (output, None, position_bias)."""
    bsz, tgt_len, embed_dim = hidden_states.size()
    heads, head_dim = self.num_heads, self.head_dim
    if position_bias is None:
        position_bias = self.compute_bias(tgt_len, tgt_len)
        position_bias = position_bias.unsqueeze(0).repeat(bsz, 1, 1, 1).view(bsz * heads, tgt_len, tgt_len)
    gated = hidden_states.view(bsz, tgt_len, heads, head_dim).permute(0, 2, 1, 3)
    relative = self.gru_rel_pos_linear(gated).view(bsz, heads, tgt_len, 2, 4).sum(-1)
    gate_a, gate_b = torch.sigmoid(relative).chunk(2, dim=-1)
    gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0
    bias = (gate.view(bsz * heads, -1, 1) * position_bias).view(bsz, heads, tgt_len, tgt_len)
    if attention_mask is not None:
        bias = bias.masked_fill(attention_mask.ne(1)[:, None, None, :], float("-inf"))

    def split(x):
        return x.view(bsz, tgt_len, heads, head_dim).transpose(1, 2)

    q, k, v = split(self.q_proj(hidden_states)), split(self.k_proj(hidden_states)), split(self.v_proj(hidden_states))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
    return self.out_proj(out.transpose(1, 2).reshape(bsz, tgt_len, embed_dim)), None, position_bias


def use_fast_attention(wavlm) -> None:
    """Every WavLM attention layer runs :func:`_wavlm_attention_forward` (same values)."""
    for layer in wavlm.encoder.layers:
        layer.attention.forward = types.MethodType(_wavlm_attention_forward, layer.attention)


# ----------------------------------------------------------------------------- public API


class SpeakerEncoder(PaperBackend):
    """Batched, exact WavLM + ECAPA-TDNN speaker embeddings (Seamless VSim)."""

    too_short = "the speaker model needs >= {}"

    def __init__(self, wavlm, ecapa: EcapaTdnn, *, normalize: bool, **common):
        """``common``: :class:`PaperBackend`'s device, precision, source, sha256, max_batch_seconds."""
        super().__init__(**common)
        self.wavlm = wavlm.to(self.device).eval()
        self.ecapa = ecapa.to(self.device).eval()
        use_fast_attention(self.wavlm)
        use_time_major_features(self.wavlm)
        use_packed_linears(self.wavlm)
        use_packed_linears(self.ecapa)
        self.normalize = normalize
        cfg = wavlm.config
        self.exact_batching = cfg.feat_extract_norm == "layer"
        self.min_samples = hf_min_samples(cfg)
        self.embed_dim = ecapa.linear.out_features
        if ecapa.feature_weight.numel() != cfg.num_hidden_layers + 1:
            raise ValueError(
                f"feature_weight has {ecapa.feature_weight.numel()} entries for "
                f"{cfg.num_hidden_layers} WavLM layers (expected layers + 1)"
            )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str = "cpu",
        fast: bool = False,
        *,
        precision: str | None = None,
        max_batch_seconds: float | None = None,
    ) -> SpeakerEncoder:
        """``path``: UniSpeech's ``wavlm_large_finetune.pth`` (or a folder holding it)."""
        from transformers import WavLMModel

        path = Path(path)
        if path.is_dir():
            path = path / CHECKPOINT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"speaker checkpoint {path} not found (UniSpeech {CHECKPOINT_FILE})")
        ckpt = load_torch_file(path)
        state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict) or "feature_weight" not in state:
            raise ValueError(f"{path} is not a UniSpeech ECAPA-TDNN checkpoint (no model.feature_weight)")
        wavlm_state = {k[len(WAVLM_PREFIX) :]: v for k, v in state.items() if k.startswith(WAVLM_PREFIX)}
        if not wavlm_state:
            raise ValueError(f"{path} has no {WAVLM_PREFIX}* weights: the fine-tuned WavLM must be in the checkpoint")
        config = wavlm_config_from_state(wavlm_state)
        wavlm = WavLMModel(config)
        hf_state = fairseq_wavlm_to_hf(wavlm_state)
        own = wavlm.state_dict()
        missing = [k for k in own if k not in hf_state and k != "masked_spec_embed"]
        if missing:
            raise ValueError(f"{path}: WavLM weights missing after key mapping, e.g. {missing[:5]}")
        hf_state = {k: v for k, v in hf_state.items() if k in own}
        wavlm.load_state_dict(hf_state, strict=False)
        ecapa_state = {k: v for k, v in state.items() if not k.startswith("feature_extract.")}
        ecapa = EcapaTdnn.from_state(ecapa_state)
        own = ecapa.state_dict()
        missing = [k for k in own if k not in ecapa_state]
        if missing:
            raise ValueError(f"{path}: ECAPA-TDNN weights missing, e.g. {missing[:5]}")
        extra = [k for k in ecapa_state if k not in own]
        if extra:
            logger.debug("%s: ignoring %d non-inference weights (e.g. %s)", path, len(extra), extra[:3])
        ecapa.load_state_dict({k: ecapa_state[k] for k in own}, strict=True)
        loaded = cls(
            wavlm,
            ecapa,
            normalize=config.do_stable_layer_norm,
            device=device,
            precision=precision,
            source=str(path),
            sha256=file_sha256(path),
            max_batch_seconds=max_batch_seconds,
        )
        return loaded._fast_mode(fast, precision, loaded.embeddings)

    def _version(self) -> str:
        cfg = self.wavlm.config
        return f"WavLM layers={cfg.num_hidden_layers} dim={cfg.hidden_size} + ECAPA-TDNN emb={self.embed_dim}"

    def _networks(self) -> tuple[nn.Module, ...]:
        return (self.wavlm, self.ecapa)

    # ------------------------------------------------------------------ inference
    def _weighted_states(self, wav: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """softmax(feature_weight)-weighted sum of s3prl's 25 hidden states: the input of each transformer
        layer (transformers' ``hidden_states`` but the last) and the final layer-normed output. No hooks on
        the shared modules: utterances may run in concurrent threads (models.runtime.batching.run_batched)."""
        weights = torch.softmax(self.ecapa.feature_weight.float(), dim=0)
        out = self.wavlm(wav, attention_mask=mask, output_hidden_states=True)
        states = [*out.hidden_states[:-1], out.last_hidden_state]
        acc = states[0].float() * weights[0]
        for w, h in zip(weights[1:], states[1:], strict=True):
            acc = acc + h.float() * w
        return acc

    @torch.inference_mode()
    def _run(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        tensors = [torch.from_numpy(w).to(self.device) for w in waves]
        if self.normalize:
            tensors = [F.layer_norm(w, w.shape) for w in tensors]
        wav, lengths = pad_waves(tensors, self.device)
        mask = padding_mask(lengths, wav.shape[1])
        with autocast_context(self.device, self.precision), cached_weights(self.wavlm):
            feats = self._weighted_states(wav, mask)
        x = feats.float().transpose(1, 2) + 1e-6  # (B, D, T)
        frames = hf_frame_lengths(self.wavlm.config, lengths).to(x.device)
        emb = self.ecapa(x, frames).float().cpu().numpy()
        return [e.astype(np.float32) for e in emb]

    def embeddings(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float32 speaker embeddings."""
        out = self._batched(waves)
        return np.stack(out).astype(np.float32) if out else np.zeros((0, self.embed_dim), np.float32)
