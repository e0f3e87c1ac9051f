"""Worker overhead: a worker transcode against the bare ffmpeg command it runs.

    PYTHONPATH=worker-image .venv/bin/python -m benchmarks.worker_overhead --repeat 5

Generates one input with lavfi (a 1080p test pattern with a tone, H.264/AAC), then times,
in alternating order so drifting machine load hits both alike:
- bare: `ffmpeg` with exactly the arguments the worker builds for the job (no -progress);
- worker: `python -m videoqueue_worker` with the job in VIDEOQUEUE_JOB as a pod gets it,
  publishing progress and heartbeats to a real redis-server (unless --no-redis): interpreter
  start, validation, ffprobe of input and output, progress parsing, result writing. Its
  bytecode is cached (PYTHONPYCACHEPREFIX), as it is compiled into the image.
Wall time and CPU time (user + system of the child processes) are both reported; the
overhead is the ratio of medians minus one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from videoqueue.envtest.worker import job_payload, make_media, redis_server, worker_env
from videoqueue_worker import jobs, media
from videoqueue_worker.params import parse_params


def _timed(run: Callable[[], None]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (default 5)")
    parser.add_argument("--seconds", type=float, default=30, help="input length (default 30)")
    parser.add_argument("--size", default="1920x1080", help="input size (default 1920x1080)")
    parser.add_argument("--params", default='{"preset": "h264-720p"}', help="transcode params")
    parser.add_argument("--no-redis", action="store_true", help="no progress publishing")
    args = parser.parse_args()
    # Stopped with SIGTERM: unwind, so redis-server and the temp dir go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="vq-bench-") as tmp_name:
        tmp = Path(tmp_name)
        source = make_media(tmp / "input.mp4", seconds=args.seconds, size=args.size, rate=30)
        params = json.loads(args.params)
        payload = job_payload("transcode", f"file://{source}", f"file://{tmp}/worker.mp4", params)
        parsed = parse_params("transcode", params)
        plan = jobs.plan(parsed, media.probe(source), source, tmp / "bare.mp4")
        bare_command = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats"]
        bare_command += plan.args
        (tmp / "work").mkdir()

        def bare() -> None:
            subprocess.run(bare_command, check=True)

        def worker(env: dict[str, str]) -> Callable[[], None]:
            def run() -> None:
                done = subprocess.run(
                    [sys.executable, "-m", "videoqueue_worker"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    raise SystemExit(f"worker failed: {done.stdout}{done.stderr}")

            return run

        def measure(redis_url: str | None) -> dict[str, list[tuple[float, float]]]:
            extra = {"VIDEOQUEUE_REDIS_URL": redis_url} if redis_url else {}
            env = worker_env(payload, tmp / "termination-log", tmp / "work", extra)
            # Bytecode cached as in the image (which compiles it at build time), even where
            # the shell sets PYTHONDONTWRITEBYTECODE: recompiling every start is not the
            # worker's cost in a pod.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
            runs: dict[str, list[tuple[float, float]]] = {"bare": [], "worker": []}
            # Warm the page cache, the libraries and the bytecode for both alike.
            bare()
            worker(env)()
            for i in range(args.repeat):
                order = [("bare", bare), ("worker", worker(env))]
                for name, run in order if i % 2 == 0 else reversed(order):
                    runs[name].append(_timed(run))
                    wall, cpu = runs[name][-1]
                    print(f"  run {i + 1} {name:6} wall {wall:6.2f}s cpu {cpu:6.2f}s", flush=True)
            return runs

        print(f"input {args.size} {args.seconds:g}s 30fps, params {args.params}")
        print(f"bare command: {' '.join(bare_command)}")
        if args.no_redis:
            runs = measure(None)
        else:
            with redis_server() as url:
                runs = measure(url)

    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    print()
    print(f"{'':8}{'median wall':>14}{'median cpu':>14}")
    for name in ("bare", "worker"):
        print(f"{name:8}{wall[name]:13.2f}s{cpu[name]:13.2f}s")
    wall_over = wall["worker"] / wall["bare"] - 1
    cpu_over = cpu["worker"] / cpu["bare"] - 1
    print(f"overhead  wall {wall_over:+.1%}  cpu {cpu_over:+.1%}  (target <= +5%)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
