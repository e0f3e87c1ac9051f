"""The operator image, built locally and imported into the real node's containerd, runs there
as the chart runs it: its non-root user, read-only root filesystem, /tmp on an emptyDir."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.objects import REAL_NODE
from videoqueue.envtest import poll
from videoqueue.envtest.images import ImportedImage
from videoqueue.envtest.realnode import REAL_NODE_PLACEMENT

pytestmark = pytest.mark.e2e


def test_operator_image_runs_on_the_real_node(
    operator_image: ImportedImage, core: Any, namespace: str
) -> None:
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "operator-help"},
            "spec": {
                **REAL_NODE_PLACEMENT,
                "restartPolicy": "Never",
                "securityContext": {
                    "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "operator",
                        "image": operator_image.tag,
                        "imagePullPolicy": "Never",
                        "args": ["--help"],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "resources": {"limits": {"memory": "256Mi"}},
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }
                ],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        },
    )

    def finished() -> Any:
        pod = core.read_namespaced_pod("operator-help", namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = poll(finished, timeout=120, what="the operator image's pod to finish", interval=0.5)
    log = core.read_namespaced_pod_log("operator-help", namespace)  # through the kubelet
    assert pod.status.phase == "Succeeded", log
    assert pod.spec.node_name == REAL_NODE
    assert "--redis-url" in log
