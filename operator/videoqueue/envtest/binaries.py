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
# Optional: SeaweedFS's weed, the S3 server of the s3:// storage tests (envtest.s3_server).
STORAGE_COMPONENTS = ("weed",)


class MissingBinaryError(RuntimeError):
    pass


@dataclass(frozen=True)
class Binaries:
    directory: Path

    def __getitem__(self, name: str) -> Path:
        if name not in COMPONENTS + REAL_NODE_COMPONENTS + PEER_COMPONENTS + STORAGE_COMPONENTS:
            raise KeyError(name)
        return self.directory / name


def default_cache_dir() -> Path:
    return Path(os.environ.get("VIDEOQUEUE_CACHE", Path.home() / ".cache" / "videoqueue"))


def bin_dir() -> Path:
    return Path(os.environ.get("VIDEOQUEUE_BIN_DIR", default_cache_dir() / "bin"))


def find_optional(name: str) -> Path:
    """One optional component (PEER_COMPONENTS, STORAGE_COMPONENTS) from the same directory
    as `find_binaries`, or MissingBinaryError naming the command that builds it."""
    path = Binaries(bin_dir())[name]
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(
            f"{name} is missing from {path.parent}; build it with `make toolchain` "
            "(hack/build-toolchain.sh)"
        )
    return path


def find_binaries(*, real_nodes: bool = False) -> Binaries:
    """The binaries in $VIDEOQUEUE_BIN_DIR, else in the toolchain cache (with the kubelet and
    the pause image archive when `real_nodes`).

    Fails with the command that builds them, so a fresh checkout tells the user what to do.
    """
    directory = bin_dir()
    wanted = COMPONENTS + (REAL_NODE_COMPONENTS if real_nodes else ())
    missing = [c for c in wanted if not os.access(directory / c, os.R_OK if "." in c else os.X_OK)]
    if missing:
        raise MissingBinaryError(
            f"control-plane binaries missing from {directory}: {', '.join(missing)}; "
            "build them with `make toolchain` (hack/build-toolchain.sh)"
        )
    return Binaries(directory)
