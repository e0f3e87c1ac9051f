"""What every cluster flavour shares (LocalCluster here, KindBackedCluster in kind.py): the
configuration (`ClusterConfig`: KWOK nodes, real nodes, controller settings), `ClusterError`,
and `ClusterBase`, the client side tests use (kubectl, API clients, nodes, namespaces); also
KWOK's command line and the cluster's service and pod CIDRs. Nothing here starts a process
of the control plane.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from videoqueue.envtest.binaries import Binaries
from videoqueue.envtest.kwok import NODE_SELECTOR, NodeSpec, build_node_manifest, stages_file
from videoqueue.envtest.realnode import RealNodeSpec
from videoqueue.envtest.wait import poll

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"


def default_nodes(count: int = 4, *, cpu: str = "16", memory: str = "64Gi") -> list[NodeSpec]:
    return [NodeSpec(f"kwok-node-{i}", cpu=cpu, memory=memory) for i in range(count)]


@dataclass(frozen=True)
class ClusterConfig:
    nodes: Sequence[NodeSpec] = field(default_factory=default_nodes)
    # fsync costs more than everything else on a loaded CI disk; the data is thrown away.
    etcd_fsync: bool = False
    startup_timeout: float = 120.0
    # Client-side rate limits of kube-controller-manager (the upstream defaults are 20/30).
    controller_manager_qps: int = 20
    controller_manager_burst: int = 30
    # Finished pods kube-controller-manager keeps before deleting the oldest (upstream
    # default 12500); a benchmark that leaves more behind raises it so no deletions run
    # under its measurements.
    terminated_pod_gc_threshold: int = 12500
    # Real nodes (kubelet + containerd, see realnode/) beside the KWOK ones; needs root.
    real_nodes: Sequence[RealNodeSpec] = ()
    # The API server's audit log of writes (cluster/audit.py), to count who wrote what.
    audit_log: bool = False


class ClusterError(RuntimeError):
    pass


class ClusterBase:
    """What every cluster flavour offers tests: kubeconfig, kubectl, clients, nodes."""

    def __init__(self, kubeconfig: Path, binaries: Binaries) -> None:
        self.kubeconfig = kubeconfig
        self.binaries = binaries

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built with the control plane; raise with its stderr on failure."""
        result = subprocess.run(
            [str(self.binaries["kubectl"]), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def api_client(self) -> Any:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def create_nodes(self, specs: Iterable[NodeSpec], *, timeout: float = 60) -> None:
        """Create fake nodes and wait until they are Ready and untainted."""
        specs = list(specs)
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            for spec in specs:
                try:
                    core.create_node(build_node_manifest(spec))
                except ApiException as e:
                    if e.status != 409:
                        raise
            names = {s.name for s in specs}

            def not_ready() -> set[str] | None:
                ready = {n.metadata.name for n in core.list_node().items if _ready(n)}
                return names if names <= ready else None

            poll(not_ready, timeout=timeout, what=f"nodes {sorted(names)} to become Ready")

    def delete_nodes(self, names: Iterable[str]) -> None:
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            for name in names:
                with contextlib.suppress(ApiException):
                    core.delete_node(name)

    def create_namespace(self, name: str, *, labels: dict[str, str] | None = None) -> None:
        """Create a namespace and wait for its default ServiceAccount, without which the
        ServiceAccount admission plugin rejects pods."""
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})

            def default_sa() -> bool:
                try:
                    core.read_namespaced_service_account("default", name)
                except ApiException as e:
                    if e.status == 404:
                        return False
                    raise
                return True

            poll(default_sa, timeout=30, what=f"the default ServiceAccount in {name}")

    def delete_namespace(self, name: str) -> None:
        with self.api_client() as api, contextlib.suppress(ApiException):
            client.CoreV1Api(api).delete_namespace(name)


def kwok_argv(binaries: Binaries, kubeconfig: Path, port: int) -> list[str]:
    return [
        str(binaries["kwok"]),
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={NODE_SELECTOR}",
        f"--config={stages_file()}",
        f"--cidr={POD_CIDR}",
        "--node-ip=10.240.0.1",
        # Heartbeats through Lease objects, as kubelets do, instead of node status writes.
        "--node-lease-duration-seconds=40",
        f"--server-address=127.0.0.1:{port}",
    ]


def _ready(node: Any) -> bool:
    """Ready and schedulable: the node lifecycle controller lifts its not-ready taint a
    moment after the Ready condition appears, and the scheduler honours that taint."""
    ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
    tainted = any(t.key.startswith("node.kubernetes.io/") for t in (node.spec.taints or []))
    return ready and not tainted
