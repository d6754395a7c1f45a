"""AutoPCP (Seamless): XLS-R-53 layer-9 utterance embeddings and the AutoPCP-multilingual-v2
comparator, batched and exact.

Two folders, each as published:

- ``wav2vec2-large-xlsr-53/``: the Hugging Face repository ``facebook/wav2vec2-large-xlsr-53``
  (``config.json``, ``pytorch_model.bin``, ``preprocessor_config.json``), loaded with
  transformers' ``Wav2Vec2Model``. Only the first 9 transformer layers are kept.
- ``AutoPCP-multilingual-v2/``: the unzipped ``AutoPCP-multilingual-v2.zip``: a stopes
  ``Comparator`` saved as ``<name>.config`` (a torch-saved dict of hyper-parameters) and
  ``<name>.pt`` (its state dict). Found anywhere under the folder.

Embedding (stopes ``encode_audios`` with ``pick_layer=9``): per-utterance zero-mean/unit-variance
waveform (the XLS-R feature extractor), ``hidden_states[9]`` = output of the 9th transformer
layer, mean over the utterance's *real* frames. stopes multiplies by the frame mask but then
divides by the padded length, so its embedding of a short utterance depends on what it was
batched with; ours does not (docs/metrics.md, autoPCP). Exact batching as for the other wav2vec2 models:
per-frame conv encoder norms, padded frames zeroed before the positional conv, padded keys
masked.

Score (stopes ``get_comparator_preds`` with ``symmetrize=True``): MLP on
``[s, t, s*t, |t-s|]`` (after L2 normalisation if the comparator says ``norm_emb``),
symmetrised ``(f(s, t) + f(t, s)) / 2``; about 1 (different prosody) to 4-5 (same).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.paper.backend import PaperBackend
from models.runtime.batching import (
    autocast_context,
    count_parameters,
    file_sha256,
    hf_exact_batching,
    hf_frame_lengths,
    hf_min_samples,
    hf_missing_files,
    hf_weights_sha256,
    lengths_to_mask,
    load_torch_file,
    pad_waves,
    quiet_transformers,
    read_do_normalize,
    zero_mean_unit_var,
)
from models.runtime.speedups import cached_weights, padding_mask, use_packed_linears, use_time_major_features

logger = logging.getLogger(__name__)

PICK_LAYER = 9


# ----------------------------------------------------------------------------- encoder


class XlsrEncoder(PaperBackend):
    """XLS-R-53 layer-``pick_layer`` masked-mean utterance embeddings, (N, 1024) float32."""

    too_short = "XLS-R needs >= {}"

    def __init__(self, model, *, pick_layer=PICK_LAYER, do_normalize=True, **common):
        """``common``: :class:`PaperBackend`'s device, precision, source, sha256, max_batch_seconds."""
        n_layers = len(model.encoder.layers)
        if not 1 <= pick_layer <= n_layers:
            raise ValueError(f"pick_layer {pick_layer} outside 1..{n_layers}")
        super().__init__(**common)
        # layers above pick_layer never influence hidden_states[pick_layer]: drop them
        model.encoder.layers = nn.ModuleList(list(model.encoder.layers)[:pick_layer])
        self.model = model.to(self.device).eval()
        use_time_major_features(self.model)
        use_packed_linears(self.model)
        self.pick_layer = pick_layer
        self.full_layers = n_layers
        self.do_normalize = do_normalize
        self.exact_batching = hf_exact_batching(model.config)
        self.min_samples = hf_min_samples(model.config)
        self.embed_dim = model.config.hidden_size

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str = "cpu",
        fast: bool = False,
        *,
        pick_layer: int = PICK_LAYER,
        precision: str | None = None,
        max_batch_seconds: float | None = None,
    ) -> XlsrEncoder:
        from transformers import Wav2Vec2Model

        folder = Path(folder)
        missing = hf_missing_files(folder)
        if missing:
            raise FileNotFoundError(f"XLS-R folder {folder} is missing {', '.join(missing)}")
        with quiet_transformers():
            model = Wav2Vec2Model.from_pretrained(str(folder), local_files_only=True)
        loaded = cls(
            model,
            pick_layer=pick_layer,
            device=device,
            precision=precision,
            source=str(folder),
            sha256=hf_weights_sha256(folder),
            do_normalize=read_do_normalize(folder),
            max_batch_seconds=max_batch_seconds,
        )
        return loaded._fast_mode(fast, precision, loaded.embeddings)

    def _version(self) -> str:
        hidden = self.model.config.hidden_size
        return f"wav2vec2 layers={self.full_layers} dim={hidden} hidden_states[{self.pick_layer}] masked mean"

    def _networks(self) -> tuple[nn.Module, ...]:
        return (self.model,)

    @torch.inference_mode()
    def _run(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        tensors = [torch.from_numpy(w).to(self.device) for w in waves]
        if self.do_normalize:
            tensors = [zero_mean_unit_var(w) for w in tensors]
        wav, lengths = pad_waves(tensors, self.device)
        mask = padding_mask(lengths, wav.shape[1])
        # hidden_states[pick_layer]: the output of the last kept layer, before the encoder's final norm
        # (transformers' own capture, thread-safe: utterances may run in concurrent threads)
        with autocast_context(self.device, self.precision), cached_weights(self.model):
            h = self.model(wav, attention_mask=mask, output_hidden_states=True).hidden_states[self.pick_layer]
        h = h.float()
        frames = hf_frame_lengths(self.model.config, lengths).to(h.device)
        keep = lengths_to_mask(frames, h.shape[1]).to(h.dtype)
        pooled = (h * keep[..., None]).sum(dim=1) / frames[:, None].to(h.dtype)
        return [p.cpu().numpy().astype(np.float32) for p in pooled]

    def embeddings(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        out = self._batched(waves)
        return np.stack(out).astype(np.float32) if out else np.zeros((0, self.embed_dim), np.float32)


# ----------------------------------------------------------------------------- comparator


def find_comparator_files(folder: str | Path) -> tuple[Path, Path]:
    """The ``.config`` / ``.pt`` pair of a stopes comparator under ``folder`` (searched recursively)."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix == ".config":
        configs = [folder]
    else:
        configs = sorted(folder.rglob("*.config")) if folder.is_dir() else []
    for cfg in configs:
        weights = cfg.with_suffix(".pt")
        if weights.is_file():
            return cfg, weights
    raise FileNotFoundError(
        f"no AutoPCP comparator (<name>.config + <name>.pt) under {folder}; unzip AutoPCP-multilingual-v2.zip there"
    )


class Comparator(nn.Module):
    """stopes' ``Comparator`` MLP (``qe`` input form); the module layout matches its state dict."""

    def __init__(
        self,
        idim: int,
        odim: int,
        nhid: list,
        dropout: float,
        activation: str,
        input_form: str,
        norm_emb: bool,
        output_act: bool,
        trainable_pooler: bool = False,
        **_,
    ):
        super().__init__()
        if input_form != "qe":
            raise ValueError(f"only the 'qe' (source, translation) comparator is supported, not {input_form!r}")
        if trainable_pooler:
            raise ValueError("comparators with a trainable pooler are not supported (AutoPCP uses mean pooling)")
        acts = {"TANH": nn.Tanh, "RELU": nn.ReLU}
        if activation not in acts:
            raise ValueError(f"unknown activation {activation!r}")
        self.idim, self.odim, self.norm_emb = idim, odim, norm_emb
        layers: list[nn.Module] = []
        width = 4 * idim
        if len(nhid) > 0:
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            for h in nhid:
                if h > 0:
                    layers += [nn.Linear(width, h), acts[activation]()]
                    width = h
                    if dropout > 0:
                        layers.append(nn.Dropout(dropout))
            layers.append(nn.Linear(width, odim))
            if output_act:
                layers.append(nn.Tanh())
        else:
            layers.append(nn.Linear(width, odim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        if self.norm_emb:
            src, tgt = F.normalize(src), F.normalize(tgt)
        return self.mlp(torch.cat([src, tgt, src * tgt, torch.abs(tgt - src)], dim=-1))


class AutoPCP:
    """XLS-R layer-9 embeddings + the AutoPCP comparator, symmetrised."""

    def __init__(
        self,
        encoder: XlsrEncoder,
        comparator: Comparator,
        *,
        comparator_source="",
        comparator_sha256="",
        config: dict | None = None,
    ):
        self.encoder = encoder
        self.comparator = comparator.eval()
        self.comparator_source = comparator_source
        self.comparator_sha256 = comparator_sha256
        self.config = config or {}
        if comparator.idim != encoder.embed_dim:
            raise ValueError(f"comparator expects {comparator.idim}-d embeddings, encoder gives {encoder.embed_dim}")

    @classmethod
    def from_pretrained(
        cls,
        encoder_folder: str | Path,
        comparator_folder: str | Path,
        device: str = "cpu",
        fast: bool = False,
        *,
        precision: str | None = None,
        max_batch_seconds: float | None = None,
    ) -> AutoPCP:
        encoder = XlsrEncoder.from_pretrained(
            encoder_folder, device=device, fast=fast, precision=precision, max_batch_seconds=max_batch_seconds
        )
        cfg_path, weights_path = find_comparator_files(comparator_folder)
        config = load_torch_file(cfg_path)
        if not isinstance(config, dict):
            raise ValueError(f"{cfg_path} is not a comparator config dict")
        comparator = Comparator(**config)
        state = load_torch_file(weights_path)
        comparator.load_state_dict(state, strict=True)
        return cls(
            encoder,
            comparator,
            comparator_source=str(weights_path),
            comparator_sha256=file_sha256(weights_path),
            config=config,
        )

    def comparator_info(self) -> dict:
        return {
            "source": self.comparator_source,
            "sha256": self.comparator_sha256,
            "version": f"comparator idim={self.comparator.idim} nhid={self.config.get('nhid')} symmetrised",
            "parameters": count_parameters(self.comparator),
        }

    def embeddings(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        return self.encoder.embeddings(waves)

    @torch.inference_mode()
    def scores(self, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        """Symmetrised comparator scores for row-aligned (N, D) source and target embeddings."""
        s = torch.as_tensor(np.atleast_2d(src), dtype=torch.float32)
        t = torch.as_tensor(np.atleast_2d(tgt), dtype=torch.float32)
        if s.shape != t.shape:
            raise ValueError(f"embedding shapes differ: {tuple(s.shape)} vs {tuple(t.shape)}")
        forward = self.comparator(s, t)[:, 0]
        backward = self.comparator(t, s)[:, 0]
        return ((forward + backward) / 2).numpy().astype(np.float64)

    def score(self, src: np.ndarray, tgt: np.ndarray) -> float:
        return float(self.scores(src, tgt)[0])
