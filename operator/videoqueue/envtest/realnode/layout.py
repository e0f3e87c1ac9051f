"""What a real node is and where it lives: its spec, the label and taint that keep every pod
but those that ask off it (`REAL_NODE_PLACEMENT`), and its layout on disk
(`RealNodeLayout`: a short directory under NODES_ROOT, and the names of its bridge and cgroup
root, all derived from the cluster's state dir and the node's name so a detached cluster finds
them again). Every other module of the package builds on these, so they depend on nothing
else of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, overload

# What a pod template adds to run on a real node (and only there).
REAL_NODE_LABEL = "videoqueue.dev/node"
REAL_NODE_LABEL_VALUE = "real"
REAL_NODE_TAINT = "videoqueue.dev/real-node"
REAL_NODE_PLACEMENT: dict[str, Any] = {
    "nodeSelector": {REAL_NODE_LABEL: REAL_NODE_LABEL_VALUE},
    "tolerations": [
        {"key": REAL_NODE_TAINT, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ],
}

# Real nodes' directories: short paths of their own, because the kubelet and containerd
# create unix sockets inside them (at most 104 characters), and a state dir may be deep.
NODES_ROOT = Path("/var/lib/videoqueue/nodes")


class RealNodeError(RuntimeError):
    pass


@dataclass(frozen=True)
class RealNodeSpec:
    """One real node: a kubelet registering as `name`, with a containerd of its own."""

    name: str = "real-node-0"
    labels: dict[str, str] = field(default_factory=dict)
    max_pods: int = 50


def real_nodes(count: int) -> list[RealNodeSpec]:
    return [RealNodeSpec(f"real-node-{i}") for i in range(count)]


class _InNodeDirectory:
    """A path under a RealNodeLayout's directory, read as an attribute of the layout."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    @overload
    def __get__(self, layout: None, owner: type[RealNodeLayout]) -> Self: ...
    @overload
    def __get__(self, layout: RealNodeLayout, owner: type[RealNodeLayout]) -> Path: ...
    def __get__(self, layout: RealNodeLayout | None, owner: type[RealNodeLayout]) -> Path | Self:
        return self if layout is None else layout.directory.joinpath(*self.parts)


@dataclass(frozen=True)
class RealNodeLayout:
    """Where a real node keeps everything: NODES_ROOT/<key>, linked from the cluster's
    <state dir>/nodes/<name>. Derived from the state dir and the node's name only, so a
    detached cluster finds it again for `stop()`."""

    name: str
    directory: Path
    key: str  # short and unique per state dir and node: names the bridge and cgroup root
    link: Path | None  # <state dir>/nodes/<name>; unknown for a stale node found on disk

    @classmethod
    def of(cls, state_dir: Path, name: str) -> RealNodeLayout:
        key = hashlib.sha256(f"{state_dir.resolve()}\0{name}".encode()).hexdigest()[:8]
        return cls(name, NODES_ROOT / key, key, state_dir / "nodes" / name)

    @classmethod
    def found(cls, directory: Path) -> RealNodeLayout:
        """The layout of a node directory found under NODES_ROOT (its name is its key)."""
        return cls(directory.name, directory, directory.name, None)

    # The node's files, in its directory.
    lock_file = _InNodeDirectory("node.lock")
    """flock'ed by the node's containerd for as long as it runs: a node directory whose lock
    is free belongs to no running node."""
    containerd_socket = _InNodeDirectory("containerd.sock")
    containerd_config = _InNodeDirectory("containerd.toml")
    kubelet_config = _InNodeDirectory("kubelet.yaml")
    kubelet_kubeconfig = _InNodeDirectory("kubelet.kubeconfig")
    cni_conf_dir = _InNodeDirectory("cni", "net.d")

    @property
    def bridge(self) -> str:
        return f"vq{self.key}"  # interface names have at most 15 characters

    @property
    def cgroup_root(self) -> str:
        return f"/videoqueue-{self.key}"
