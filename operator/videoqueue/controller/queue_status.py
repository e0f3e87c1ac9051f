"""A VideoQueue's status: what its jobs add up to, as a pure function of the queue, the jobs'
desired statuses and the time.

`summarize_queue` counts the jobs by phase, adds up the memory of the admitted and running
ones, and sets the conditions kstatus readers (Flux, kpt, `kubectl wait`) look for:

- `Ready`: True (reason `Active`) while the queue admits jobs; False with reason `Paused` or
  `Draining` otherwise, and a message that says what that state means and the command that
  resumes admission.
- `Reconciling`: always False with reason `Reconciled`. A status is only written after the
  operator has acted on the spec it read, so the status describes `observedGeneration`; a
  reader that sees `metadata.generation` ahead of it knows a change is still being picked up.
- `Stalled` is not set yet (kstatus treats a missing Stalled as False).

Conditions go through `set_condition`, so lastTransitionTime moves only when a condition's
status changes, and conditions of other types (written by later features) are kept.

The status is bounded in size: counts and totals, never a list of jobs. An unchanged queue
yields an identical status, so `status_patch` returns None and the cycle costs no write.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable

from videoqueue.api import (
    JobPhase,
    QueueConditionType,
    QueueHealth,
    QueueMemoryStatus,
    QueueState,
    VideoJobStatus,
    VideoQueue,
    VideoQueueStatus,
    find_condition,
    format_bytes,
    parse_quantity,
    put_condition,
)

REASON_ACTIVE = "Active"
REASON_PAUSED = "Paused"
REASON_DRAINING = "Draining"
REASON_RECONCILED = "Reconciled"

RESERVING_PHASES = frozenset({JobPhase.ADMITTED, JobPhase.RUNNING})
"""Phases whose jobs hold memory of the queue's budget (their worker pod exists)."""

_READY_MESSAGES = {
    QueueState.ACTIVE: "spec.state is Active: jobs are admitted in priority order within "
    "spec.concurrency and spec.memory.budget",
    QueueState.PAUSED: "spec.state is Paused: no new jobs are admitted; running jobs finish "
    "and new jobs are accepted and wait",
    QueueState.DRAINING: "spec.state is Draining: no new jobs are admitted and new jobs are "
    "rejected; running jobs finish",
}
_RECONCILED_MESSAGE = "the operator has acted on the current spec (see status.observedGeneration)"


def summarize_queue(
    queue: VideoQueue,
    jobs: Iterable[VideoJobStatus],
    now: datetime.datetime,
    *,
    previous: VideoQueueStatus | None = None,
) -> VideoQueueStatus:
    """The status `queue` should have, given the desired statuses of its jobs.

    `previous` is the status as last written, whose conditions are kept (and whose
    lastTransitionTimes are kept while their status does not change); it defaults to
    `queue.status`, the status the object was read with. Pass `VideoQueueStatus()` to start
    from nothing. `now` stamps conditions that change. Pure: no I/O, no clock reads.
    """
    base = previous if previous is not None else queue.status
    generation = queue.metadata.generation

    counts: Counter[JobPhase] = Counter()
    reserved = 0
    for job in jobs:
        phase = job.phase or JobPhase.PENDING
        counts[phase] += 1
        if phase in RESERVING_PHASES and job.effective_memory is not None:
            reserved += parse_quantity(job.effective_memory)

    budget = queue.spec.memory.budget_bytes
    reserved_text, budget_text = format_bytes(reserved), format_bytes(budget)
    status = VideoQueueStatus(
        observed_generation=generation,
        conditions=[c.model_copy() for c in base.conditions],
        pending=counts[JobPhase.PENDING],
        waiting=counts[JobPhase.WAITING],
        admitted=counts[JobPhase.ADMITTED],
        running=counts[JobPhase.RUNNING],
        backoff=counts[JobPhase.BACKOFF],
        succeeded=counts[JobPhase.SUCCEEDED],
        failed=counts[JobPhase.FAILED],
        cancelled=counts[JobPhase.CANCELLED],
        rejected=counts[JobPhase.REJECTED],
        memory=QueueMemoryStatus(
            reserved=reserved_text,
            budget=budget_text,
            summary=f"{reserved_text}/{budget_text}",
        ),
    )

    def condition(type_: QueueConditionType, value: bool, reason: str, message: str) -> None:
        status.conditions = put_condition(
            status.conditions, type_, value, reason, message, now=now, generation=generation
        )

    state = queue.spec.state
    if state == QueueState.ACTIVE:
        condition(QueueConditionType.READY, True, REASON_ACTIVE, _READY_MESSAGES[state])
    else:
        reason = REASON_PAUSED if state == QueueState.PAUSED else REASON_DRAINING
        message = f"{_READY_MESSAGES[state]}. Resume admission with: {resume_command(queue)}"
        condition(QueueConditionType.READY, False, reason, message)
    condition(QueueConditionType.RECONCILING, False, REASON_RECONCILED, _RECONCILED_MESSAGE)
    if state == QueueState.DRAINING:
        busy = status.admitted + status.running
        if busy:
            condition(
                QueueConditionType.DRAINED,
                False,
                "JobsRunning",
                f"{busy} admitted or running jobs still to finish",
            )
        else:
            condition(QueueConditionType.DRAINED, True, "Drained", "nothing admitted or running")
    elif find_condition(status.conditions, QueueConditionType.DRAINED) is not None:
        status.conditions = [c for c in status.conditions if c.type != "Drained"]

    status.health = assess_health(queue, status)
    return status


def assess_health(queue: VideoQueue, status: VideoQueueStatus) -> QueueHealth:
    """The queue's health from its spec and the counts and memory in `status`.

    The hook for the documented health rules of issue 4 (backlog size, failure rate, memory
    utilisation over its warning threshold, worker pods that cannot be scheduled → Warning,
    Critical or Offline, with the reason in the Ready condition). Until those rules land
    every queue is Healthy: a Paused or Draining queue is a choice, not a fault. It must stay
    a pure function of its arguments.
    """
    return QueueHealth.HEALTHY


def resume_command(queue: VideoQueue) -> str:
    """The kubectl command that sets the queue back to Active."""
    namespace = f"-n {queue.metadata.namespace} " if queue.metadata.namespace else ""
    name = queue.metadata.name or "NAME"
    return (
        f"""kubectl {namespace}patch vq {name} --type merge -p '{{"spec":{{"state":"Active"}}}}'"""
    )
