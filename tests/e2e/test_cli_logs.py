"""`kubectl videoqueue logs` reads a real worker's log through the API server and the kubelet
of the real node, and says plainly once the pod is gone."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.objects import real_queue, video_job
from tests.integration.objects import create, wait_job
from videoqueue.cli.main import main
from videoqueue.envtest import LocalCluster, poll
from videoqueue.envtest.images import ImportedImage
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.worker import make_media

pytestmark = pytest.mark.e2e


def plugin(
    cluster: LocalCluster, namespace: str, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    out = io.StringIO()
    code = main(["--kubeconfig", str(cluster.kubeconfig), "-n", namespace, *args], out=out)
    return code, out.getvalue(), capsys.readouterr().err


def test_logs_show_the_workers_own_output_until_the_pod_is_gone(
    cluster: LocalCluster,
    operator: OperatorProcess,
    worker_image: ImportedImage,
    custom: Any,
    core: Any,
    namespace: str,
    media: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_media(media / "in.mp4", seconds=1)
    create(custom, namespace, "videoqueues", real_queue(worker_image.tag, media))
    create(custom, namespace, "videojobs", video_job("look", "probe", "in.mp4"))
    job = wait_job(custom, namespace, "look", "Complete", timeout=180)
    pod = job["status"]["attempts"][0]["pod"]

    code, out, err = plugin(cluster, namespace, capsys, "logs", "vj/look")
    assert code == 0, err
    # The worker's last line names the job and what it did (runner.py), as the container
    # wrote it: read from the node, not made up by the plugin.
    assert f"{namespace}/look:" in out
    assert out == core.read_namespaced_pod_log(pod, namespace, container="worker")
    code, tail, err = plugin(cluster, namespace, capsys, "logs", "look", "--tail", "1")
    assert code == 0, err
    assert tail.splitlines() == out.splitlines()[-1:]

    core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
    poll(
        lambda: pod not in [p.metadata.name for p in core.list_namespaced_pod(namespace).items],
        timeout=60,
        what=f"pod {pod} to be deleted",
    )
    code, out, err = plugin(cluster, namespace, capsys, "logs", "vj/look")
    assert (code, out) == (1, "")
    assert f"the worker pod {pod} of attempt 1 of job 'look' is gone" in err
