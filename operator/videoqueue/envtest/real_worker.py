"""Worker pods on a real node: the pod template the e2e tests and the real-node benchmarks
give their queues (the node's placement, the imported worker image, a security context that
Pod Security `restricted` accepts, scratch at /work and a host directory at /media)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from videoqueue.envtest.realnode import REAL_NODE_PLACEMENT

REAL_NODE = "real-node-0"  # the name of a LocalCluster's first real node
WORKER_UID = 10001  # the worker image's USER


def real_node_worker_template(image: str, media: Path | None) -> dict[str, Any]:
    """A VideoQueue's `spec.template` whose workers run on the real node: its nodeSelector
    and toleration, the imported worker image (never pulled), scratch on an emptyDir at /work,
    the host's `media` directory at /media (the default file root; an emptyDir when `media` is
    None, as Pod Security `restricted` allows no hostPath), the user being the image's own
    non-root one."""
    media_volume: dict[str, Any] = (
        {"name": "media", "hostPath": {"path": str(media), "type": "Directory"}}
        if media is not None
        else {"name": "media", "emptyDir": {}}
    )
    return {
        "spec": {
            **REAL_NODE_PLACEMENT,
            # No runAsUser: the kubelet checks the image's USER against runAsNonRoot.
            "securityContext": {
                "runAsNonRoot": True,
                "fsGroup": WORKER_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "worker",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "work", "mountPath": "/work"},
                        {"name": "media", "mountPath": "/media"},
                    ],
                }
            ],
            "volumes": [{"name": "work", "emptyDir": {}}, media_volume],
        }
    }
