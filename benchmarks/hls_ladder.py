"""HLS ladder: the worker's hls job against the bare ffmpeg command(s) that make the same
package.

    PYTHONPATH=operator:worker-image .venv/bin/python -m benchmarks.hls_ladder --repeat 3

Generates one input with lavfi (default 20 s of 1280x720 at 30 fps with a tone, H.264/AAC)
and times, in rotating order so drifting machine load hits all alike:
- bare: one `ffmpeg` with exactly the arguments the worker builds (split + scale per rung,
  one hls muxer), run in an empty directory;
- separate: one `ffmpeg` per rendition (scale, the same encoder settings, the hls muxer for
  that rendition alone), run one after another: what a script without a filter graph does;
  it decodes the input once per rendition and writes no master playlist;
- worker: `python -m videoqueue_worker` with the job in VIDEOQUEUE_JOB as a pod gets it
  (validation, ffprobe, progress parsing, the playlists read back, publishing by renames).
Wall and CPU time (user + system of the child processes) are reported, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from videoqueue.envtest.worker import job_payload, make_media, worker_env
from videoqueue_worker import hls, media
from videoqueue_worker.params import HlsParams, parse_params

FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats"]


def _timed(run: Callable[[], None]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def separate_commands(
    params: HlsParams, ladder: hls.Ladder, info: dict[str, Any], source: Path
) -> list[list[str]]:
    """One command per rung: the worker's arguments for a ladder of that rung alone."""
    commands = []
    for rung in ladder.rungs:
        alone = hls.Ladder(rungs=(rung,), dropped=())
        args = hls.plan_package(params, alone, info, source)
        # A single variant needs no split; keep the rest as the worker builds it.
        graph = args.index("-filter_complex") + 1
        args[graph] = args[graph].replace("split=1[s0];[s0]", "")
        commands.append(FFMPEG + args)
    return commands


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--seconds", type=float, default=20, help="input length (default 20)")
    parser.add_argument("--size", default="1280x720", help="input size (default 1280x720)")
    parser.add_argument("--params", default='{"ladder": "standard"}', help="hls params")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="vq-bench-hls-") as tmp_name:
        tmp = Path(tmp_name)
        source = make_media(tmp / "input.mp4", seconds=args.seconds, size=args.size, rate=30)
        raw_params: dict[str, Any] = json.loads(args.params)
        params = parse_params("hls", raw_params)
        assert isinstance(params, HlsParams)
        info = media.probe(source)
        height = hls.display_height(info)
        assert height is not None
        ladder = hls.fit_ladder(params, height)
        bare_command = FFMPEG + hls.plan_package(params, ladder, info, source)
        separate = separate_commands(params, ladder, info, source)
        payload = job_payload("hls", f"file://{source}", f"file://{tmp}/worker/", raw_params)
        (tmp / "work").mkdir()
        env = worker_env(payload, tmp / "termination-log", tmp / "work")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")

        def bare() -> None:
            subprocess.run(bare_command, check=True, cwd=_fresh(tmp / "bare"))

        def one_by_one() -> None:
            cwd = _fresh(tmp / "separate")
            for command in separate:
                subprocess.run(command, check=True, cwd=cwd)

        def worker() -> None:
            shutil.rmtree(tmp / "worker", ignore_errors=True)
            done = subprocess.run(
                [sys.executable, "-m", "videoqueue_worker"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"worker failed: {done.stdout}{done.stderr}")

        print(f"input {args.size} {args.seconds:g}s 30fps, params {args.params}")
        dropped = [d["name"] for d in ladder.dropped]
        print(f"renditions {[r.name for r in ladder.rungs]}, dropped {dropped}")
        print(f"bare command: {' '.join(bare_command)}")
        order = [("bare", bare), ("separate", one_by_one), ("worker", worker)]
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in order}
        worker()  # warm the page cache, libraries and bytecode
        for i in range(args.repeat):
            for name, run in order[i % 3 :] + order[: i % 3]:
                runs[name].append(_timed(run))
                took, used = runs[name][-1]
                print(f"  run {i + 1} {name:8} wall {took:6.2f}s cpu {used:6.2f}s", flush=True)

    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    print()
    print(f"{'':10}{'median wall':>14}{'median cpu':>14}{'wall vs bare':>14}")
    for name in runs:
        print(
            f"{name:10}{wall[name]:13.2f}s{cpu[name]:13.2f}s{wall[name] / wall['bare'] - 1:+13.1%}"
        )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
