"""The worker image: built with the local Docker engine from a locally made base (no pulls),
run as the pod would run it: non-root, read-only root filesystem, a memory limit, writing
only to a mounted work dir, host networking only.

Uses the Docker engine DOCKER_HOST (or the default socket) points at; when none answers it
starts a private dockerd (videoqueue.envtest.docker: state cached under
$VIDEOQUEUE_CACHE/docker so image builds are cached across runs) and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.worker.harness import ffprobe, read_events, stream
from videoqueue.api.progress import ProgressEvent, ProgressKind
from videoqueue.envtest.docker import DockerError, docker_engine
from videoqueue.envtest.wait import poll
from videoqueue.envtest.worker import job_payload, make_media, redis_server

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("VIDEOQUEUE_CACHE", Path.home() / ".cache/videoqueue"))
MEMORY_LIMIT = 512 * 1024 * 1024
FILE_ROOTS = json.dumps(["/work"])  # the tests' media sit in the mounted work dir


@pytest.fixture(scope="module")
def docker_env() -> Iterator[dict[str, str]]:
    """Environment for `docker` commands that reach a running engine."""
    try:
        with docker_engine(CACHE) as env:
            yield env
    except DockerError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def worker_image(docker_env: dict[str, str]) -> str:
    started = time.monotonic()
    done = subprocess.run(
        [str(REPO / "hack/docker-build-worker.sh")],
        env=docker_env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    tag = done.stdout.strip().splitlines()[-1]
    print(f"\nworker image {tag} ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return tag


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)  # the image runs as uid 10001; in a pod, fsGroup does this
    return work


def _events(url: str) -> list[ProgressEvent]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return read_events(client, "videoqueue:progress")
    finally:
        client.close()


def test_transcode_in_a_locked_down_container(
    docker_env: dict[str, str], worker_image: str, work_dir: Path
) -> None:
    make_media(work_dir / "in.mp4", seconds=2)
    payload = job_payload(
        "transcode",
        "file:///work/in.mp4",
        "file:///work/out/",
        {"preset": "h264-480p"},
        name="in-docker",
    )
    name = f"vq-worker-test-{uuid.uuid4().hex[:8]}"
    with redis_server() as redis_url:
        run = subprocess.run(
            [
                *("docker", "run", "--name", name, "--network", "host", "--read-only"),
                *("--memory", str(MEMORY_LIMIT), "--memory-swap", str(MEMORY_LIMIT)),
                *("--cap-drop", "ALL", "--security-opt", "no-new-privileges"),
                *("-v", f"{work_dir}:/work"),
                *("-e", f"VIDEOQUEUE_JOB={json.dumps(payload)}"),
                *("-e", "VIDEOQUEUE_RESULT_PATH=/work/termination-log"),
                *("-e", f"VIDEOQUEUE_FILE_ROOTS={FILE_ROOTS}"),
                *("-e", f"VIDEOQUEUE_REDIS_URL={redis_url}"),
                worker_image,
            ],
            env=docker_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        events = poll(lambda: _events(redis_url), timeout=10, what="progress events")
    try:
        inspect = subprocess.run(
            ["docker", "inspect", name], env=docker_env, capture_output=True, text=True, check=True
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], env=docker_env, capture_output=True)
    assert run.returncode == 0, run.stdout + run.stderr
    container = json.loads(inspect.stdout)[0]
    assert container["HostConfig"]["Memory"] == MEMORY_LIMIT
    assert container["HostConfig"]["ReadonlyRootfs"] is True
    assert container["Config"]["User"] == "10001:10001"

    result = json.loads((work_dir / "termination-log").read_text())
    assert result["output"] == "file:///work/out/in-docker.mp4"
    written = work_dir / "out/in-docker.mp4"
    assert written.stat().st_uid == 10001
    info = ffprobe(written)
    video = stream(info, "video")
    assert (video["codec_name"], video["height"]) == ("h264", 480)
    assert float(info["format"]["duration"]) == pytest.approx(2.0, abs=0.15)
    # Only the output and the termination message: temp files went with the worker.
    assert sorted(p.name for p in work_dir.iterdir()) == ["in.mp4", "out", "termination-log"]
    assert events[-1].kind == ProgressKind.DONE
    assert events[-1].progress == 100


def test_bad_params_fail_clearly_in_the_image(
    docker_env: dict[str, str], worker_image: str, work_dir: Path
) -> None:
    payload = job_payload("transcode", "file:///work/in.mp4", "file:///work/o.mp4", {"crf": 20})
    run = subprocess.run(
        [
            *("docker", "run", "--rm", "--network", "host", "--read-only"),
            *("-v", f"{work_dir}:/work", "-e", f"VIDEOQUEUE_JOB={json.dumps(payload)}"),
            *("-e", "VIDEOQUEUE_RESULT_PATH=/work/termination-log"),
            *("-e", f"VIDEOQUEUE_FILE_ROOTS={FILE_ROOTS}", worker_image),
        ],
        env=docker_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2
    message = (work_dir / "termination-log").read_text()
    assert message.startswith("spec.params: set a preset")
    with contextlib.suppress(FileNotFoundError):
        (work_dir / "termination-log").unlink()
    assert list(work_dir.iterdir()) == []
