"""Where the control-plane binaries built by hack/build-toolchain.sh live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)
# Only clusters with real nodes need these (same script, same cache).
REAL_NODE_COMPONENTS = ("kubelet", "kube-proxy", "pause.tar")
# The scale benchmark's peer: Kueue's manager and the CRDs its module ships (a directory).
PEER_COMPONENTS = ("kueue", "kueue-crds")


class MissingBinaryError(RuntimeError):
    pass


@dataclass(frozen=True)
class Binaries:
    directory: Path

    def __getitem__(self, name: str) -> Path:
        if name not in COMPONENTS + REAL_NODE_COMPONENTS + PEER_COMPONENTS:
            raise KeyError(name)
        return self.directory / name


def default_cache_dir() -> Path:
    return Path(os.environ.get("VIDEOQUEUE_CACHE", Path.home() / ".cache" / "videoqueue"))


def find_binaries(*, real_nodes: bool = False) -> Binaries:
    """The binaries in $VIDEOQUEUE_BIN_DIR, else in the toolchain cache (with the kubelet and
    the pause image archive when `real_nodes`).

    Fails with the command that builds them, so a fresh checkout tells the user what to do.
    """
    directory = Path(os.environ.get("VIDEOQUEUE_BIN_DIR", default_cache_dir() / "bin"))
    wanted = COMPONENTS + (REAL_NODE_COMPONENTS if real_nodes else ())
    missing = [c for c in wanted if not os.access(directory / c, os.R_OK if "." in c else os.X_OK)]
    if missing:
        raise MissingBinaryError(
            f"control-plane binaries missing from {directory}: {', '.join(missing)}; "
            "build them with `make toolchain` (hack/build-toolchain.sh)"
        )
    return Binaries(directory)
