"""Peak memory of real worker runs per job type and params: what the learned memory sizing's
key is chosen from (docs/queues.md, "Memory sizing").

    PYTHONPATH=operator:worker-image:. .venv/bin/python -m benchmarks.worker_memory

Generates test clips with lavfi (1080p, 720p and 480p test patterns with a tone, H.264/AAC,
--seconds long), then runs `python -m videoqueue_worker` once per case as a pod runs it, each
in a fresh cgroup v1 memory sub-group made under the caller's own memory cgroup, and reports
- cgroup: the sub-group's memory.max_usage_in_bytes (what the worker reports as
  peakMemoryBytes on a node: every process of the attempt plus the page cache it wrote);
- rss: the largest single process's peak resident set (RUSAGE_CHILDREN ru_maxrss of a fresh
  wrapper process), for hosts without a writable cgroup.
Figures in MiB, the median of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from videoqueue.envtest.worker import TEST_FILE_ROOT, job_payload, make_media, worker_env

MIB = 1 << 20
INPUTS = {"1080p": "1920x1080", "720p": "1280x720", "480p": "854x480"}
# (name, job type, input, params)
CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("probe", "probe", "1080p", {}),
    ("thumbnail", "thumbnail", "1080p", {}),
    ("thumbnail sprite x16", "thumbnail", "1080p", {"count": 16, "sprite": True}),
    ("audio aac", "audio", "1080p", {"codec": "aac"}),
    ("transcode h264-480p", "transcode", "1080p", {"preset": "h264-480p"}),
    ("transcode h264-720p", "transcode", "1080p", {"preset": "h264-720p"}),
    ("transcode h264-1080p", "transcode", "1080p", {"preset": "h264-1080p"}),
    (
        "transcode h264-1080p fastest",
        "transcode",
        "1080p",
        {"preset": "h264-1080p", "speed": "fastest"},
    ),
    ("transcode vp9-720p", "transcode", "1080p", {"preset": "vp9-720p", "speed": "fast"}),
    ("transcode h265-1080p", "transcode", "1080p", {"preset": "h265-1080p", "speed": "fast"}),
    ("transcode h264-480p from 480p", "transcode", "480p", {"preset": "h264-480p"}),
    ("transcode h264-720p from 720p", "transcode", "720p", {"preset": "h264-720p"}),
]


def _own_memory_cgroup() -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            found = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return found if found.is_dir() else None
    return None


def run_one(payload: dict[str, Any], tmp: Path, cgroup: Path | None) -> dict[str, Any]:
    """One worker run (in this fresh process): its cgroup peak and largest process's rss."""
    work = tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = worker_env(payload, tmp / "termination-log", work)

    def enter() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    done = subprocess.run(
        [sys.executable, "-m", "videoqueue_worker"],
        env=env,
        preexec_fn=enter,
        capture_output=True,
        text=True,
        check=False,
    )
    result = json.loads((tmp / "termination-log").read_text() or "{}")
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({done.returncode}): {result}\n{done.stdout[-2000:]}")
    peak = None
    if cgroup is not None:
        peak = int((cgroup / "memory.max_usage_in_bytes").read_text())
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"cgroup": peak, "rss": rss_kib * 1024, "reported": result.get("peakMemoryBytes")}


def measure(payload: dict[str, Any], root: Path) -> dict[str, Any]:
    """`run_one` in a fresh wrapper process (ru_maxrss of children only ever grows) and a
    fresh memory sub-group."""
    parent = _own_memory_cgroup()
    cgroup = None
    if parent is not None and os.access(parent, os.W_OK):
        cgroup = parent / f"vq-worker-memory-{os.getpid()}"
        cgroup.mkdir()
    tmp = Path(tempfile.mkdtemp(dir=root))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker_memory", "--one", json.dumps(payload)],
            env=os.environ | {"VQ_MEMORY_TMP": str(tmp), "VQ_MEMORY_CGROUP": str(cgroup or "")},
            capture_output=True,
            text=True,
            check=True,
        )
        figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return figures
    finally:
        if cgroup is not None:
            cgroup.rmdir()


def _mib(values: list[int | None]) -> str:
    known = [v for v in values if v]
    return f"{statistics.median(known) / MIB:.0f}" if known else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        cgroup = os.environ["VQ_MEMORY_CGROUP"]
        figures = run_one(
            json.loads(args.one),
            Path(os.environ["VQ_MEMORY_TMP"]),
            Path(cgroup) if cgroup else None,
        )
        print(json.dumps(figures))
        return
    root = Path(tempfile.mkdtemp(prefix="vq-worker-memory-", dir=TEST_FILE_ROOT))
    try:
        clips = {
            name: make_media(root / f"{name}.mp4", seconds=args.seconds, size=size)
            for name, size in INPUTS.items()
        }
        print(f"inputs: {args.seconds:g} s test patterns, {', '.join(INPUTS.values())}; MiB")
        print("| case | input | cgroup peak | largest process rss |")
        print("| --- | --- | ---: | ---: |")
        for name, job_type, source, params in CASES:
            out = root / "out" / name.replace(" ", "-")
            out.mkdir(parents=True)
            payload = job_payload(job_type, f"file://{clips[source]}", f"file://{out}/", params)
            runs = [measure(payload, root) for _ in range(args.repeat)]
            cgroup_mib = _mib([r["cgroup"] for r in runs])
            rss_mib = _mib([r["rss"] for r in runs])
            print(f"| {name} | {source} | {cgroup_mib} | {rss_mib} |", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
