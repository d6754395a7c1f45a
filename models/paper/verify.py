"""``emopres models verify``: each paper-profile model run through emopres' own path and through its
reference implementation on the same utterances, on the user's weights; the largest absolute difference
against a documented tolerance per model.

References (each loads its own copy of the weights from the files, so a fault in our loaded copy shows):

- emotion2vec_plus_large: funasr's ``AutoModel(model=folder).generate(..., extract_embedding=True)``,
  frame and utterance features;
- valence_arousal: transformers with the model card's ``EmotionModel`` (wav2vec2 + ``RegressionHead``),
  one utterance at a time, no padding: EmoCtrlTTS-Eval's 25/12-frame chunks and the utterance output;
- speaker_wavlm_ecapa: s3prl's WavLM (the unilm code UniSpeech and stopes run) on the checkpoint's
  fairseq-layout weights, its hidden states weighted by ``feature_weight``, then UniSpeech's ECAPA-TDNN
  forward written out plainly (no masking) on a second copy of the head;
- xlsr_53: transformers' full ``Wav2Vec2Model``, ``hidden_states[9]`` mean on a batch of one (stopes'
  ``encode_audios``);
- autopcp_comparator: stopes' ``Comparator.load`` + ``get_comparator_preds(symmetrize=True)`` when stopes
  is installed, else the stopes recipe written out (``[s, t, s*t, |t-s|]`` through the saved MLP).

The tests (tests/models/test_paper_models.py, test_wavlm_reference.py) use these same references on tiny
random checkpoints.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.paper.inventory import SLOT
from models.runtime.batching import load_torch_file, quiet_transformers

# Tolerances on the largest absolute difference, one per model. The four networks: 1e-4, the bound every
# test of ours-vs-reference uses (tests/models/test_paper_models.py, test_wavlm_reference.py TOL); fp32
# rounding alone measured 2.9e-6 on full-size emotion2vec+ large (docs/paper-models.md), so 1e-4 leaves
# room for larger real activations yet catches a wrong weight or recipe. The comparator is a 3-layer MLP
# on unit vectors: 1e-5, as its test.
TOLERANCES = {
    "emotion2vec_plus_large": 1e-4,
    "valence_arousal": 1e-4,
    "speaker_wavlm_ecapa": 1e-4,
    "xlsr_53": 1e-4,
    "autopcp_comparator": 1e-5,
}
LIBRARIES = {  # the reference library each check needs (autopcp: stopes is used where installed)
    "emotion2vec_plus_large": "funasr",
    "valence_arousal": "transformers",
    "speaker_wavlm_ecapa": "s3prl",
    "xlsr_53": "transformers",
    "autopcp_comparator": None,
}
DEFAULT_SECONDS = (0.3, 1.1, 2.05, 0.52)  # < one va chunk, several padded lengths, exactly one chunk
SAMPLE_RATE = 16000


def library_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def speechlike_waves(
    seconds: Sequence[float] = DEFAULT_SECONDS, seed: int = 0, sr: int = SAMPLE_RATE
) -> list[np.ndarray]:
    """Deterministic speech-like signals: a tone with a wavering pitch, an amplitude envelope, some noise."""
    rng = np.random.default_rng(seed)
    out = []
    for s in seconds:
        n = int(round(s * sr))
        t = np.arange(n) / sr
        f0 = rng.uniform(90, 250)
        tone = np.sin(2 * np.pi * f0 * t * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t)))
        env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6))
        x = 0.3 * tone * env + 0.05 * rng.standard_normal(n)
        out.append(x.astype(np.float32))
    return out


# ----------------------------------------------------------------------------- emotion2vec: funasr


def funasr_features(folder: str | Path, waves: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """funasr's frame and utterance features, one utterance at a time. funasr configures the root logger,
    reseeds torch and sets the thread count: all undone afterwards."""
    with contextlib.redirect_stdout(sys.stderr):  # funasr prints notices on import: keep stdout (--json) clean
        from funasr import AutoModel

    root = logging.getLogger()
    saved = root.level, list(root.handlers), torch.get_num_threads(), torch.random.get_rng_state()
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)  # funasr logs every weight it loads at INFO
    try:
        with contextlib.redirect_stdout(sys.stderr):
            reference = AutoModel(
                model=str(folder),
                device="cpu",
                disable_update=True,
                disable_pbar=True,
                ncpu=torch.get_num_threads(),
                log_level="ERROR",
            )
            frames = reference.generate(list(waves), granularity="frame", extract_embedding=True)
            utt = reference.generate(list(waves), granularity="utterance", extract_embedding=True)
    finally:
        logging.disable(disabled)
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        torch.set_num_threads(saved[2])
        torch.random.set_rng_state(saved[3])
    return [np.asarray(r["feats"]) for r in frames], [np.asarray(r["feats"]) for r in utt]


def _check_emotion2vec(path: Path, waves, device: str) -> float:
    from models.paper.emotion2vec import Emotion2Vec

    frames, utt = Emotion2Vec.from_pretrained(path, device=device, precision="fp32").features(waves)
    ref_frames, ref_utt = funasr_features(path, waves)
    diffs = []
    for i in range(len(waves)):
        if frames[i].shape != ref_frames[i].shape:
            raise ValueError(f"utterance {i}: frames {frames[i].shape} vs funasr {ref_frames[i].shape}")
        diffs += [max_abs_diff(frames[i], ref_frames[i]), max_abs_diff(utt[i], ref_utt[i])]
    return max(diffs)


# ----------------------------------------------------------------------------- valence-arousal: card recipe


def card_valence_arousal(model, fex, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The model card's ``EmotionModel`` on one utterance, EmoCtrlTTS-Eval's recipe: ``((arousal, valence) -
    0.5 per 25/12-frame chunk, the utterance (arousal, dominance, valence), frames)``; the order of the
    card's outputs taken from the config's ``id2label`` as ours does."""
    from models.paper.valence_arousal import CHUNK_HOP, CHUNK_WINDOW, LABELS

    labels = [str(v).lower() for _, v in sorted((int(k), v) for k, v in (model.config.id2label or {}).items())]
    index = [labels.index(n) for n in LABELS] if sorted(labels) == sorted(LABELS) else [0, 1, 2]
    x = torch.from_numpy(fex(wave, sampling_rate=SAMPLE_RATE)["input_values"][0]).reshape(1, -1)
    with torch.no_grad():
        hidden = model.wav2vec2(x)[0][0]
        t = hidden.shape[0]
        if t >= CHUNK_WINDOW:
            starts = range(0, (t - CHUNK_WINDOW) // CHUNK_HOP * CHUNK_HOP + 1, CHUNK_HOP)
            chunks = [hidden[s : s + CHUNK_WINDOW].mean(0) for s in starts]
        else:
            chunks = [hidden.mean(0)]
        chunk_out = model.classifier(torch.stack(chunks)).numpy()[:, [index[0], index[2]]] - 0.5
        utterance = model(x)[1][0].numpy()[index]
    return chunk_out, utterance, t


def _check_valence_arousal(path: Path, waves, device: str) -> float:
    from transformers import Wav2Vec2FeatureExtractor

    from models.paper.valence_arousal import EmotionModel, ValenceArousal

    ours = ValenceArousal.from_pretrained(path, device=device, precision="fp32").analyse(waves)
    with quiet_transformers():
        reference = EmotionModel.from_pretrained(str(path), local_files_only=True).eval()
        fex = Wav2Vec2FeatureExtractor.from_pretrained(str(path), local_files_only=True)
    diffs = []
    for i, (wave, r) in enumerate(zip(waves, ours, strict=True)):
        chunks, utterance, frames = card_valence_arousal(reference, fex, wave)
        if r.chunks.shape != chunks.shape or r.n_frames != frames:
            raise ValueError(
                f"utterance {i}: {r.chunks.shape} chunks of {r.n_frames} frames vs the card's "
                f"{chunks.shape} of {frames}"
            )
        diffs += [max_abs_diff(r.chunks, chunks), max_abs_diff(r.utterance, utterance)]
    return max(diffs)


# ----------------------------------------------------------------------------- speaker: s3prl WavLM + ECAPA


def s3prl_wavlm(wavlm_state: dict) -> torch.nn.Module:
    """s3prl's WavLM with the architecture read off a fairseq-layout state dict, those weights loaded."""
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    from models.paper.speaker import wavlm_config_from_state

    hf = wavlm_config_from_state(wavlm_state)
    config = WavLMConfig(
        {
            "extractor_mode": "layer_norm" if hf.feat_extract_norm == "layer" else "default",
            "encoder_layers": hf.num_hidden_layers,
            "encoder_embed_dim": hf.hidden_size,
            "encoder_ffn_embed_dim": hf.intermediate_size,
            "encoder_attention_heads": hf.num_attention_heads,
            "activation_fn": "gelu",
            "layer_norm_first": hf.do_stable_layer_norm,
            "conv_feature_layers": str(list(zip(hf.conv_dim, hf.conv_kernel, hf.conv_stride, strict=True))),
            "conv_bias": hf.conv_bias,
            "normalize": hf.do_stable_layer_norm,
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "activation_dropout": 0.0,
            "encoder_layerdrop": 0.0,
            "dropout_input": 0.0,
            "dropout_features": 0.0,
            "conv_pos": hf.num_conv_pos_embeddings,
            "conv_pos_groups": hf.num_conv_pos_embedding_groups,
            "relative_position_embedding": True,
            "num_buckets": hf.num_buckets,
            "max_distance": hf.max_bucket_distance,
            "gru_rel_pos": True,
            "mask_prob": 0.0,
        }
    )
    disabled = logging.root.manager.disable
    logging.disable(logging.INFO)  # s3prl logs the whole config at INFO
    try:
        model = WavLM(config)
    finally:
        logging.disable(disabled)
    own = model.state_dict()
    wavlm_state = {"mask_emb": own["mask_emb"], **wavlm_state}  # pre-training only (masking is off)
    missing = [k for k in own if k not in wavlm_state]
    if missing:
        raise ValueError(f"s3prl WavLM weights missing from the checkpoint, e.g. {missing[:5]}")
    model.load_state_dict({k: wavlm_state[k] for k in own}, strict=True)
    return model.eval()


def s3prl_states(model, wave: np.ndarray) -> list[torch.Tensor]:
    """s3prl's hidden states for one utterance, each (T, D): the input of every transformer layer, then
    the encoder's final (layer-normed) output; the waveform layer-normalised when the model asks."""
    wav = torch.from_numpy(wave)[None]
    if model.cfg.normalize:
        wav = F.layer_norm(wav, wav.shape)
    layers = model.cfg.encoder_layers
    with torch.no_grad():
        (_, layer_results), _ = model.extract_features(wav, output_layer=layers, ret_layer_results=True)
        final, _ = model.extract_features(wav)
    return [x.transpose(0, 1)[0] for x, _ in layer_results[:layers]] + [final[0]]


def reference_ecapa(ecapa, x: torch.Tensor) -> torch.Tensor:
    """UniSpeech ECAPA-TDNN forward written out plainly (no masking) for one utterance, (1, D, T) -> (1, E);
    ``ecapa`` only lends its sub-modules' weights."""
    x = torch.nn.InstanceNorm1d(x.shape[1])(x)

    def block(layer, h):
        res = h
        h = layer.Conv1dReluBn1(h)
        r2 = layer.Res2Conv1dReluBn
        parts, out, sp = torch.split(h, r2.width, 1), [], None
        for i in range(r2.nums):
            sp = parts[i] if i == 0 else sp + parts[i]
            sp = r2.bns[i](F.relu(r2.convs[i](sp)))
            out.append(sp)
        out.append(parts[r2.nums])
        h = layer.Conv1dReluBn2(torch.cat(out, 1))
        se = layer.SE_Connect
        gate = torch.sigmoid(se.linear2(F.relu(se.linear1(h.mean(2)))))
        return h * gate[:, :, None] + res

    with torch.no_grad():
        o1 = ecapa.layer1(x)
        o2 = block(ecapa.layer2, o1)
        o3 = block(ecapa.layer3, o2)
        o4 = block(ecapa.layer4, o3)
        out = F.relu(ecapa.conv(torch.cat([o2, o3, o4], 1)))
        alpha = torch.softmax(ecapa.pooling.linear2(torch.tanh(ecapa.pooling.linear1(out))), dim=2)
        mean = (alpha * out).sum(2)
        std = torch.sqrt(((alpha * out**2).sum(2) - mean**2).clamp(min=1e-9))
        return ecapa.linear(ecapa.bn(torch.cat([mean, std], 1)))


def reference_speaker_embedding(states: Sequence[torch.Tensor], feature_weight: torch.Tensor, ecapa) -> np.ndarray:
    """UniSpeech: softmax(feature_weight)-weighted sum of the (T, D) hidden states, + 1e-6, ECAPA-TDNN."""
    weights = torch.softmax(feature_weight.float(), dim=0)
    feats = sum(w * h for w, h in zip(weights, states, strict=True))
    return reference_ecapa(ecapa, feats.T[None] + 1e-6)[0].numpy()


def _check_speaker(path: Path, waves, device: str) -> float:
    from models.paper.speaker import WAVLM_PREFIX, EcapaTdnn, SpeakerEncoder

    ours = SpeakerEncoder.from_pretrained(path, device=device, precision="fp32").embeddings(waves)
    ckpt = load_torch_file(path)
    state = ckpt.get("model", ckpt)
    wavlm = s3prl_wavlm({k[len(WAVLM_PREFIX) :]: v for k, v in state.items() if k.startswith(WAVLM_PREFIX)})
    head_state = {k: v for k, v in state.items() if not k.startswith("feature_extract.")}
    ecapa = EcapaTdnn.from_state(head_state)
    ecapa.load_state_dict({k: head_state[k] for k in ecapa.state_dict()}, strict=True)
    ecapa.eval()
    return max(
        max_abs_diff(e, reference_speaker_embedding(s3prl_states(wavlm, w), ecapa.feature_weight, ecapa))
        for w, e in zip(waves, ours, strict=True)
    )


# ----------------------------------------------------------------------------- XLS-R and the AutoPCP comparator


def stopes_xlsr_embedding(model, fex, wave: np.ndarray, layer: int) -> np.ndarray:
    """stopes ``encode_audios`` on a batch of one (no padding): ``hidden_states[layer]`` mean over frames."""
    inputs = fex([wave], sampling_rate=SAMPLE_RATE, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True).hidden_states[layer][0].mean(0).numpy()


def _check_xlsr(path: Path, waves, device: str, encoder=None) -> float:
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from models.paper.autopcp import XlsrEncoder

    encoder = encoder or XlsrEncoder.from_pretrained(path, device=device, precision="fp32")
    ours = encoder.embeddings(waves)
    with quiet_transformers():
        full = Wav2Vec2Model.from_pretrained(str(path), local_files_only=True).eval()
        fex = Wav2Vec2FeatureExtractor.from_pretrained(str(path), local_files_only=True)
    return max(
        max_abs_diff(e, stopes_xlsr_embedding(full, fex, w, encoder.pick_layer))
        for w, e in zip(waves, ours, strict=True)
    )


def written_out_comparator(config: dict, state: dict, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """stopes' ``qe`` comparator written out from its saved files: the ``mlp.<i>`` linears in order, the
    configured activation between them (dropouts are off), optional output tanh; symmetrised."""
    act = {"TANH": torch.tanh, "RELU": torch.relu}[config["activation"]]
    linears = sorted({int(k.split(".")[1]) for k in state if k.startswith("mlp.") and k.endswith(".weight")})

    def forward(a, b):
        a, b = torch.from_numpy(a).double(), torch.from_numpy(b).double()
        if config.get("norm_emb"):
            a, b = F.normalize(a), F.normalize(b)
        h = torch.cat([a, b, a * b, (b - a).abs()], -1)
        for n, i in enumerate(linears):
            h = h @ state[f"mlp.{i}.weight"].double().T + state[f"mlp.{i}.bias"].double()
            if n < len(linears) - 1:
                h = act(h)
        if config.get("output_act"):
            h = torch.tanh(h)
        return h[:, 0].numpy()

    return (forward(src, tgt) + forward(tgt, src)) / 2


def stopes_comparator(config_path: Path, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    from stopes.eval.auto_pcp.audio_comparator import Comparator, get_comparator_preds

    model = Comparator.load(config_path, use_gpu=False)
    return np.asarray(get_comparator_preds(model, src, tgt, batch_size=len(src), symmetrize=True))


def _check_comparator(pcp, folder: Path) -> tuple[float, str]:
    from models.paper.autopcp import find_comparator_files

    rng = np.random.default_rng(0)
    dim = pcp.comparator.idim
    src, tgt = (rng.standard_normal((8, dim)).astype(np.float32) for _ in range(2))
    ours = pcp.scores(src, tgt)
    cfg_path, pt_path = find_comparator_files(folder)
    if library_available("stopes"):
        return max_abs_diff(ours, stopes_comparator(cfg_path, src, tgt)), "stopes Comparator (symmetrised)"
    reference = written_out_comparator(load_torch_file(cfg_path), load_torch_file(pt_path), src, tgt)
    return max_abs_diff(ours, reference), "the stopes comparator written out (stopes not installed)"


# ----------------------------------------------------------------------------- all models


REFERENCES = {
    "emotion2vec_plus_large": "funasr AutoModel.generate (frame + utterance)",
    "valence_arousal": "transformers + the model card's EmotionModel (chunks + utterance)",
    "speaker_wavlm_ecapa": "s3prl WavLM + UniSpeech ECAPA-TDNN written out",
    "xlsr_53": "transformers Wav2Vec2Model hidden_states[9] mean (stopes encode_audios)",
    "autopcp_comparator": "stopes Comparator",
}


def verify_models(
    model_dir: str | Path,
    waves: Sequence[np.ndarray] | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """One row per paper-profile model: ``name``, ``status`` (passed | failed | error | not checked),
    ``max_abs_diff``, ``tolerance``, ``reference`` and ``reason`` (why not checked, or the error)."""
    from models.paper.autopcp import AutoPCP
    from models.paper.inventory import check_models

    waves = [np.asarray(w, np.float32) for w in (waves if waves is not None else speechlike_waves())]
    base = Path(model_dir)
    rows = {r["name"]: r for r in check_models(base)}
    checks: dict[str, Callable[[Path], float]] = {
        "emotion2vec_plus_large": lambda p: _check_emotion2vec(p, waves, device),
        "valence_arousal": lambda p: _check_valence_arousal(p, waves, device),
        "speaker_wavlm_ecapa": lambda p: _check_speaker(p, waves, device),
    }
    pcp = None
    out = []
    for name in TOLERANCES:
        row = {
            "name": name,
            "status": "not checked",
            "max_abs_diff": None,
            "tolerance": TOLERANCES[name],
            "reference": REFERENCES[name],
            "reason": None,
            "path": rows[name]["path"],
        }
        out.append(row)
        library = LIBRARIES[name]
        if not rows[name]["present"]:
            row["reason"] = f"{rows[name]['status']} in {base}: {rows[name]['hint']}"
            continue
        if library and not library_available(library):
            row["reason"] = f"reference library {library} not installed"
            continue
        if name == "autopcp_comparator" and not rows["xlsr_53"]["present"]:
            row["reason"] = "AutoPCP loads the comparator with its XLS-R encoder, and xlsr_53 is not in the folder"
            continue
        if log:
            log(f"checking {name} ...")
        path = base / SLOT[name].entry
        try:
            if name in checks:
                row["max_abs_diff"] = checks[name](path)
            elif name == "xlsr_53":
                comparator_dir = base / SLOT["autopcp_comparator"].entry
                if rows["autopcp_comparator"]["present"]:  # one XLS-R load serves both checks
                    try:
                        pcp = AutoPCP.from_pretrained(path, comparator_dir, device=device, precision="fp32")
                    except Exception:  # noqa: BLE001 - the comparator's own check reports it
                        pcp = None
                row["max_abs_diff"] = _check_xlsr(path, waves, device, pcp.encoder if pcp else None)
            else:
                if pcp is None:
                    pcp = AutoPCP.from_pretrained(base / SLOT["xlsr_53"].entry, path, device=device, precision="fp32")
                row["max_abs_diff"], row["reference"] = _check_comparator(pcp, path)
            row["status"] = "passed" if row["max_abs_diff"] <= row["tolerance"] else "failed"
        except Exception as error:  # noqa: BLE001 - a model that cannot be run on its weights fails the check
            row["status"] = "error"
            row["reason"] = f"{type(error).__name__}: {error}"
        gc.collect()
    return out


def verify_passed(rows: Sequence[dict]) -> bool:
    """No checked model beyond its tolerance and none that failed to run (models not checked do not count)."""
    return all(r["status"] in ("passed", "not checked") for r in rows)
