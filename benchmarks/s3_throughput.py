"""Upload and download throughput of the worker's s3:// transfers against a real SeaweedFS
(`videoqueue.envtest.s3_server`) on loopback, next to a plain `cp` of the same file on the
same disk.

    PYTHONPATH=operator:worker-image .venv/bin/python -m benchmarks.s3_throughput --mb 200

The file is random bytes (nothing compresses it). Each transfer is timed as the worker runs
it: `videoqueue_worker.s3.upload` / `download` with the worker's settings (64 MiB multipart
threshold and parts, 4 requests at a time), the page cache warm for every contender alike.
Medians of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from videoqueue.envtest.s3_server import S3Server
from videoqueue_worker import s3 as worker_s3

MB = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200, help="file size in MB (10^6 bytes)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vq-s3-bench-"))
    try:
        source = work / "source.bin"
        with source.open("wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(MB))
        size = source.stat().st_size
        secret = work / "secret"
        with S3Server(work / "s3") as server:
            server.create_bucket("bench")
            server.admin.write_secret_dir(secret)
            settings = worker_s3.S3Settings(
                region="us-east-1",
                addressing_style="path",
                credentials_dir=secret,
                endpoint=server.endpoint,
            )
            obj = worker_s3.S3Object("bench", "source.bin")

            def noop(done: int, total: int | None) -> None:
                pass

            times: dict[str, list[float]] = {"cp": [], "upload": [], "download": []}
            for i in range(args.repeat):
                copy = work / f"copy-{i}.bin"
                started = time.perf_counter()
                subprocess.run(["cp", str(source), str(copy)], check=True)
                times["cp"].append(time.perf_counter() - started)
                copy.unlink()

                started = time.perf_counter()
                worker_s3.upload(
                    settings, source, obj, field="spec.output.url", timeout_seconds=3600,
                    on_progress=noop,
                )  # fmt: skip
                times["upload"].append(time.perf_counter() - started)

                dest = work / f"download-{i}.bin"
                started = time.perf_counter()
                worker_s3.download(
                    settings, obj, dest, field="spec.input.url", max_bytes=size,
                    timeout_seconds=3600, on_progress=noop,
                )  # fmt: skip
                times["download"].append(time.perf_counter() - started)
                assert dest.stat().st_size == size
                dest.unlink()
        print(f"{size / MB:.0f} MB, median of {args.repeat}")
        print(f"{'':10} {'seconds':>8} {'MB/s':>8}")
        for name, values in times.items():
            seconds = statistics.median(values)
            print(f"{name:10} {seconds:8.2f} {size / MB / seconds:8.0f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
