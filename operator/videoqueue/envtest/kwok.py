"""KWOK: fake nodes, and the annotations that script what a pod does on them.

The pod lifecycle itself lives in `kwok-stages.yaml` next to this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

# Pod annotations read by kwok-stages.yaml.
RUN_DURATION = "kwok.videoqueue.dev/run-duration"
EXIT_CODE = "kwok.videoqueue.dev/exit-code"
REASON = "kwok.videoqueue.dev/reason"
MESSAGE = "kwok.videoqueue.dev/message"
# Per attempt of a videoqueue worker pod (its `videoqueue.dev/attempt` label): the reason
# that attempt ends with, e.g. OOMKilled for attempt 1 and success afterwards.
REASON_FOR_ATTEMPT = "kwok.videoqueue.dev/reason-attempt-{attempt}"

# KWOK manages only nodes carrying this annotation, so a real node joined to the same
# control plane (kind, later a kubelet) is left alone.
NODE_ANNOTATION = "kwok.x-k8s.io/node"
NODE_ANNOTATION_VALUE = "fake"
NODE_SELECTOR = f"{NODE_ANNOTATION}={NODE_ANNOTATION_VALUE}"


def pod_script(
    run_for: str,
    *,
    exit_code: int | None = None,
    reason: str | None = None,
    message: str | None = None,
) -> dict[str, str]:
    """Annotations making a pod run for `run_for` (a Go duration, e.g. "2s") and then exit."""
    annotations = {RUN_DURATION: run_for}
    if exit_code is not None:
        annotations[EXIT_CODE] = str(exit_code)
    if reason is not None:
        annotations[REASON] = reason
    if message is not None:
        annotations[MESSAGE] = message
    return annotations


@dataclass(frozen=True)
class NodeSpec:
    """One fake node; its allocatable resources are what kube-scheduler fits pods into."""

    name: str
    cpu: str = "16"
    memory: str = "64Gi"
    pods: int = 500
    labels: dict[str, str] = field(default_factory=dict)
    extended: dict[str, str] = field(default_factory=dict)
    """Extended resources the node advertises, e.g. {"example.com/gpu": "4"}."""


def build_node_manifest(spec: NodeSpec) -> dict[str, Any]:
    resources_ = {"cpu": spec.cpu, "memory": spec.memory, "pods": str(spec.pods)}
    resources_.update(spec.extended)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "annotations": {NODE_ANNOTATION: NODE_ANNOTATION_VALUE},
            "labels": {
                "kubernetes.io/hostname": spec.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **spec.labels,
            },
        },
        # Status is accepted on create for nodes; KWOK's node stages keep it and add
        # the conditions and heartbeats a kubelet would.
        "status": {
            "allocatable": resources_,
            "capacity": resources_,
        },
    }


def stages_file() -> Path:
    """Path of the stage configuration shipped with this package."""
    return Path(str(resources.files(__package__).joinpath("kwok-stages.yaml")))
