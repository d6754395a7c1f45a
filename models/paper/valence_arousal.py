"""Arousal / valence chunks from audeering's ``wav2vec2-large-robust-12-ft-emotion-msp-dim``, batched and exact.

Folder: the model's Hugging Face repository as published (``config.json``,
``pytorch_model.bin`` or ``model.safetensors``, ``preprocessor_config.json``, ...), loaded
with the model card's own ``EmotionModel`` / ``RegressionHead`` classes on transformers'
``Wav2Vec2Model`` (``post_init`` instead of the card's ``init_weights`` under transformers 5).

va-sim inputs (docs/metrics.md, as EmoCtrlTTS-Eval computes them): the last hidden states (50 Hz)
are cut in chunks of 25 frames with hop 12; each chunk is mean-pooled and goes through the
model's regression head -> (arousal, dominance, valence); we keep (arousal, valence) - 0.5.
An utterance shorter than one chunk (< 25 frames, ~0.5 s) gets one chunk over all its frames,
and ``short`` says so (the pair records a warning).

Exact batching: the wav2vec2-large-robust conv encoder normalises per frame (layer norm), so a
real frame never sees the padding; transformers zeroes padded frames before the (single)
positional convolution and masks padded keys when given ``attention_mask``; chunks are cut
from each utterance's real frames only. Batched == one at a time up to float rounding.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.paper.backend import PaperBackend
from models.runtime.batching import (
    autocast_context,
    hf_exact_batching,
    hf_frame_lengths,
    hf_min_samples,
    hf_missing_files,
    hf_weights_sha256,
    pad_waves,
    quiet_transformers,
    read_do_normalize,
    zero_mean_unit_var,
)
from models.runtime.speedups import cached_weights, padding_mask, use_packed_linears, use_time_major_features

logger = logging.getLogger(__name__)

CHUNK_WINDOW = 25
CHUNK_HOP = 12
LABELS = ("arousal", "dominance", "valence")


@functools.cache
def _model_classes():
    """The audeering model card's classes, built lazily so importing this module stays light."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2Model, Wav2Vec2PreTrainedModel

    class RegressionHead(nn.Module):
        """Model card head: dropout -> dense -> tanh -> dropout -> out_proj."""

        def __init__(self, config):
            super().__init__()
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.dropout = nn.Dropout(config.final_dropout)
            self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

        def forward(self, features, **kwargs):
            x = self.dropout(features)
            x = torch.tanh(self.dense(x))
            x = self.dropout(x)
            return self.out_proj(x)

    class EmotionModel(Wav2Vec2PreTrainedModel):
        """Model card model: wav2vec2 encoder, mean pooling, regression head (A, D, V)."""

        def __init__(self, config):
            super().__init__(config)
            self.config = config
            self.wav2vec2 = Wav2Vec2Model(config)
            self.classifier = RegressionHead(config)
            self.post_init()

        def forward(self, input_values, attention_mask=None):
            hidden = self.wav2vec2(input_values, attention_mask=attention_mask)[0]
            pooled = hidden.mean(dim=1)
            return pooled, self.classifier(pooled)

    return RegressionHead, EmotionModel


def __getattr__(name):  # models.paper.valence_arousal.EmotionModel / RegressionHead, lazily
    if name in ("RegressionHead", "EmotionModel"):
        head, model = _model_classes()
        globals().update(RegressionHead=head, EmotionModel=model)
        return globals()[name]
    raise AttributeError(name)


def utterance_arousal_valence(utterance: np.ndarray) -> np.ndarray:
    """The utterance-level point EmoCtrlTTS-Eval's ``arousal_valance_sim_utt`` compares: (arousal,
    valence) - 0.5 of the card's utterance output (the regression head on the mean of all frames)."""
    return np.asarray(utterance, dtype=np.float64)[[0, 2]] - 0.5


@dataclass
class VAResult:
    chunks: np.ndarray  # (C, 2) float32: (arousal, valence) - 0.5 per chunk
    n_frames: int  # hidden-state frames of the utterance
    utterance: np.ndarray  # (3,) float32: the card's utterance-level (arousal, dominance, valence)

    @property
    def short(self) -> bool:
        return self.n_frames < CHUNK_WINDOW


class ValenceArousal(PaperBackend):
    """Batched, exact chunk-level (arousal, valence) extractor.

    >>> va = ValenceArousal.from_pretrained("models/wav2vec2-large-robust-12-ft-emotion-msp-dim")
    >>> va.chunks([wave_16k])[0]      # (C, 2) float32
    """

    too_short = "the valence-arousal model needs >= {}"

    def __init__(self, model, *, do_normalize=True, **common):
        """``common``: :class:`PaperBackend`'s device, precision, source, sha256, max_batch_seconds."""
        super().__init__(**common)
        self.model = model.to(self.device).eval()
        self.do_normalize = do_normalize
        cfg = model.config
        self.exact_batching = hf_exact_batching(cfg)
        if not self.exact_batching:
            logger.warning(
                "%s: feat_extract_norm=%r is not padding-invariant; running one utterance at a time",
                self.source,
                cfg.feat_extract_norm,
            )
        self.min_samples = hf_min_samples(cfg)
        use_time_major_features(self.model.wav2vec2)
        use_packed_linears(self.model)
        labels = [str(v).lower() for _, v in sorted((int(k), v) for k, v in (cfg.id2label or {}).items())]
        if len(labels) == 3 and set(labels) == set(LABELS):
            self.index = {name: labels.index(name) for name in LABELS}
        else:  # the published config names them; otherwise assume the card's order
            self.index = {name: i for i, name in enumerate(LABELS)}

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str = "cpu",
        fast: bool = False,
        *,
        precision: str | None = None,
        max_batch_seconds: float | None = None,
    ) -> ValenceArousal:
        folder = Path(folder)
        missing = hf_missing_files(folder)
        if missing:
            raise FileNotFoundError(f"valence-arousal folder {folder} is missing {', '.join(missing)}")
        _, EmotionModel = _model_classes()
        with quiet_transformers():
            model = EmotionModel.from_pretrained(str(folder), local_files_only=True)
        if model.config.num_labels != 3:
            raise ValueError(
                f"{folder}: expected a 3-output (arousal, dominance, valence) head, got {model.config.num_labels}"
            )
        loaded = cls(
            model,
            device=device,
            precision=precision,
            source=str(folder),
            sha256=hf_weights_sha256(folder),
            do_normalize=read_do_normalize(folder),
            max_batch_seconds=max_batch_seconds,
        )
        return loaded._fast_mode(fast, precision, loaded.analyse)

    def _version(self) -> str:
        cfg = self.model.config
        return f"wav2vec2 layers={cfg.num_hidden_layers} dim={cfg.hidden_size} chunk={CHUNK_WINDOW}/{CHUNK_HOP}"

    def _networks(self) -> tuple[nn.Module, ...]:
        return (self.model,)

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def _run(self, waves: list[np.ndarray]) -> list[VAResult]:
        tensors = [torch.from_numpy(w).to(self.device) for w in waves]
        if self.do_normalize:
            tensors = [zero_mean_unit_var(w) for w in tensors]
        wav, lengths = pad_waves(tensors, self.device)
        mask = padding_mask(lengths, wav.shape[1])
        with autocast_context(self.device, self.precision), cached_weights(self.model):
            hidden = self.model.wav2vec2(wav, attention_mask=mask)[0]
        hidden = hidden.float()
        frames = hf_frame_lengths(self.model.config, lengths.cpu())
        head = self.model.classifier
        pooled, counts = [], []
        for i in range(len(waves)):
            h = hidden[i, : int(frames[i])]
            if h.shape[0] >= CHUNK_WINDOW:
                chunks = h.unfold(0, CHUNK_WINDOW, CHUNK_HOP).mean(dim=-1)  # (C, D)
            else:
                chunks = h.mean(dim=0, keepdim=True)
            pooled.append(torch.cat([chunks, h.mean(dim=0, keepdim=True)]))
            counts.append(chunks.shape[0])
        with autocast_context(self.device, self.precision):
            preds = head(torch.cat(pooled)).float().cpu()
        out, start = [], 0
        a, v = self.index["arousal"], self.index["valence"]
        order = [self.index[name] for name in LABELS]
        for i, c in enumerate(counts):
            p = preds[start : start + c + 1]
            start += c + 1
            out.append(
                VAResult(
                    chunks=(p[:c][:, [a, v]] - 0.5).numpy().astype(np.float32),
                    n_frames=int(frames[i]),
                    utterance=p[c, order].numpy().astype(np.float32),
                )
            )
        return out

    def analyse(self, waves: Sequence[np.ndarray]) -> list[VAResult]:
        return self._batched(waves)

    def chunks(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per utterance a (C_i, 2) float32 array of (arousal, valence) - 0.5."""
        return [r.chunks for r in self.analyse(waves)]
