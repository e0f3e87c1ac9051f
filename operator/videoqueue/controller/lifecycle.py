"""A job's lifecycle: from its object, its worker pods and its queue, what its status is.

`assess_job` is pure (the time is passed in). The worker pods are the truth about attempts:
a pod exists for every attempt that was admitted (the operator creates the pod before it
records the admission), so after a crash the status is rebuilt from the pods, and an
attempt's outcome is read from its pod's container status and termination message.

Attempt numbers name pods (`<job>-a<n>`) and grow with every pod, including re-queues after
a disruption; only failures that are the job's fault count against `maxAttempts`
(`videoqueue.scheduling.consumes_attempt`).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from videoqueue.api import (
    RETRY_ANNOTATION,
    AttemptReason,
    AttemptRecord,
    Condition,
    ConditionStatus,
    JobConditionType,
    JobPhase,
    ManualRetry,
    PreemptionPolicy,
    QueueState,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
    find_condition,
    format_bytes,
    is_condition_true,
    parse_quantity,
    put_condition,
    set_condition,
)
from videoqueue.api.worker import EXIT_INVALID_JOB
from videoqueue.controller.pods import MAX_MESSAGE_LENGTH, PodOutcome, pod_memory_overhead
from videoqueue.scheduling import (
    OOM_KILLED,
    JobState,
    JobView,
    PodOverhead,
    QueuePolicy,
    StoppingPod,
    backoff_delay,
    consumes_attempt,
    describe_cycle,
    next_memory_after_oom,
)

MAX_HISTORY = 20


@dataclass(frozen=True)
class Notice:
    """A Kubernetes Event to post about a transition."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Assessment:
    status: VideoJobStatus
    # The job's place in its queue's admission, or None when it is not competing
    # (finished, rejected, its queue missing).
    view: JobView | None
    notices: tuple[Notice, ...] = ()
    # The pod of the current attempt according to status, not in the index: the caller
    # confirms with a GET that it is really gone before trusting `assess_job` with it.
    unconfirmed_pod: str | None = None
    terminal: bool = False
    # Worker pods to delete (cancelled, suspended, preempted, past the deadline), after the
    # status is written.
    stop_pods: tuple[str, ...] = ()
    # When to assess again although nothing changed (an attempt's deadline).
    recheck_at: datetime.datetime | None = None
    # The job's pods whose attempt is over but which still run (see `stopping_pods`).
    stopping: tuple[StoppingPod, ...] = ()


@dataclass(frozen=True)
class Admission:
    """What the controller records when the scheduler admits a job."""

    attempt: int
    memory: int


def _condition_setter(
    status: VideoJobStatus, now: datetime.datetime, generation: int | None
) -> Callable[..., None]:
    """`condition(type, value, reason, message="")`: put a condition on `status` at `now`."""

    def condition(type_: JobConditionType, value: bool, reason: str, message: str = "") -> None:
        status.conditions = put_condition(
            status.conditions, type_, value, reason, message, now=now, generation=generation
        )

    return condition


def job_key(job: VideoJob) -> str:
    return f"{job.metadata.namespace}/{job.metadata.name}"


def effective_memory(job: VideoJob, status: VideoJobStatus, queue: VideoQueue) -> int:
    """Memory of the job's next attempt: what it grew to after OOM kills (as recorded in
    `status`, the status being assessed), else what the job asks for now (a pending job's
    spec.resources.memory may still be edited)."""
    grown = any(r.reason == AttemptReason.OOM_KILLED for r in status.attempts)
    if grown and status.effective_memory is not None:
        return parse_quantity(status.effective_memory)
    if job.spec.resources.memory is not None:
        return parse_quantity(job.spec.resources.memory)
    return queue.spec.memory.default_request_bytes


def queue_overhead(queue: VideoQueue) -> PodOverhead:
    """What the queue's worker pods hold beside the worker (sidecars, init containers), as
    the budget counts it. A template that `build_worker_pod` refuses (a container without a
    memory limit) counts those containers as 0 here: its jobs are held when their pod is
    refused, so no memory is really at stake."""
    return pod_memory_overhead(queue.spec.template, strict=False)


def queue_policy(queue: VideoQueue, *, concurrency: int | None = None) -> QueuePolicy:
    """The scheduling policy of `queue`; `concurrency` overrides spec.concurrency (the
    effective value under memory pressure). The one conversion used by the controller and
    by the kubectl plugin's estimates."""
    memory = queue.spec.memory
    aging = queue.spec.aging
    rate_limit = queue.spec.rate_limit
    return QueuePolicy(
        concurrency=queue.spec.concurrency if concurrency is None else concurrency,
        memory_budget=memory.budget_bytes,
        memory_max=memory.max_bytes,
        backfill_seconds=float(memory.backfill_seconds),
        admitting=queue.spec.state == QueueState.ACTIVE
        and queue.metadata.deletion_timestamp is None,
        aging_interval=float(aging.interval_seconds) if aging else None,
        aging_max_boost=aging.max_boost if aging else 10,
        starts_per_minute=rate_limit.starts_per_minute if rate_limit else None,
        preempt_lower_priority=queue.spec.preemption == PreemptionPolicy.LOWER_PRIORITY,
    )


def assess_job(
    job: VideoJob,
    pods: Sequence[PodOutcome],
    queue: VideoQueue | None,
    now: datetime.datetime,
    *,
    confirmed_missing: frozenset[str] = frozenset(),
    dependencies: Mapping[str, JobPhase | None] | None = None,
    heard_at: datetime.datetime | None = None,
    cycle: Sequence[str] | None = None,
) -> Assessment:
    """The job's status and place in its queue at `now` (see `_assess_job`), with the
    kstatus conditions that follow from its phase."""
    assessment = _assess_job(
        job,
        pods,
        queue,
        now,
        confirmed_missing=confirmed_missing,
        dependencies=dependencies,
        heard_at=heard_at,
        cycle=cycle,
    )
    if assessment.unconfirmed_pod is None:
        _set_kstatus_conditions(assessment.status, now, job.metadata.generation)
    stopping = stopping_pods(assessment.status, pods, queue)
    return replace(assessment, stopping=stopping) if stopping else assessment


def stopping_pods(
    status: VideoJobStatus, pods: Sequence[PodOutcome], queue: VideoQueue | None
) -> tuple[StoppingPod, ...]:
    """The job's worker pods that have not terminated although their attempt is over: every
    pod of a job that is not admitted or running, and the pods of earlier attempts of one
    that is. A deleted pod runs on through its grace period (preStop hooks, the worker
    finishing its write), so admission keeps counting its memory until the kubelet reports
    it terminated or it is gone. Each counts its whole pod as it is (the queue's template
    may have changed since), as admission counted it while it ran."""
    busy = status.phase in (JobPhase.ADMITTED, JobPhase.RUNNING)
    overhead = queue_overhead(queue) if queue is not None else PodOverhead()
    return tuple(
        StoppingPod(pod.name, pod.pod_memory or overhead.pod_memory(pod.memory))
        for pod in pods
        if pod.phase not in ("Succeeded", "Failed") and not (busy and pod.attempt == status.attempt)
    )


def _set_kstatus_conditions(
    status: VideoJobStatus, now: datetime.datetime, generation: int | None
) -> None:
    """Reconciling True until the job ends; Stalled True when it Failed or was Rejected."""
    phase = status.phase
    if phase is None:
        return

    condition = _condition_setter(status, now, generation)

    if not phase.is_terminal:
        condition(JobConditionType.RECONCILING, True, phase.value, f"the job is {phase.value}")
    else:
        condition(JobConditionType.RECONCILING, False, phase.value, f"the job {phase.value}")
    if phase in (JobPhase.FAILED, JobPhase.REJECTED):
        failed = find_condition(status.conditions, JobConditionType.FAILED)
        reason = failed.reason if failed is not None else phase.value
        condition(JobConditionType.STALLED, True, reason, status.message or "")
    elif find_condition(status.conditions, JobConditionType.STALLED) is not None:
        condition(JobConditionType.STALLED, False, phase.value, "")


def _assess_job(
    job: VideoJob,
    pods: Sequence[PodOutcome],
    queue: VideoQueue | None,
    now: datetime.datetime,
    *,
    confirmed_missing: frozenset[str] = frozenset(),
    dependencies: Mapping[str, JobPhase | None] | None = None,
    heard_at: datetime.datetime | None = None,
    cycle: Sequence[str] | None = None,
) -> Assessment:
    """The job's status and place in its queue at `now`.

    `dependencies` maps each name in spec.dependsOn to that job's phase (None: no such job);
    it is only read until all of them have succeeded once.

    `cycle` is a dependency cycle through this job (`videoqueue.scheduling.find_cycle`:
    this job's name first, each job followed by one it depends on), or None. While the
    job's dependencies have not all succeeded, a cycle fails it (reason DependencyCycle):
    no job of a cycle can ever start.

    A worker that exits with `EXIT_INVALID_JOB` (2) found the job itself wrong: the job
    fails at once (reason InvalidJob) with the worker's termination message, whatever
    attempts are left.

    `heard_at` is when the progress channel last knew the current attempt's worker alive (its
    last event, or the channel's (re)connection if later); None without a channel or while it
    is down, which turns stalled-worker detection (progressDeadlineSeconds) off.
    """
    status = job.status.model_copy(deep=True)
    generation = job.metadata.generation
    status.observed_generation = generation
    created = job.metadata.creation_timestamp or now
    if status.queued_time is None:
        status.queued_time = created
    notices: list[Notice] = []

    condition = _condition_setter(status, now, generation)

    request = job.metadata.annotations.get(RETRY_ANNOTATION)
    handled = status.manual_retry.request if status.manual_retry else None
    if request and request != handled:
        after = status.manual_retry.after_attempt if status.manual_retry else 0
        if status.phase == JobPhase.FAILED:
            # A fresh budget of attempts; the history stays for the record.
            after = status.attempt
            status.phase = JobPhase.PENDING
            status.completion_time = None
            status.next_attempt_time = None
            status.queued_time = now
            status.message = "retry requested by the videoqueue.dev/retry annotation"
            condition(JobConditionType.FAILED, False, "RetryRequested", status.message)
            notices.append(Notice("Normal", "RetryRequested", status.message))
        # Acted on once; a request on a job that has not failed is recorded and ignored.
        status.manual_retry = ManualRetry(request=request, after_attempt=after)

    if status.phase is not None and status.phase.is_terminal:
        return Assessment(status=status, view=None, terminal=True)

    if queue is not None and find_condition(status.conditions, JobConditionType.QUEUE_MISSING):
        condition(JobConditionType.QUEUE_MISSING, False, "QueueFound", "")

    by_attempt = {pod.attempt: pod for pod in pods if pod.attempt is not None}
    current = max([status.attempt, *by_attempt])
    # A pod of an attempt newer than the status knows: the operator stopped between creating
    # the pod and recording the admission. Record it now.
    if current > status.attempt:
        adopted = by_attempt[current]
        status.attempt = current
        admitted = _parse_time(adopted.admitted_at) or now
        _record_admission(status, adopted.name, adopted.memory, admitted)
        condition(JobConditionType.ADMITTED, True, "Admitted", f"worker pod {adopted.name} created")

    pod = by_attempt.get(current)
    record = _history(status, current)
    awaiting_outcome = current > 0 and (record is None or record.finish_time is None)
    # A finished worker's outcome stands even when a cancel or suspend came in meanwhile.
    finished = awaiting_outcome and pod is not None and pod.finished
    if (job.spec.cancel or job.spec.suspend) and not finished:
        return _hold(job, status, current if awaiting_outcome else None, pod, now, condition)
    if is_condition_true(status.conditions, JobConditionType.SUSPENDED):
        condition(JobConditionType.SUSPENDED, False, "Resumed", "spec.suspend is false")
        notices.append(Notice("Normal", "Resumed", "spec.suspend is false: the job waits again"))

    if awaiting_outcome and pod is None:
        pod_name = record.pod if record is not None and record.pod else ""
        if pod_name not in confirmed_missing:
            return Assessment(status=job.status, view=None, unconfirmed_pod=pod_name)
        record = _finish(
            status,
            current,
            now,
            reason=AttemptReason.DISRUPTED,
            message=f"worker pod {pod_name} was deleted before it finished",
        )
        notices.append(
            Notice("Warning", "Disrupted", f"{record.message}; re-queued without using an attempt")
        )
        _requeue(status, now, delay=0.0)
        condition(JobConditionType.ADMITTED, False, "Disrupted", record.message or "")
        condition(JobConditionType.RUNNING, False, "Disrupted", record.message or "")
    elif awaiting_outcome and pod is not None and pod.finished:
        # A worker that started and finished between two writes (the admission write is
        # deferred) was never seen running: its start is still on record in the pod.
        if status.start_time is None and pod.start_time is not None:
            status.start_time = _parse_time(pod.start_time)
        notices.extend(_conclude(job, queue, status, current, pod, now, condition))
        if status.phase is not None and status.phase.is_terminal:
            return Assessment(status=status, view=None, notices=tuple(notices), terminal=True)
    elif awaiting_outcome and pod is not None:
        running = pod.running
        # No Event for the start: the pod's own events say it, and at scale one Event per
        # job is a tenth of the API server's writes.
        if running and status.phase != JobPhase.RUNNING:
            if status.start_time is None:
                status.start_time = _parse_time(pod.start_time) or now
            if record is not None:
                record.node = pod.node
                record.start_time = _parse_time(pod.start_time) or now
        deadline = _deadline(job, queue)
        started = (record.start_time if record is not None else None) or _parse_time(pod.start_time)
        recheck_at: datetime.datetime | None = None
        if running and deadline is not None and started is not None:
            recheck_at = started + datetime.timedelta(seconds=deadline)
            if now >= recheck_at:
                detail = (
                    f"the attempt ran longer than activeDeadlineSeconds ({deadline}s); "
                    f"worker pod {pod.name} stopped"
                )
                notices.extend(
                    _fail_attempt(
                        job,
                        queue,
                        status,
                        current,
                        AttemptReason.DEADLINE_EXCEEDED,
                        detail,
                        now,
                        condition,
                        pod=None,
                    )
                )
                terminal = status.phase is not None and status.phase.is_terminal
                view = None if terminal else _pending_view(job, status, queue, now)
                return Assessment(
                    status,
                    view,
                    tuple(notices),
                    terminal=terminal,
                    stop_pods=(pod.name,),
                )
        # Stalled: no heartbeat for progressDeadlineSeconds since the worker started, or since
        # `heard_at` (its last heartbeat, or the progress channel's (re)connection if later).
        # `heard_at` None: no channel, or it is down; detection is off.
        silence = _progress_deadline(job, queue)
        if running and silence is not None and started is not None and heard_at is not None:
            stalled_at = max(started, heard_at) + datetime.timedelta(seconds=silence)
            recheck_at = stalled_at if recheck_at is None else min(recheck_at, stalled_at)
            if now >= stalled_at:
                detail = (
                    f"no heartbeat from worker pod {pod.name} for {silence}s "
                    "(progressDeadlineSeconds); worker stopped"
                )
                notices.extend(
                    _fail_attempt(
                        job,
                        queue,
                        status,
                        current,
                        AttemptReason.STALLED,
                        detail,
                        now,
                        condition,
                        pod=None,
                    )
                )
                terminal = status.phase is not None and status.phase.is_terminal
                view = None if terminal else _pending_view(job, status, queue, now)
                return Assessment(
                    status, view, tuple(notices), terminal=terminal, stop_pods=(pod.name,)
                )
        status.phase = JobPhase.RUNNING if running else JobPhase.ADMITTED
        condition(
            JobConditionType.RUNNING,
            running,
            "WorkerRunning" if running else "WorkerStarting",
            f"worker pod {pod.name}",
        )
        memory = pod.memory or (
            parse_quantity(status.effective_memory) if status.effective_memory else 0
        )
        # The pod as it is (the template may have changed since), else as it would be now.
        if pod.pod_memory >= memory and pod.memory:
            beside = pod.pod_memory - memory
        else:
            beside = queue_overhead(queue).beside(memory) if queue is not None else 0
        view = JobView(
            key=job_key(job),
            priority=job.spec.priority,
            created_at=created.timestamp(),
            queued_at=(status.queued_time or created).timestamp(),
            memory=memory,
            state=JobState.RUNNING if running else JobState.ADMITTED,
            admitted_at=status.admitted_time.timestamp() if status.admitted_time else None,
            overhead=beside,
        )
        return Assessment(status=status, view=view, notices=tuple(notices), recheck_at=recheck_at)

    if queue is not None and queue.metadata.deletion_timestamp is not None:
        status.phase = JobPhase.CANCELLED
        status.completion_time = now
        status.message = (
            f"cancelled: queue {job.spec.queue_name} is being deleted (its pending jobs are "
            "cancelled, running ones finish)"
        )
        condition(JobConditionType.CANCELLED, True, "QueueDeleted", status.message)
        condition(JobConditionType.ADMITTED, False, "QueueDeleted", status.message)
        notices.append(Notice("Warning", "Cancelled", status.message))
        return Assessment(status=status, view=None, notices=tuple(notices), terminal=True)

    # Not running: waiting for admission.
    if queue is None:
        status.phase = JobPhase.PENDING
        condition(
            JobConditionType.QUEUE_MISSING,
            True,
            "QueueNotFound",
            f"VideoQueue {job.spec.queue_name!r} does not exist in namespace "
            f"{job.metadata.namespace}; create it and the job will be admitted",
        )
        condition(
            JobConditionType.ADMITTED, False, "QueueNotFound", "waiting for the queue to exist"
        )
        status.message = f"waiting for VideoQueue {job.spec.queue_name}"
        return Assessment(status=status, view=None, notices=tuple(notices))

    if queue.spec.state == QueueState.DRAINING and job.status.phase is None:
        message = (
            f"queue {job.spec.queue_name} is Draining and takes no new jobs; submit to another "
            "queue, or set the queue's spec.state to Active and recreate the job"
        )
        return _reject(status, "QueueDraining", message, now, condition, notices)

    memory = effective_memory(job, status, queue)
    status.effective_memory = format_bytes(memory)
    limit = queue.spec.memory.max_bytes
    if memory > limit:
        message = (
            f"needs {format_bytes(memory)} of memory but queue {job.spec.queue_name} allows at "
            f"most {format_bytes(limit)} per job (spec.memory.max); lower "
            "spec.resources.memory or raise the queue's memory.max"
        )
        return _reject(status, "MemoryExceedsMax", message, now, condition, notices)
    overhead = queue_overhead(queue)
    budget = queue.spec.memory.budget_bytes
    if overhead.pod_memory(memory) > budget:
        return _reject(
            status,
            "PodExceedsBudget",
            _pod_exceeds_budget(job, memory, overhead, budget),
            now,
            condition,
            notices,
        )

    if job.spec.depends_on and not is_condition_true(
        status.conditions, JobConditionType.DEPENDENCIES_MET
    ):
        if cycle:
            return _fail_cycle(status, cycle, now, condition, notices)
        held = _check_dependencies(job, status, dependencies or {}, now, condition, notices)
        if held is not None:
            return held

    eligible_at: datetime.datetime | None = None
    if status.next_attempt_time is not None and status.next_attempt_time > now:
        eligible_at = status.next_attempt_time
        status.phase = JobPhase.BACKOFF
    elif job.spec.start_after is not None and job.spec.start_after > now:
        eligible_at = job.spec.start_after
        status.phase = JobPhase.WAITING
        status.message = f"not admitted before {job.spec.start_after.isoformat()} (spec.startAfter)"
    else:
        status.phase = JobPhase.PENDING
    if not any(c.type == JobConditionType.ADMITTED for c in status.conditions):
        condition(JobConditionType.ADMITTED, False, "Pending", "waiting for admission")
    view = JobView(
        key=job_key(job),
        priority=job.spec.priority,
        created_at=created.timestamp(),
        queued_at=(status.queued_time or created).timestamp(),
        memory=memory,
        state=JobState.PENDING,
        eligible_at=eligible_at.timestamp() if eligible_at else None,
        overhead=overhead.beside(memory),
    )
    return Assessment(status=status, view=view, notices=tuple(notices))


def admit(
    status: VideoJobStatus,
    *,
    pod_name: str,
    admission: Admission,
    now: datetime.datetime,
    generation: int | None,
) -> VideoJobStatus:
    """The status after the scheduler admitted the job and its pod was created."""
    admitted = status.model_copy(deep=True)
    admitted.attempt = admission.attempt
    _record_admission(admitted, pod_name, admission.memory, now)
    admitted.conditions = set_condition(
        admitted.conditions,
        Condition(
            type=JobConditionType.ADMITTED,
            status=ConditionStatus.TRUE,
            reason="Admitted",
            message=f"worker pod {pod_name} created",
            last_transition_time=now,
            observed_generation=generation,
        ),
    )
    return admitted


# -- helpers ------------------------------------------------------------------------------


def _reject(
    status: VideoJobStatus,
    reason: str,
    message: str,
    now: datetime.datetime,
    condition: Any,
    notices: list[Notice],
) -> Assessment:
    status.phase = JobPhase.REJECTED
    status.completion_time = now
    status.message = message
    condition(JobConditionType.REJECTED, True, reason, message)
    condition(JobConditionType.FAILED, True, reason, message)
    condition(JobConditionType.ADMITTED, False, reason, message)
    notices.append(Notice("Warning", "Rejected", message))
    return Assessment(status=status, view=None, notices=tuple(notices), terminal=True)


def _pod_exceeds_budget(job: VideoJob, memory: int, overhead: PodOverhead, budget: int) -> str:
    pod = overhead.pod_memory(memory)
    return (
        f"its worker pod needs {format_bytes(pod)}: the job's {format_bytes(memory)} plus "
        f"{format_bytes(overhead.beside(memory))} for the sidecar and init containers of queue "
        f"{job.spec.queue_name}'s template (their memory limits), more than the queue's whole "
        f"memory budget of {format_bytes(budget)} (spec.memory.budget); lower "
        "spec.resources.memory, or have the queue's budget raised or its sidecars' limits "
        "lowered"
    )


def _fail_cycle(
    status: VideoJobStatus,
    cycle: Sequence[str],
    now: datetime.datetime,
    condition: Any,
    notices: list[Notice],
) -> Assessment:
    message = (
        f"dependency cycle {describe_cycle(cycle)}: each of these jobs waits for the next "
        "to succeed, so none can ever start; recreate them without the cycle "
        "(spec.dependsOn)"
    )
    status.phase = JobPhase.FAILED
    status.completion_time = now
    status.message = message
    condition(JobConditionType.FAILED, True, "DependencyCycle", message)
    condition(JobConditionType.DEPENDENCIES_MET, False, "DependencyCycle", message)
    condition(JobConditionType.ADMITTED, False, "DependencyCycle", message)
    notices.append(Notice("Warning", "DependencyCycle", message))
    return Assessment(status=status, view=None, notices=tuple(notices), terminal=True)


def _hold(
    job: VideoJob,
    status: VideoJobStatus,
    attempt: int | None,
    pod: PodOutcome | None,
    now: datetime.datetime,
    condition: Any,
) -> Assessment:
    """Cancel (for good) or suspend (until spec.suspend is false) the job; a worker of the
    current attempt, if any, is stopped and its attempt recorded without using it up."""
    cancel = bool(job.spec.cancel)
    reason = AttemptReason.CANCELLED if cancel else AttemptReason.SUSPENDED
    field = "spec.cancel" if cancel else "spec.suspend"
    stop: tuple[str, ...] = ()
    notices: list[Notice] = []
    if attempt is not None:
        if pod is not None:
            stop = (pod.name,)
        _finish(status, attempt, now, reason=reason, message=f"worker stopped: {field} is true")
        condition(JobConditionType.RUNNING, False, reason.value, f"{field} is true")
        _requeue(status, now, delay=0.0)
    if cancel:
        status.phase = JobPhase.CANCELLED
        status.completion_time = now
        status.message = "cancelled: spec.cancel is true"
        condition(JobConditionType.CANCELLED, True, "Cancelled", status.message)
        condition(JobConditionType.ADMITTED, False, "Cancelled", status.message)
        notices.append(Notice("Normal", "Cancelled", status.message))
        return Assessment(status, None, tuple(notices), terminal=True, stop_pods=stop)
    status.phase = JobPhase.WAITING
    status.message = "suspended: not admitted while spec.suspend is true"
    if not is_condition_true(status.conditions, JobConditionType.SUSPENDED):
        notices.append(Notice("Normal", "Suspended", status.message))
    condition(JobConditionType.SUSPENDED, True, "Suspended", status.message)
    condition(JobConditionType.ADMITTED, False, "Suspended", status.message)
    return Assessment(status, None, tuple(notices), stop_pods=stop)


def _history(status: VideoJobStatus, attempt: int) -> AttemptRecord | None:
    return next((r for r in reversed(status.attempts) if r.attempt == attempt), None)


def _record_admission(
    status: VideoJobStatus, pod_name: str, memory: int, now: datetime.datetime
) -> None:
    if _history(status, status.attempt) is None:
        status.attempts = [
            *status.attempts,
            AttemptRecord(
                attempt=status.attempt,
                pod=pod_name,
                memory=format_bytes(memory) if memory else None,
            ),
        ][-MAX_HISTORY:]
    status.phase = JobPhase.ADMITTED
    status.admitted_time = now
    status.next_attempt_time = None
    status.stage, status.progress = None, None  # the new worker reports its own
    if memory:
        status.effective_memory = format_bytes(memory)
    queued = status.queued_time or now
    status.wait_seconds = round(
        (status.wait_seconds or 0.0) + max(0.0, (now - queued).total_seconds()), 3
    )
    status.message = f"admitted: worker pod {pod_name}"


def _finish(
    status: VideoJobStatus,
    attempt: int,
    now: datetime.datetime,
    *,
    reason: AttemptReason,
    message: str | None,
    pod: PodOutcome | None = None,
) -> AttemptRecord:
    record = _history(status, attempt)
    if record is None:
        record = AttemptRecord(attempt=attempt)
        status.attempts = [*status.attempts, record][-MAX_HISTORY:]
    record.reason = reason
    record.message = message[:1024] if message else None
    record.finish_time = (_parse_time(pod.finish_time) if pod else None) or now
    if pod is not None:
        record.pod = pod.name
        record.node = pod.node
        record.exit_code = pod.exit_code
        record.start_time = _parse_time(pod.start_time) or record.start_time
        if pod.peak_memory:
            record.peak_memory = format_bytes(pod.peak_memory)
    if record.start_time is not None:
        ran = (record.finish_time - record.start_time).total_seconds()
        status.run_seconds = round((status.run_seconds or 0.0) + max(0.0, ran), 3)
    return record


def _requeue(status: VideoJobStatus, now: datetime.datetime, delay: float) -> None:
    status.queued_time = now
    status.next_attempt_time = now + datetime.timedelta(seconds=delay) if delay > 0 else None
    status.phase = JobPhase.BACKOFF if delay > 0 else JobPhase.PENDING


def _conclude(
    job: VideoJob,
    queue: VideoQueue | None,
    status: VideoJobStatus,
    attempt: int,
    pod: PodOutcome,
    now: datetime.datetime,
    condition: Any,
) -> list[Notice]:
    """Record the outcome of the finished pod of the current attempt."""
    known = {r.value for r in AttemptReason}
    reason = AttemptReason(pod.reason) if pod.reason in known else AttemptReason.ERROR
    if reason == AttemptReason.COMPLETED:
        _finish(status, attempt, now, reason=reason, message=None, pod=pod)
        status.phase = JobPhase.SUCCEEDED
        status.completion_time = now
        status.result = pod.result
        status.message = "completed"
        status.progress = 100
        condition(JobConditionType.RUNNING, False, "Completed", "")
        condition(JobConditionType.COMPLETE, True, "Completed", f"worker pod {pod.name} succeeded")
        return [Notice("Normal", "Completed", f"worker pod {pod.name} succeeded")]

    detail = pod.message or f"exit code {pod.exit_code}"
    if reason == AttemptReason.ERROR and pod.exit_code == EXIT_INVALID_JOB:
        # The worker found the job itself wrong: another attempt would fail the same way.
        _finish(status, attempt, now, reason=reason, message=detail, pod=pod)
        message = (
            f"worker pod {pod.name} rejected the job (exit code {EXIT_INVALID_JOB}, not "
            f"retried): {detail}"
        )[:MAX_MESSAGE_LENGTH]
        status.phase = JobPhase.FAILED
        status.completion_time = now
        status.message = message
        condition(JobConditionType.RUNNING, False, "InvalidJob", detail)
        condition(JobConditionType.FAILED, True, "InvalidJob", message)
        return [Notice("Warning", "Failed", message)]
    return _fail_attempt(job, queue, status, attempt, reason, detail, now, condition, pod=pod)


def _fail_attempt(
    job: VideoJob,
    queue: VideoQueue | None,
    status: VideoJobStatus,
    attempt: int,
    reason: AttemptReason,
    detail: str,
    now: datetime.datetime,
    condition: Any,
    *,
    pod: PodOutcome | None,
) -> list[Notice]:
    """End the current attempt with a failure `reason` and apply the retry rules: re-queue
    (after backoff if it used an attempt, with more memory after an OOM kill) or fail."""
    record = _finish(status, attempt, now, reason=reason, message=detail, pod=pod)
    condition(JobConditionType.RUNNING, False, reason.value, detail)
    retry = queue.spec.retry if queue is not None else None
    max_attempts = job.spec.max_attempts or (retry.max_attempts if retry else 1)
    after = status.manual_retry.after_attempt if status.manual_retry else 0
    used = sum(
        1
        for r in status.attempts
        if r.attempt > after and r.reason is not None and consumes_attempt(r.reason)
    )
    if consumes_attempt(reason) and used >= max_attempts:
        status.phase = JobPhase.FAILED
        status.completion_time = now
        message = (
            f"attempt {used} of {max_attempts} ended {reason.value}: {detail}; no attempts left"
        )
        status.message = message
        condition(JobConditionType.FAILED, True, reason.value, message)
        return [Notice("Warning", "Failed", message)]

    delay = 0.0
    if consumes_attempt(reason) and retry is not None:
        backoff = job.spec.backoff.apply_to(retry.backoff) if job.spec.backoff else retry.backoff
        delay = backoff_delay(used, backoff.initial_seconds, backoff.factor, backoff.max_seconds)
    grown = ""
    if reason.value == OOM_KILLED and queue is not None and record.memory is not None:
        before = parse_quantity(record.memory)
        # Never so much that the pod could not fit the budget (the job would be rejected).
        fits = queue_overhead(queue).largest_worker(queue.spec.memory.budget_bytes)
        limit = min(queue.spec.memory.max_bytes, max(fits, before))
        after = next_memory_after_oom(before, queue.spec.memory.oom_retry_multiplier, limit)
        status.effective_memory = format_bytes(after)
        grown = f"; next attempt gets {format_bytes(after)} instead of {format_bytes(before)}"
    _requeue(status, now, delay)
    counted = (
        f"attempt {used} of {max_attempts}"
        if consumes_attempt(reason)
        else "a disruption (no attempt used)"
    )
    message = f"{counted} ended {reason.value}: {detail}; retrying in {delay:.0f}s{grown}"
    status.message = message
    return [Notice("Warning", "Retrying", message)]


def _parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def preempt(
    job: VideoJob,
    assessment: Assessment,
    pod_name: str,
    preemptor: str,
    now: datetime.datetime,
) -> Assessment:
    """The assessment of a running or admitted job evicted to make room for `preemptor`: its
    attempt ends Preempted without using an attempt and it waits again in its old place."""
    status = assessment.status.model_copy(deep=True)
    generation = job.metadata.generation

    condition = _condition_setter(status, now, generation)

    message = f"preempted by higher-priority job {preemptor}; re-queued without using an attempt"
    _finish(status, status.attempt, now, reason=AttemptReason.PREEMPTED, message=message)
    condition(JobConditionType.RUNNING, False, "Preempted", message)
    condition(JobConditionType.ADMITTED, False, "Preempted", message)
    _requeue(status, now, delay=0.0)
    status.message = message
    view = assessment.view
    if view is not None:
        view = replace(view, state=JobState.PENDING, admitted_at=None, eligible_at=None)
    return Assessment(
        status,
        view,
        (*assessment.notices, Notice("Warning", "Preempted", message)),
        stop_pods=(pod_name,),
    )


def reject(
    job: VideoJob, status: VideoJobStatus, reason: str, message: str, now: datetime.datetime
) -> Assessment:
    """The assessment of a job the queue turns away for good (e.g. QueueFull)."""
    status = status.model_copy(deep=True)
    generation = job.metadata.generation

    condition = _condition_setter(status, now, generation)

    rejected = _reject(status, reason, message, now, condition, [])
    _set_kstatus_conditions(rejected.status, now, generation)
    return rejected


def _progress_deadline(job: VideoJob, queue: VideoQueue | None) -> int | None:
    if job.spec.progress_deadline_seconds is not None:
        return job.spec.progress_deadline_seconds
    return queue.spec.progress_deadline_seconds if queue is not None else None


def _deadline(job: VideoJob, queue: VideoQueue | None) -> int | None:
    if job.spec.active_deadline_seconds is not None:
        return job.spec.active_deadline_seconds
    return queue.spec.active_deadline_seconds if queue is not None else None


_GIVEN_UP = frozenset({JobPhase.FAILED, JobPhase.CANCELLED, JobPhase.REJECTED})


def _check_dependencies(
    job: VideoJob,
    status: VideoJobStatus,
    dependencies: Mapping[str, JobPhase | None],
    now: datetime.datetime,
    condition: Any,
    notices: list[Notice],
) -> Assessment | None:
    """Hold the job while a dependency has not succeeded; fail it when one never will.
    None once all have succeeded (recorded in the DependenciesMet condition, so a dependency
    deleted later, e.g. by its TTL, does not hold the job again)."""
    phases = {name: dependencies.get(name) for name in job.spec.depends_on}
    failed = [name for name, phase in phases.items() if phase in _GIVEN_UP]
    if failed:
        name = failed[0]
        message = (
            f"dependency {name} ended {phases[name]}, so this job cannot run; retry or "
            f"recreate {name}, then recreate this job"
        )
        status.phase = JobPhase.FAILED
        status.completion_time = now
        status.message = message
        condition(JobConditionType.FAILED, True, "DependencyFailed", message)
        condition(JobConditionType.ADMITTED, False, "DependencyFailed", message)
        notices.append(Notice("Warning", "DependencyFailed", message))
        return Assessment(status=status, view=None, notices=tuple(notices), terminal=True)
    waiting = [name for name, phase in phases.items() if phase != JobPhase.SUCCEEDED]
    if not waiting:
        condition(
            JobConditionType.DEPENDENCIES_MET,
            True,
            "DependenciesSucceeded",
            f"{', '.join(job.spec.depends_on)} succeeded",
        )
        return None
    shown = ", ".join(f"{n} ({phases[n] or 'not found'})" for n in waiting[:5])
    more = f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
    status.phase = JobPhase.WAITING
    status.message = f"waiting for dependencies to succeed: {shown}{more}"
    condition(JobConditionType.DEPENDENCIES_MET, False, "WaitingForDependencies", status.message)
    condition(JobConditionType.ADMITTED, False, "WaitingForDependencies", status.message)
    return Assessment(status=status, view=None, notices=tuple(notices))


def _pending_view(
    job: VideoJob, status: VideoJobStatus, queue: VideoQueue | None, now: datetime.datetime
) -> JobView | None:
    """The job's place in the queue right after an attempt ended and it was re-queued."""
    if queue is None:
        return None
    created = job.metadata.creation_timestamp or now
    eligible = status.next_attempt_time
    memory = effective_memory(job, status, queue)
    return JobView(
        key=job_key(job),
        priority=job.spec.priority,
        created_at=created.timestamp(),
        queued_at=(status.queued_time or created).timestamp(),
        memory=memory,
        state=JobState.PENDING,
        eligible_at=eligible.timestamp() if eligible and eligible > now else None,
        overhead=queue_overhead(queue).beside(memory),
    )
