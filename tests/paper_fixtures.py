"""Tiny random-weight checkpoints of the paper-profile models, in their published formats.

Each builder instantiates the architecture with the library that publishes it (funasr's
``Emotion2vec``; transformers' ``Wav2Vec2Model`` / ``WavLMModel``), randomises every weight,
and writes the files the way the real release ships them, so the tests load them through the
same code path as the real weights:

- ``build_emotion2vec``: funasr folder ``config.yaml`` + ``model.pt`` (``{"model": ...}``,
  ``d2v_model.`` key prefix undone by ``scope_map``) + ``tokens.txt`` + ``configuration.json``
- ``build_valence_arousal``: transformers ``save_pretrained`` of the audeering model-card
  ``EmotionModel`` + ``preprocessor_config.json``
- ``build_speaker``: UniSpeech ``wavlm_large_finetune.pth`` layout (``{"model": state}``
  with ``feature_extract.model.*`` fairseq WavLM keys + ECAPA-TDNN keys)
- ``build_xlsr`` / ``build_autopcp``: transformers XLS-R folder; AutoPCP comparator
  ``.config`` + ``.pt`` pair as ``stopes`` saves it
- ``build_model_dir``: all of the above under the sub-folder names ``models.paper.profile`` expects

``full_size_emotion2vec_config`` is the emotion2vec_plus_large architecture (used by the
benchmark with random weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

E2V_LABELS = [
    "生气/angry",
    "厌恶/disgusted",
    "恐惧/fearful",
    "开心/happy",
    "中立/neutral",
    "其他/other",
    "难过/sad",
    "吃惊/surprised",
    "<unk>",
]


def _randomise(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):  # norm gains around 1
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.add_(scale * torch.randn(p.shape, generator=g))


# ----------------------------------------------------------------------------- emotion2vec


def emotion2vec_config(
    embed_dim=32,
    heads=4,
    depth=2,
    prenet_depth=1,
    conv_ch=32,
    pos_width=25,
    pos_groups=4,
    extra_tokens=10,
    alibi_per_layer=False,
) -> dict:
    spec = f"[({conv_ch}, 10, 5)] + [({conv_ch}, 3, 2)] * 4 + [({conv_ch},2,2)] + [({conv_ch},2,2)]"
    return {
        "model": "Emotion2vec",
        "model_conf": {
            "loss_beta": 0.0,
            "loss_scale": None,
            "depth": depth,
            "start_drop_path_rate": 0.0,
            "end_drop_path_rate": 0.0,
            "num_heads": heads,
            "norm_eps": 1e-05,
            "norm_affine": True,
            "encoder_dropout": 0.1,
            "post_mlp_drop": 0.1,
            "attention_dropout": 0.1,
            "activation_dropout": 0.0,
            "dropout_input": 0.0,
            "layerdrop": 0.05,
            "embed_dim": embed_dim,
            "mlp_ratio": 4.0,
            "layer_norm_first": False,
            "average_top_k_layers": depth,
            "end_of_block_targets": False,
            "clone_batch": 8,
            "layer_norm_target_layer": False,
            "batch_norm_target_layer": False,
            "instance_norm_target_layer": True,
            "instance_norm_targets": False,
            "layer_norm_targets": False,
            "ema_decay": 0.999,
            "ema_same_dtype": True,
            "log_norms": True,
            "ema_end_decay": 0.99999,
            "ema_fp32": True,
            "ema_encoder_only": False,
            "normalize": True,
            "modalities": {
                "audio": {
                    "type": "AUDIO",
                    "prenet_depth": prenet_depth,
                    "prenet_layerdrop": 0.05,
                    "prenet_dropout": 0.1,
                    "start_drop_path_rate": 0.0,
                    "end_drop_path_rate": 0.0,
                    "num_extra_tokens": extra_tokens,
                    "init_extra_token_zero": True,
                    "mask_noise_std": 0.01,
                    "mask_prob_min": None,
                    "mask_prob": 0.7,
                    "inverse_mask": False,
                    "mask_prob_adjust": 0.05,
                    "keep_masked_pct": 0.0,
                    "mask_length": 5,
                    "add_masks": False,
                    "remove_masks": False,
                    "mask_dropout": 0.0,
                    "encoder_zero_mask": True,
                    "mask_channel_prob": 0.0,
                    "mask_channel_length": 64,
                    "ema_local_encoder": False,
                    "local_grad_mult": 1.0,
                    "use_alibi_encoder": True,
                    "alibi_scale": 1.0,
                    "learned_alibi": False,
                    "alibi_max_pos": None,
                    "learned_alibi_scale": True,
                    "learned_alibi_scale_per_head": True,
                    "learned_alibi_scale_per_layer": alibi_per_layer,
                    "num_alibi_heads": heads,
                    "model_depth": depth,
                    "decoder": None,
                    "extractor_mode": "layer_norm",
                    "feature_encoder_spec": spec,
                    "conv_pos_width": pos_width,
                    "conv_pos_groups": pos_groups,
                    "conv_pos_depth": 5,
                    "conv_pos_pre_ln": False,
                }
            },
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
        "scope_map": ["d2v_model.", "none"],
    }


def full_size_emotion2vec_config() -> dict:
    """emotion2vec_plus_large architecture: 1024-d, 16 heads, 4 prenet + 8 blocks, 10 extra
    tokens, 7-layer 512-channel conv extractor, 5-layer k=19 positional conv (95 // 5), 16 groups.
    (Reconstructed from the published checkpoint's tensor shapes; same values as the release.)"""
    return emotion2vec_config(
        embed_dim=1024,
        heads=16,
        depth=8,
        prenet_depth=4,
        conv_ch=512,
        pos_width=95,
        pos_groups=16,
        extra_tokens=10,
    )


def build_emotion2vec(folder: str | Path, config: dict | None = None, seed: int = 0, randomise: bool = True) -> Path:
    """Write a funasr-format emotion2vec folder with random weights (funasr's own class)."""
    import yaml
    from funasr.models.emotion2vec.model import Emotion2vec

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = config or emotion2vec_config()
    torch.manual_seed(seed)
    model = Emotion2vec(model_conf=config["model_conf"], vocab_size=len(E2V_LABELS))
    if randomise:
        _randomise(model, seed)
        with torch.no_grad():
            enc = model.modality_encoders["AUDIO"]
            enc.alibi_scale.uniform_(0.5, 1.5)
    state = {}
    for k, v in model.state_dict().items():
        state[k if k.startswith("proj.") else "d2v_model." + k] = v.clone()
    torch.save({"model": state}, folder / "model.pt")
    (folder / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    (folder / "tokens.txt").write_text("\n".join(E2V_LABELS) + "\n", encoding="utf-8")
    (folder / "configuration.json").write_text(
        json.dumps(
            {
                "framework": "pytorch",
                "task": "emotion-recognition",
                "model": {"type": "funasr"},
                "pipeline": {"type": "funasr-pipeline"},
                "file_path_metas": {
                    "init_param": "model.pt",
                    "config": "config.yaml",
                    "tokenizer_conf": {"token_list": "tokens.txt"},
                },
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return folder


# ----------------------------------------------------------------------------- audio


def random_waves(seconds: list[float], seed: int = 0, sr: int = 16000) -> list[np.ndarray]:
    """Speech-like test signals: noise through a moving resonance with an amplitude envelope (the
    signals ``emopres models verify`` runs on, ``models.paper.verify.speechlike_waves``)."""
    from models.paper.verify import speechlike_waves

    return speechlike_waves(seconds, seed=seed, sr=sr)


# ----------------------------------------------------------------------------- valence-arousal


def tiny_wav2vec2_config(**overrides):
    from transformers import Wav2Vec2Config

    kw = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        vocab_size=32,
    )
    kw.update(overrides)
    return Wav2Vec2Config(**kw)


def _write_preprocessor(folder: Path, return_attention_mask: bool = True) -> None:
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_normalize": True,
                "feature_extractor_type": "Wav2Vec2FeatureExtractor",
                "feature_size": 1,
                "padding_side": "right",
                "padding_value": 0.0,
                "return_attention_mask": return_attention_mask,
                "sampling_rate": 16000,
            },
            indent=2,
        ),
        encoding="utf-8",
    )


def build_valence_arousal(folder: str | Path, seed: int = 1, **overrides) -> Path:
    """audeering-style folder: the model card's EmotionModel, ``save_pretrained`` + preprocessor."""
    from models.paper.valence_arousal import _model_classes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_wav2vec2_config(
        num_labels=3,
        id2label={0: "arousal", 1: "dominance", 2: "valence"},
        label2id={"arousal": 0, "dominance": 1, "valence": 2},
        final_dropout=0.1,
        architectures=["Wav2Vec2ForSpeechClassification"],
        **overrides,
    )
    _, EmotionModel = _model_classes()
    torch.manual_seed(seed)
    model = EmotionModel(config)
    _randomise(model, seed, scale=0.1)
    model.save_pretrained(str(folder))
    _write_preprocessor(folder)
    return folder


# ----------------------------------------------------------------------------- speaker (UniSpeech)


def build_speaker(path: str | Path, seed: int = 2, hidden: int = 32, layers: int = 3) -> Path:
    """``wavlm_large_finetune.pth``-layout checkpoint: transformers WavLM (random) converted to
    fairseq keys under ``feature_extract.model.``, plus a random ECAPA-TDNN head."""
    from transformers import WavLMConfig, WavLMModel

    from models.paper.speaker import EcapaTdnn, hf_wavlm_to_fairseq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = WavLMConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        conv_dim=(16,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=False,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        num_buckets=32,
        max_bucket_distance=800,
        mask_time_prob=0.0,
    )
    torch.manual_seed(seed)
    wavlm = WavLMModel(config)
    _randomise(wavlm, seed, scale=0.1)
    ecapa = EcapaTdnn(
        feat_dim=hidden,
        n_states=layers + 1,
        channels=32,
        last_channels=48,
        emb_dim=16,
        scale=8,
        se_bottleneck=8,
        attention_channels=8,
    )
    _randomise(ecapa, seed + 1, scale=0.1)
    with torch.no_grad():  # running statistics as a trained model would have
        for m in ecapa.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        ecapa.feature_weight.normal_(0, 1)
    state = {"feature_extract.model." + k: v for k, v in hf_wavlm_to_fairseq(wavlm.state_dict()).items()}
    state["feature_extract.model.label_embs_concat"] = torch.randn(504, 8)  # pre-training leftover
    state.update(ecapa.state_dict())
    torch.save({"model": state}, path)
    return path


# ----------------------------------------------------------------------------- XLS-R + AutoPCP


def build_xlsr(folder: str | Path, seed: int = 3, layers: int = 10) -> Path:
    """facebook/wav2vec2-large-xlsr-53-style folder (tiny), as that repository ships it: a
    ``Wav2Vec2ForPreTraining`` ``pytorch_model.bin`` (``wav2vec2.`` key prefix, legacy
    ``weight_g``/``weight_v`` names, quantizer weights) + ``config.json`` + preprocessor."""
    from transformers import Wav2Vec2ForPreTraining

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = tiny_wav2vec2_config(
        num_hidden_layers=layers,
        mask_time_prob=0.05,
        architectures=["Wav2Vec2ForPreTraining"],
        codevector_dim=16,
        proj_codevector_dim=16,
        num_codevectors_per_group=8,
    )
    model = Wav2Vec2ForPreTraining(config)
    _randomise(model, seed, scale=0.1)
    config.save_pretrained(str(folder))
    state = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in model.state_dict().items()
    }
    torch.save(state, folder / "pytorch_model.bin")
    _write_preprocessor(folder)
    return folder


def build_autopcp(
    folder: str | Path, idim: int = 32, seed: int = 4, nhid=(16, 8), dropout: float = 0.1, norm_emb: bool = True
) -> Path:
    """AutoPCP comparator as stopes' ``Comparator.save`` writes it: ``<name>.config`` (a torch-saved
    dict) and ``<name>.pt`` (state dict of ``mlp``: Dropout, Linear, Tanh, Dropout, ..., Linear),
    inside a sub-folder as the zip unpacks."""
    folder = Path(folder)
    inner = folder / "AutoPCP_multilingual_v2"
    inner.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = [torch.nn.Dropout(dropout)]
    width = 4 * idim
    for h in nhid:
        layers += [torch.nn.Linear(width, h), torch.nn.Tanh(), torch.nn.Dropout(dropout)]
        width = h
    layers.append(torch.nn.Linear(width, 1))
    mlp = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for p in mlp.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
        mlp[-1].bias.fill_(2.5)  # scores around the AutoPCP scale (1..5)
    config = {
        "input_form": "qe",
        "dropout": dropout,
        "idim": idim,
        "odim": 1,
        "nhid": list(nhid),
        "activation": "TANH",
        "norm_emb": norm_emb,
        "output_act": False,
        "trainable_pooler": False,
    }
    name = f"i{idim}.o1.dp{dropout}.nhid{','.join(str(h) for h in nhid)}.ipqe"
    torch.save(config, inner / f"{name}.config")
    torch.save({f"mlp.{k}": v for k, v in mlp.state_dict().items()}, inner / f"{name}.pt")
    return folder


def build_model_dir(root: str | Path) -> Path:
    """A complete tiny ``EMOPRES_MODEL_DIR`` with the sub-folder names ``models.paper.profile`` expects."""
    root = Path(root)
    build_emotion2vec(root / "emotion2vec_plus_large")
    build_valence_arousal(root / "wav2vec2-large-robust-12-ft-emotion-msp-dim")
    build_speaker(root / "wavlm_large_finetune.pth")
    build_xlsr(root / "wav2vec2-large-xlsr-53")
    build_autopcp(root / "AutoPCP-multilingual-v2")
    return root
