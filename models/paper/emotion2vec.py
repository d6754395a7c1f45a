"""emotion2vec / emotion2vec+ feature extractor reading the published funasr folder, batched and exact.

Folder layout (as published on ModelScope ``iic/emotion2vec_plus_large`` and Hugging Face
``emotion2vec/emotion2vec_plus_large``)::

    config.yaml         funasr config: ``model: Emotion2vec``, ``model_conf``, ``scope_map``
    model.pt            torch checkpoint, ``{"model": state_dict}``, keys ``d2v_model.*`` + ``proj.*``
    tokens.txt          the 9 emotion labels of the ``proj`` head (optional here)
    configuration.json  optional; its ``file_path_metas`` may rename the three files above

The network is rebuilt here (data2vec 2.0 audio encoder: conv feature extractor, conv
positional encoder, ALiBi transformer with extra tokens) with the same module tree as funasr's
``Emotion2vec``, so the checkpoint's keys load unchanged, without importing funasr at run time
(importing funasr costs ~20 s and pulls in its whole model zoo). Outputs equal funasr's
``AutoModel(model=folder).generate(..., extract_embedding=True)`` (checked by the tests).

Exact batching. funasr runs one utterance at a time because padding changes its output: the
5-layer conv positional encoder reads past the end of a shorter utterance. Here, before
*every* positional conv layer, frames beyond each utterance's own length are set to zero, which
is exactly what the convolution's zero padding shows a lone utterance; attention masks padded
keys (-inf) and the utterance mean runs over real frames only. The conv feature extractor has
no padding and per-frame norms, so its real frames never see the padding. A batched item
therefore equals its one-at-a-time result up to float rounding (~1e-6).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.paper.backend import PaperBackend
from models.paper.emotion2vec_net import _E2VConfig, _Emotion2VecNet, _map_checkpoint_keys
from models.runtime.batching import autocast_context, file_sha256, load_torch_file, pad_waves
from models.runtime.speedups import use_packed_linears

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.pt"
TOKENS_FILE = "tokens.txt"


# ----------------------------------------------------------------------------- config


def _read_yaml(path: Path) -> dict:
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return data


def read_config(path: Path) -> _E2VConfig:
    return _E2VConfig(_read_yaml(path))


def read_labels(path: Path) -> list[str]:
    """The labels of the built-in classifier (tokens.txt), one per line; [] when the file is absent."""
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def resolve_files(folder: str | Path) -> dict[str, Path]:
    """Locate config/model/tokens files of a funasr-format folder (honours configuration.json)."""
    folder = Path(folder)
    names = {"config": CONFIG_FILE, "model": MODEL_FILE, "tokens": TOKENS_FILE}
    conf_json = folder / "configuration.json"
    if conf_json.is_file():
        try:
            metas = json.loads(conf_json.read_text(encoding="utf-8")).get("file_path_metas", {})
        except (OSError, ValueError) as e:
            raise ValueError(f"{conf_json} is not valid JSON: {e}") from e
        names["config"] = metas.get("config", names["config"])
        names["model"] = metas.get("init_param", names["model"])
        tok = metas.get("tokenizer_conf", {})
        if isinstance(tok, dict) and "token_list" in tok:
            names["tokens"] = tok["token_list"]
    return {k: folder / v for k, v in names.items()}


def missing_files(folder: str | Path) -> list[str]:
    """Required files absent from an emotion2vec folder (empty list when loadable)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [str(folder) + "/"]
    files = resolve_files(folder)
    return [files[k].name for k in ("config", "model") if not files[k].is_file()]


class Emotion2Vec(PaperBackend):
    """Batched, exact emotion2vec feature extractor.

    >>> m = Emotion2Vec.from_pretrained("models/emotion2vec_plus_large")
    >>> frames = m.frame_features([wave_16k])         # [(T, 1024) float32], 50 frames/s
    >>> utt = m.utterance_features([wave_16k])        # (1, 1024) float32, mean over frames
    """

    too_short = "emotion2vec needs >= {} (one frame)"

    def __init__(self, net: _Emotion2VecNet, *, labels: list[str] | None = None, **common):
        """``common``: :class:`PaperBackend`'s device, precision, source, sha256, max_batch_seconds."""
        super().__init__(**common)
        self.net = net.to(self.device).eval()
        use_packed_linears(self.net)
        self.labels = labels or []
        self.embed_dim = net.cfg.embed_dim
        self.min_samples = self._min_samples()

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str = "cpu",
        fast: bool = False,
        *,
        precision: str | None = None,
        max_batch_seconds: float | None = None,
    ) -> Emotion2Vec:
        folder = Path(folder)
        missing = missing_files(folder)
        if missing:
            raise FileNotFoundError(
                f"emotion2vec folder {folder} is missing {', '.join(missing)} "
                "(expected the funasr files config.yaml, model.pt, tokens.txt)"
            )
        files = resolve_files(folder)
        cfg = read_config(files["config"])
        labels = read_labels(files["tokens"])
        ckpt = load_torch_file(files["model"])
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
        state = _map_checkpoint_keys(ckpt, cfg.scope_map)
        vocab = state["proj.weight"].shape[0] if "proj.weight" in state else 0
        net = _Emotion2VecNet(cfg, vocab_size=vocab)
        _load_state(net, state, str(files["model"]))
        loaded = cls(
            net,
            device=device,
            precision=precision,
            source=str(folder),
            sha256=file_sha256(files["model"]),
            labels=labels,
            max_batch_seconds=max_batch_seconds,
        )
        return loaded._fast_mode(fast, precision, loaded.features)

    # ------------------------------------------------------------------ metadata
    def _version(self) -> str:
        return self.net.cfg.describe()

    def _networks(self) -> tuple[nn.Module, ...]:
        return (self.net,)

    def _min_samples(self) -> int:
        n = 1
        for _, k, s in reversed(self.net.cfg.conv_layers):
            n = (n - 1) * s + k
        return n

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def _run(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        tensors = [torch.from_numpy(w).to(self.device) for w in waves]
        if self.net.cfg.normalize:
            tensors = [F.layer_norm(w, w.shape) for w in tensors]
        wav, lengths = pad_waves(tensors, self.device)
        x, frames = self.net.forward_frames(wav, lengths, autocast_context(self.device, self.precision))
        return [x[i, : int(frames[i])].cpu() for i in range(len(waves))]

    def features(self, waves: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Frame features and their utterance means in one pass: ``([(T_i, D)], (N, D))``."""
        out = self._batched(waves)
        if not out:
            return [], np.zeros((0, self.embed_dim), np.float32)
        frames = [o.numpy().astype(np.float32, copy=False) for o in out]
        utt = np.stack([o.double().mean(0).float().numpy() for o in out]).astype(np.float32)
        return frames, utt

    def frame_features(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.features(waves)[0]

    def utterance_features(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        return self.features(waves)[1]


def _load_state(net: nn.Module, state: dict, path: str) -> None:
    """Load ``state`` into ``net``: every inference weight must be present with a matching size
    (pre-training leftovers such as the decoder are ignored)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} weights, e.g. {missing[:5]}")
    fixed = {}
    for k, v in own.items():
        src = state[k]
        if src.shape != v.shape:
            if src.numel() != v.numel():
                raise ValueError(f"{path}: {k} has shape {tuple(src.shape)}, expected {tuple(v.shape)}")
            src = src.reshape(v.shape)
        fixed[k] = src.to(v.dtype)
    extra = [k for k in state if k not in own]
    if extra:
        logger.debug("%s: ignoring %d weights not used for inference (e.g. %s)", path, len(extra), extra[:3])
    net.load_state_dict(fixed, strict=True)
