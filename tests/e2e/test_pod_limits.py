"""What only a kubelet does to a worker pod: Pod Security `restricted` with the image's own
non-root user and a read-only root filesystem, the pod network between worker and host, and
`activeDeadlineSeconds` ending a running attempt."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.e2e.objects import REAL_NODE, real_queue, termination_message, video_job
from tests.integration.objects import create, wait_job
from tests.worker.harness import ffprobe, stream
from tests.worker.test_http_and_failures import _Handler
from videoqueue.envtest import poll
from videoqueue.envtest.images import ImportedImage
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.worker import make_media

pytestmark = pytest.mark.e2e


@pytest.fixture
def http_server(node_ip: str, media: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """GET of `media`'s files and PUT into a dict, on the pod bridge's host address (nowhere
    else: the worker pods reach the host over the pod network)."""
    uploads: dict[str, bytes] = {}
    handler = functools.partial(_Handler, directory=str(media))
    _Handler.uploads = uploads
    server = http.server.ThreadingHTTPServer((node_ip, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{node_ip}:{server.server_address[1]}", uploads
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_restricted_namespace_worker_over_the_pod_network(
    operator: OperatorProcess,
    worker_image: ImportedImage,
    custom: Any,
    core: Any,
    namespace: str,
    media: Path,
    node_ip: str,
    http_server: tuple[str, dict[str, bytes]],
) -> None:
    """The namespace enforces Pod Security `restricted` (no hostPath, so the input comes
    over HTTP from the host and the output goes back by PUT); the pod runs as the image's
    non-root user, which the kubelet checks against runAsNonRoot, on a read-only root
    filesystem."""
    core.patch_namespace(
        namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    base, uploads = http_server
    make_media(media / "in.mp4", seconds=2)
    queue = real_queue(worker_image.tag, None, worker={"allowedHosts": [node_ip]})
    create(custom, namespace, "videoqueues", queue)
    create(
        custom,
        namespace,
        "videojobs",
        video_job(
            "fetched",
            "transcode",
            f"{base}/in.mp4",
            output=f"{base}/out/fetched.mp4",
            memory="512Mi",
            params={"preset": "h264-480p"},
        ),
    )

    job = wait_job(custom, namespace, "fetched", "Complete", timeout=180)

    (attempt,) = job["status"]["attempts"]
    pod = core.read_namespaced_pod(attempt["pod"], namespace)
    assert pod.spec.node_name == REAL_NODE
    assert pod.spec.security_context.run_as_user is None  # the image's USER it is
    assert pod.spec.containers[0].security_context.read_only_root_filesystem is True
    assert termination_message(core, namespace, attempt["pod"]) == job["status"]["result"]
    assert list(uploads) == ["/out/fetched.mp4"]
    uploaded = media / "uploaded.mp4"
    uploaded.write_bytes(uploads["/out/fetched.mp4"])
    info = ffprobe(uploaded)
    assert (stream(info, "video")["codec_name"], stream(info, "video")["height"]) == ("h264", 480)
    assert float(info["format"]["duration"]) == pytest.approx(2.0, abs=0.15)


def test_active_deadline_ends_a_real_attempt(
    operator: OperatorProcess,
    worker_image: ImportedImage,
    custom: Any,
    core: Any,
    namespace: str,
    media: Path,
) -> None:
    """A 1080p encode of 20 s of video takes far longer than the job's 3 s deadline: the
    kubelet stops the running pod (DeadlineExceeded) and the job fails with that reason."""
    make_media(media / "long.mp4", seconds=20)
    create(custom, namespace, "videoqueues", real_queue(worker_image.tag, media))
    create(
        custom,
        namespace,
        "videojobs",
        video_job(
            "slow",
            "transcode",
            "long.mp4",
            output="out/",
            memory="1Gi",
            params={"preset": "h264-1080p"},
            activeDeadlineSeconds=3,
            maxAttempts=1,
        ),
    )

    job = wait_job(custom, namespace, "slow", "Failed", timeout=180)

    (attempt,) = job["status"]["attempts"]
    assert attempt["reason"] == "DeadlineExceeded", attempt
    assert attempt["startTime"] is not None  # the worker had started

    # The operator stops the pod at the deadline by its own clock, and the kubelet by its
    # own: whichever comes first, the running container ends. A real kubelet lets the pod
    # object go only once its containers are stopped.
    def ended() -> str | None:
        try:
            pod = core.read_namespaced_pod(attempt["pod"], namespace)
        except ApiException as e:
            if e.status == 404:
                return "deleted once stopped"
            raise
        if pod.status.phase == "Failed":
            assert pod.status.reason == "DeadlineExceeded", pod.status
            return "Failed: DeadlineExceeded"
        return None

    how = poll(ended, timeout=60, what=f"worker pod {attempt['pod']} to end", interval=0.5)
    print(f"\ndeadline: worker pod {how}")
    assert not (media / "out" / "slow.mp4").exists()
