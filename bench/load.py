"""Load on the running service: N concurrent CI clients submitting small jobs and polling them.

    python bench/load.py                       # starts `emopres serve` itself (127.0.0.1, temp data dir)
    python bench/load.py --clients 50 --pairs 1000 --pairs-per-job 4 --time-limit 3600
    python bench/load.py --server http://127.0.0.1:8000 --token emopres_...   # a service already running
    python bench/load.py --mode burst --submit-only --s3-moto  # audio in a bucket of moto's S3 server (started here)

Each client is a CI runner with its own connections and its share of the jobs (multipart: manifest
+ distinct synthetic audio, so the feature cache never helps; an Idempotency-Key per job, kept on
retries). --mode ci (default): submit a job, poll it (GET /v1/jobs/{id}) until it finishes, check
its report, submit the next. --mode burst: every client sends all its jobs at once, then polls.
Each finished job's report must hold every accepted pair exactly once in `pairs` or `failures`.
Submit latency (POST to 202) is measured apart from completion: evaluation is CPU-bound, and
pairs/s is the server's evaluation throughput. --submit-only measures a burst of submissions alone.

Prints: accepted, refused, completed, failed, lost (accepted pairs missing from finished reports or
from the service: must be 0), pending at the time limit, p50/p99 submit latency, poll latency, pairs/s, and the
CPU used from the first submission to the last answer (Linux): by the clients, by the server this script started
(its API process; its other processes apart) and by the whole machine (the database, anything else running).
Only loopback addresses are accepted: this is a bench, not a load generator for other people's hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from service_bench import MotoBucket, Server, check_loopback, cpu_seconds

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16_000


# ---------------------------------------------------------------- audio


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Voiced syllable-like bursts with pauses (as tests/conftest.py's synthetic_speechlike); distinct per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = rng.uniform(100, 220)
    tone = sum(np.sin(2 * np.pi * pitch * k * t * (1 + 0.05 * np.sin(2 * np.pi * 0.5 * t))) / k for k in range(1, 6))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t), 0, None) ** 2
    words = (np.sin(2 * np.pi * 0.6 * t + rng.uniform(0, 6)) > -0.3).astype(float)
    return (0.3 * tone * syllables * words + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def wav(seconds: float, seed: int) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, speechlike(seconds, seed), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@dataclass
class JobSpec:
    index: int
    pair_ids: list[str]
    fields: list  # multipart fields
    body: bytes = b""  # the multipart request, encoded once before the clock starts (encode_bodies)
    content_type: str = ""


def encode_bodies(jobs: list[JobSpec]) -> None:
    """Encode every job's multipart request once, before the burst: a CI runner builds its request on its own
    machine, so the clients here (sharing the server's two cores) only send bytes and read answers, and the
    CPU the server needs per submission is what the latency measures."""
    import httpx

    for job in jobs:
        request = httpx.Request("POST", "http://bench/v1/jobs", files=job.fields, data={"name": "load-bench"})
        job.body, job.content_type = request.read(), request.headers["content-type"]


def real_pairs(path: Path, n_pairs: int) -> list[tuple[str, bytes, str, bytes]]:
    """The first n_pairs (source, target_preserved) of a pairs file of shared/data/pairs (real speech, FLAC), as
    (name, bytes) twice; paths there are relative to the data folder above pairs/."""
    import csv

    root = path.resolve().parent.parent
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:n_pairs]
    if len(rows) < n_pairs:
        raise SystemExit(f"{path} has only {len(rows)} pairs, --pairs asks for {n_pairs}")
    return [
        (
            Path(r["source"]).name,
            (root / r["source"]).read_bytes(),
            Path(r["target_preserved"]).name,
            (root / r["target_preserved"]).read_bytes(),
        )
        for r in rows
    ]


def make_jobs(n_pairs: int, per_job: int, seconds: float, seed: int, real: Path | None = None) -> list[JobSpec]:
    """Small jobs with distinct audio (no help from the feature cache: every utterance is new), synthetic, or
    real speech from `real` (a pairs file of shared/data)."""
    if real is not None:
        return _real_jobs(real_pairs(real, n_pairs), per_job)
    jobs = []
    for index, start in enumerate(range(0, n_pairs, per_job)):
        ids = [f"j{index}-p{i}" for i in range(min(per_job, n_pairs - start))]
        rows, fields = ["pair_id,source,target"], []
        for i, pair_id in enumerate(ids):
            k = seed + 2 * (start + i)
            rows.append(f"{pair_id},src{i}.wav,tgt{i}.wav")
            fields += [
                (f"src{i}.wav", (f"src{i}.wav", wav(seconds, k), "audio/wav")),
                (f"tgt{i}.wav", (f"tgt{i}.wav", wav(seconds * 1.1, k + 1), "audio/wav")),
            ]
        manifest = ("\n".join(rows) + "\n").encode()
        jobs.append(JobSpec(index, ids, [("manifest", ("manifest.csv", manifest, "text/csv"))] + fields))
    return jobs


def _real_jobs(pairs: list[tuple[str, bytes, str, bytes]], per_job: int) -> list[JobSpec]:
    jobs = []
    for index, start in enumerate(range(0, len(pairs), per_job)):
        chunk = pairs[start : start + per_job]
        ids = [f"j{index}-p{i}" for i in range(len(chunk))]
        rows, fields = ["pair_id,source,target"], []
        for i, (pair_id, (_, source, _, target)) in enumerate(zip(ids, chunk, strict=True)):
            rows.append(f"{pair_id},src{i}.flac,tgt{i}.flac")
            fields += [
                (f"src{i}.flac", (f"src{i}.flac", source, "audio/flac")),
                (f"tgt{i}.flac", (f"tgt{i}.flac", target, "audio/flac")),
            ]
        manifest = ("\n".join(rows) + "\n").encode()
        jobs.append(JobSpec(index, ids, [("manifest", ("manifest.csv", manifest, "text/csv"))] + fields))
    return jobs


# ---------------------------------------------------------------- clients


@dataclass
class Stats:
    submit_latency: list[float] = field(default_factory=list)
    poll_latency: list[float] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # status: message
    errors: list[str] = field(default_factory=list)  # transport errors, unexpected answers
    accepted: dict[str, JobSpec] = field(default_factory=dict)  # job id -> spec
    finished: dict[str, dict] = field(default_factory=dict)  # job id -> final job view
    lost: list[str] = field(default_factory=list)
    pairs_ok: int = 0
    pairs_failed: int = 0
    first_submit: float = 0.0
    last_submit: float = 0.0
    last_finish: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # from the first submission to the last answer


async def submit(client, job: JobSpec, stats: Stats, retries: int = 3) -> str | None:
    key = f"load-{uuid.uuid4().hex}"  # one per job: a retried POST never makes a second job
    for attempt in range(retries):
        started = time.perf_counter()
        try:
            response = await client.post(
                "/v1/jobs", content=job.body, headers={"Idempotency-Key": key, "Content-Type": job.content_type}
            )
        except Exception as error:  # timeout, reset: retry with the same key
            stats.errors.append(f"submit job {job.index} attempt {attempt + 1}: {type(error).__name__}: {error}")
            await asyncio.sleep(1 + attempt)
            continue
        elapsed = time.perf_counter() - started
        stats.last_submit = time.monotonic()
        if response.status_code == 202:
            stats.submit_latency.append(elapsed)
            return response.json()["id"]
        if response.status_code in (429, 503):
            await asyncio.sleep(float(response.headers.get("retry-after", "2")))
            continue
        stats.refused.append(f"{response.status_code}: {response.text[:200]}")
        return None
    return None


async def poll_until_done(client, job_id: str, stats: Stats, interval: float, deadline: float) -> None:
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            response = await client.get(f"/v1/jobs/{job_id}")
        except Exception as error:
            stats.errors.append(f"poll {job_id}: {type(error).__name__}: {error}")
            await asyncio.sleep(interval)
            continue
        stats.poll_latency.append(time.perf_counter() - started)
        if response.status_code == 404:
            stats.lost += stats.accepted[job_id].pair_ids  # accepted, then gone
            return
        if response.status_code == 200 and response.json()["status"] in ("succeeded", "failed"):
            stats.finished[job_id] = response.json()
            stats.last_finish = time.monotonic()
            await check_report(client, job_id, stats)
            return
        await asyncio.sleep(interval)


async def check_report(client, job_id: str, stats: Stats) -> None:
    expected = stats.accepted[job_id].pair_ids
    response = await client.get(f"/v1/jobs/{job_id}/report")
    if response.status_code != 200:  # a job failed before any report: every pair is in the job's failures
        view = stats.finished[job_id]
        seen = {f["pair_id"] for f in view.get("failures", [])}
        stats.pairs_failed += len(seen & set(expected))
        stats.lost += [p for p in expected if p not in seen]
        return
    report = response.json()
    ok = [p["pair_id"] for p in report["pairs"]]
    failed = list(dict.fromkeys(f["pair_id"] for f in report["failures"]))
    counted = ok + failed
    stats.pairs_ok += len(ok)
    stats.pairs_failed += len(failed)
    stats.lost += [p for p in expected if p not in counted]
    if len(counted) != len(set(counted)) or set(counted) - set(expected):
        stats.errors.append(f"job {job_id}: pairs counted twice or unknown: {sorted(counted)}")


async def ci_client(
    base_url: str,
    token: str | None,
    jobs: list[JobSpec],
    stats: Stats,
    interval: float,
    deadline: float,
    start: asyncio.Event,
    submitted: asyncio.Queue,
    mode: str,
    submit_only: bool = False,
    delay: float = 0.0,
) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        await start.wait()
        await asyncio.sleep(delay)
        if mode == "ci":  # a CI runner: submit, poll until done, then the next run submits
            for job in jobs:
                job_id = await submit(client, job, stats)
                if job_id:
                    stats.accepted[job_id] = job
                    await poll_until_done(client, job_id, stats, interval, deadline)
                if time.monotonic() > deadline:
                    break
            await submitted.put(0)
            return
        ids = []  # burst: every job of every client sent at once, then polled
        for job in jobs:
            job_id = await submit(client, job, stats)
            if job_id:
                stats.accepted[job_id] = job
                ids.append(job_id)
        await submitted.put(len(ids))
        if submit_only:
            return
        for job_id in ids:
            await poll_until_done(client, job_id, stats, interval, deadline)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def run(args, base_url: str, server: Server | None = None) -> Stats:
    print(
        f"preparing {args.pairs} pairs in jobs of {args.pairs_per_job} ({args.seconds:g} s utterances) ...", flush=True
    )
    jobs = make_jobs(
        args.pairs, args.pairs_per_job, args.seconds, args.seed, Path(args.real_pairs) if args.real_pairs else None
    )
    encode_bodies(jobs)
    shares = [jobs[i :: args.clients] for i in range(args.clients)]
    stats = Stats()
    start, submitted = asyncio.Event(), asyncio.Queue()
    deadline = time.monotonic() + args.time_limit
    tasks = [
        asyncio.create_task(
            ci_client(
                base_url,
                args.token,
                share,
                stats,
                args.poll_interval,
                deadline,
                start,
                submitted,
                args.mode,
                args.submit_only,
                args.ramp * i / args.clients,
            )
        )
        for i, share in enumerate(shares)
        if share
    ]
    await asyncio.sleep(0.5)  # every client connected and waiting
    stats.first_submit, cpu_before = time.monotonic(), cpu_seconds(server)
    start.set()
    progress = asyncio.create_task(report_progress(stats, args.pairs))
    if args.mode == "burst":
        for _ in tasks:
            await submitted.get()
        print(
            f"submitted: {len(stats.accepted)} jobs accepted in {stats.last_submit - stats.first_submit:.1f} s; "
            f"waiting for completion (limit {args.time_limit:g} s) ...",
            flush=True,
        )
    await asyncio.gather(*tasks)
    stats.cpu_seconds = {key: value - cpu_before[key] for key, value in cpu_seconds(server).items()}
    progress.cancel()
    return stats


async def report_progress(stats: Stats, total: int) -> None:
    while True:
        await asyncio.sleep(30)
        done = sum(len(stats.accepted[j].pair_ids) for j in stats.finished)
        elapsed = time.monotonic() - stats.first_submit
        print(
            f"  {elapsed:6.0f} s: {len(stats.finished)}/{len(stats.accepted)} jobs, {done}/{total} pairs finished"
            f"  (load average {os.getloadavg()[0]:.2f})",
            flush=True,
        )


def summary(args, stats: Stats, load_before, load_after) -> dict:
    accepted_pairs = sum(len(j.pair_ids) for j in stats.accepted.values())
    pending = sum(len(stats.accepted[j].pair_ids) for j in stats.accepted if j not in stats.finished)
    span = (stats.last_finish or time.monotonic()) - stats.first_submit
    completed = stats.pairs_ok + stats.pairs_failed
    return {
        "mode": args.mode,
        "ramp_seconds": args.ramp,
        "clients": args.clients,
        "pairs": args.pairs,
        "pairs_per_job": args.pairs_per_job,
        "utterance_seconds": args.seconds,
        "audio": args.real_pairs or "synthetic",
        "blob_store": "s3 (moto server)" if args.s3_moto else "as --set or the default",
        "jobs_accepted": len(stats.accepted),
        "pairs_accepted": accepted_pairs,
        "jobs_refused": len(stats.refused),
        "pairs_completed": completed,
        "pairs_ok": stats.pairs_ok,
        "pairs_failed": stats.pairs_failed,
        "lost": len(stats.lost),
        "pending_at_limit": pending,
        "transport_errors": len(stats.errors),
        "submit_seconds": round(stats.last_submit - stats.first_submit, 2),
        "submit_latency_p50_s": round(percentile(stats.submit_latency, 50), 3),
        "submit_latency_p99_s": round(percentile(stats.submit_latency, 99), 3),
        "submit_latency_max_s": round(max(stats.submit_latency, default=float("nan")), 3),
        "poll_latency_p50_s": round(percentile(stats.poll_latency, 50), 3),
        "poll_latency_p99_s": round(percentile(stats.poll_latency, 99), 3),
        "completion_seconds": round(span, 1),
        "pairs_per_second": round(completed / span, 3) if span > 0 else None,
        **{key: round(value, 2) for key, value in stats.cpu_seconds.items()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
        "machine": f"{platform.machine()} {platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="URL of a running service (loopback only); default: start one")
    parser.add_argument("--token", default=os.environ.get("EMOPRES_TOKEN"), help="bearer token for --server")
    parser.add_argument("--head", help="SER head folder for the started server (default: shipped, else random)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="EMOPRES_KEY=VALUE for the started server, e.g. --set embedded_jobs=2",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes of the started server (`serve --workers`; needs a broker: --set broker_url=...)",
    )
    parser.add_argument(
        "--s3-moto",
        action="store_true",
        help="the started server stores audio in a bucket of moto's S3 server, started here on loopback",
    )
    parser.add_argument(
        "--mode",
        choices=("ci", "burst"),
        default="ci",
        help="ci: each client submits a job, polls it to the end, submits the next; "
        "burst: every client sends all its jobs at once, then polls",
    )
    parser.add_argument(
        "--submit-only",
        action="store_true",
        help="burst: measure the submissions only (no polling; completion and loss not checked)",
    )
    parser.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        help="clients start evenly over this many seconds (0: all at the same instant)",
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=1000, help="pairs in all")
    parser.add_argument("--pairs-per-job", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each source utterance")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--time-limit", type=float, default=3600.0, help="seconds after the first submission")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument(
        "--real-pairs",
        metavar="CSV",
        help="real speech instead of synthetic: the first --pairs (source, target_preserved) of a "
        "shared/data pairs file, e.g. ../shared/data/pairs/en-ja.csv",
    )
    parser.add_argument("--json", help="write the summary here too")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.pairs < 1 or args.pairs_per_job < 1:
        parser.error("--clients, --pairs and --pairs-per-job must be positive")
    if args.submit_only:
        args.mode = "burst"

    server = bucket = None
    workdir = Path(tempfile.mkdtemp(prefix="emopres-load-"))
    try:
        if args.server:
            check_loopback(args.server)
            base_url = args.server.rstrip("/")
        else:
            overrides = dict(item.split("=", 1) for item in args.set)
            if args.s3_moto:
                bucket = MotoBucket(workdir)
                overrides.update(bucket.overrides)
            server = Server(workdir, args.head, overrides, args.workers)
            base_url = server.url
            print(f"started emopres serve at {base_url} (data in {workdir}); waiting for its models ...", flush=True)
            server.wait_ready(path="/healthz" if args.submit_only else "/readyz")  # submissions need no worker
        load_before = os.getloadavg()
        stats = asyncio.run(run(args, base_url, server))
        result = summary(args, stats, load_before, os.getloadavg())
    finally:
        if server is not None:
            server.stop()
        if bucket is not None:
            bucket.stop()
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    for line in stats.refused[:5] + stats.errors[:5]:
        print("  !", line)
    if stats.lost:
        print(f"LOST pairs: {stats.lost[:20]}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 1 if stats.lost or stats.refused else 0


if __name__ == "__main__":
    sys.exit(main())
