"""The local control plane, `LocalCluster`, and what every cluster flavour shares.

`from videoqueue.envtest.cluster import X` reaches the public names of all its modules:
- base.py: `ClusterConfig`, `ClusterError`, `ClusterBase` (the client side tests use, shared
  with kind.py's KindBackedCluster), KWOK's command line, the service and pod CIDRs;
- local.py: `LocalCluster` itself: start the components in order, stop them, attach to a
  detached cluster, and the control plane's command lines;
- processes.py: process supervision (launch, health waits, terminate, state.json, logs);
- real_nodes.py: real nodes (containerd + kubelet each) and kube-proxy as cluster components.
"""

from videoqueue.envtest.cluster.base import (
    POD_CIDR,
    SERVICE_CIDR,
    ClusterBase,
    ClusterConfig,
    ClusterError,
    default_nodes,
    kwok_argv,
)
from videoqueue.envtest.cluster.local import LocalCluster
from videoqueue.envtest.pki import kubeconfig_document

__all__ = [
    "POD_CIDR",
    "SERVICE_CIDR",
    "ClusterBase",
    "ClusterConfig",
    "ClusterError",
    "LocalCluster",
    "default_nodes",
    "kubeconfig_document",
    "kwok_argv",
]
