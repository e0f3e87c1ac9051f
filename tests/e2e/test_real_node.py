"""Video jobs on a real node: the worker image runs real ffmpeg in pods the kubelet starts,
the kernel enforces their memory limits, the result comes from the container's termination
message."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.objects import (
    REAL_NODE,
    WORKER_UID,
    elapsed,
    real_queue,
    termination_message,
    video_job,
)
from tests.integration.objects import create, wait_job
from tests.worker.harness import ffprobe, stream
from videoqueue.api import parse_quantity
from videoqueue.envtest import LocalCluster, poll
from videoqueue.envtest.images import ImportedImage
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.worker import make_media

pytestmark = pytest.mark.e2e

# The worker's Python alone is more than this; a peak below it was not read from the
# container's own cgroup.
LEAST_PEAK = 16 * 2**20


def peak_memory(attempt: dict[str, Any]) -> int:
    """The attempt's recorded peak in bytes, checked to be a real container's: more than the
    worker's interpreter needs, at most what the attempt was given."""
    assert "peakMemory" in attempt, attempt
    peak = parse_quantity(attempt["peakMemory"])
    assert LEAST_PEAK < peak <= parse_quantity(attempt["memory"]), attempt
    return peak


def test_real_node_only_takes_pods_that_ask_for_it(
    cluster: LocalCluster, core: Any, namespace: str
) -> None:
    """A pod without the real node's selector and toleration lands on a KWOK node."""
    node = core.read_node(REAL_NODE)
    assert node.metadata.labels["videoqueue.dev/node"] == "real"
    assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [
        ("videoqueue.dev/real-node", "true", "NoSchedule")
    ]
    assert node.status.node_info.kubelet_version.startswith("v1.")
    assert node.status.node_info.container_runtime_version.startswith("containerd://")

    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "anywhere"},
            "spec": {"containers": [{"name": "c", "image": "not-pulled:anywhere"}]},
        },
    )

    def scheduled() -> str | None:
        node_name: str | None = core.read_namespaced_pod("anywhere", namespace).spec.node_name
        return node_name

    assert poll(scheduled, timeout=30, what="the pod to be scheduled").startswith("kwok-node-")


def test_transcode_on_the_real_node(
    operator: OperatorProcess,
    worker_image: ImportedImage,
    custom: Any,
    core: Any,
    namespace: str,
    media: Path,
) -> None:
    make_media(media / "in.mp4", seconds=2)
    create(custom, namespace, "videoqueues", real_queue(worker_image.tag, media))
    begin = time.monotonic()
    create(
        custom,
        namespace,
        "videojobs",
        video_job(
            "clip",
            "transcode",
            "in.mp4",
            output="out/",
            memory="512Mi",
            params={"preset": "h264-480p"},
        ),
    )

    job = wait_job(custom, namespace, "clip", "Complete", timeout=180)
    print(f"\ntranscode on {REAL_NODE}: Complete after {elapsed(begin)}")

    (attempt,) = job["status"]["attempts"]
    assert (attempt["reason"], attempt["node"], attempt["memory"]) == (
        "Completed",
        REAL_NODE,
        "512Mi",
    )
    result = job["status"]["result"]
    # What the container wrote is what the job says: the kubelet read the termination
    # message from the real container, the operator copied it.
    assert termination_message(core, namespace, attempt["pod"]) == result
    # Status rounds the worker's count up to a whole MiB.
    assert 0 <= peak_memory(attempt) - result["peakMemoryBytes"] < 2**20
    print(
        f"480p transcode peak memory: {attempt['peakMemory']} of {attempt['memory']} "
        f"({result['peakMemoryBytes']} bytes)"
    )
    assert result["output"] == "file:///media/out/clip.mp4"
    written = media / "out" / "clip.mp4"
    assert written.stat().st_uid == WORKER_UID  # written by the pod's non-root user
    info = ffprobe(written)
    video = stream(info, "video")
    assert (video["codec_name"], video["height"]) == ("h264", 480)
    assert stream(info, "audio")["codec_name"] == "aac"
    assert float(info["format"]["duration"]) == pytest.approx(2.0, abs=0.15)


def test_kernel_oom_kill_is_retried_with_more_memory(
    operator: OperatorProcess,
    worker_image: ImportedImage,
    custom: Any,
    core: Any,
    namespace: str,
    media: Path,
) -> None:
    """64Mi is too little for ffmpeg's 480p encode (about 140 MB resident on the host): the
    kernel kills it, the operator sees OOMKilled and the next attempt gets 4 times the
    memory."""
    make_media(media / "in.mp4", seconds=2)
    queue = real_queue(worker_image.tag, media, oom_retry_multiplier=4, max_="1Gi")
    create(custom, namespace, "videoqueues", queue)
    create(
        custom,
        namespace,
        "videojobs",
        video_job(
            "squeezed",
            "transcode",
            "in.mp4",
            output="out/",
            memory="64Mi",
            params={"preset": "h264-480p"},
        ),
    )

    job = wait_job(custom, namespace, "squeezed", "Complete", timeout=240)

    attempts = job["status"]["attempts"]
    print(f"\nattempts: {attempts}")
    assert [(a["attempt"], a["reason"], a["memory"]) for a in attempts] == [
        (1, "OOMKilled", "64Mi"),
        (2, "Completed", "256Mi"),
    ], attempts
    # The kernel's kill as the kubelet reported it on the first pod.
    first = core.read_namespaced_pod(attempts[0]["pod"], namespace)
    terminated = first.status.container_statuses[0].state.terminated
    assert terminated.reason == "OOMKilled"
    assert first.spec.containers[0].resources.limits["memory"] == "64Mi"
    assert attempts[0]["exitCode"] == terminated.exit_code != 0
    assert job["status"]["effectiveMemory"] == "256Mi"
    # The killed attempt used all it had; the one that completed says what it needed.
    assert attempts[0]["peakMemory"] == "64Mi"
    peak_memory(attempts[1])
    info = ffprobe(media / "out" / "squeezed.mp4")
    assert stream(info, "video")["height"] == 480


def test_every_built_in_type_on_the_real_node(
    operator: OperatorProcess,
    worker_image: ImportedImage,
    custom: Any,
    core: Any,
    namespace: str,
    media: Path,
) -> None:
    """probe, thumbnail, audio and clip (transcode has its own test) on one input, in one
    queue; each output checked with ffprobe on the host, each result read from the pod."""
    make_media(media / "in.mp4", seconds=3)
    create(custom, namespace, "videoqueues", real_queue(worker_image.tag, media))
    jobs = {
        "probe": video_job("probe", "probe", "in.mp4", output="out/probe.json", memory="256Mi"),
        "thumbnail": video_job(
            "thumbnail",
            "thumbnail",
            "in.mp4",
            output="out/thumb.jpg",
            memory="256Mi",
            params={"at": 1.5, "width": 160},
        ),
        "audio": video_job(
            "audio",
            "audio",
            "in.mp4",
            output="out/",
            memory="256Mi",
            params={"codec": "opus", "channels": 1},
        ),
        "clip": video_job(
            "clip",
            "clip",
            "in.mp4",
            output="out/clip.mp4",
            memory="512Mi",
            params={"start": 0.5, "end": 2.0, "copy": False},
        ),
    }
    for body in jobs.values():
        create(custom, namespace, "videojobs", body)

    results = {}
    for name in jobs:
        job = wait_job(custom, namespace, name, "Complete", timeout=180)
        (attempt,) = job["status"]["attempts"]
        assert attempt["node"] == REAL_NODE
        results[name] = job["status"]["result"]
        assert termination_message(core, namespace, attempt["pod"]) == results[name]
        peak_memory(attempt)
        exact = results[name]["peakMemoryBytes"]
        print(f"{name} peak memory: {attempt['peakMemory']} of {attempt['memory']} ({exact} B)")

    out = media / "out"
    assert (results["probe"]["width"], results["probe"]["height"]) == (320, 240)
    assert results["probe"]["duration"] == pytest.approx(3.0, abs=0.1)
    assert '"streams"' in (out / "probe.json").read_text()  # the whole ffprobe report
    thumb = stream(ffprobe(out / "thumb.jpg"), "video")
    assert (thumb["codec_name"], thumb["width"], thumb["height"]) == ("mjpeg", 160, 120)
    audio_info = ffprobe(out / "audio.opus")
    assert [s["codec_type"] for s in audio_info["streams"]] == ["audio"]
    assert (stream(audio_info, "audio")["codec_name"], stream(audio_info, "audio")["channels"]) == (
        "opus",
        1,
    )
    assert float(audio_info["format"]["duration"]) == pytest.approx(3.0, abs=0.15)
    clip_info = ffprobe(out / "clip.mp4")
    assert float(clip_info["format"]["duration"]) == pytest.approx(1.5, abs=0.1)
    assert {s["codec_type"] for s in clip_info["streams"]} == {"video", "audio"}


def test_kubelet_restart_and_operator_kill_mid_job(
    operator: OperatorProcess,
    worker_image: ImportedImage,
    cluster: LocalCluster,
    custom: Any,
    core: Any,
    namespace: str,
    media: Path,
) -> None:
    """While two real jobs run, the node's kubelet restarts and the operator is SIGKILLed
    and started again: both jobs finish, each in one attempt, with one pod each."""
    make_media(media / "in.mp4", seconds=20)  # 1080p encodes of it take over 30 s
    create(custom, namespace, "videoqueues", real_queue(worker_image.tag, media))
    names = ("first", "second")
    for name in names:
        create(
            custom,
            namespace,
            "videojobs",
            video_job(
                name,
                "transcode",
                "in.mp4",
                output="out/",
                memory="1Gi",
                params={"preset": "h264-1080p"},
            ),
        )
    for name in names:
        wait_job(custom, namespace, name, "Running", timeout=120)

    cluster.restart_kubelet(REAL_NODE)
    operator.kill()
    operator.restart()
    # The workers ran on through both: their containers were never restarted.
    for name in names:
        pod = core.read_namespaced_pod(f"{name}-a1", namespace)
        assert pod.status.phase == "Running", (name, pod.status.phase)
        assert pod.status.container_statuses[0].restart_count == 0

    for name in names:
        job = wait_job(custom, namespace, name, "Complete", timeout=240)
        assert [(a["attempt"], a["reason"]) for a in job["status"]["attempts"]] == [
            (1, "Completed")
        ], job["status"]["attempts"]
        assert stream(ffprobe(media / "out" / f"{name}.mp4"), "video")["height"] == 1080
    pods = core.list_namespaced_pod(namespace).items
    assert sorted(p.metadata.name for p in pods) == ["first-a1", "second-a1"]
