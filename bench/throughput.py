"""Throughput at scale (issue 8): four measurements side by side, in one run.

    python bench/throughput.py                          # ~6 min on 2 idle CPU cores (more when shared)
    python bench/throughput.py --pairs 0                # sections 2 and 4 on the whole en-ja test split too
    python bench/throughput.py --only paper --paper-n 16 --paper-max-seconds 8 --device cuda
    python bench/throughput.py --only cache,workers,service
    python bench/throughput.py --only paper,workers --paper-n 8 --repeat 3   # issue 17: fast mode, exact ratios,
                                                                             # 2 vs 1 workers
    bash bench/gpu.sh                                   # on a CUDA machine: steady-state GPU sizes + the service

1 cache    lite pairs/s, cold vs warm *source* cache, on the whole test split. One resident evaluator
           (--jobs processes) and one cache folder: system A (target_preserved) on an empty cache, then
           system B (target_swapped): same sources, new targets, as when a CI corpus is re-run after a
           system change. Also prints how much audio each run had to compute.
2 workers  lite pairs/s with one worker process vs two (--pairs pairs), cold (no cache), model start-up
           timed apart, and CPU-ms per file (grows when two processes share the machine's cores).
3 paper    the paper profile at full model sizes (random weights from the published configs), in a
           process of its own: audio-seconds/s of our batched exact fp32 pipeline and of fast mode (each
           model timed in fp32 and bf16 on a probe first, the faster kept, as a worker does) vs a
           one-at-a-time loop through funasr (emotion2vec) and the plain transformers modules
           (valence-arousal, WavLM+ECAPA, XLS-R), per model and for the whole profile, with the spread
           over --repeat alternating rounds.
4 service  the same corpus through POST /v1/jobs of `emopres serve` (embedded, a subprocess, models
           loaded before the clock starts) vs `emopres evaluate` (a subprocess, as users run it).

Every measurement prints the 1-minute load average and the cores that *other* processes used meanwhile
(from /proc/stat minus this benchmark's own process tree): the machine is shared, read ratios with it.
Peak memory (VmHWM) of every worker process is printed per profile. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from lite_throughput import DATA, bench_head, section_cache, section_workers  # noqa: E402
from proc_accounting import Clock, parallel_capacity, peak_rss_mib  # noqa: E402
from service_bench import section_service  # noqa: E402

from models.registry import ProfileSpec  # noqa: E402
from models.runtime.threads import threads_per_worker  # noqa: E402

# ----------------------------------------------------------------------------- paper profile


def section_paper(args, results: dict) -> None:
    print(
        f"\n3. paper profile at {args.paper_size} model sizes (random weights), {args.paper_n} utterances <= "
        f"{args.paper_max_seconds:g} s, device={args.device}, in a process of its own; GPU: "
        f"{'yes' if args.device.startswith('cuda') else 'none here, not measured'}",
        flush=True,
    )
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        with Clock() as clock:
            out = pool.apply(paper_process, (vars(args),))
    out["load"], out["others"] = clock.result.load, clock.result.others
    results["paper"] = out
    print(f"  (whole section {clock.result.seconds:.0f} s) {clock.result.note()}")


def paper_process(options: dict) -> dict:
    """Runs in a fresh process so that its peak memory is the paper worker's own."""
    import numpy as np
    import torch
    from paper_models import (
        emotion2vec_folder,
        full_size_models,
        full_size_profile,
        load_audio,
        load_funasr,
        one_at_a_time,
    )

    from models.paper.emotion2vec import Emotion2Vec
    from models.paper.profile import PaperProfile
    from models.runtime.batching import default_batch_seconds
    from models.runtime.precision import PROBE_TEXT, cpu_bf16_flags, measure_fast_mode

    args = argparse.Namespace(**options)
    device = args.device
    audio_args = argparse.Namespace(
        n=args.paper_n,
        max_seconds=args.paper_max_seconds,
        seed=0,
        audio_dir=args.paper_audio_dir or str(DATA / "ravdess" / "audio"),
    )
    tiny = args.paper_size == "tiny"
    folder = emotion2vec_folder(args.workdir, tiny=tiny)
    waves = load_audio(audio_args)
    total = sum(len(w) for w in waves) / 16000
    torch.set_num_threads(args.threads or threads_per_worker(1))  # after funasr (writing the folder) set its own

    started = time.perf_counter()
    models = full_size_models(tiny=tiny)
    funasr = []  # funasr's emotion2vec, loaded after our own peak memory is read
    reference = one_at_a_time(models, device, funasr)  # before full_size_profile switches the modules' fast paths
    va, spk, pcp = full_size_profile(device, models)
    e2v = Emotion2Vec.from_pretrained(folder, device=device)
    profile = PaperProfile(e2v, va, spk, pcp)
    wrappers = {"emotion2vec": e2v, "valence-arousal": va, "WavLM+ECAPA": spk, "XLS-R layer 9": pcp.encoder}
    if args.paper_batch_seconds:
        for wrapper in wrappers.values():
            wrapper.max_batch_seconds = args.paper_batch_seconds
    print(
        f"  models built in {time.perf_counter() - started:.0f} s; {total:.1f} s of audio; torch threads "
        f"{torch.get_num_threads()}; batch size: " + batch_sizes(waves, e2v.max_batch_seconds) + " in fp32, "
        f"{batch_sizes(waves, args.paper_batch_seconds or default_batch_seconds(device, 'bf16'))} in bf16",
        flush=True,
    )
    batched = {
        "emotion2vec": e2v.features,
        "valence-arousal": va.analyse,
        "WavLM+ECAPA": spk.embeddings,
        "XLS-R layer 9": pcp.embeddings,
    }
    warm = [waves[0][:32000]]
    profile.utterance_features(warm)

    # fast mode as a worker runs it: each model timed in fp32 and bf16 on the probe, the faster kept
    started = time.perf_counter()
    choices = {name: measure_fast_mode(wrapper, batched[name]) for name, wrapper in wrappers.items()}
    probe_seconds = time.perf_counter() - started
    for wrapper in wrappers.values():
        wrapper.precision = "fp32"

    def ours(name: str, mode: str):
        def run(ws):
            wrappers[name].precision = mode
            try:
                return batched[name](ws)
            finally:
                wrappers[name].precision = "fp32"

        return run

    def seconds(fn):
        start = time.perf_counter()
        out = fn(waves)
        return time.perf_counter() - start, out

    kinds = ["loop", "fp32", "fast"] + (["bf16"] if args.paper_bf16 else [])
    times = {kind: {} for kind in kinds}
    our_out, ref_out = {}, {}
    with torch.inference_mode(), Clock() as clock:
        for name in ("valence-arousal", "WavLM+ECAPA", "XLS-R layer 9", "emotion2vec"):
            if name == "emotion2vec":
                ours_peak = peak_rss_mib()
                gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
                funasr.append(load_funasr(folder, device))
            runs = {"loop": reference[name], "fp32": ours(name, "fp32")}
            if choices[name].mode == "bf16":
                runs["fast"] = ours(name, "bf16")
            if args.paper_bf16:
                runs["bf16"] = ours(name, "bf16")
            for fn in runs.values():
                fn(warm)
            for kind in runs:
                times[kind][name] = []
            for _ in range(args.repeat):  # alternating, so a change of load hits every kind alike
                for kind, fn in runs.items():
                    t, out = seconds(fn)
                    times[kind][name].append(t)
                    (ref_out if kind == "loop" else our_out).setdefault((kind, name), out)
            if "fast" not in runs:  # fast mode chose fp32: it is the exact run
                times["fast"][name] = times["fp32"][name]
            print(f"    {name}: done", flush=True)

    def worst(ours_items, ref_items) -> tuple[float, float]:
        """max |ours - reference| over all values, and that over max |reference|."""
        pairs = [
            (np.asarray(a, np.float64), np.asarray(b, np.float64)) for a, b in zip(ours_items, ref_items, strict=True)
        ]
        diff = max(float(np.abs(a - b).max()) for a, b in pairs)
        return diff, diff / max(float(np.abs(b).max()) for _, b in pairs)

    diffs = {
        "emotion2vec": worst(our_out["fp32", "emotion2vec"][0], ref_out["loop", "emotion2vec"]),
        "valence-arousal": worst(
            [r.chunks for r in our_out["fp32", "valence-arousal"]], ref_out["loop", "valence-arousal"]
        ),
        "WavLM+ECAPA": worst(our_out["fp32", "WavLM+ECAPA"], ref_out["loop", "WavLM+ECAPA"]),
        "XLS-R layer 9": worst(our_out["fp32", "XLS-R layer 9"], ref_out["loop", "XLS-R layer 9"]),
    }
    names = list(batched)

    def ratio(kind: str, which: list[str]) -> tuple[float, float, float]:
        """loop time over `kind` time: of the fastest runs, and the lowest and highest of the rounds."""
        best = sum(min(times["loop"][n]) for n in which) / sum(min(times[kind][n]) for n in which)
        rounds = [
            sum(times["loop"][n][r] for n in which) / sum(times[kind][n][r] for n in which) for r in range(args.repeat)
        ]
        return best, min(rounds), max(rounds)

    def cell(kind: str, which: list[str]) -> str:
        best, low, high = ratio(kind, which)
        rate = total / sum(min(times[kind][n]) for n in which)
        return f"{rate:7.2f} a-s/s {best:5.2f}x ({low:.2f}-{high:.2f})"

    print(
        f"  {'model':18s} {'one at a time':>14s}   {'ours exact fp32, ratio (spread)':>31s}   "
        f"{'fast mode, ratio (spread)':>31s}  fast mode chose" + ("   forced bf16" if args.paper_bf16 else "")
    )
    for name in names:
        loop_rate = total / min(times["loop"][name])
        line = (
            f"  {name:18s} {loop_rate:8.2f} a-s/s   {cell('fp32', [name]):>31s}   {cell('fast', [name]):>31s}  "
            f"{choices[name].mode} ("
            + (f"probe: bf16 {choices[name].speedup:.2f}x fp32" if choices[name].speedup else choices[name].reason)
            + ")"
        )
        if args.paper_bf16:
            line += f"   {cell('bf16', [name])}"
        print(line)
    line = (
        f"  {'all paper models':18s} {total / sum(min(times['loop'][n]) for n in names):8.2f} a-s/s   "
        f"{cell('fp32', names):>31s}   {cell('fast', names):>31s}"
    )
    print(line + (f"{'':18s}   {cell('bf16', names)}" if args.paper_bf16 else ""))
    print(
        "  one at a time = funasr AutoModel.generate (emotion2vec); the libraries' plain modules fed one utterance "
        "per call: the valence-arousal card + chunk recipe, WavLM + ECAPA-TDNN as UniSpeech (all 25 hidden "
        "states, unmasked ECAPA), XLS-R all 24 layers with output_hidden_states (stopes' recipe). Ratio: "
        f"one at a time / ours, fastest of {args.repeat} alternating rounds; spread: lowest-highest round."
    )
    print(f"  during these measurements {clock.result.note()}")
    print(
        "  max |ours exact - one at a time| (relative to the largest value): "
        + ", ".join(f"{k} {d:.1e} ({r:.1e})" for k, (d, r) in diffs.items())
    )
    accuracy = bf16_accuracy(our_out, wrappers["emotion2vec"]) if args.paper_bf16 else {}
    flags = cpu_bf16_flags()
    predicted = "bf16" if device.startswith("cuda") or flags["avx512_bf16"] or flags["amx_bf16"] else "fp32"
    chosen = {c.mode for c in choices.values()}
    print(
        f"  fast mode: timed each model in fp32 and bf16 on a job-shaped probe ({PROBE_TEXT} of audio; "
        f"{probe_seconds:.0f} s for all four; nothing is timed on a CPU without bf16 instructions) and chose "
        + ", ".join(f"{n} {c.mode}" for n, c in choices.items())
        + f"; the capability test (AVX512-BF16 {flags['avx512_bf16']}, AMX {flags['amx_bf16']}, oneDNN bf16 "
        f"{flags['onednn_bf16']}) predicts {predicted}: "
        + ("agrees" if chosen == {predicted} else "DISAGREES (the timing decides)")
    )
    print(
        f"  peak RSS of the paper worker process (all five models resident, after our batched run): "
        f"{ours_peak:.0f} MiB; with the plain reference copies and funasr's emotion2vec: {peak_rss_mib():.0f} MiB"
        + (
            f"; GPU memory peak (torch's allocator, ours and the plain reference copies resident, before funasr): "
            f"{gpu_peak:.0f} MiB"
            if gpu_peak is not None
            else ""
        )
    )
    return {
        "audio_seconds": total,
        "times": times,
        "choices": {n: c.as_dict() for n, c in choices.items()},
        "ratios": {
            kind: {**{n: ratio(kind, [n]) for n in names}, "all": ratio(kind, names)}
            for kind in kinds
            if kind != "loop"
        },
        "predicted": predicted,
        "diffs": diffs,
        "bf16_accuracy": accuracy,
        "peak_mib": ours_peak,
        "gpu_peak_mib": gpu_peak,
        "threads": torch.get_num_threads(),
        "load": clock.result.load,
        "others": clock.result.others,
    }


def batch_sizes(waves, budget: float) -> str:
    """How the models batch ``waves`` under a padded-audio budget: batches and utterances in the largest."""
    from models.runtime.batching import plan_batches

    plan = plan_batches([len(w) for w in waves], budget)
    return f"<= {budget:g} s of padded audio ({len(plan)} batches, up to {max(map(len, plan))} utterances)"


def bf16_accuracy(our_out: dict, e2v) -> dict:
    """Fast mode's accuracy: per model, max |bf16 - exact fp32| over every output value of the run (and that
    over the largest |exact|); for emotion2vec also the worst utterance's mean frame cosine and the share of
    utterances whose 9-class proj-head argmax (an SER proxy) flips. Prints them; returns them."""
    import numpy as np
    import torch

    def flat(name: str, kind: str) -> list:
        out = our_out[kind, name]
        if name == "emotion2vec":
            return list(out[0])
        if name == "valence-arousal":
            return [np.concatenate([r.chunks.ravel(), r.utterance]) for r in out]
        return list(out)

    result = {}
    for name in ("emotion2vec", "valence-arousal", "WavLM+ECAPA", "XLS-R layer 9"):
        fast, exact = flat(name, "bf16"), flat(name, "fp32")
        diff = max(float(np.abs(np.asarray(a, np.float64) - b).max()) for a, b in zip(fast, exact, strict=True))
        result[name] = {"max_abs": diff, "relative": diff / max(float(np.abs(b).max()) for b in exact)}
    frames16, utt16 = our_out["bf16", "emotion2vec"]
    frames32, utt32 = our_out["fp32", "emotion2vec"]
    cosines = [
        float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
        for a, b in zip(frames16, frames32, strict=True)
    ]
    result["emotion2vec"]["worst_frame_cosine"] = min(cosines)
    if e2v.net.proj is not None:
        with torch.inference_mode():
            head = e2v.net.proj.float()
            flips = head(torch.from_numpy(utt16)).argmax(1) != head(torch.from_numpy(utt32)).argmax(1)
        result["emotion2vec"]["proj_argmax_flips"] = float(flips.float().mean())
    print(
        "  fast mode's accuracy, bf16 vs exact fp32 (same utterances, bf16 in its CPU batches): max |diff| "
        "(relative to the largest value): "
        + ", ".join(f"{n} {r['max_abs']:.1e} ({r['relative']:.1e})" for n, r in result.items())
        + f"; emotion2vec worst utterance frame cosine {min(cosines):.5f}"
        + (
            f", proj-head argmax flips {result['emotion2vec']['proj_argmax_flips'] * 100:.0f}% of utterances"
            if "proj_argmax_flips" in result["emotion2vec"]
            else ""
        )
    )
    return result


# ----------------------------------------------------------------------------- main


def main() -> None:
    import torch

    from models.runtime.precision import cpu_bf16_flags

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only", default="cache,workers,paper,service", help="comma-separated sections: cache, workers, paper, service"
    )
    parser.add_argument("--pairs-file", default=str(DATA / "pairs" / "en-ja.csv"))
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--pairs", type=int, default=72, help="sections 2 and 4: first N pairs of the split (0: all; default 72)"
    )
    parser.add_argument(
        "--cache-pairs",
        type=int,
        default=0,
        help="section 1: first N pairs of the split (default 0: all; the share of source audio "
        "grows with N here, so a prefix understates the cache)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="lite worker processes for sections 1 and 4")
    parser.add_argument("--worker-counts", default="1,2", help="section 2: worker process counts to compare")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="sections 2-4: alternate the compared runs this many times and keep the fastest of "
        "each (use 2-3 on a shared machine)",
    )
    parser.add_argument("--head", default=None, help="lite SER head (default: the shipped head, else a random one)")
    parser.add_argument("--paper-n", type=int, default=4, help="section 3: utterances (default 4)")
    parser.add_argument("--paper-max-seconds", type=float, default=6.0, help="section 3: cut utterances here")
    parser.add_argument(
        "--paper-audio-dir",
        default=None,
        help="section 3: audio folder (default: shared RAVDESS, 3-5 s utterances of varied length)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="section 3: torch threads (default: all cores)")
    parser.add_argument(
        "--paper-size",
        choices=("full", "tiny"),
        default="full",
        help="section 3: published model sizes, or 32-wide ones for a dry run (not for timing)",
    )
    parser.add_argument(
        "--paper-bf16",
        action="store_true",
        help="section 3: also time every model in forced bf16 (whatever fast mode chose) and print fast mode's "
        "accuracy (bf16 vs exact per model, emotion2vec proj-head argmax flips)",
    )
    parser.add_argument(
        "--paper-batch-seconds",
        type=float,
        default=None,
        help="section 3: padded audio per batch (default: the device's, 1 s on CPU, 160 s on GPU)",
    )
    parser.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "emopres-bench"))
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    args.worker_counts = [int(v) for v in args.worker_counts.split(",")]
    sections = set(args.only.split(","))

    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    print(
        f"emopres throughput, {datetime.datetime.now().isoformat(timespec='seconds')}; {cpu}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; torch {torch.__version__}, "
        f"CPU bf16: {', '.join(f'{k} {v}' for k, v in cpu_bf16_flags().items())}; cuda {torch.cuda.is_available()}"
    )
    print(
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; two CPU-bound processes get "
        f"{parallel_capacity():.2f} cores right now (2.00 on an idle 2-core machine)"
    )
    results: dict = {"date": datetime.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count()}

    spec = ProfileSpec("lite")
    head, head_path, head_note = bench_head(spec, args.head)
    if sections & {"cache", "workers", "service"}:
        print(f"lite SER head: {head_path}{head_note}; split {args.split!r} of {args.pairs_file}")
    if "cache" in sections:
        section_cache(args, spec, head, results)
    if "workers" in sections:
        section_workers(args, spec, head, results)
    if "paper" in sections:
        section_paper(args, results)
    if "service" in sections:
        section_service(args, head_path, results)
    print(f"\nload average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
