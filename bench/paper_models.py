"""Paper-profile models at full size (random weights): funasr's emotion2vec loop vs ours, and the
whole paper profile's throughput.

    python bench/paper_models.py                 # ~2-4 min on 2 shared CPU cores (first run also writes ~650 MB)
    python bench/paper_models.py --n 40 --max-seconds 12 --per-model --device cuda

emotion2vec_plus_large architecture (1024-d, 4+8 blocks) with random weights, written once as a
funasr folder (``--workdir``, reused across runs). On the same audio it times:

  funasr     ``AutoModel(model=folder).generate(waves, granularity="frame")``, one utterance at a time
  ours-1x1   our implementation, one utterance per call (fp32)
  ours fp32  our exact batched path (length-bucketed, padding-blind) with the device's default budget
             (1 s on CPU, where each utterance runs alone; 160 s on GPU)
  ours bf16  the same with bf16 autocast (forced even where the hardware lacks native bf16, so the
             accuracy numbers are always printed; fast mode itself picks bf16 only where it measures faster)

and prints audio-seconds per second, ratios to funasr, max |ours - funasr|, the bf16 frame cosine
to fp32 and the agreement of the 9-class ``proj`` head argmax (an SER-prediction proxy: the
shipped SER head is trained elsewhere). Then the full paper profile (emotion2vec + valence-arousal
+ WavLM/ECAPA + XLS-R layer 9 + AutoPCP, all full size, random weights) in audio-seconds/s.
Audio: real speech from jvnv/ of the shared data folder ($EMOPRES_SHARED_DATA, else ../shared/data) when
present (``--audio-dir`` to choose), else synthetic speech-like signals.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.runtime.precision import cpu_bf16_flags, cpu_native_bf16  # noqa: E402
from tests.paper_fixtures import build_emotion2vec, full_size_emotion2vec_config, random_waves  # noqa: E402

DATA = Path(os.environ.get("EMOPRES_SHARED_DATA", REPO.parent / "shared" / "data"))


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX instructions (where bf16 is not emulated)."""
    return bool(cpu_native_bf16())


def load_audio(args) -> list[np.ndarray]:
    rng = np.random.default_rng(args.seed)
    audio_dir = Path(args.audio_dir) if args.audio_dir else DATA / "jvnv" / "audio"
    files = (
        sorted(p for p in audio_dir.glob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg"))
        if audio_dir.is_dir()
        else []
    )
    if files:
        import soundfile as sf
        import soxr

        waves = []
        for p in rng.permutation(len(files)):
            x, sr = sf.read(str(files[p]), dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            if sr != 16000:
                x = soxr.resample(x, sr, 16000).astype(np.float32)
            x = x[: int(args.max_seconds * 16000)]
            if len(x) >= 16000:
                waves.append(x)
            if len(waves) == args.n:
                break
        print(f"audio: {len(waves)} utterances from {audio_dir} (cut at {args.max_seconds:g} s)")
        return waves
    seconds = rng.uniform(1.5, args.max_seconds, size=args.n).round(2).tolist()
    print(f"audio: {args.n} synthetic utterances (no audio in {audio_dir})")
    return random_waves(seconds, seed=args.seed)


def timed(fn, *a, repeat=1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*a)
        best = min(best, time.perf_counter() - t)
    return out, best


def frame_cosines(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """Mean over frames of cos(a_t, b_t), per utterance."""
    out = []
    for x, y in zip(a, b, strict=True):
        x, y = x.astype(np.float64), y.astype(np.float64)
        out.append(np.mean(np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))))
    return np.array(out)


def load_funasr(folder, device: str):
    """funasr's own AutoModel on the emotion2vec folder, quietly (its generate runs one utterance at a time)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from funasr import AutoModel

        logging.getLogger().setLevel(logging.ERROR)  # funasr logs every loaded key at INFO
        ref = AutoModel(
            model=str(folder),
            device=device,
            disable_update=True,
            disable_pbar=True,
            ncpu=torch.get_num_threads(),
            log_level="ERROR",
        )
        logging.getLogger().setLevel(logging.ERROR)
    return ref


def emotion2vec_folder(workdir, tiny: bool = False) -> Path:
    """The random emotion2vec_plus_large funasr folder under `workdir`, written once (~650 MB; `tiny`: the
    tests' few-kB architecture, for dry runs)."""
    folder = Path(workdir) / ("emotion2vec_tiny_random" if tiny else "emotion2vec_plus_large_random")
    if not (folder / "model.pt").is_file():
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            if tiny:
                build_emotion2vec(folder)
            else:
                build_emotion2vec(folder, full_size_emotion2vec_config(), randomise=False)
        print(
            f"wrote {'tiny' if tiny else 'full-size'} random emotion2vec_plus_large to {folder} in "
            f"{time.perf_counter() - t:.0f} s"
        )
    return folder


def bench_emotion2vec(args, waves, folder) -> None:
    from models.paper.emotion2vec import Emotion2Vec

    total = sum(len(w) for w in waves) / 16000
    rows = []
    warm = [waves[0][:32000]]

    ref = load_funasr(folder, args.device)
    ref.generate(warm, granularity="frame", extract_embedding=True)
    res, t_funasr = timed(lambda: ref.generate(waves, granularity="frame", extract_embedding=True))
    ref_frames = [r["feats"] for r in res]
    rows.append(("funasr generate (1 at a time)", t_funasr))
    ref = None  # the reference model is freed before ours loads

    ours = Emotion2Vec.from_pretrained(folder, device=args.device)
    ours.features(warm)
    (frames32, utt32), t_ours = timed(ours.features, waves)
    _, t_single = timed(lambda: [ours.features([w]) for w in waves])
    rows.append(("ours fp32, 1 at a time", t_single))
    rows.append((f"ours fp32, {ours.max_batch_seconds:g} s batches", t_ours))  # the device's default budget
    diff = max(float(np.abs(a - b).max()) for a, b in zip(frames32, ref_frames, strict=True))

    bf16 = None
    if not args.skip_bf16:
        native = args.device.startswith("cuda") or cpu_has_native_bf16()
        n16 = args.bf16_n or (len(waves) if native else min(2, len(waves)))
        sub = waves[:n16]
        fast = Emotion2Vec.from_pretrained(folder, device=args.device, precision="bf16")
        fast.features(warm)
        (frames16, utt16), t_fast = timed(fast.features, sub)
        sub_total = sum(len(w) for w in sub) / 16000
        label = f"ours bf16, {fast.max_batch_seconds:g} s batches" + ("" if native else " (emulated)")
        rows.append((label, t_fast * total / sub_total))  # scaled to the full set for the table
        cos = frame_cosines(frames16, frames32[:n16])
        head = ours.net.proj
        with torch.no_grad():
            p32 = head(torch.from_numpy(utt32[:n16])).argmax(1)
            p16 = head(torch.from_numpy(utt16)).argmax(1)
        bf16 = (cos, float((p32 == p16).float().mean()), n16, native)

    print(
        f"\nemotion2vec_plus_large (random weights), {len(waves)} utterances, {total:.1f} s of audio, "
        f"device={args.device}, threads={torch.get_num_threads()}"
    )
    print(f"{'path':34s} {'seconds':>8s} {'audio-s/s':>10s} {'vs funasr':>10s}")
    for name, t in rows:
        print(f"{name:34s} {t:8.2f} {total / t:10.2f} {t_funasr / t:9.2f}x")
    print(f"max |ours fp32 - funasr| over all frames: {diff:.2e}")
    if bf16:
        cos, agree, n16, native = bf16
        print(
            f"bf16 vs fp32 on {n16} utterances: frame cosine mean {cos.mean():.5f}, worst utterance {cos.min():.5f}; "
            f"proj-head argmax agreement {agree * 100:.1f}% (SER proxy)"
        )
        if not native:
            print(
                "  this CPU has no native bf16 (AVX512-BF16/AMX): bf16 is emulated; fast mode keeps fp32 here "
                "without timing; the bf16 row is timed on those utterances and scaled to the full set"
            )


def full_size_models(tiny: bool = False):
    """The plain modules at their published sizes, random weights: (valence-arousal EmotionModel, WavLM-Large,
    ECAPA-TDNN, 24-layer XLS-R Wav2Vec2Model, AutoPCP comparator). `tiny`: the same architectures 32 wide
    (seconds to build; for dry runs of the benchmarks, not for timing)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel

    from models.paper.autopcp import Comparator
    from models.paper.speaker import EcapaTdnn
    from models.paper.valence_arousal import _model_classes

    dim = 32 if tiny else 1024
    large = dict(
        hidden_size=dim,
        num_attention_heads=4 if tiny else 16,
        intermediate_size=4 * dim,
        conv_dim=((16,) if tiny else (512,)) * 7,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        mask_time_prob=0.0,
    )
    if tiny:
        large.update(num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    _, EmotionModel = _model_classes()
    va = EmotionModel(Wav2Vec2Config(num_hidden_layers=12, num_labels=3, **large))
    wavlm = WavLMModel(
        WavLMConfig(
            num_hidden_layers=24,
            num_buckets=32 if tiny else 320,
            max_bucket_distance=800,
            **{**large, "conv_bias": False},
        )
    )
    xlsr = Wav2Vec2Model(Wav2Vec2Config(num_hidden_layers=24, **large))
    comparator = Comparator(
        idim=dim,
        odim=1,
        nhid=[512, 128],
        dropout=0.1,
        activation="TANH",
        input_form="qe",
        norm_emb=True,
        output_act=False,
    )
    ecapa = (
        EcapaTdnn(
            feat_dim=dim, n_states=25, channels=32, last_channels=48, emb_dim=16, se_bottleneck=8, attention_channels=8
        )
        if tiny
        else EcapaTdnn(feat_dim=dim, n_states=25)
    )
    return va, wavlm, ecapa, xlsr, comparator


def write_model_dir(root, models, e2v_folder) -> Path:
    """A complete EMOPRES_MODEL_DIR from full_size_models() modules, each in its published format."""
    from models.paper.speaker import hf_wavlm_to_fairseq
    from tests.paper_fixtures import _write_preprocessor

    va, wavlm, ecapa, xlsr, comparator = models
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    e2v = root / "emotion2vec_plus_large"
    if not e2v.exists():
        e2v.symlink_to(Path(e2v_folder).resolve())
    from models.runtime.batching import quiet_transformers

    for module, name in ((va, "wav2vec2-large-robust-12-ft-emotion-msp-dim"), (xlsr, "wav2vec2-large-xlsr-53")):
        with quiet_transformers():
            module.save_pretrained(str(root / name))
        _write_preprocessor(root / name)
    state = {"feature_extract.model." + k: v for k, v in hf_wavlm_to_fairseq(wavlm.state_dict()).items()}
    state.update(ecapa.state_dict())
    torch.save({"model": state}, root / "wavlm_large_finetune.pth")
    inner = root / "AutoPCP-multilingual-v2" / "AutoPCP_multilingual_v2"
    inner.mkdir(parents=True, exist_ok=True)
    config = {
        "input_form": "qe",
        "dropout": 0.1,
        "idim": comparator.idim,
        "odim": 1,
        "nhid": [512, 128],
        "activation": "TANH",
        "norm_emb": True,
        "output_act": False,
        "trainable_pooler": False,
    }
    torch.save(config, inner / "comparator.config")
    torch.save(comparator.state_dict(), inner / "comparator.pt")
    return root


def full_size_profile(device: str, models=None):
    """The valence-arousal, speaker and AutoPCP models at their published sizes, random weights, in memory
    (wrapping `models`, a full_size_models() tuple, when given)."""
    from models.paper.autopcp import AutoPCP, XlsrEncoder
    from models.paper.speaker import SpeakerEncoder
    from models.paper.valence_arousal import ValenceArousal

    va, wavlm, ecapa, xlsr, comparator = models or full_size_models()
    spk = SpeakerEncoder(wavlm, ecapa, normalize=True, device=device)
    return (
        ValenceArousal(va, device=device),
        spk,
        AutoPCP(XlsrEncoder(xlsr, device=device), comparator),
    )  # XlsrEncoder keeps layers 1-9 of xlsr


def one_at_a_time(models, device: str, funasr: list) -> dict:
    """The one-at-a-time reference loops of bench/throughput.py section 3, name -> f(waves) -> outputs: the
    libraries' own modules fed one utterance per call (the valence-arousal card's chunk recipe, WavLM + ECAPA-TDNN
    as UniSpeech, XLS-R's hidden_states[9] as stopes), and funasr's AutoModel for emotion2vec (`funasr[0]`, loaded
    by the caller later). They run copies of `models` (a full_size_models() tuple): call this before
    full_size_profile(), whose wrappers switch the modules to the fast paths of models/runtime/speedups.py in place."""
    import copy

    import torch.nn.functional as F

    from models.paper.valence_arousal import CHUNK_HOP, CHUNK_WINDOW
    from models.runtime.batching import zero_mean_unit_var

    plain_va, plain_wavlm, plain_ecapa, plain_xlsr, _ = copy.deepcopy(models)
    for module in (plain_va, plain_wavlm, plain_ecapa, plain_xlsr):
        module.to(device).eval()

    def va_one(wave):
        x = zero_mean_unit_var(torch.from_numpy(wave).to(device))[None]
        hidden = plain_va.wav2vec2(x)[0][0]
        t = hidden.shape[0]
        starts = range(0, (t - CHUNK_WINDOW) // CHUNK_HOP * CHUNK_HOP + 1, CHUNK_HOP) if t >= CHUNK_WINDOW else [0]
        chunks = torch.stack([hidden[s : s + CHUNK_WINDOW].mean(0) for s in starts])
        return plain_va.classifier(chunks)[:, [0, 2]].cpu().numpy() - 0.5

    def speaker_one(wave):
        # UniSpeech's recipe: WavLM-Large's 25 hidden states, softmax-weighted, + 1e-6, ECAPA-TDNN unmasked
        x = F.layer_norm(torch.from_numpy(wave).to(device), wave.shape)[None]
        out = plain_wavlm(x, output_hidden_states=True)
        # s3prl's 25: the input of each layer, then the final layer-normed output (transformers' last
        # hidden state; its hidden_states tuple ends with the last layer's output before that norm)
        states = [*out.hidden_states[:-1], out.last_hidden_state]
        weights = torch.softmax(plain_ecapa.feature_weight, dim=0)
        feats = sum(w * h for w, h in zip(weights, states, strict=True))
        return plain_ecapa(feats.transpose(1, 2) + 1e-6)[0].cpu().numpy()

    def xlsr_one(wave):
        x = zero_mean_unit_var(torch.from_numpy(wave).to(device))[None]
        return plain_xlsr(x, output_hidden_states=True).hidden_states[9][0].mean(0).cpu().numpy()

    def funasr_loop(ws):
        return [r["feats"] for r in funasr[0].generate(ws, granularity="frame", extract_embedding=True)]

    return {
        "emotion2vec": funasr_loop,
        "valence-arousal": lambda ws: [va_one(w) for w in ws],
        "WavLM+ECAPA": lambda ws: [speaker_one(w) for w in ws],
        "XLS-R layer 9": lambda ws: [xlsr_one(w) for w in ws],
    }


def bench_profile(args, waves, folder) -> None:
    from models.paper.emotion2vec import Emotion2Vec
    from models.paper.profile import PaperProfile

    total = sum(len(w) for w in waves) / 16000
    t0 = time.perf_counter()
    va, spk, pcp = full_size_profile(args.device)
    profile = PaperProfile(Emotion2Vec.from_pretrained(folder, device=args.device), va, spk, pcp)
    print(f"\nfull paper profile built in {time.perf_counter() - t0:.0f} s (random weights, full size)")
    profile.utterance_features([waves[0][:32000]])
    feats, t_all = timed(profile.utterance_features, waves)
    _, t_pairs = timed(lambda: [profile.pair_scores(feats[i], feats[(i + 1) % len(feats)]) for i in range(len(feats))])
    print(
        f"paper profile utterance_features: {t_all:.2f} s for {total:.1f} s of audio = {total / t_all:.2f} audio-s/s "
        f"(fp32, device={args.device}, threads={torch.get_num_threads()})"
    )
    if args.per_model:
        for name, fn in (
            ("emotion2vec", profile.emotion2vec.features),
            ("valence-arousal", va.analyse),
            ("WavLM+ECAPA", spk.embeddings),
            ("XLS-R layer 9", pcp.embeddings),
        ):
            _, t = timed(fn, waves)
            print(f"  {name:16s} {t:7.2f} s {total / t:7.2f} audio-s/s")
    print(f"pair_scores for {len(feats)} pairs: {t_pairs * 1000:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4, help="number of utterances (default 4)")
    ap.add_argument("--max-seconds", type=float, default=5.0, help="cut utterances at this length (default 5)")
    ap.add_argument("--audio-dir", default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    ap.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "emopres-bench"))
    ap.add_argument("--skip-bf16", action="store_true")
    ap.add_argument(
        "--bf16-n", type=int, default=None, help="utterances for the bf16 run (default: all; 2 where bf16 is emulated)"
    )
    ap.add_argument("--per-model", action="store_true", help="also time each paper model separately")
    ap.add_argument("--no-profile", action="store_true", help="skip the full paper-profile throughput")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    load = (
        f", load average {os.getloadavg()[0]:.1f} "
        "(other processes share these cores: timings are noisy when it is high)"
        if hasattr(os, "getloadavg")
        else ""
    )
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores{load}, "
        f"native CPU bf16: {cpu_has_native_bf16()} ({cpu_bf16_flags()}), cuda: {torch.cuda.is_available()}"
    )
    folder = emotion2vec_folder(args.workdir)
    waves = load_audio(args)
    bench_emotion2vec(args, waves, folder)
    if not args.no_profile:
        bench_profile(args, waves, folder)


if __name__ == "__main__":
    main()
