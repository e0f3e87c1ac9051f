"""Real nodes: a kubelet and a containerd of their own, beside the KWOK nodes.

A real node runs pods for real: containers under runc with memory limits the kernel enforces,
termination messages written by the container, a pod network on a bridge of the node's own.
Everything it needs lives in a directory of its own, /var/lib/videoqueue/nodes/<key> (linked
from `<cluster state dir>/nodes/<name>`; short because sockets live there): containerd's state,
socket and config, the CNI config and IPAM state, the kubelet's root and certificates. Images
live in a cached containerd root (`claim_image_store`). Elsewhere the kernel keeps a cgroup root
of the node's own and its pod bridge, and containerd its shims' sockets under
/run/containerd/s. `stop()` removes all of those.

Only pods that ask land on a real node: it carries the label `videoqueue.dev/node=real` and
the taint `videoqueue.dev/real-node=true:NoSchedule`; `REAL_NODE_PLACEMENT` is the
nodeSelector + toleration a pod template adds. KWOK nodes keep serving everything else.

Settings that this machine kind needs (see docs/real-nodes.md for the reasons):
containerd's CRI `restrict_oom_score_adj = true` (root may not lower an OOM score here, and
without it every sandbox fails), the kubelet on cgroupfs with swap allowed, eviction
thresholds at 1 % (it cannot read the VM disk's stats), image GC off (imported images cannot be
pulled again), its own ports, and as node IP the pod bridge's host address (the kubelet refuses
a loopback one) so the API server reaches it for logs and exec without leaving the machine.

The package, one concern a module (`from videoqueue.envtest.realnode import X` reaches all of
them):
- layout.py: RealNodeSpec, the placement label and taint, RealNodeLayout (where a node lives);
- config.py: containerd's config, the CNI conflist, the kubelet's config and command line;
- containerd.py: `ctr` against a node's containerd, the cached image store;
- network.py: the pod subnet, the node's bridge and its FORWARD guard;
- cgroups.py and mounts.py: the node's cgroup root, and the mounts under its directory;
- lifecycle.py: claim, prepare and tear down a node on the host, sweep stale ones;
- kube_proxy.py: Services for the nodes' pods (one kube-proxy per machine) and its cleanup.
The cluster's side (starting containerd, the kubelet and kube-proxy as its processes) is
videoqueue.envtest.cluster.real_nodes.
"""

from videoqueue.envtest.realnode.cgroups import (
    CGROUP_FS,
    create_cgroup_root,
    remove_cgroup_root,
)
from videoqueue.envtest.realnode.config import (
    CNI_BIN_DIR,
    cni_conflist,
    containerd_argv,
    containerd_config,
    kubelet_argv,
    kubelet_config,
)
from videoqueue.envtest.realnode.containerd import (
    K8S_NAMESPACE,
    Ctr,
    ImageStore,
    claim_image_store,
    remove_all_containers,
    sandbox_image_tag,
    wait_for_containerd,
)
from videoqueue.envtest.realnode.kube_proxy import (
    KUBE_PROXY_LOCK,
    KUBE_PROXY_NFACCT,
    claim_service_proxy,
    cleanup_service_proxy,
    kube_proxy_argv,
    kube_proxy_config,
    service_proxy_leftovers,
    service_proxy_rules,
)
from videoqueue.envtest.realnode.layout import (
    NODES_ROOT,
    REAL_NODE_LABEL,
    REAL_NODE_LABEL_VALUE,
    REAL_NODE_PLACEMENT,
    REAL_NODE_TAINT,
    RealNodeError,
    RealNodeLayout,
    RealNodeSpec,
    real_nodes,
)
from videoqueue.envtest.realnode.lifecycle import (
    claim_node,
    is_root,
    leftovers,
    prepare,
    sweep_stale_nodes,
    teardown,
)
from videoqueue.envtest.realnode.mounts import (
    mounts_under,
    unmount_under,
)
from videoqueue.envtest.realnode.network import (
    POD_SUBNETS,
    add_forward_guard,
    create_bridge,
    forward_guard,
    pick_subnet,
)

__all__ = [
    "CGROUP_FS",
    "CNI_BIN_DIR",
    "K8S_NAMESPACE",
    "KUBE_PROXY_LOCK",
    "KUBE_PROXY_NFACCT",
    "NODES_ROOT",
    "POD_SUBNETS",
    "REAL_NODE_LABEL",
    "REAL_NODE_LABEL_VALUE",
    "REAL_NODE_PLACEMENT",
    "REAL_NODE_TAINT",
    "Ctr",
    "ImageStore",
    "RealNodeError",
    "RealNodeLayout",
    "RealNodeSpec",
    "add_forward_guard",
    "claim_image_store",
    "claim_node",
    "claim_service_proxy",
    "cleanup_service_proxy",
    "cni_conflist",
    "containerd_argv",
    "containerd_config",
    "create_bridge",
    "create_cgroup_root",
    "forward_guard",
    "is_root",
    "kube_proxy_argv",
    "kube_proxy_config",
    "kubelet_argv",
    "kubelet_config",
    "leftovers",
    "mounts_under",
    "pick_subnet",
    "prepare",
    "real_nodes",
    "remove_all_containers",
    "remove_cgroup_root",
    "sandbox_image_tag",
    "service_proxy_leftovers",
    "service_proxy_rules",
    "sweep_stale_nodes",
    "teardown",
    "unmount_under",
    "wait_for_containerd",
]
