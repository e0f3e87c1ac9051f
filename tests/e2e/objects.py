"""Building the e2e suite's queues and jobs: workers on the real node, files under /media."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.integration.objects import GROUP, VERSION
from videoqueue.envtest.real_worker import REAL_NODE, WORKER_UID, real_node_worker_template

__all__ = ["REAL_NODE", "WORKER_UID", "elapsed", "real_queue", "termination_message", "video_job"]


def real_queue(
    image: str,
    media: Path | None,
    *,
    name: str = "work",
    budget: str = "4Gi",
    default_request: str = "512Mi",
    max_: str = "2Gi",
    oom_retry_multiplier: float | None = None,
    max_attempts: int = 3,
    **spec: Any,
) -> dict[str, Any]:
    """A VideoQueue whose workers run on the real node (`real_node_worker_template`: the
    host's `media` directory at /media, an emptyDir when None)."""
    memory: dict[str, Any] = {"budget": budget, "defaultRequest": default_request, "max": max_}
    if oom_retry_multiplier is not None:
        memory["oomRetryMultiplier"] = oom_retry_multiplier
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VideoQueue",
        "metadata": {"name": name},
        "spec": {
            "concurrency": 2,
            "memory": memory,
            "retry": {
                "maxAttempts": max_attempts,
                "backoff": {"initialSeconds": 1, "factor": 2, "maxSeconds": 5},
            },
            "template": real_node_worker_template(image, media),
            **spec,
        },
    }


def video_job(
    name: str,
    job_type: str,
    input_path: str,
    *,
    output: str | None = None,
    memory: str | None = None,
    params: dict[str, Any] | None = None,
    queue: str = "work",
    **spec: Any,
) -> dict[str, Any]:
    """A VideoJob on a file under /media (paths as the worker pod sees them) or a URL."""
    body: dict[str, Any] = {
        "queueName": queue,
        "type": job_type,
        "input": {"url": _url(input_path)},
        "params": params or {},
        **spec,
    }
    if output is not None:
        body["output"] = {"url": _url(output)}
    if memory is not None:
        body["resources"] = {"memory": memory}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VideoJob",
        "metadata": {"name": name},
        "spec": body,
    }


def _url(path: str) -> str:
    """A path under /media as a file:// URL; a URL as it is."""
    return path if "://" in path else f"file:///media/{path}"


def termination_message(core_api: Any, namespace_name: str, pod: str) -> dict[str, Any]:
    """The JSON the worker container wrote to its termination-message path, as the kubelet
    reported it."""
    status = core_api.read_namespaced_pod(pod, namespace_name).status
    terminated = status.container_statuses[0].state.terminated
    assert terminated is not None, status.container_statuses[0].state
    message: dict[str, Any] = json.loads(terminated.message)
    return message


def elapsed(begin: float) -> str:
    return f"{time.monotonic() - begin:.1f}s"
