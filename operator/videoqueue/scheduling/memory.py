"""What a worker pod's memory adds up to, as Kubernetes counts it.

A queue's budget is memory that worker pods can really use, so a job is counted at the
memory of its whole pod: its worker container plus whatever else the queue's template puts
in the pod. Kubernetes adds up a pod's memory (requests and limits alike) as

    max(sum of the regular containers and of the sidecar init containers,
        for each other init container: its own + the sidecar init containers started before it)

(sidecar init containers are those with `restartPolicy: Always`: they start in order among
the init containers and keep running beside the regular ones). `PodOverhead` holds the two
parts of that sum that do not depend on the job, so that the pod of a job whose worker gets
`w` bytes holds `max(w + sidecars, init_peak)`. Building one from a pod template (parsing
its quantities) is `videoqueue.scheduling.worker_pod.pod_memory_overhead`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PodOverhead:
    """The memory a worker pod holds besides its worker container, in bytes.

    `sidecars`: the memory limits of the pod's other regular containers and of its sidecar
    init containers, which run as long as the worker. `init_peak`: the most the pod holds
    while one of its other init containers runs (that container's limit plus the sidecars
    started before it), before the worker starts; 0 without init containers.
    """

    sidecars: int = 0
    init_peak: int = 0

    def __post_init__(self) -> None:
        if self.sidecars < 0 or self.init_peak < 0:
            raise ValueError(f"memory must be >= 0, got {self}")

    def pod_memory(self, worker: int) -> int:
        """The memory of the pod whose worker container gets `worker` bytes."""
        return max(worker + self.sidecars, self.init_peak)

    def beside(self, worker: int) -> int:
        """What the pod holds beyond `worker`: `pod_memory(worker) - worker`."""
        return self.pod_memory(worker) - worker

    def largest_worker(self, budget: int) -> int:
        """The most memory a worker can get while its pod fits in `budget` (0: none fits)."""
        if self.init_peak > budget:
            return 0
        return max(0, budget - self.sidecars)
