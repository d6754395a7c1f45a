"""What one audio decode bomb costs the API process (issue 16, point 1).

    python bench/decode_bomb.py [--seconds 599] [--rate 192000] [--channels 8]

Writes (once, cached in the temp folder) a FLAC of silence inside every cap of the default
settings (599 s, 8 channels, 192 kHz: under 1 MB, 3.7 GB once decoded as float32), then posts
it as the source of a one-pair job to an in-process gateway (embedded settings, no worker) and
prints the answer, how long the request took, and the process's peak RSS before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bomb(path: Path, seconds: float, rate: int, channels: int) -> bytes:
    if not path.is_file():
        block = np.zeros((rate, channels), np.float32)  # one second at a time: the writer never holds it all
        with soundfile.SoundFile(path.with_suffix(".tmp"), "w", rate, channels, format="FLAC") as out:
            for _ in range(int(seconds)):
                out.write(block)
        path.with_suffix(".tmp").rename(path)
    return path.read_bytes()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=599)
    parser.add_argument("--rate", type=int, default=192_000)
    parser.add_argument("--channels", type=int, default=8)
    args = parser.parse_args()
    from fastapi.testclient import TestClient

    from app.main import create_app
    from core.settings import Settings

    cache = Path(tempfile.gettempdir()) / f"emopres-bomb-{args.seconds:g}s-{args.rate}-{args.channels}.flac"
    data = bomb(cache, args.seconds, args.rate, args.channels)
    target = io.BytesIO()
    soundfile.write(target, np.zeros(16_000, np.float32), 16_000, format="WAV")
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(
            Settings(data_dir=folder, auth_disabled=True, database_url=None, broker_url=None), start_worker=False
        )
        with TestClient(app) as client:
            before = peak_rss_mib()
            started = time.perf_counter()
            response = client.post(
                "/v1/jobs",
                files=[
                    ("manifest", ("m.csv", b"pair_id,source,target\nbomb,s.flac,t.wav\n")),
                    ("s.flac", ("s.flac", data)),
                    ("t.wav", ("t.wav", target.getvalue())),
                ],
            )
            seconds = time.perf_counter() - started
            after = peak_rss_mib()
    answer = response.json()
    print(
        json.dumps(
            {
                "file_bytes": len(data),
                "declared": f"{args.seconds:g} s x {args.rate} Hz x {args.channels} ch",
                "status": response.status_code,
                "answer": answer.get("error", {}).get("message") or answer,
                "request_seconds": round(seconds, 2),
                "peak_rss_mib_before": round(before),
                "peak_rss_mib_after": round(after),
                "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
