"""A real, local Kubernetes control plane for tests and development (not used by the operator).

Like controller-runtime's envtest, but with a controller manager, a scheduler and KWOK
nodes, so pods are scheduled, run, finish and get garbage-collected. Beside it, the harness
the tests and the benchmarks share: the operator as a process (`operator_process`) and the
real worker outside a cluster (`worker`). Nothing in the operator or the plugin imports this
package (an import-linter contract in pyproject.toml).
"""

from videoqueue.envtest.binaries import Binaries, MissingBinaryError, find_binaries
from videoqueue.envtest.cluster import (
    ClusterBase,
    ClusterConfig,
    ClusterError,
    LocalCluster,
    default_nodes,
)
from videoqueue.envtest.kwok import NodeSpec, pod_script
from videoqueue.envtest.wait import WaitTimeoutError, poll, wait_for_object

__all__ = [
    "Binaries",
    "ClusterBase",
    "ClusterConfig",
    "ClusterError",
    "LocalCluster",
    "MissingBinaryError",
    "NodeSpec",
    "WaitTimeoutError",
    "default_nodes",
    "find_binaries",
    "pod_script",
    "poll",
    "wait_for_object",
]
