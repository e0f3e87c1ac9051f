"""The same test cluster on kind, for people with Docker and internet (never used by CI).

pytest-kind creates the control plane in Docker; KWOK runs here, out of cluster, against
it with the same stage configuration, so tests see the same fake nodes and pod lifecycle.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from videoqueue.envtest.binaries import Binaries, find_binaries
from videoqueue.envtest.cluster import ClusterBase, ClusterConfig, kwok_argv
from videoqueue.envtest.cluster.processes import _free_ports


class KindBackedCluster(ClusterBase):
    def __init__(
        self, name: str = "videoqueue", cluster_config: ClusterConfig | None = None
    ) -> None:
        from pytest_kind import KindCluster  # optional: kind path only

        self.kind: Any = KindCluster(name)
        binaries: Binaries = find_binaries()
        super().__init__(Path(self.kind.kubeconfig_path), binaries)
        self.config = cluster_config or ClusterConfig()
        self._kwok: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> KindBackedCluster:
        self.kind.create()
        log = (Path(self.kind.path) / "kwok.log").open("ab")
        argv = kwok_argv(self.binaries, self.kubeconfig, _free_ports(1)[0])
        self._kwok = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if self.config.nodes:
            self.create_nodes(self.config.nodes)
        return self

    def __exit__(self, *_: object) -> None:
        if self._kwok is not None:
            self._kwok.terminate()
            self._kwok.wait(timeout=15)
        self.kind.delete()
