"""A VideoQueue's status: what its jobs add up to, as a pure function of the queue, the jobs'
desired statuses and the time.

`summarize_queue` counts the jobs by phase, adds up the memory of the admitted and running
ones (each job's whole worker pod: its effectiveMemory plus what the queue's template puts
beside the worker, sidecars and init containers, as admission counts it) and, for each
resource in spec.budgets, what their pods request (`status.budgets`, counted as admission
counts it, `videoqueue.scheduling.pod_requests`), and sets the conditions kstatus readers
(Flux, kpt, `kubectl wait`) look for:

- `Ready`: True with reason `Active`, `Paused` or `Draining` (the state is a choice, not a
  fault: kstatus, hence Flux, reads a False Ready as "in progress" and would wait forever on
  a queue Git pauses); for Paused and Draining the message says what that means and gives
  the command that resumes admission. False only while the queue is Offline.
- `Reconciling`: always False with reason `Reconciled`. A status is only written after the
  operator has acted on the spec it read, so the status describes `observedGeneration`; a
  reader that sees `metadata.generation` ahead of it knows a change is still being picked up.
- `Stalled`: True (reason `WorkersCannotStart`) while the queue is Offline, else False.
- `MemoryPressure`: True while the effective concurrency is lowered (see
  `videoqueue.scheduling.pressure`), with the reason and the effective value.

Statistics (`status.statistics`) cover the jobs that finished (Succeeded or Failed; a
cancelled or rejected job says nothing about the workers) within `spec.statistics.windowSeconds`:
success rate = succeeded / finished, mean wait and run seconds (the jobs' own waitSeconds and
runSeconds, all attempts together), throughput = finished per minute of the window, and the
same per job type (the 16 busiest types). They are counters kept in the status itself, in
fixed time buckets (`videoqueue.scheduling.statistics`): the previous status's counters plus
the finished jobs the cycle passes in (`QueueFacts.finished`).

Sizing (`status.sizing`): the per-key summary of past peaks learned memory sizing sizes jobs
from (`videoqueue.scheduling.sizing`), fed from the same finished jobs as the statistics.

Batches (`status.batches`): jobs labelled `videoqueue.dev/batch` are counted per label value;
only batches with unfinished jobs are listed, the 20 with the most unfinished jobs.

Health (`status.health`, `status.healthReasons`), from `spec.health`, worst finding wins:
- Offline: admitted jobs' worker pods cannot be scheduled and no worker runs.
- Critical: the backlog (Pending + Backoff jobs) is at least backlogCritical, or at least
  minFinished jobs finished in the window and the failed share is at least
  failureRateCritical.
- Warning: backlog at least backlogWarning; failed share at least failureRateWarning (with
  minFinished); reserved memory over memoryUtilizationWarning of the budget; some worker
  pods cannot be scheduled; concurrency lowered by memory pressure.
- Healthy otherwise. Paused and Draining are choices, not faults: they do not affect health.

Conditions go through `set_condition`, so lastTransitionTime moves only when a condition's
status changes, and conditions of other types (written by later features) are kept.

The status is bounded in size: counts and totals, never a list of jobs. An unchanged queue
yields an identical status, so `status_patch` returns None and the cycle costs no write.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from videoqueue.api import (
    MAX_BATCHES,
    BatchProgress,
    JobPhase,
    QueueBudgetStatus,
    QueueConditionType,
    QueueHealth,
    QueueMemoryStatus,
    QueueState,
    VideoJobStatus,
    VideoQueue,
    VideoQueueStatus,
    budget_units,
    find_condition,
    put_condition,
)
from videoqueue.scheduling.budgets import resource_order
from videoqueue.scheduling.jobs import queue_overhead, type_requests
from videoqueue.scheduling.memory import PodOverhead
from videoqueue.scheduling.pressure import PressureState, describe_pressure, pressure_since
from videoqueue.scheduling.sizing import observe
from videoqueue.scheduling.snapshot import StoppingPod
from videoqueue.scheduling.statistics import FinishedJob, count_finished, fresh_finished

REASON_ACTIVE = "Active"
REASON_PAUSED = "Paused"
REASON_DRAINING = "Draining"
REASON_RECONCILED = "Reconciled"

JobStatuses = Iterable[VideoJobStatus | tuple[str | None, VideoJobStatus]]
"""A queue's jobs' statuses, each alone or with its job's spec.type: the memory of a job whose
type is given counts the worker pod of its type (spec.types), else of spec.template alone."""

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


@dataclass(frozen=True, slots=True)
class QueueFacts:
    """What the queue's status needs beyond its jobs' statuses."""

    # Finished jobs to count into the statistics (`videoqueue.scheduling.statistics`), and
    # the oldest completionTime of those whose outcome is not stored yet: counting stops there.
    finished: tuple[FinishedJob, ...] = ()
    unconfirmed_since: datetime.datetime | None = None
    batches: tuple[tuple[str, VideoJobStatus], ...] = ()  # (label value, status)
    unschedulable: int = 0  # admitted jobs whose worker pod cannot be scheduled
    pressure: PressureState | None = None
    # Worker pods still terminating although their attempt is over: they hold memory and
    # their requests until gone (admission counts them: `videoqueue.scheduling.StoppingPod`).
    stopping: tuple[StoppingPod, ...] = ()

    @property
    def stopping_memory(self) -> int:
        return sum(pod.memory for pod in self.stopping)


def summarize_queue(
    queue: VideoQueue,
    jobs: JobStatuses,
    now: datetime.datetime,
    *,
    previous: VideoQueueStatus | None = None,
    facts: QueueFacts | None = None,
) -> VideoQueueStatus:
    """The status `queue` should have, given the desired statuses of its jobs.

    `previous` is the status as last written, whose conditions are kept (and whose
    lastTransitionTimes are kept while their status does not change); it defaults to
    `queue.status`, the status the object was read with. Pass `VideoQueueStatus()` to start
    from nothing. `now` stamps conditions that change. Pure: no I/O, no clock reads.
    """
    base = previous if previous is not None else queue.status
    generation = queue.metadata.generation
    facts = facts or QueueFacts()

    typed = [_typed(job) for job in jobs]
    fresh = fresh_finished(
        base.statistics, facts.finished, unconfirmed_since=facts.unconfirmed_since
    )
    counts: Counter[JobPhase] = Counter(job.phase or JobPhase.PENDING for _, job in typed)
    reserved = reserved_memory(queue, typed) + facts.stopping_memory

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
        memory=QueueMemoryStatus.of(reserved=reserved, budget=queue.spec.memory.budget_bytes),
        budgets=budget_status(queue, reserved_requests(queue, typed, facts.stopping)),
        effective_concurrency=(
            facts.pressure.effective if facts.pressure is not None else queue.spec.concurrency
        ),
        effective_concurrency_since=pressure_since(facts.pressure, queue.spec.concurrency),
        statistics=count_finished(
            base.statistics,
            fresh,
            unconfirmed_since=facts.unconfirmed_since,
            window_seconds=queue.spec.statistics.window_seconds,
            now=now,
        ),
        batches=batch_progress(facts.batches),
        # Fed from the same fresh jobs as the statistics, so exactly once (see there).
        sizing=observe(base.sizing, ((job.sizing_key, job.peaks_mib) for job in fresh)),
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
        condition(QueueConditionType.READY, True, reason, message)
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

    pressure = facts.pressure
    if pressure is not None and pressure.reason is not None:
        condition(
            QueueConditionType.MEMORY_PRESSURE,
            True,
            pressure.reason,
            describe_pressure(pressure, queue.spec.concurrency),
        )
    elif find_condition(status.conditions, QueueConditionType.MEMORY_PRESSURE) is not None:
        condition(QueueConditionType.MEMORY_PRESSURE, False, "NoPressure", "")

    status.health, status.health_reasons = assess_health(queue, status, facts)
    if status.health == QueueHealth.OFFLINE:
        message = "; ".join(status.health_reasons)
        condition(QueueConditionType.READY, False, "WorkersCannotStart", message)
        condition(QueueConditionType.STALLED, True, "WorkersCannotStart", message)
    elif find_condition(status.conditions, QueueConditionType.STALLED) is not None:
        condition(QueueConditionType.STALLED, False, "WorkersStarting", "")
    return status


def reserved_memory(queue: VideoQueue, jobs: JobStatuses) -> int:
    """The memory the queue's admitted and running jobs hold of its budget: each job's whole
    worker pod, its effectiveMemory plus what its type's template (or the queue's) puts
    beside the worker (`videoqueue.scheduling.jobs.queue_overhead`), as admission counts it."""
    overheads: dict[str | None, PodOverhead] = {}
    total = 0
    for job_type, job in (_typed(job) for job in jobs):
        if (job.phase or JobPhase.PENDING) not in RESERVING_PHASES:
            continue  # (before parsing the quantity: most of a long queue only waits)
        if (memory := job.effective_memory_bytes) is None:
            continue
        if job_type not in overheads:
            overheads[job_type] = queue_overhead(queue, job_type)
        total += overheads[job_type].pod_memory(memory)
    return total


def _typed(
    job: VideoJobStatus | tuple[str | None, VideoJobStatus],
) -> tuple[str | None, VideoJobStatus]:
    return (None, job) if isinstance(job, VideoJobStatus) else job


def reserved_requests(
    queue: VideoQueue, jobs: JobStatuses, stopping: Iterable[StoppingPod] = ()
) -> dict[str, int]:
    """What the queue's admitted and running jobs' pods (as their type's template makes them,
    `videoqueue.scheduling.jobs.type_requests`), and the pods still `stopping`, request of
    each resource in spec.budgets (CPU in millicores, others in whole units), as admission
    counts it."""
    if not queue.spec.budgets:
        return {}
    per_type: dict[str | None, dict[str, int]] = {}
    held: Counter[str] = Counter()
    for job_type, job in (_typed(job) for job in jobs):
        if (job.phase or JobPhase.PENDING) not in RESERVING_PHASES:
            continue
        if job_type not in per_type:
            per_type[job_type] = type_requests(queue, job_type)
        held.update(per_type[job_type])
    for pod in stopping:
        held.update(pod.requests)
    return {name: held[name] for name in budget_units(queue.spec.budgets)}


def budget_status(queue: VideoQueue, reserved: Mapping[str, int]) -> list[QueueBudgetStatus] | None:
    """status.budgets: reserved and budget of each resource in spec.budgets, cpu first;
    None without spec.budgets."""
    if not queue.spec.budgets:
        return None
    budgets = budget_units(queue.spec.budgets)
    return [
        QueueBudgetStatus.of(name, reserved=reserved.get(name, 0), budget=budgets[name])
        for name in resource_order(budgets)
    ]


def assess_health(
    queue: VideoQueue, status: VideoQueueStatus, facts: QueueFacts | None = None
) -> tuple[QueueHealth, list[str]]:
    """The queue's health and the findings behind it (see the module docstring). Pure."""
    facts = facts or QueueFacts()
    limits = queue.spec.health
    findings: list[tuple[QueueHealth, str]] = []
    if facts.unschedulable:
        worst = QueueHealth.OFFLINE if status.running == 0 else QueueHealth.WARNING
        findings.append(
            (worst, f"{facts.unschedulable} worker pods cannot be scheduled on any node")
        )
    backlog = status.pending + status.backoff
    if backlog >= limits.backlog_critical:
        findings.append((QueueHealth.CRITICAL, f"backlog of {backlog} jobs"))
    elif backlog >= limits.backlog_warning:
        findings.append((QueueHealth.WARNING, f"backlog of {backlog} jobs"))
    stats = status.statistics
    if stats is not None and stats.finished >= limits.min_finished:
        failed_share = stats.failed / stats.finished
        text = f"{failed_share:.0%} of {stats.finished} jobs finished in the window failed"
        if failed_share >= limits.failure_rate_critical:
            findings.append((QueueHealth.CRITICAL, text))
        elif failed_share >= limits.failure_rate_warning:
            findings.append((QueueHealth.WARNING, text))
    budget = queue.spec.memory.budget_bytes
    reserved = (status.memory.reserved_bytes if status.memory else None) or 0
    if budget and reserved / budget > limits.memory_utilization_warning:
        findings.append(
            (QueueHealth.WARNING, f"memory {reserved / budget:.0%} reserved of the budget")
        )
    if facts.pressure is not None and facts.pressure.effective < queue.spec.concurrency:
        findings.append(
            (
                QueueHealth.WARNING,
                f"memory pressure: concurrency lowered to {facts.pressure.effective}",
            )
        )
    order = [QueueHealth.HEALTHY, QueueHealth.WARNING, QueueHealth.CRITICAL, QueueHealth.OFFLINE]
    health = max((h for h, _ in findings), key=order.index, default=QueueHealth.HEALTHY)
    return health, [text[:256] for _, text in findings][:8]


def batch_progress(members: Iterable[tuple[str, VideoJobStatus]]) -> list[BatchProgress]:
    """Progress of the batches that still have unfinished jobs, the busiest first."""
    batches: dict[str, BatchProgress] = {}
    for name, job in members:
        batch = batches.setdefault(name, BatchProgress(name=name))
        batch.total += 1
        phase = job.phase or JobPhase.PENDING
        if phase == JobPhase.SUCCEEDED:
            batch.succeeded += 1
        elif phase.is_terminal:
            batch.failed += 1
        elif phase in RESERVING_PHASES:
            batch.running += 1
        else:
            batch.pending += 1
    unfinished = [b for b in batches.values() if b.pending + b.running > 0]
    unfinished.sort(key=lambda b: (-(b.pending + b.running), b.name))
    return unfinished[:MAX_BATCHES]


def resume_command(queue: VideoQueue) -> str:
    """The kubectl command that sets the queue back to Active."""
    namespace = f"-n {queue.metadata.namespace} " if queue.metadata.namespace else ""
    name = queue.metadata.name or "NAME"
    return (
        f"""kubectl {namespace}patch vq {name} --type merge -p '{{"spec":{{"state":"Active"}}}}'"""
    )
