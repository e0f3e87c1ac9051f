"""The pod contract without a cluster: the worker runs with exactly the environment
`build_worker_pod` gives its container, and its events name the job the operator built the
pod for. (The end-to-end test with the operator on a control plane lives with the operator's
progress tests.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from tests.worker.harness import ffprobe, read_events, run_worker, stream
from videoqueue.api.progress import ProgressKind
from videoqueue.api.worker import ENV_ALLOWED_HOSTS, ENV_DOWNLOAD_TIMEOUT_SECONDS, ENV_FILE_ROOTS
from videoqueue.controller.progress_settings import ProgressSettings, SecretKeyRef
from videoqueue.envtest.worker import TEST_FILE_ROOT, redis_server
from videoqueue.scheduling.worker_pod import ENV_JOB, build_worker_pod
from videoqueue_worker.cgroup import peak_memory_bytes

PASSWORD = "from-the-secret"


def _objects(media: Path, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    job = {
        "apiVersion": "videoqueue.dev/v1alpha1",
        "kind": "VideoJob",
        "metadata": {"name": "contract", "namespace": "media", "uid": "c0ffee-1", "generation": 1},
        "spec": {
            "queueName": "work",
            "type": "transcode",
            "input": {"url": f"file://{media}"},
            "output": {"url": f"file://{out}/"},
            "params": {"videoCodec": "h264", "height": 120, "speed": "fastest"},
        },
    }
    queue = {
        "apiVersion": "videoqueue.dev/v1alpha1",
        "kind": "VideoQueue",
        "metadata": {"name": "work", "namespace": "media", "uid": "queue-uid"},
        "spec": {
            "memory": {"budget": "8Gi"},
            # The sandbox reaches the worker through the pod's env (videoqueue.api.worker).
            "worker": {"fileRoots": [str(TEST_FILE_ROOT)], "downloadTimeoutSeconds": 600},
            "template": {"spec": {"containers": [{"name": "worker", "image": "worker:test"}]}},
        },
    }
    return job, queue


def _resolve(env: list[dict[str, Any]]) -> dict[str, str]:
    """The container's env as the kubelet would give it (the one Secret reference resolved)."""
    values = {}
    for entry in env:
        if "value" in entry:
            values[entry["name"]] = entry["value"]
        else:
            assert entry["valueFrom"]["secretKeyRef"] == {
                "name": "redis",
                "key": "pw",
                "optional": True,
            }
            values[entry["name"]] = PASSWORD
    return values


def test_worker_runs_the_payload_the_operator_puts_into_the_pod(
    media: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    job, queue = _objects(media, out)
    with redis_server(password=PASSWORD) as url:
        settings = ProgressSettings(url=url, password_secret=SecretKeyRef("redis", "pw"))
        pod = build_worker_pod(job, queue, attempt=2, memory_bytes=2**30, env=settings.worker_env())
        worker = next(c for c in pod["spec"]["containers"] if c["name"] == "worker")
        env = _resolve(worker["env"])
        assert env[ENV_FILE_ROOTS] == json.dumps([str(TEST_FILE_ROOT)])
        assert env[ENV_ALLOWED_HOSTS] == "[]"
        assert env[ENV_DOWNLOAD_TIMEOUT_SECONDS] == "600"
        payload = env.pop(ENV_JOB)
        run = run_worker(payload, tmp_path, env)
        client = redis.Redis.from_url(url, password=PASSWORD)
        try:
            events = read_events(client, settings.stream)
        finally:
            client.close()

    assert run.code == 0, run.log
    assert run.result["output"] == f"file://{out}/contract.mp4"
    if peak_memory_bytes() is not None:  # the worker shares this process's memory cgroup here
        assert run.result["peakMemoryBytes"] > 10 * 2**20, run.result
    assert stream(ffprobe(out / "contract.mp4"), "video")["height"] == 120
    assert {(e.namespace, e.job, e.uid, e.attempt) for e in events} == {
        ("media", "contract", "c0ffee-1", 2)
    }
    assert events[-1].kind == ProgressKind.DONE
    assert events[-1].progress == 100
    # The pod's own termination-message path is where the worker writes by default.
    assert worker["terminationMessagePath"] == "/dev/termination-log"
