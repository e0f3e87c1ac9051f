"""The real worker outside a cluster, for the worker tests and the worker benchmark: test
media made with ffmpeg, the job payload a pod gets, the environment of a worker process, and
a throwaway redis-server.

Paths are those of a checkout (the worker runtime is not part of the installed distribution):
the worker runs from `worker-image/` with `operator/` for the API models it shares.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from videoqueue.envtest.operator_process import free_port

REPO = Path(__file__).resolve().parents[3]
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


def worker_env(
    payload: Mapping[str, Any] | str,
    result_path: Path,
    work_dir: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of `python -m videoqueue_worker` as its pod gets it, plus the test
    confinement: loopback only (NETGUARD), files under TEST_FILE_ROOT."""
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
