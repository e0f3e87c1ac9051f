"""Live progress and stall detection with real workers: the worker publishes stage, progress
and heartbeats to Redis over the pod network (Redis listens on the pod bridge's host address
only); frozen with SIGSTOP from the host, it goes silent, and the operator ends the attempt as
Stalled."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.objects import REAL_NODE, real_queue, video_job
from tests.integration.objects import create, get_job, wait_job
from tests.integration.redis_server import RedisServer
from videoqueue.envtest import LocalCluster, poll
from videoqueue.envtest.images import ImportedImage
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.worker import make_media

pytestmark = pytest.mark.e2e


def _container_pids(cluster: LocalCluster, container_id: str) -> list[int]:
    """Host PIDs of every process in a container of the real node (worker and ffmpeg)."""
    rows = cluster.containerd(REAL_NODE).run("tasks", "ps", container_id).splitlines()[1:]
    return [int(row.split()[0]) for row in rows if row.split()]


def test_progress_over_the_pod_network_then_a_frozen_worker_stalls(
    operator: OperatorProcess,
    progress_redis: RedisServer,
    worker_image: ImportedImage,
    cluster: LocalCluster,
    custom: Any,
    core: Any,
    namespace: str,
    media: Path,
) -> None:
    make_media(media / "long.mp4", seconds=20)
    queue = real_queue(worker_image.tag, media, progressDeadlineSeconds=6)
    queue["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 2
    create(custom, namespace, "videoqueues", queue)
    create(
        custom,
        namespace,
        "videojobs",
        video_job(
            "frozen",
            "transcode",
            "long.mp4",
            output="out/",
            memory="1Gi",
            params={"preset": "h264-1080p"},
            maxAttempts=1,
        ),
    )

    # Progress written by the operator from what the worker published to Redis.
    def progressing() -> dict[str, Any] | None:
        status = get_job(custom, namespace, "frozen").get("status") or {}
        return status if status.get("stage") == "processing" and status.get("progress") else None

    status = poll(progressing, timeout=120, what="progress from the worker", interval=0.5)
    assert progress_redis.client().xlen("videoqueue:progress") > 0
    pod_name = status["attempts"][-1]["pod"]
    pod = core.read_namespaced_pod(pod_name, namespace)
    assert pod.spec.node_name == REAL_NODE
    assert pod.status.pod_ip.startswith("10.245.")  # on the real node's pod network
    container_id = pod.status.container_statuses[0].container_id.removeprefix("containerd://")

    pids = _container_pids(cluster, container_id)
    assert len(pids) >= 2  # the worker and its ffmpeg
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)

    job = wait_job(custom, namespace, "frozen", "Failed", timeout=90)

    (attempt,) = job["status"]["attempts"]
    assert attempt["reason"] == "Stalled", attempt
    assert not (media / "out" / "frozen.mp4").exists()
