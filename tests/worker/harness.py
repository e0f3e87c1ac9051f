"""Running the real worker from tests and checking what it made. Media, payloads, the
worker's environment and Redis come from `videoqueue.envtest.worker` (shared with the worker
benchmark).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videoqueue.api.progress import ProgressEvent
from videoqueue.envtest.worker import WORKER_PATH, worker_env

if TYPE_CHECKING:
    import redis

# The worker tests import videoqueue_worker, which is not installed: take it from the checkout.
if str(WORKER_PATH) not in sys.path:
    sys.path.insert(0, str(WORKER_PATH))


def frequent_progress(tmp: Path) -> dict[str, str]:
    """Worker environment whose ffmpeg writes a progress block every 50 ms rather than its
    default 500 ms. A test clip can encode within one default period on a fast machine, and
    then ffmpeg's only block is the last: a test of progress *during* the work would depend
    on the machine's speed."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is not installed"
    wrapper = tmp / "ffmpeg-frequent-progress"
    wrapper.write_text(f'#!/bin/sh\nexec {ffmpeg} -stats_period 0.05 "$@"\n')
    wrapper.chmod(0o755)
    return {"VIDEOQUEUE_FFMPEG": str(wrapper)}


def ffprobe(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def stream(info: dict[str, Any], codec_type: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in info["streams"] if s["codec_type"] == codec_type]
    assert found, f"no {codec_type} stream in {info['streams']}"
    return found[0]


def read_events(client: redis.Redis, stream: str) -> list[ProgressEvent]:
    """The progress events in Redis `stream`, oldest first, read as the operator reads them."""
    # An entry trimmed away while pending has no fields: from_fields({}) refuses it loudly.
    return [ProgressEvent.from_fields(fields or {}) for _, fields in client.xrange(stream) or []]


@dataclass
class WorkerRun:
    code: int
    message: str
    """What the worker wrote to its termination-message path."""
    log: str
    seconds: float

    @property
    def result(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.message)
        return value


def start_worker(
    payload: Mapping[str, Any] | str,
    tmp: Path,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[str]:
    """The worker as the pod runs it: `python -m videoqueue_worker`, job in the environment."""
    work = tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "videoqueue_worker"],
        env=worker_env(payload, tmp / "termination-log", work, extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_worker(
    payload: Mapping[str, Any] | str,
    tmp: Path,
    extra_env: Mapping[str, str] | None = None,
    *,
    timeout: float = 120,
) -> WorkerRun:
    started = time.monotonic()
    process = start_worker(payload, tmp, extra_env)
    log, _ = process.communicate(timeout=timeout)
    result = tmp / "termination-log"
    return WorkerRun(
        code=process.returncode,
        message=result.read_text() if result.exists() else "",
        log=log,
        seconds=time.monotonic() - started,
    )
