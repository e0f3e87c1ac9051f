"""Pure scheduling decisions: given a queue, a snapshot of its jobs and the time, what to do.

No I/O, no clock reads, no kopf, no Kubernetes client: the controller builds a `Snapshot`,
passes the current time, and applies the returned decision. Everything here is deterministic.

- `snapshot`: the input types (`QueuePolicy`, `JobView`, `Snapshot`).
- `admission`: `decide_admissions`, the admission order (`admission_order`), which jobs can
  never be admitted (`never_admitted`), backfill and the starvation guard.
- `retry`: retry, backoff and OOM memory growth rules.
- `memory`: what a worker pod's memory adds up to (`PodOverhead`).
- `dependencies`: dependency cycles between jobs (`find_cycle`).
"""

from videoqueue.scheduling.admission import (
    AdmissionDecision,
    Blocked,
    BlockReason,
    Rejection,
    RejectReason,
    admission_order,
    decide_admissions,
    never_admitted,
    order_key,
)
from videoqueue.scheduling.dependencies import describe_cycle, find_cycle
from videoqueue.scheduling.memory import PodOverhead
from videoqueue.scheduling.retry import (
    DISRUPTION_REASONS,
    OOM_KILLED,
    backoff_delay,
    consumes_attempt,
    next_memory_after_oom,
    should_retry,
)
from videoqueue.scheduling.snapshot import JobState, JobView, QueuePolicy, Snapshot, StoppingPod

__all__ = [
    "DISRUPTION_REASONS",
    "OOM_KILLED",
    "AdmissionDecision",
    "BlockReason",
    "Blocked",
    "JobState",
    "JobView",
    "PodOverhead",
    "QueuePolicy",
    "RejectReason",
    "Rejection",
    "Snapshot",
    "StoppingPod",
    "admission_order",
    "backoff_delay",
    "consumes_attempt",
    "decide_admissions",
    "describe_cycle",
    "find_cycle",
    "never_admitted",
    "next_memory_after_oom",
    "order_key",
    "should_retry",
]
