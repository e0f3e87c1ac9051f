"""The Helm chart on the real node: the operator image runs as the chart's Deployment, the
kubelet probes it, `helm test` checks it through its Service, and the in-cluster operator,
with nothing but its ServiceAccount's token, takes a job from apply to a real output file.

Pods reach the API server and the metrics Service through their ClusterIPs, as on any
cluster: kube-proxy runs beside the real node (envtest's `_start_service_proxy`). No operator
on the host acts here: the session's host operator (it watches every namespace) is stopped for
the test and started again after it, and the test checks that no operator process of this
cluster runs on the host.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.objects import REAL_NODE, elapsed, real_queue, video_job
from tests.integration.helm_chart import CHART, helm, values_file
from tests.integration.objects import create, wait_job
from tests.worker.harness import ffprobe, stream
from videoqueue.envtest import LocalCluster, poll
from videoqueue.envtest.images import ImportedImage
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.realnode import REAL_NODE_PLACEMENT
from videoqueue.envtest.worker import make_media

pytestmark = pytest.mark.e2e

RELEASE = "vq"
FULLNAME = f"{RELEASE}-videoqueue-operator"

# Run inside the operator's container: who the API server says its credentials are (the
# ServiceAccount token the kubelet mounted, through the `kubernetes` Service's ClusterIP, as
# the operator reaches it) and what its own /metrics counts.
IN_POD_CHECK = """
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
request = urllib.request.Request(
    f"https://{host}:{port}/apis/authentication.k8s.io/v1/selfsubjectreviews",
    data=json.dumps(review).encode(),
    headers={"Authorization": "Bearer " + open(f"{sa}/token").read(),
             "Content-Type": "application/json"},
)
context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
with urllib.request.urlopen(request, context=context, timeout=10) as response:
    review = json.load(response)
with urllib.request.urlopen("http://127.0.0.1:8080/metrics", timeout=10) as response:
    metrics = response.read().decode()
print(json.dumps({"host": host, "user": review["status"]["userInfo"]["username"],
                  "kubeconfig": "KUBECONFIG" in os.environ, "metrics": metrics}))
"""


@pytest.fixture
def host_operator_stopped(operator: OperatorProcess) -> Iterator[None]:
    """The session's operator on the host, stopped while the chart's works (both would act on
    every namespace), and started again for the tests after this one."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()
        operator.wait_for_log("progress: reading stream", timeout=60)


def host_operators(kubeconfig: Path) -> list[int]:
    """Operator processes on the host (`python -m videoqueue`) working on this cluster."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"videoqueue" in argv and f"KUBECONFIG={kubeconfig}".encode() in environ:
            found.append(int(proc.name))
    return found


def chart_values(image: ImportedImage, tmp_path: Path) -> Path:
    repository, tag = image.tag.split(":")
    return values_file(
        tmp_path,
        {
            # The session's CRDs belong to no release; this one leaves them alone.
            "crds": {"enabled": False},
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "replicas": 1,
            "peering": {"enabled": False},
            # No Redis image on the node: no progress channel (everything else works).
            "redis": {"mode": "disabled"},
            "nodeSelector": REAL_NODE_PLACEMENT["nodeSelector"],
            "tolerations": REAL_NODE_PLACEMENT["tolerations"],
        },
    )


class HelmTestPodWatch:
    """Where the `helm test` pod runs: a thread polls it until stopped (the chart deletes it
    as soon as it succeeded)."""

    def __init__(self, core: Any, namespace: str, name: str) -> None:
        self.core, self.namespace, self.name = core, namespace, name
        self.node: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HelmTestPodWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            pods = self.core.list_namespaced_pod(
                self.namespace, field_selector=f"metadata.name={self.name}"
            ).items
            for pod in pods:
                self.node = pod.spec.node_name or self.node


@pytest.mark.usefixtures("host_operator_stopped")
def test_chart_runs_the_operator_on_the_real_node(
    cluster: LocalCluster,
    crds: None,
    operator_image: ImportedImage,
    worker_image: ImportedImage,
    core: Any,
    custom: Any,
    namespace: str,
    media: Path,
    tmp_path: Path,
) -> None:
    assert cluster.has_service_proxy, (
        "another cluster's kube-proxy runs on this machine (one per machine: a `make dev` or "
        "`make cluster-up` cluster?): stop it (`make cluster-down`) and run again"
    )
    assert host_operators(cluster.kubeconfig) == [], "an operator on the host would act too"
    kubeconfig = cluster.kubeconfig
    begin = time.monotonic()
    helm(
        "install", RELEASE, str(CHART), "-n", namespace,
        "--values", str(chart_values(operator_image, tmp_path)),
        "--wait", "--timeout", "180s", kubeconfig=kubeconfig,
    )  # fmt: skip
    try:
        print(f"\nhelm install to operator Ready: {elapsed(begin)}")
        (pod,) = core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=operator"
        ).items
        name = pod.metadata.name
        assert pod.spec.node_name == REAL_NODE
        assert pod.spec.service_account_name == FULLNAME
        # Ready only through the kubelet's readiness probe on /readyz; liveness on /healthz.
        (container,) = pod.spec.containers
        assert container.readiness_probe.http_get.path == "/readyz"
        assert container.liveness_probe.http_get.path == "/healthz"
        conditions = {c.type: c.status for c in pod.status.conditions}
        assert conditions["Ready"] == "True", conditions
        (status,) = pod.status.container_statuses
        assert (status.ready, status.started, status.restart_count) == (True, True, 0)
        assert status.state.running is not None

        with HelmTestPodWatch(core, namespace, f"{FULLNAME}-test-readyz") as watch:
            # No --logs: the chart deletes the test pod once it succeeded.
            tested = helm(
                "test", RELEASE, "-n", namespace, "--timeout", "120s", kubeconfig=kubeconfig
            )
        assert "Phase:          Succeeded" in tested.stdout, tested.stdout
        # It ran on the real node and reached the operator's /readyz through the metrics
        # Service's ClusterIP, found by the Service's environment variables (no cluster DNS).
        assert watch.node == REAL_NODE, watch.node

        make_media(media / "in.mp4", seconds=2)
        create(custom, namespace, "videoqueues", real_queue(worker_image.tag, media))
        started = time.monotonic()
        create(
            custom,
            namespace,
            "videojobs",
            video_job("clip", "transcode", "in.mp4", output="out/", params={"preset": "h264-480p"}),
        )
        job = wait_job(custom, namespace, "clip", "Complete", timeout=180)
        print(f"transcode admitted by the in-cluster operator: Complete after {elapsed(started)}")
        (attempt,) = job["status"]["attempts"]
        assert (attempt["reason"], attempt["node"]) == ("Completed", REAL_NODE)
        assert job["status"]["result"]["output"] == "file:///media/out/clip.mp4"
        info = ffprobe(media / "out" / "clip.mp4")
        assert (stream(info, "video")["codec_name"], stream(info, "video")["height"]) == (
            "h264",
            480,
        )
        assert float(info["format"]["duration"]) == pytest.approx(2.0, abs=0.15)

        # Who did it: the operator pod, whose only credentials are its ServiceAccount's token.
        assert host_operators(cluster.kubeconfig) == []
        done = cluster.kubectl(
            "exec", "-n", namespace, name, "-c", "operator", "--",
            "python3", "-c", IN_POD_CHECK,
        )  # fmt: skip
        seen = json.loads(done.stdout)
        assert seen["host"] == "10.96.0.1"  # the `kubernetes` Service's ClusterIP
        assert seen["user"] == f"system:serviceaccount:{namespace}:{FULLNAME}"
        assert seen["kubeconfig"] is False
        admitted = [
            line
            for line in seen["metrics"].splitlines()
            if line.startswith("videoqueue_jobs_admitted_total{")
            and f'namespace="{namespace}"' in line
            and 'queue="work"' in line
        ]
        assert len(admitted) == 1, seen["metrics"][-3000:]
        assert float(admitted[0].split()[-1]) == 1, admitted
        log = core.read_namespaced_pod_log(name, namespace)
        assert f"scheduling queue {namespace}/work on this replica" in log, log[-3000:]
        pod = core.read_namespaced_pod(name, namespace)
        assert pod.status.container_statuses[0].restart_count == 0  # liveness held throughout
    finally:
        uninstall = helm(
            "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "120s",
            kubeconfig=kubeconfig, check=False,
        )  # fmt: skip
    assert uninstall.returncode == 0, uninstall.stderr

    def operator_gone() -> bool:
        return not core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=operator"
        ).items

    poll(operator_gone, timeout=60, what="the operator pod to go after helm uninstall")
    releases = helm("list", "-n", namespace, "-o", "json", kubeconfig=kubeconfig).stdout
    assert json.loads(releases) == []
