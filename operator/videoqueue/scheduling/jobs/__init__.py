"""The job state machine: from a job's object, its worker pods and its queue, what its status
is and where it stands in its queue. Pure: the time is passed in.

The worker pods are the truth about attempts: a pod exists for every attempt that was
admitted (the operator creates the pod before it records the admission), so after a crash the
status is rebuilt from the pods, and an attempt's outcome is read from its pod's container
status and termination message (`videoqueue.scheduling.pod_outcome`).

Attempt numbers name pods (`<job>-a<n>`) and grow with every pod, including re-queues after
a disruption; only failures that are the job's fault count against `maxAttempts`
(`videoqueue.scheduling.retry`).

- `assess`: `assess_job`, the entry point, and `stopping_pods`;
- `attempts`: an attempt in flight, from its admission (`admit`) to its outcome, and the
  attempts ended from outside (`preempt`, cancel, suspend);
- `waiting`: a job without an attempt in flight: rejected, failed before it ran, or waiting;
- `model`: what they return (`Assessment`) and the rules they share.
"""

from videoqueue.scheduling.jobs.assess import assess_job, stopping_pods
from videoqueue.scheduling.jobs.attempts import admit, preempt
from videoqueue.scheduling.jobs.model import (
    MAX_HISTORY,
    Admission,
    Assessment,
    Notice,
    effective_memory,
    job_key,
    job_requests,
    keep_status,
    memory_decision,
    queue_overhead,
    queue_policy,
    type_requests,
)
from videoqueue.scheduling.jobs.waiting import explain_refusal, reject, waiting_because

__all__ = [
    "MAX_HISTORY",
    "Admission",
    "Assessment",
    "Notice",
    "admit",
    "assess_job",
    "effective_memory",
    "explain_refusal",
    "job_key",
    "job_requests",
    "keep_status",
    "memory_decision",
    "preempt",
    "queue_overhead",
    "queue_policy",
    "reject",
    "stopping_pods",
    "type_requests",
    "waiting_because",
]
