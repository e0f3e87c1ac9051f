"""Running the real worker, real ffmpeg and a real Redis from tests (and the benchmark).

Everything here starts real processes on loopback and stops them again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
WORKER_PATH = REPO / "worker-image"
# The worker's own imports (videoqueue.api and videoqueue_worker) without installing it.
WORKER_PYTHONPATH = os.pathsep.join([str(WORKER_PATH), str(REPO / "operator")])
NETGUARD = Path(__file__).resolve().parent / "netguard"
"""Its sitecustomize keeps test workers on loopback (see there)."""
TEST_FILE_ROOT = Path(tempfile.gettempdir()).resolve()
"""Where the tests' media and outputs live (pytest's tmp_path is under it): the file root
test workers get unless a test says otherwise."""
TEST_ALLOWED_HOSTS = ["127.0.0.1"]
"""The local test servers, internal (loopback) by the sandbox's rules, so allowed explicitly."""
PYCACHE = Path(os.environ.get("VIDEOQUEUE_CACHE", Path.home() / ".cache/videoqueue")) / "pycache"
if str(WORKER_PATH) not in sys.path:
    sys.path.insert(0, str(WORKER_PATH))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_media(
    path: Path,
    *,
    seconds: float = 3.0,
    size: str = "320x240",
    rate: int = 25,
    audio: bool = True,
    video: bool = True,
) -> Path:
    """A test clip from lavfi sources: moving test pattern (keyframe every second) and a
    tone, H.264/AAC in MP4."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(rate), "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "96k"]
    args += ["-t", str(seconds), str(path)]
    subprocess.run(args, check=True)
    return path


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
    found = [s for s in info["streams"] if s["codec_type"] == codec_type]
    assert found, f"no {codec_type} stream in {info['streams']}"
    return found[0]


def job_payload(
    job_type: str,
    input_url: str,
    output_url: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    name: str = "job-1",
    namespace: str = "default",
    uid: str = "0b9f4c3e-uid",
    attempt: int = 1,
) -> dict[str, Any]:
    """VIDEOQUEUE_JOB as videoqueue.scheduling.worker_pod writes it."""
    spec: dict[str, Any] = {
        "queueName": "q",
        "type": job_type,
        "input": {"url": input_url},
        "params": dict(params or {}),
        "priority": 5,
    }
    if output_url is not None:
        spec["output"] = {"url": output_url}
    return {
        "apiVersion": "videoqueue.dev/v1alpha1",
        "kind": "VideoJob",
        "namespace": namespace,
        "name": name,
        "uid": uid,
        "attempt": attempt,
        "spec": spec,
    }


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


def worker_env(
    payload: Mapping[str, Any] | str,
    result_path: Path,
    work_dir: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VIDEOQUEUE_") and k not in ("PYTHONPATH",)
    }
    # Cached bytecode, as the image has it compiled in, even where the shell sets
    # PYTHONDONTWRITEBYTECODE: otherwise every worker start recompiles pydantic.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env |= {
        "PYTHONPYCACHEPREFIX": str(PYCACHE),
        "PYTHONPATH": os.pathsep.join([str(NETGUARD), WORKER_PYTHONPATH]),
        "VIDEOQUEUE_TEST_NETGUARD": "1",
        "VIDEOQUEUE_JOB": payload if isinstance(payload, str) else json.dumps(payload),
        "VIDEOQUEUE_RESULT_PATH": str(result_path),
        "VIDEOQUEUE_WORK_DIR": str(work_dir),
        "VIDEOQUEUE_FILE_ROOTS": json.dumps([str(TEST_FILE_ROOT)]),
        "VIDEOQUEUE_ALLOWED_HOSTS": json.dumps(TEST_ALLOWED_HOSTS),
    }
    return env | dict(extra or {})


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


@contextlib.contextmanager
def redis_server(port: int | None = None, *, password: str | None = None) -> Iterator[str]:
    """A throwaway redis-server on loopback (no persistence); yields its redis:// URL
    (without the password, which the worker takes from VIDEOQUEUE_REDIS_PASSWORD)."""
    port = port or free_port()
    data = Path(tempfile.mkdtemp(prefix="vq-redis-"))
    binary = shutil.which("redis-server") or "redis-server"
    # No persistence: --save "" and no append-only file.
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
    if password is not None:
        args += ["--requirepass", password]
    process = subprocess.Popen(
        [*args, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(data, ignore_errors=True)
