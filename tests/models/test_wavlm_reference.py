"""Vsim's WavLM checked against an independent implementation (issue 15, point 4).

The checkpoint is built by s3prl's own WavLM (``s3prl.upstream.wavlm.WavLM``, the UniSpeech/unilm
code that UniSpeech's speaker-verification recipe and stopes' VSim run) with tiny random weights,
saved as UniSpeech's ``wavlm_large_finetune.pth`` is laid out (``{"model": {"feature_extract.model.*":
WavLM, "feature_weight": ..., ECAPA-TDNN ...}}``). emopres converts it into transformers' WavLM
(models/paper/speaker.py); every hidden state it yields must equal s3prl's within 1e-4, frame by frame.
s3prl's side (``models.paper.verify.s3prl_states``) is the one ``emopres models verify`` runs on real weights.

s3prl is installed without its dependencies (``pip install --no-deps s3prl==0.4.18``): it
requires torchaudio, whose PyPI build here is the CUDA one and does not load on this CPU-only
torch; its WavLM module needs only torch and numpy.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
wavlm_module = pytest.importorskip(
    "s3prl.upstream.wavlm.WavLM", reason="s3prl not installed (pip install --no-deps s3prl==0.4.18)"
)

from models.paper import verify  # noqa: E402
from tests import paper_fixtures as fx  # noqa: E402

TOL = 1e-4
LAYERS = 3


def s3prl_wavlm(seed: int = 5) -> torch.nn.Module:
    """A tiny WavLM-Large-shaped model (layer-norm conv encoder, pre-norm layers, gated relative
    position bias, waveform normalisation) with random weights, built by s3prl."""
    config = wavlm_module.WavLMConfig(
        {
            "extractor_mode": "layer_norm",
            "encoder_layers": LAYERS,
            "encoder_embed_dim": 32,
            "encoder_ffn_embed_dim": 64,
            "encoder_attention_heads": 4,
            "activation_fn": "gelu",
            "layer_norm_first": True,
            "conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
            "conv_bias": False,
            "normalize": True,
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "activation_dropout": 0.0,
            "encoder_layerdrop": 0.0,
            "dropout_input": 0.0,
            "dropout_features": 0.0,
            "conv_pos": 16,
            "conv_pos_groups": 4,
            "relative_position_embedding": True,
            "num_buckets": 32,
            "max_distance": 800,
            "gru_rel_pos": True,
            "mask_prob": 0.0,
        }
    )
    torch.manual_seed(seed)
    model = wavlm_module.WavLM(config)
    fx._randomise(model, seed, scale=0.1)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(s3prl model, path of the UniSpeech-layout checkpoint written from its state dict)."""
    from models.paper.speaker import EcapaTdnn

    model = s3prl_wavlm()
    ecapa = EcapaTdnn(
        feat_dim=32,
        n_states=LAYERS + 1,
        channels=32,
        last_channels=48,
        emb_dim=16,
        scale=8,
        se_bottleneck=8,
        attention_channels=8,
    )
    fx._randomise(ecapa, 6, scale=0.1)
    state = {"feature_extract.model." + k: v for k, v in model.state_dict().items()}
    state.update(ecapa.state_dict())
    path = tmp_path_factory.mktemp("unispeech") / "wavlm_large_finetune.pth"
    torch.save({"model": state}, path)
    return model, path


def test_converted_wavlm_equals_s3prl_frame_by_frame(checkpoint):
    from models.paper.speaker import SpeakerEncoder

    model, path = checkpoint
    encoder = SpeakerEncoder.from_pretrained(path)
    assert encoder.normalize
    waves = fx.random_waves([0.5, 1.3, 2.2], seed=11)
    compared = 0
    for wave in waves:
        reference = verify.s3prl_states(model, wave)
        wav = torch.from_numpy(wave)[None]
        wav = torch.nn.functional.layer_norm(wav, wav.shape)
        with torch.no_grad():
            out = encoder.wavlm(wav, output_hidden_states=True)
        # transformers' last hidden_states entry is the last layer's output before the encoder's
        # layer norm; s3prl (and so UniSpeech) exposes the normed output: last_hidden_state
        ours = list(out.hidden_states[:LAYERS]) + [out.last_hidden_state]
        assert len(out.hidden_states) == len(reference) == LAYERS + 1
        for i, (a, b) in enumerate(zip(ours, reference, strict=True)):
            assert a[0].shape == b.shape, i
            assert float((a[0] - b).abs().max()) < TOL, f"hidden state {i}"
            compared += b.numel()
        assert float(reference[-1].std()) > 0.1  # random weights that do something: not a trivially equal zero
    assert compared > 1000


def test_speaker_features_equal_s3prl_weighted_states(checkpoint):
    """The ECAPA-TDNN input (softmax(feature_weight)-weighted sum of the hidden states) as UniSpeech
    builds it from s3prl's states."""
    from models.paper.speaker import SpeakerEncoder

    model, path = checkpoint
    encoder = SpeakerEncoder.from_pretrained(path)
    weights = torch.softmax(encoder.ecapa.feature_weight.float(), dim=0)
    for wave in fx.random_waves([0.8, 1.7], seed=12):
        reference = sum(w * h for w, h in zip(weights, verify.s3prl_states(model, wave), strict=True))
        wav = torch.nn.functional.layer_norm(torch.from_numpy(wave)[None], (len(wave),))
        with torch.no_grad():
            ours = encoder._weighted_states(wav, torch.ones_like(wav, dtype=torch.long))
        assert float((ours[0] - reference).abs().max()) < TOL
