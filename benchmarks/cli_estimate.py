"""How long `kubectl videoqueue list` spends estimating start times, by queue length.

.venv/bin/python -m benchmarks.cli_estimate [N ...]   (default: 100 1000 3000)

A queue of concurrency 10 and 64Gi with 10 running jobs and N waiting jobs of mixed
priorities; prints the seconds `estimate_queue` takes (no API calls are involved).
"""

from __future__ import annotations

import datetime
import sys
import time

from videoqueue.api import VideoJob, VideoQueue
from videoqueue.cli.estimate import RunTimes, estimate_queue

NOW = 1_800_000_000.0


def stamp(offset: float) -> str:
    moment = datetime.datetime.fromtimestamp(NOW + offset, datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def job(name: str, priority: int, created: float, running: bool = False) -> VideoJob:
    status = (
        {"phase": "Running", "startTime": stamp(-5), "admittedTime": stamp(-5)} if running else {}
    )
    return VideoJob.model_validate(
        {
            "metadata": {"name": name, "namespace": "bench", "creationTimestamp": stamp(created)},
            "spec": {"queueName": "q", "priority": priority, "type": "transcode",
                     "input": {"url": "file:///in"}, "resources": {"memory": "2Gi"}},
            "status": status,
        }
    )  # fmt: skip


def main(sizes: list[int]) -> None:
    queue = VideoQueue.model_validate(
        {"metadata": {"name": "q"}, "spec": {"concurrency": 10, "memory": {"budget": "64Gi"}}}
    )
    for n in sizes:
        jobs = [job(f"r{i}", 5, -1000, running=True) for i in range(10)]
        jobs += [job(f"p{i}", i % 11, -10_000 + i) for i in range(n)]
        started = time.perf_counter()
        rows = estimate_queue(queue, jobs, NOW, RunTimes(overall=60.0))
        took = time.perf_counter() - started
        estimated = sum(r.start is not None for r in rows if r.position)
        print(f"{n:>6} waiting jobs: {took:6.2f} s ({estimated} estimated)")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000, 3000])
