"""Paper-profile models on tiny random-weight checkpoints in their published formats, offline.

Checks: emotion2vec equals funasr's own ``AutoModel.generate`` (frame and utterance); batched
== one at a time for every model; each model equals a plain reference computation of the
published recipe on single utterances; shapes, metadata, error messages; PaperProfile end to end.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("funasr")

from models.paper import verify  # noqa: E402
from models.runtime.batching import plan_batches  # noqa: E402
from tests import paper_fixtures as fx  # noqa: E402

# lengths chosen to cover: shorter than one va chunk (0.3 s), exactly one chunk (0.52 s: 25
# frames), several lengths that pad against each other, and a duplicate length
SECONDS = [0.3, 1.1, 2.05, 0.52, 1.1]
TOL = 1e-4


@pytest.fixture(scope="module")
def waves():
    return fx.random_waves(SECONDS, seed=7)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fx.build_model_dir(tmp_path_factory.mktemp("paper_models"))


@pytest.fixture(autouse=True)
def batch_on_cpu(monkeypatch):
    """The CPU default runs each utterance alone (faster there); these tests must run real padded batches."""
    from models.runtime import batching

    monkeypatch.setitem(batching.DEFAULT_BATCH_SECONDS, "cpu", 40.0)


max_diff = verify.max_abs_diff


# ----------------------------------------------------------------------------- batching


def test_plan_batches_covers_every_item_once_and_respects_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1_000, 200_000, size=57)
    budget_s = 20.0
    batches = plan_batches(lengths, budget_s)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        padded = len(b) * max(lengths[i] for i in b)
        assert padded <= budget_s * 16000 or len(b) == 1
        assert max(lengths[i] for i in b) == lengths[b[0]]  # longest first
    assert plan_batches(lengths, budget_s) == batches  # deterministic
    assert all(len(b) <= 3 for b in plan_batches(lengths, budget_s, max_items=3))
    assert plan_batches([10 * 16000], 1.0) == [[0]]  # too long for the budget: runs alone
    with pytest.raises(ValueError):
        plan_batches([1], 0)


def test_cpu_default_runs_real_utterances_alone_and_gpu_batches(monkeypatch):
    from models.runtime import batching

    monkeypatch.undo()  # the shipped defaults, not this module's batching budget
    three_seconds = [48_000, 47_000, 49_000, 46_000]
    assert plan_batches(three_seconds, batching.default_batch_seconds("cpu")) == [[2], [0], [1], [3]]
    assert plan_batches(three_seconds, batching.default_batch_seconds("cuda")) == [[2, 0, 1, 3]]


def test_run_batched_streams_keep_order_and_restore_torch_threads():
    import threading

    from models.runtime.batching import cpu_streams, run_batched

    threads = torch.get_num_threads()
    lengths = [16000 * (i % 3 + 1) for i in range(7)]
    seen = []

    def fn(batch):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return [x * 10 for x in batch]

    serial = run_batched(list(range(7)), lengths, fn, 1.0)
    assert serial == [i * 10 for i in range(7)]
    assert run_batched(list(range(7)), lengths, fn, 1.0, streams=2) == serial
    assert torch.get_num_threads() == threads
    assert all(n == max(1, threads // 2) for _, n in seen[7:])  # each stream its share of the threads
    assert cpu_streams("cpu") == threads and cpu_streams("cuda") == 1


@pytest.mark.parametrize("name", ["emotion2vec", "valence-arousal", "speaker", "xlsr"])
def test_concurrent_cpu_streams_equal_one_stream(model_dir, waves, name):
    """On CPU each utterance runs alone, torch.get_num_threads() of them at once: same values as in turn."""
    from models.paper.autopcp import XlsrEncoder
    from models.paper.emotion2vec import Emotion2Vec
    from models.paper.speaker import SpeakerEncoder
    from models.paper.valence_arousal import ValenceArousal

    load, run = {
        "emotion2vec": (
            lambda: Emotion2Vec.from_pretrained(model_dir / "emotion2vec_plus_large"),
            lambda m, ws: m.frame_features(ws),
        ),
        "valence-arousal": (
            lambda: ValenceArousal.from_pretrained(model_dir / "wav2vec2-large-robust-12-ft-emotion-msp-dim"),
            lambda m, ws: m.chunks(ws),
        ),
        "speaker": (
            lambda: SpeakerEncoder.from_pretrained(model_dir / "wavlm_large_finetune.pth"),
            lambda m, ws: list(m.embeddings(ws)),
        ),
        "xlsr": (
            lambda: XlsrEncoder.from_pretrained(model_dir / "wav2vec2-large-xlsr-53"),
            lambda m, ws: list(m.embeddings(ws)),
        ),
    }[name]
    model = load()
    model.max_batch_seconds = 0.5  # every utterance alone
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        concurrent = run(model, waves)
        torch.set_num_threads(1)  # one stream
        in_turn = run(model, waves)
    finally:
        torch.set_num_threads(threads)
    assert len(concurrent) == len(in_turn) == len(waves)
    assert all(max_diff(a, b) <= TOL for a, b in zip(concurrent, in_turn, strict=True))


def test_checkpoints_with_python_objects_need_explicit_trust(tmp_path, monkeypatch):
    import argparse

    from models.runtime.batching import TRUST_ENV, load_torch_file

    path = tmp_path / "model.pt"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1.0)}, path)
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(ValueError, match=TRUST_ENV):
        load_torch_file(path)
    monkeypatch.setenv(TRUST_ENV, "1")
    assert torch.equal(load_torch_file(path)["model"]["w"], torch.ones(2))


# ----------------------------------------------------------------------------- emotion2vec


@pytest.mark.parametrize("per_layer_alibi", [False, True])
def test_emotion2vec_equals_funasr_generate(tmp_path, waves, per_layer_alibi):
    from models.paper.emotion2vec import Emotion2Vec

    folder = fx.build_emotion2vec(tmp_path / "e2v", fx.emotion2vec_config(alibi_per_layer=per_layer_alibi))
    ours = Emotion2Vec.from_pretrained(folder)
    frames, utt = ours.features(waves)
    ref_frames, ref_utt = verify.funasr_features(folder, waves)
    for i in range(len(waves)):
        assert frames[i].shape == ref_frames[i].shape
        assert max_diff(frames[i], ref_frames[i]) <= TOL
        assert max_diff(utt[i], ref_utt[i]) <= TOL


def test_emotion2vec_batched_equals_one_at_a_time(model_dir, waves):
    from models.paper.emotion2vec import Emotion2Vec

    m = Emotion2Vec.from_pretrained(model_dir / "emotion2vec_plus_large")
    frames, utt = m.features(waves)
    for i, w in enumerate(waves):
        f1, u1 = m.features([w])
        assert max_diff(frames[i], f1[0]) <= TOL
        assert max_diff(utt[i], u1[0]) <= TOL
    # a tight budget forces several batches; results do not move
    m.max_batch_seconds = 2.5
    frames2 = m.frame_features(waves)
    assert all(max_diff(a, b) <= TOL for a, b in zip(frames, frames2, strict=True))
    # 50 frames/s: conv stack of 320-sample hop, 400-sample receptive field
    for w, f in zip(waves, frames, strict=True):
        assert f.shape == ((len(w) - 400) // 320 + 1, 32) and f.dtype == np.float32
    assert m.utterance_features(waves).shape == (len(waves), 32)


def test_emotion2vec_metadata_and_errors(model_dir, tmp_path):
    from models.paper.emotion2vec import Emotion2Vec

    folder = model_dir / "emotion2vec_plus_large"
    m = Emotion2Vec.from_pretrained(folder)
    info = m.info()
    assert info["sha256"] == hashlib.sha256((folder / "model.pt").read_bytes()).hexdigest()
    assert info["source"] == str(folder) and "dim=32" in info["version"] and info["parameters"] > 0
    assert m.labels[4] == "中立/neutral" and info["precision"] == "fp32"
    with pytest.raises(ValueError, match="needs >= 400"):
        m.features([np.zeros(399, np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        m.features([np.full(1600, np.nan, np.float32)])
    broken = tmp_path / "e2v"
    shutil.copytree(folder, broken)
    (broken / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        Emotion2Vec.from_pretrained(broken)


def test_emotion2vec_bf16_mode_stays_close(model_dir, waves):
    from models.paper.emotion2vec import Emotion2Vec

    folder = model_dir / "emotion2vec_plus_large"
    exact = Emotion2Vec.from_pretrained(folder).frame_features(waves[:3])
    fast = Emotion2Vec.from_pretrained(folder, precision="bf16")
    assert fast.precision == "bf16"
    for a, b in zip(exact, fast.frame_features(waves[:3]), strict=True):
        cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cos.mean() > 0.99


# ----------------------------------------------------------------------------- valence-arousal


def test_valence_arousal_matches_card_recipe_and_batches_exactly(model_dir, waves):
    from transformers import Wav2Vec2FeatureExtractor

    from models.paper.valence_arousal import CHUNK_HOP, CHUNK_WINDOW, ValenceArousal

    folder = model_dir / "wav2vec2-large-robust-12-ft-emotion-msp-dim"
    va = ValenceArousal.from_pretrained(folder)
    batched = va.analyse(waves)
    fex = Wav2Vec2FeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    for w, r in zip(waves, batched, strict=True):
        single = va.analyse([w])[0]
        assert max_diff(r.chunks, single.chunks) <= TOL and max_diff(r.utterance, single.utterance) <= TOL
        # EmoCtrlTTS-Eval recipe, one utterance, no padding, no mask
        ref, ref_utt, t = verify.card_valence_arousal(va.model, fex, w)
        assert r.n_frames == t and r.short == (t < CHUNK_WINDOW)
        assert r.chunks.shape == (max(1, (t - CHUNK_WINDOW) // CHUNK_HOP + 1) if t >= CHUNK_WINDOW else 1, 2)
        assert max_diff(r.chunks, ref) <= TOL
        assert max_diff(r.utterance, ref_utt) <= TOL
    assert va.info()["sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- speaker


def test_speaker_checkpoint_mapping_round_trips():
    from transformers import WavLMConfig, WavLMModel

    from models.paper.speaker import fairseq_wavlm_to_hf, hf_wavlm_to_fairseq, wavlm_config_from_state

    config = WavLMConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        conv_dim=(16,) * 7,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=False,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        num_buckets=32,
        mask_time_prob=0.0,
    )
    state = WavLMModel(config).state_dict()
    fairseq = hf_wavlm_to_fairseq(state)
    assert "encoder.layers.0.self_attn.relative_attention_bias.weight" in fairseq
    assert "encoder.pos_conv.0.weight_g" in fairseq and "post_extract_proj.weight" in fairseq
    back = fairseq_wavlm_to_hf(fairseq)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)
    inferred = wavlm_config_from_state(fairseq)
    for key in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "num_buckets",
        "num_conv_pos_embeddings",
        "num_conv_pos_embedding_groups",
        "feat_extract_norm",
        "conv_bias",
    ):
        assert getattr(inferred, key) == getattr(config, key), key


def test_speaker_embeddings_batched_exact_and_match_reference(model_dir, waves):
    import torch.nn.functional as F

    from models.paper.speaker import SpeakerEncoder

    path = model_dir / "wavlm_large_finetune.pth"
    enc = SpeakerEncoder.from_pretrained(path)
    assert enc.normalize and enc.exact_batching
    emb = enc.embeddings(waves)
    assert emb.shape == (len(waves), 16) and emb.dtype == np.float32
    for w, e in zip(waves, emb, strict=True):
        assert max_diff(e, enc.embeddings([w])[0]) <= TOL
        # reference: s3prl hidden states (input of every layer + final output), weighted, ECAPA
        x = F.layer_norm(torch.from_numpy(w), (len(w),))[None]
        states = []
        hooks = [
            layer.register_forward_pre_hook(lambda m, a, states=states: states.append(a[0]))
            for layer in enc.wavlm.encoder.layers
        ]
        with torch.no_grad():
            last = enc.wavlm(x)[0]
            for h in hooks:
                h.remove()
            ref = verify.reference_speaker_embedding(
                [h[0] for h in states + [last]], enc.ecapa.feature_weight, enc.ecapa
            )
        assert max_diff(e, ref) <= TOL
    assert enc.info()["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_speaker_attention_projects_contiguous_inputs(model_dir, waves):
    """WavLM attention runs its projections as modules on a contiguous (batch, time, dim) tensor: F.linear on
    transformers' transposed (time, batch, dim) view is a per-frame bmm under CPU bf16 autocast (250x slower),
    and only the modules get the packed oneDNN weights. fp32 and bf16 embeddings agree."""
    from models.paper.speaker import SpeakerEncoder

    enc = SpeakerEncoder.from_pretrained(model_dir / "wavlm_large_finetune.pth")
    seen = []
    hooks = [
        proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
        for layer in enc.wavlm.encoder.layers
        for proj in (layer.attention.q_proj, layer.attention.k_proj, layer.attention.v_proj)
    ]
    try:
        fp32 = enc.embeddings(waves)
        enc.precision = "bf16"
        bf16 = enc.embeddings(waves)
    finally:
        enc.precision = "fp32"
        for hook in hooks:
            hook.remove()
    assert seen and all(seen)
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.99


# ----------------------------------------------------------------------------- AutoPCP


def test_xlsr_layer9_masked_mean_batched_exact(model_dir, waves):
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from models.paper.autopcp import XlsrEncoder

    folder = model_dir / "wav2vec2-large-xlsr-53"
    enc = XlsrEncoder.from_pretrained(folder)
    assert len(enc.model.encoder.layers) == 9 and enc.full_layers == 10
    emb = enc.embeddings(waves)
    full = Wav2Vec2Model.from_pretrained(str(folder), local_files_only=True).eval()
    fex = Wav2Vec2FeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    for w, e in zip(waves, emb, strict=True):
        assert max_diff(e, enc.embeddings([w])[0]) <= TOL
        # stopes encode_audios on a batch of one (no padding): hidden_states[9].mean over frames
        ref = verify.stopes_xlsr_embedding(full, fex, w, 9)
        assert max_diff(e, ref) <= TOL
    assert emb.shape == (len(waves), 32)


def test_autopcp_comparator_reads_stopes_files_and_is_symmetric(model_dir):
    from models.paper.autopcp import AutoPCP, find_comparator_files

    pcp = AutoPCP.from_pretrained(model_dir / "wav2vec2-large-xlsr-53", model_dir / "AutoPCP-multilingual-v2")
    cfg_path, pt_path = find_comparator_files(model_dir / "AutoPCP-multilingual-v2")
    state = torch.load(pt_path, weights_only=True)
    rng = np.random.default_rng(1)
    s, t = rng.standard_normal((5, 32)).astype(np.float32), rng.standard_normal((5, 32)).astype(np.float32)
    got = pcp.scores(s, t)
    assert np.allclose(got, pcp.scores(t, s))

    config = torch.load(cfg_path, weights_only=True)  # the stopes layout: mlp.1, mlp.4 (Tanh), mlp.7
    assert max_diff(got, verify.written_out_comparator(config, state, s, t)) <= 1e-5
    assert pcp.comparator_info()["sha256"] == hashlib.sha256(pt_path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- PaperProfile


def test_paper_profile_end_to_end(model_dir, waves):
    from models.paper.profile import PAIR_METRICS, PaperProfile

    profile = PaperProfile.from_model_dir(model_dir)
    assert profile.name == "paper"
    feats = profile.utterance_features(waves)
    assert len(feats) == len(waves)
    for f, _ in zip(feats, waves, strict=True):
        assert all(isinstance(v, np.ndarray) for v in f.values())
        assert f["ser_input"].shape == (32,) and f["e2v_frames"].shape[1] == 32
        assert f["va_chunks"].ndim == 2 and f["va_chunks"].shape[1] == 2
        assert f["speaker"].shape == (16,) and f["pcp"].shape == (32,)
        assert profile.ser_input(f).dtype == np.float32
    # batched profile features == one utterance at a time, for every array
    for i in (0, 2):
        single = profile.utterance_features([waves[i]])[0]
        assert single.keys() == feats[i].keys()
        assert all(max_diff(single[k], feats[i][k]) <= TOL for k in single)

    scores, warns = profile.pair_scores(feats[1], feats[2])
    assert set(scores) == set(PAIR_METRICS)
    assert all(isinstance(v, float) for v in scores.values())
    assert all(-1.0 <= scores[k] <= 1.0 for k in ("emo_sim", "emo_sim_utterance", "va_sim", "vsim"))
    same, _ = profile.pair_scores(feats[2], feats[2])
    assert same["emo_sim"] == pytest.approx(1.0) and same["vsim"] == pytest.approx(1.0)
    assert same["va_sim"] == pytest.approx(1.0)
    _, short_warnings = profile.pair_scores(feats[0], feats[1])  # 0.3 s source: < one va chunk
    assert any("va_sim" in w and "shorter" in w for w in short_warnings)

    parts = profile.signature_parts()
    assert [p.split(":")[0] for p in parts] == ["e2v", "va", "spk", "xlsr", "pcp", "weights", "mode"] and parts[
        -1
    ] == "mode:fp32"
    info = profile.models_info()
    assert set(info) == {
        "emotion2vec_plus_large",
        "valence_arousal",
        "speaker_wavlm_ecapa",
        "xlsr_53",
        "autopcp_comparator",
    }
    assert all(
        set(v) == {"source", "sha256", "version", "files_sha256", "lock", "revision", "lock_source"}
        and len(v["sha256"]) == 64
        and len(v["files_sha256"]) == 64
        for v in info.values()
    )
    assert parts[0] == "e2v:" + info["emotion2vec_plus_large"]["sha256"][:12]
    assert set(profile.unavailable()) == {"acoustic_sim", "acoustic_sim_utterance"}


def test_paper_profile_missing_models_are_named(model_dir, tmp_path):
    from models.paper.inventory import check_models
    from models.paper.profile import PaperProfile

    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial)
    shutil.rmtree(partial / "wav2vec2-large-robust-12-ft-emotion-msp-dim")
    (partial / "wavlm_large_finetune.pth").unlink()
    with pytest.raises(FileNotFoundError) as err:
        PaperProfile.from_model_dir(partial)
    message = str(err.value)
    assert "valence_arousal" in message and "wavlm_large_finetune.pth" in message and "emotion2vec" not in message
    relaxed = PaperProfile.from_model_dir(partial, allow_missing=True)
    assert {"va_sim", "vsim"} <= set(relaxed.unavailable())
    assert relaxed.signature_parts()[1:3] == ["va:none", "spk:none"]

    rows = {r["name"]: r for r in check_models(partial)}
    assert rows["valence_arousal"]["status"] == "missing" and rows["speaker_wavlm_ecapa"]["status"] == "missing"
    assert not rows["valence_arousal"]["present"] and "wav2vec2-large-robust" in rows["valence_arousal"]["hint"]
    e2v = rows["emotion2vec_plus_large"]
    assert e2v["status"] == "present" and e2v["present"] and e2v["hint"] is None and e2v["parameters"] > 0
    assert e2v["sha256"] == hashlib.sha256((partial / "emotion2vec_plus_large" / "model.pt").read_bytes()).hexdigest()
    assert rows["valence_arousal"]["put"].endswith("wav2vec2-large-robust-12-ft-emotion-msp-dim/")
    assert all(r["fetch"] for r in rows.values())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PaperProfile.from_model_dir(tmp_path / "nowhere")
