"""`emopres serve` as the benchmarks start it: bench/load.py's server (a started `emopres serve` on a free
loopback port with a temporary data folder, its CPU accounting, the loopback check of --server) and section 4
of bench/throughput.py (the same corpus through POST /v1/jobs vs `emopres evaluate`). Not a script."""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from proc_accounting import Clock, cmdline, descendants, peak_rss_mib, session_cpu_seconds, system_busy_seconds

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- bench/load.py: the server


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"refusing {url}: only loopback addresses (127.0.0.0/8, ::1, localhost)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def random_head(folder: Path) -> Path:
    """A random-weight lite head, when the shipped one is absent (throughput is the same; predictions are noise)."""
    import torch

    from models.ser.head import SerHead

    torch.manual_seed(0)
    classes = ["neutral", "joy", "sadness", "anger", "fear", "disgust", "surprise"]
    return SerHead.new(88, classes, "egemaps-v02", metadata={"source": "bench/load.py random head"}).save(folder)


class Server:
    """`emopres serve` on a free loopback port with a temporary data folder (auth disabled)."""

    def __init__(self, workdir: Path, head: str | None, env_overrides: dict[str, str], workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMOPRES_")}
        env.update({"EMOPRES_DATA_DIR": str(workdir / "data"), "EMOPRES_AUTH_DISABLED": "1", "PYTHONUNBUFFERED": "1"})
        if head:
            env["EMOPRES_HEAD"] = head
        else:
            sys.path.insert(0, str(REPO))
            from models.registry import ProfileSpec, default_head_path

            if not (default_head_path(ProfileSpec("lite")) / "head.json").is_file():
                env["EMOPRES_HEAD"] = str(random_head(workdir / "head"))
                print("note: no shipped lite head; a random head is used (same cost, meaningless predictions)")
        env.update({f"EMOPRES_{k.upper()}": v for k, v in env_overrides.items()})
        self.env = env
        emopres = Path(sys.executable).parent / "emopres"
        command = [str(emopres)] if emopres.exists() else [sys.executable, "-m", "cli.main"]
        with open(self.log, "ab") as handle:
            self.process = subprocess.Popen(
                command
                + [
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    "--workers",
                    str(workers),
                ],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 180, path: str = "/readyz") -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"emopres serve exited:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"emopres serve not ready after {timeout} s:\n{self.tail()}")

    def cpu_seconds(self) -> dict[str, float]:
        return session_cpu_seconds(self.process.pid)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class MotoBucket:
    """A bucket on moto's S3 server (`python -m moto.server`, pip install 'moto[server]') started on a free loopback
    port: the started server's audio store with --s3-moto (EMOPRES_BLOB_STORE=s3). Its credentials are put in this
    process's environment, which the started server inherits."""

    CREDENTIALS = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }

    def __init__(self, workdir: Path) -> None:
        import boto3

        os.environ.update(self.CREDENTIALS)
        self.url = f"http://127.0.0.1:{free_port()}"
        with open(workdir / "moto.log", "ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", self.url.rsplit(":", 1)[1]],
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = boto3.client("s3", endpoint_url=self.url)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket="emopres-bench")
                break
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"moto server did not start (see {workdir / 'moto.log'})") from None
                time.sleep(0.3)
        self.overrides = {"blob_store": "s3", "s3_bucket": "emopres-bench", "s3_endpoint_url": self.url}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def cpu_seconds(server: Server | None) -> dict[str, float]:
    """CPU used so far: by this process (the clients), by the server started here, and by the whole machine (busy
    time of all cores, /proc/stat: the server, its database, the clients and anything else running)."""
    used = {"client_cpu_seconds": time.process_time()}
    if server is not None:
        used.update(server.cpu_seconds())
    try:
        used["machine_busy_cpu_seconds"] = system_busy_seconds()
    except OSError:
        pass
    return used


# ---------------------------------------------------------------- bench/throughput.py section 4: service vs CLI


def write_manifest(folder: Path, pairs) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "pairs.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pair_id", "source", "target", "label"])
        writer.writerows([p.pair_id, p.source, p.target, p.label] for p in pairs)
    return path


def time_report_page(url: str, job_id: str, views: int = 4) -> list[float]:
    """Seconds of each GET report.html of a job, in order: the first draws the page, the rest read it stored."""
    import httpx

    seconds = []
    for _ in range(views):
        started = time.perf_counter()
        response = httpx.get(f"{url}/v1/jobs/{job_id}/report.html", timeout=600)
        response.raise_for_status()
        seconds.append(time.perf_counter() - started)
    return seconds


def section_service(args, head_path: str, results: dict) -> None:
    from lite_throughput import audio_root, load_pairs, mib

    from emopres_client.client import Client
    from tests.service_support import ServiceProcess, comparable, service_env, wait_http
    from tests.service_support import free_port as service_port

    pairs, resolve = load_pairs(args.pairs_file, args.split, "target_preserved", args.pairs)
    root = audio_root(args.pairs_file)
    print(
        f"\n4. service overhead: {len(pairs)} pairs through POST /v1/jobs (`emopres serve`, embedded, "
        f"{args.jobs} evaluation processes) vs `emopres evaluate --jobs {args.jobs}`; no feature cache, "
        f"{args.bootstrap} bootstrap resamples, both as subprocesses; {args.repeat} alternating run(s) each, "
        "the fastest kept",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = write_manifest(tmp, pairs)
        emopres = Path(sys.executable).parent / "emopres"
        command = [str(emopres)] if emopres.exists() else [sys.executable, "-m", "cli.main"]
        port = service_port()
        server = ServiceProcess(
            ["serve", "--port", str(port), "--log-level", "warning"],
            service_env(
                data_dir=tmp / "service",
                auth_disabled=1,
                head=head_path,
                embedded_jobs=args.jobs,
                no_cache=1,
                bootstrap=args.bootstrap,
            ),
            tmp / "service.log",
        )
        started = time.perf_counter()
        server.start()
        cli = service = None
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", server, timeout=180)
            ready = time.perf_counter() - started
            with Client(f"http://127.0.0.1:{port}") as client:
                warm = client.submit(write_manifest(tmp / "warm", pairs[:1]), audio_root=root)  # a live server is warm
                client.wait(warm["id"], poll=0.2)
                for _ in range(args.repeat):
                    with Clock() as clock:
                        done = subprocess.run(
                            command
                            + [
                                "evaluate",
                                str(manifest),
                                "--audio-root",
                                str(root),
                                "--out",
                                str(tmp / "cli.json"),
                                "--head",
                                head_path,
                                "--jobs",
                                str(args.jobs),
                                "--no-cache",
                                "--bootstrap",
                                str(args.bootstrap),
                            ],
                            env=service_env(),
                            cwd=REPO,
                            capture_output=True,
                            text=True,
                        )
                    if done.returncode != 0:
                        raise RuntimeError(f"emopres evaluate failed:\n{done.stderr[-2000:]}")
                    cli = clock.result if cli is None or clock.result.seconds < cli.seconds else cli
                    with Clock() as clock:
                        job = client.submit(manifest, audio_root=root)
                        view = client.wait(job["id"], poll=0.2)
                        report = client.report(job["id"])
                    if view["status"] != "succeeded" or report["failures"]:
                        raise RuntimeError(f"service job {view['status']}: {report.get('failures', [])[:3]}")
                    service = clock.result if service is None or clock.result.seconds < service.seconds else service
                page_views = time_report_page(f"http://127.0.0.1:{port}", job["id"])
            workers = [pid for pid in descendants(server.process.pid) if b"resource_tracker" not in cmdline(pid)]
            peaks = [peak_rss_mib(pid) for pid in (server.process.pid, *workers)]
        except Exception:
            print(server.tail())
            raise
        finally:
            server.stop()
        same = comparable(report) == comparable(json.loads((tmp / "cli.json").read_text()))
    slower = service.seconds / cli.seconds - 1
    print(
        f"  emopres evaluate (process start, models, {args.jobs} processes, evaluation, report): "
        f"{cli.seconds:6.2f} s = {len(pairs) / cli.seconds:5.2f} pairs/s  {cli.note()}"
    )
    print(
        f"  POST /v1/jobs -> report (upload, queue, chunks of pairs, report): "
        f"{service.seconds:6.2f} s = {len(pairs) / service.seconds:5.2f} pairs/s  {service.note()}"
    )
    print(
        f"  service vs emopres evaluate: {slower * 100:+.1f}% time (goal: under +10%); the reports are "
        f"{'identical' if same else 'DIFFERENT'} (job block aside)"
    )
    resident = results.get("workers", {}).get(str(args.jobs))
    if resident and args.pairs == results.get("workers_pairs"):
        print(
            f"  service vs the resident pipeline of section 2 ({args.jobs} processes, no process start): "
            f"{(service.seconds / resident['seconds'] - 1) * 100:+.1f}% time"
        )
    print(f"  service start to ready (models resident, not in the timing): {ready:.1f} s")
    print(
        f"  report.html of the last job (worst 10 pairs with audio): first view {page_views[0]:.2f} s (drawn), "
        f"then {', '.join(f'{t:.3f}' for t in page_views[1:])} s (the stored page)"
    )
    print(
        f"  peak RSS: server process {peaks[0]:.0f} MiB (API + embedded queue + parent evaluator), "
        f"evaluation processes {mib(peaks[1:])}"
    )
    results["service"] = {
        "cli_seconds": cli.seconds,
        "service_seconds": service.seconds,
        "slower": slower,
        "same_report": same,
        "ready_seconds": ready,
        "report_page_seconds": page_views,
        "peaks_mib": peaks,
        "load": service.load,
        "others": service.others,
        "cli_load": cli.load,
        "cli_others": cli.others,
    }
