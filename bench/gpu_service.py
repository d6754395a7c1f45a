"""The service with one paper-profile worker on a GPU (issue 17): a job of --pairs pairs through
POST /v1/jobs of `emopres serve` (embedded, one evaluation process on --device), timed from
submission to report, with the GPU's memory and utilisation sampled by nvidia-smi meanwhile.

    python bench/gpu_service.py --pairs 200 --device cuda      # full-size random weights (~4 GB written once)
    python bench/gpu_service.py --pairs 3 --device cpu --tiny  # dry run (the test suite runs it via gpu.sh)

Models: the paper profile at the published sizes with random weights (bench/paper_models.py), written
once under --workdir as an EMOPRES_MODEL_DIR; a random SER head on its features. Audio: synthetic
speech-like utterances of 2-6 s (the speed does not depend on the content), every file distinct
and no feature cache, so every pair is computed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


class GpuSampler:
    """nvidia-smi every `period` s in a thread: peak memory used (MiB), mean and peak utilisation (%)."""

    def __init__(self, period: float = 0.5):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                used, util = (float(v) for v in out.stdout.splitlines()[0].split(","))
                self.samples.append((used, util))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def summary(self) -> str:
        if not self.samples:
            return "GPU memory/utilisation: not sampled (no nvidia-smi here)"
        used, util = np.array(self.samples).T
        return (
            f"GPU memory used peak {used.max():.0f} MiB; utilisation mean {util.mean():.0f}%, peak {util.max():.0f}% "
            f"({len(self.samples)} samples every {self.period:g} s)"
        )


def write_corpus(folder: Path, n_pairs: int, seed: int = 0) -> tuple[Path, float]:
    """`n_pairs` pairs of distinct synthetic utterances (2-6 s) and a manifest; returns (manifest, audio seconds)."""
    import csv

    import soundfile

    from tests.conftest import synthetic_speechlike

    rng = np.random.default_rng(seed)
    audio = folder / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    total, rows = 0.0, []
    for i in range(n_pairs):
        names = []
        for side in ("src", "tgt"):
            seconds = float(rng.uniform(2.0, 6.0))
            wave = synthetic_speechlike(seconds, seed=2 * i + (side == "tgt"), pitch=float(rng.uniform(100, 220)))
            name = f"{side}_{i:04d}.wav"
            soundfile.write(str(audio / name), wave, 16000)
            names.append(name)
            total += seconds
        rows.append([f"p{i:04d}", *names, "neutral"])
    manifest = folder / "pairs.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pair_id", "source", "target", "label"])
        writer.writerows(rows)
    return manifest, total


def paper_model_dir(workdir: Path, tiny: bool) -> Path:
    """The random-weight paper model folder (+ a random SER head in ser_head/), written once."""
    import torch
    from paper_models import emotion2vec_folder, full_size_models, write_model_dir

    root = workdir / ("paper_models_tiny" if tiny else "paper_models_full")
    if (root / "ser_head" / "head.json").is_file():
        return root
    started = time.perf_counter()
    torch.manual_seed(0)
    write_model_dir(root, full_size_models(tiny=tiny), emotion2vec_folder(workdir, tiny=tiny))
    from models.paper.emotion2vec import Emotion2Vec
    from models.ser.head import SerHead
    from tests.conftest import MELD_CLASSES

    dim = Emotion2Vec.from_pretrained(root / "emotion2vec_plus_large").embed_dim
    SerHead.new(dim, MELD_CLASSES, "emotion2vec-plus-large", metadata={"source": "random bench head"}).save(
        root / "ser_head"
    )
    print(
        f"wrote the {'tiny' if tiny else 'full-size'} random paper model folder {root} in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="32-wide models (a dry run, not for timing)")
    parser.add_argument("--fast", action="store_true", help="fast mode (it times fp32 against bf16 at start)")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the job")
    parser.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "emopres-bench"))
    args = parser.parse_args()

    from emopres_client.client import Client
    from tests.service_support import ServiceProcess, free_port, service_env, wait_http

    workdir = Path(args.workdir)
    model_dir = paper_model_dir(workdir, args.tiny)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest, audio_seconds = write_corpus(tmp / "corpus", args.pairs)
        port = free_port()
        server = ServiceProcess(
            ["serve", "--port", str(port), "--log-level", "warning"],
            service_env(
                data_dir=tmp / "service",
                auth_disabled=1,
                profile="paper",
                model_dir=model_dir,
                head=model_dir / "ser_head",
                device=args.device,
                fast=int(args.fast),
                embedded_jobs=1,
                no_cache=1,
                bootstrap=args.bootstrap,
            ),
            tmp / "service.log",
        )
        started = time.perf_counter()
        server.start()
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", server, timeout=240)
            ready = time.perf_counter() - started
            with Client(f"http://127.0.0.1:{port}") as client, GpuSampler() as gpu:
                begin = time.perf_counter()
                job = client.submit(manifest, audio_root=manifest.parent / "audio")
                view = client.wait(job["id"], poll=0.5, timeout=args.timeout)
                report = client.report(job["id"])
                seconds = time.perf_counter() - begin
        except Exception:
            print(server.tail())
            raise
        finally:
            server.stop()
    if view["status"] != "succeeded" or report["failures"]:
        raise SystemExit(f"service job {view['status']}: {report.get('failures', [])[:3]}")
    print(
        f"service, one paper worker on {args.device} ({'tiny' if args.tiny else 'full-size'} random weights, "
        f"{'fast' if args.fast else 'exact'} mode): {args.pairs} pairs, {audio_seconds:.0f} s of audio, "
        f"submission to report {seconds:.1f} s = {audio_seconds / seconds:.1f} audio-s/s, "
        f"{args.pairs / seconds:.2f} pairs/s (start to ready {ready:.0f} s, not timed); signature mode "
        f"{report['signature'].split('mode:')[1].split('|')[0]}"
    )
    print(f"  {gpu.summary()}")


if __name__ == "__main__":
    main()
