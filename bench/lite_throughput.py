"""Lite-profile throughput on the en-ja test split: per-stage cost and cold end-to-end pairs/s.

    python bench/lite_throughput.py [--split test] [--jobs 2] [--stage-files 30]

"Cold" means a fresh Evaluator (worker processes started inside the timing) and no feature cache.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from proc_accounting import Clock, Measured, peak_rss_mib  # noqa: E402

from core.audio import load_audio_file  # noqa: E402
from emopres_client.pairs import PairSpec  # noqa: E402
from models.lite.egemaps import Egemaps  # noqa: E402
from models.prosody.syllables import syllable_times  # noqa: E402
from models.prosody.vad import SileroVad  # noqa: E402
from models.registry import ProfileSpec, default_head_path, load_head, load_side_head  # noqa: E402
from models.runtime.threads import threads_per_worker  # noqa: E402
from worker.engine.pipeline import Evaluator  # noqa: E402
from worker.engine.report import report_for_evaluator  # noqa: E402
from worker.engine.side_reading import add_side_reading  # noqa: E402

DATA = Path(os.environ.get("EMOPRES_SHARED_DATA", REPO.parent / "shared" / "data"))


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def load_pairs(pairs_file: str, split: str, column: str = "target_preserved", limit: int = 0):
    """(pairs of one split with `column` as the target, resolve) from a file shaped like en-ja.csv, whose
    paths are relative to the data folder above pairs/ (data/pairs/en-ja.csv -> data/ravdess/...)."""
    rows = [r for r in csv.DictReader(open(pairs_file, newline="")) if r["split"] == split]
    rows = rows[:limit] if limit else rows
    pairs = [PairSpec(r["pair_id"], r["source"], r[column], r["emotion"]) for r in rows]
    root = audio_root(pairs_file)
    return pairs, lambda relative: str(root / relative)


def audio_root(pairs_file: str) -> Path:
    return Path(pairs_file).resolve().parent.parent


def bench_head(spec: ProfileSpec, path: str | None = None):
    """(head, its folder, a note): `path`, else the shipped head, else a random head (plumbing only: the
    throughput is the same, the predictions are meaningless)."""
    if path or (default_head_path(spec) / "head.json").is_file():
        folder = Path(path) if path else default_head_path(spec)
        return load_head(spec, folder), str(folder), ""
    from tests.conftest import write_random_lite_head

    folder = write_random_lite_head(Path(tempfile.mkdtemp(prefix="emopres-bench-head-")) / "random_lite")
    return load_head(spec, folder), str(folder), " (random weights: no shipped head here yet)"


def stage_costs(paths: list[str]) -> dict[str, float]:
    """Mean seconds per utterance of each stage, one process, one thread."""
    import torch

    torch.set_num_threads(1)
    egemaps, vad = Egemaps(), SileroVad()
    totals = {"decode": 0.0, "egemaps (functionals+LLD)": 0.0, "silero-vad": 0.0, "syllable nuclei": 0.0}
    audio_seconds = 0.0
    for path in paths:
        (wave, _), seconds = timed(load_audio_file, path)
        totals["decode"] += seconds
        totals["egemaps (functionals+LLD)"] += timed(egemaps.extract, wave)[1]
        totals["silero-vad"] += timed(vad.speech_segments, wave)[1]
        totals["syllable nuclei"] += timed(syllable_times, wave)[1]
        audio_seconds += len(wave) / 16_000
    costs = {name: total / len(paths) for name, total in totals.items()}
    costs["mean utterance seconds"] = audio_seconds / len(paths)
    return costs


# ---------------------------------------------------------------- bench/throughput.py sections 1-2: cache, workers
# (throughput.py imports these; they print and fill its results as they did there)


def worker_peaks(evaluator: Evaluator) -> list[float]:
    pool = evaluator._pool
    return [peak_rss_mib(pid) for pid in (pool._processes if pool else {})]


def warm_pool(evaluator: Evaluator) -> None:
    """Block until every worker process of the evaluator has loaded its models."""
    if evaluator._pool is not None:
        list(evaluator._pool.map(abs, range(4 * evaluator.n_jobs)))


def mib(values) -> str:
    return ", ".join(f"{v:.0f}" for v in values) + " MiB"


def evaluate_system(evaluator: Evaluator, pairs, resolve, bootstrap: int) -> dict:
    rows, failures = evaluator.evaluate_pairs(pairs, resolve)
    return report_for_evaluator(
        evaluator,
        rows=rows,
        failures=failures,
        pair_order=[p.pair_id for p in pairs],
        job={"id": "bench"},
        n_bootstrap=bootstrap,
        seed=12345,
        use_groups=False,
    )


def cache_entries(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*/*.npz"))


def audio_seconds(paths) -> dict[str, float]:
    import soundfile

    return {path: soundfile.info(path).duration for path in paths}


def section_cache(args, spec, head, results: dict) -> None:
    print(
        f"\n1. lite, cold vs warm source cache (one resident evaluator, {args.jobs} worker processes, one cache folder)"
    )
    systems = {
        c: load_pairs(args.pairs_file, args.split, c, args.cache_pairs) for c in ("target_preserved", "target_swapped")
    }
    with tempfile.TemporaryDirectory() as cache:
        with Evaluator(spec, head, n_jobs=args.jobs, cache_dir=cache) as evaluator:
            warm_pool(evaluator)
            runs, seen = [], set()
            for label, column in (
                ("cold: system A, empty cache", "target_preserved"),
                ("warm: system B, sources cached", "target_swapped"),
                ("hot: system B again, all cached", "target_swapped"),
            ):
                pairs, resolve = systems[column]
                files = list(dict.fromkeys(resolve(p) for pair in pairs for p in (pair.source, pair.target)))
                durations = audio_seconds(files)
                new_audio = sum(d for f, d in durations.items() if f not in seen)
                seen.update(files)
                before = cache_entries(Path(cache))
                with Clock() as clock:
                    report = evaluate_system(evaluator, pairs, resolve, args.bootstrap)
                computed = cache_entries(Path(cache)) - before
                assert not report["failures"], report["failures"][:3]
                m = clock.result
                runs.append((label, len(pairs), len(files), computed, new_audio, m))
                print(
                    f"  {label:33s} {len(pairs):3d} pairs, {computed:3d} of {len(files):3d} files "
                    f"({new_audio:5.0f} audio-s) computed: {m.seconds:6.2f} s = {len(pairs) / m.seconds:6.2f} pairs/s  "
                    f"{m.note()}",
                    flush=True,
                )
            peaks = worker_peaks(evaluator)
    cold, warm = runs[0], runs[1]
    ratio = (warm[1] / warm[5].seconds) / (cold[1] / cold[5].seconds)
    bound = (warm[1] / warm[4]) / (cold[1] / cold[4])  # pairs per audio-second computed, warm over cold
    print(
        f"  warm / cold = {ratio:.2f}x (goal >= 2x); audio computed per pair, cold / warm = {bound:.2f}x (what a "
        f"free cache hit would give if time followed audio length); a hit costs "
        f"{runs[2][5].seconds / runs[2][2] * 1000:.1f} ms/file (hot run, report included)"
    )
    print(f"  peak RSS per lite worker process: {mib(peaks)}")
    results["cache"] = {
        "runs": [
            {
                "label": r[0],
                "pairs": r[1],
                "files": r[2],
                "computed": r[3],
                "audio_s": r[4],
                "seconds": r[5].seconds,
                "load": r[5].load,
                "others": r[5].others,
            }
            for r in runs
        ],
        "ratio": ratio,
        "bound": bound,
        "worker_peak_mib": peaks,
    }


def section_workers(args, spec, head, results: dict) -> None:
    pairs, resolve = load_pairs(args.pairs_file, args.split, "target_preserved", args.pairs)
    files = len({resolve(p) for pair in pairs for p in (pair.source, pair.target)})
    print(
        f"\n2. lite, one worker process vs two (cold, no feature cache; {len(pairs)} pairs, {files} files; "
        f"{args.repeat} alternating run(s) each, the fastest kept)"
    )
    evaluators, starts = {}, {}
    for jobs in args.worker_counts:
        with Clock() as start:
            evaluators[jobs] = Evaluator(spec, head, n_jobs=jobs, cache_dir=None)
            warm_pool(evaluators[jobs])
        starts[jobs] = start.result
    best: dict[int, Measured] = {}
    rounds: dict[int, list[float]] = {jobs: [] for jobs in evaluators}
    try:
        for _ in range(args.repeat):
            for jobs, evaluator in evaluators.items():
                with Clock() as clock:
                    report = evaluate_system(evaluator, pairs, resolve, args.bootstrap)
                assert not report["failures"], report["failures"][:3]
                rounds[jobs].append(clock.result.seconds)
                if jobs not in best or clock.result.seconds < best[jobs].seconds:
                    best[jobs] = clock.result
        peaks = {jobs: worker_peaks(ev) if jobs > 1 else [peak_rss_mib()] for jobs, ev in evaluators.items()}
    finally:
        for evaluator in evaluators.values():
            evaluator.close()
    for jobs, m in best.items():
        where = "pool processes" if jobs > 1 else "in-process: this benchmark's own process"
        print(
            f"  {jobs} process{'es' if jobs > 1 else '  '}  start-up {starts[jobs].seconds:5.2f} s, "
            f"{m.seconds:6.2f} s = {len(pairs) / m.seconds:5.2f} pairs/s, {m.own_cpu / files * 1000:4.0f} CPU-ms/file  "
            f"{m.note()}  peak RSS {mib(peaks[jobs])} ({where})",
            flush=True,
        )
    one, two = best.get(1), best.get(2)
    if one and two:
        ratio = one.seconds / two.seconds
        spread = [a / b for a, b in zip(rounds[1], rounds[2], strict=True)]
        print(
            f"  two / one = {ratio:.2f}x (goal >= 1.8x; rounds {min(spread):.2f}-{max(spread):.2f}x); CPU per file "
            f"two / one = {two.own_cpu / one.own_cpu:.2f} (above 1: the processes slow each other down); threads "
            f"per process: {threads_per_worker(1)} alone, {threads_per_worker(2)} each of two "
            "(models/runtime/threads.py)"
        )
        results["workers_pairs"] = args.pairs
        results["workers"] = {
            "ratio": ratio,
            "rounds": spread,
            **{
                str(k): {
                    "seconds": v.seconds,
                    "load": v.load,
                    "others": v.others,
                    "cpu_ms_per_file": v.own_cpu / files * 1000,
                    "startup_s": starts[k].seconds,
                    "peak_mib": peaks[k],
                }
                for k, v in best.items()
            },
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default=str(DATA / "pairs" / "en-ja.csv"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--stage-files", type=int, default=30)
    parser.add_argument("--head", default=None, help="SER head folder (default: the shipped head, else a random one)")
    args = parser.parse_args()

    pairs, resolve = load_pairs(args.pairs, args.split)
    files = list(dict.fromkeys(resolve(p) for pair in pairs for p in (pair.source, pair.target)))

    print(
        f"lite profile, {len(pairs)} pairs ({len(files)} distinct files) of split {args.split!r}, "
        f"{os.cpu_count()} cores, jobs={args.jobs}"
    )
    print("\nper-stage cost, one process (ms per utterance):")
    costs = stage_costs(files[: args.stage_files])
    for name, value in costs.items():
        print(f"  {name:<28}{value * 1000:9.1f}" if name != "mean utterance seconds" else f"  {name:<28}{value:9.2f} s")

    spec = ProfileSpec("lite")
    head, head_path, head_note = bench_head(spec, args.head)
    side_head = load_side_head(spec, None, head)
    print(f"\nSER head: {head_path}{head_note}; side head: {side_head and side_head.sha256()[:12]}")
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        evaluator = Evaluator(spec, head, n_jobs=args.jobs, cache_dir=cache, side_head=side_head)
        started = time.perf_counter()
        utterances = evaluator.analyze_files([resolve(p) for pair in pairs for p in (pair.source, pair.target)])
        analysed = time.perf_counter()
        rows_out, failures = evaluator.evaluate_pairs(pairs, resolve, utterances=utterances)
        paired = time.perf_counter()
        report_for_evaluator(
            evaluator,
            rows=rows_out,
            failures=failures,
            pair_order=[p.pair_id for p in pairs],
            job={"id": "bench"},
            n_bootstrap=1000,
            seed=12345,
            use_groups=False,
        )
        done = time.perf_counter()
        _, side_seconds = timed(add_side_reading, rows_out, side_head)  # its share of the report step
        evaluator.close()
        warm_start = time.perf_counter()
        with Evaluator(spec, head, n_jobs=1, cache_dir=cache) as warm:
            warm.evaluate_pairs(pairs, resolve)
        warm_seconds = time.perf_counter() - warm_start

    total = done - start
    print("\ncold end to end (no feature cache, worker start-up included):")
    print(f"  start-up (models, {args.jobs} processes)  {started - start:7.2f} s")
    print(
        f"  decode + features + prosody    {analysed - started:7.2f} s  "
        f"({len(files) / (analysed - started):.1f} files/s)"
    )
    print(f"  SER + pair metrics             {paired - analysed:7.2f} s")
    print(f"  corpus metrics + 1000 bootstrap{done - paired:7.2f} s  (of which the side reading {side_seconds:.2f} s)")
    print(
        f"  total                          {total:7.2f} s  -> {len(pairs) / total:.2f} pairs/s "
        f"({len(pairs) - len({f['pair_id'] for f in failures})} pairs ok)"
    )
    print(
        f"\nwarm feature cache, one process: {warm_seconds:.2f} s -> {len(pairs) / warm_seconds:.1f} pairs/s "
        f"({total / warm_seconds:.1f}x cold)"
    )


if __name__ == "__main__":
    main()
