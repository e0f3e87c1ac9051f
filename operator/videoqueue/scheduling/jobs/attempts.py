"""An attempt from its admission to its outcome: recording the admission, a running worker's
deadline and heartbeat checks, the finished pod's outcome and the retry rules, and the
attempts ended from outside (cancel, suspend, preemption)."""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Any

from videoqueue.api import (
    AttemptReason,
    AttemptRecord,
    Condition,
    ConditionStatus,
    JobConditionType,
    JobPhase,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
    format_bytes,
    is_condition_true,
    set_condition,
)
from videoqueue.api.worker import EXIT_INVALID_JOB
from videoqueue.scheduling.job_types import active_deadline_seconds, max_attempts
from videoqueue.scheduling.jobs.model import (
    MAX_HISTORY,
    Admission,
    Assessment,
    ConditionSetter,
    Notice,
    condition_setter,
    editable_status,
    history,
    job_view,
    parse_time,
    pending_view,
    queue_overhead,
)
from videoqueue.scheduling.pod_outcome import PodOutcome
from videoqueue.scheduling.retry import (
    OOM_KILLED,
    backoff_delay,
    consumes_attempt,
    next_memory_after_oom,
    should_retry,
)
from videoqueue.scheduling.sizing import SOURCE_GROWN
from videoqueue.scheduling.snapshot import JobState, StoppingPod
from videoqueue.scheduling.worker_pod import MAX_MESSAGE_LENGTH


def hold(
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
        finish_attempt(
            status, attempt, now, reason=reason, message=f"worker stopped: {field} is true"
        )
        condition(JobConditionType.RUNNING, False, reason.value, f"{field} is true")
        requeue(status, now, delay=0.0)
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


def record_admission(
    status: VideoJobStatus, pod_name: str, memory: int, now: datetime.datetime
) -> None:
    if status.attempt == 1 and status.attempts_used is None:
        status.attempts_used = 0  # counted from here on (see fail_attempt)
    if history(status, status.attempt) is None:
        record = AttemptRecord(attempt=status.attempt, pod=pod_name)
        record.memory_bytes = memory or None
        status.attempts = [*status.attempts, record][-MAX_HISTORY:]
    status.phase = JobPhase.ADMITTED
    status.admitted_time = now
    status.next_attempt_time = None
    status.stage, status.progress = None, None  # the new worker reports its own
    if memory:
        status.effective_memory_bytes = memory
    queued = status.queued_time or now
    status.wait_seconds = round(
        (status.wait_seconds or 0.0) + max(0.0, (now - queued).total_seconds()), 3
    )
    status.message = f"admitted: worker pod {pod_name}"


def finish_attempt(
    status: VideoJobStatus,
    attempt: int,
    now: datetime.datetime,
    *,
    reason: AttemptReason,
    message: str | None,
    pod: PodOutcome | None = None,
) -> AttemptRecord:
    record = history(status, attempt)
    if record is None:
        record = AttemptRecord(attempt=attempt)
        status.attempts = [*status.attempts, record][-MAX_HISTORY:]
    record.reason = reason
    record.message = message[:1024] if message else None
    record.finish_time = (parse_time(pod.finish_time) if pod else None) or now
    if pod is not None:
        record.pod = pod.name
        record.node = pod.node
        record.exit_code = pod.exit_code
        record.start_time = parse_time(pod.start_time) or record.start_time
        if pod.peak_memory:
            record.peak_memory_bytes = pod.peak_memory
    if record.start_time is not None:
        ran = (record.finish_time - record.start_time).total_seconds()
        status.run_seconds = round((status.run_seconds or 0.0) + max(0.0, ran), 3)
    return record


def requeue(status: VideoJobStatus, now: datetime.datetime, delay: float) -> None:
    status.queued_time = now
    status.next_attempt_time = now + datetime.timedelta(seconds=delay) if delay > 0 else None
    status.phase = JobPhase.BACKOFF if delay > 0 else JobPhase.PENDING


def conclude(
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
        finish_attempt(status, attempt, now, reason=reason, message=None, pod=pod)
        status.phase = JobPhase.SUCCEEDED
        status.completion_time = now
        status.result = pod.result
        status.message = "completed"
        status.progress = 100
        condition(JobConditionType.RUNNING, False, "Completed", "")
        condition(JobConditionType.COMPLETE, True, "Completed", f"worker pod {pod.name} succeeded")
        if attempt == 1:
            # The status says it (phase, Complete condition, result). An Event per success
            # was a quarter of the API writes of a job at scale; a success after retries is
            # worth one, as a retry's admission is.
            return []
        return [
            Notice("Normal", "Completed", f"worker pod {pod.name} succeeded at attempt {attempt}")
        ]

    detail = pod.message or f"exit code {pod.exit_code}"
    if reason == AttemptReason.ERROR and pod.exit_code == EXIT_INVALID_JOB:
        # The worker found the job itself wrong: another attempt would fail the same way.
        finish_attempt(status, attempt, now, reason=reason, message=detail, pod=pod)
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
    return fail_attempt(job, queue, status, attempt, reason, detail, now, condition, pod=pod)


def fail_attempt(
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
    record = finish_attempt(status, attempt, now, reason=reason, message=detail, pod=pod)
    condition(JobConditionType.RUNNING, False, reason.value, detail)
    retry = queue.spec.retry if queue is not None else None
    allowed = max_attempts(job, queue)  # the job's, else its type's, else the queue's
    if status.attempts_used is None:  # written before the counter existed: from the history
        after = status.manual_retry.after_attempt if status.manual_retry else 0
        used = sum(
            1
            for r in status.attempts
            if r.attempt > after and r.reason is not None and consumes_attempt(r.reason)
        )
    else:
        used = status.attempts_used + (1 if consumes_attempt(reason) else 0)
    status.attempts_used = used
    if not should_retry(used, allowed, reason.value):
        status.phase = JobPhase.FAILED
        status.completion_time = now
        message = f"attempt {used} of {allowed} ended {reason.value}: {detail}; no attempts left"
        status.message = message
        condition(JobConditionType.FAILED, True, reason.value, message)
        return [Notice("Warning", "Failed", message)]

    delay = 0.0
    if consumes_attempt(reason) and retry is not None:
        backoff = job.spec.backoff.apply_to(retry.backoff) if job.spec.backoff else retry.backoff
        delay = backoff_delay(used, backoff.initial_seconds, backoff.factor, backoff.max_seconds)
    grown = ""
    if (
        reason.value == OOM_KILLED
        and queue is not None
        and (before := record.memory_bytes) is not None
    ):
        # Never so much that the pod could not fit the budget (the job would be rejected).
        fits = queue_overhead(queue, job.spec.type).largest_worker(queue.spec.memory.budget_bytes)
        limit = min(queue.spec.memory.max_bytes, max(fits, before))
        after = next_memory_after_oom(before, queue.spec.memory.oom_retry_multiplier, limit)
        status.effective_memory_bytes = after
        status.memory_source = SOURCE_GROWN
        grown = f"; next attempt gets {format_bytes(after)} instead of {format_bytes(before)}"
    requeue(status, now, delay)
    counted = (
        f"attempt {used} of {allowed}"
        if consumes_attempt(reason)
        else "a disruption (no attempt used)"
    )
    message = f"{counted} ended {reason.value}: {detail}; retrying in {delay:.0f}s{grown}"
    status.message = message
    return [Notice("Warning", "Retrying", message)]


def admit(
    status: VideoJobStatus,
    *,
    pod_name: str,
    admission: Admission,
    now: datetime.datetime,
    generation: int | None,
) -> VideoJobStatus:
    """The status after the scheduler admitted the job and its pod was created."""
    admitted = editable_status(status)
    admitted.attempt = admission.attempt
    record_admission(admitted, pod_name, admission.memory, now)
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


def preempt(
    job: VideoJob,
    assessment: Assessment,
    pod_name: str,
    preemptor: str,
    now: datetime.datetime,
    queue: VideoQueue | None = None,
) -> Assessment:
    """The assessment of a running or admitted job evicted to make room for `preemptor`: its
    attempt ends Preempted without using an attempt and it waits again in its old place. Its
    pod keeps its memory and slot counted (`stopping`) until it has terminated; a job that no
    longer fits the queue's memory.max (lowered meanwhile) does not compete again before its
    next assessment turns it away."""
    status = editable_status(assessment.status)
    generation = job.metadata.generation

    condition = condition_setter(status, now, generation)

    message = f"preempted by higher-priority job {preemptor}; re-queued without using an attempt"
    finish_attempt(status, status.attempt, now, reason=AttemptReason.PREEMPTED, message=message)
    condition(JobConditionType.RUNNING, False, "Preempted", message)
    condition(JobConditionType.ADMITTED, False, "Preempted", message)
    requeue(status, now, delay=0.0)
    status.message = message
    running = assessment.view
    view = None
    if running is not None:
        view = replace(running, state=JobState.PENDING, admitted_at=None, eligible_at=None)
        if queue is not None and view.memory > queue.spec.memory.max_bytes:
            view = None
    return Assessment(
        status,
        view,
        (*assessment.notices, Notice("Warning", "Preempted", message)),
        stop_pods=(pod_name,),
        stopping=(
            (StoppingPod(pod_name, running.pod_memory, running.requests),)
            if running is not None
            else ()
        ),
    )


def progress_deadline(job: VideoJob, queue: VideoQueue | None) -> int | None:
    if job.spec.progress_deadline_seconds is not None:
        return job.spec.progress_deadline_seconds
    return queue.spec.progress_deadline_seconds if queue is not None else None


def assess_running(
    job: VideoJob,
    queue: VideoQueue | None,
    status: VideoJobStatus,
    current: int,
    pod: PodOutcome,
    record: AttemptRecord | None,
    now: datetime.datetime,
    heard_at: datetime.datetime | None,
    condition: ConditionSetter,
    notices: list[Notice],
) -> Assessment:
    """The attempt `current` whose worker pod is starting or running: Admitted or Running, or
    ended by its deadline (activeDeadlineSeconds) or for lack of heartbeats
    (progressDeadlineSeconds) with its pod to stop."""
    running = pod.running
    # No Event for the start: the pod's own events say it, and at scale one Event per
    # job is a tenth of the API server's writes.
    if running and status.phase != JobPhase.RUNNING:
        if status.start_time is None:
            status.start_time = parse_time(pod.start_time) or now
        if record is not None:
            record.node = pod.node
            record.start_time = parse_time(pod.start_time) or now

    def stopped(reason: AttemptReason, detail: str) -> Assessment:
        """The attempt ends with `reason` and its worker pod is stopped."""
        notices.extend(
            fail_attempt(job, queue, status, current, reason, detail, now, condition, pod=None)
        )
        terminal = status.phase is not None and status.phase.is_terminal
        view = None if terminal else pending_view(job, status, queue, now)
        return Assessment(status, view, tuple(notices), terminal=terminal, stop_pods=(pod.name,))

    deadline = active_deadline_seconds(job, queue)  # the job's, else its type's, else the queue's
    started = (record.start_time if record is not None else None) or parse_time(pod.start_time)
    recheck_at: datetime.datetime | None = None
    if running and deadline is not None and started is not None:
        recheck_at = started + datetime.timedelta(seconds=deadline)
        if now >= recheck_at:
            return stopped(
                AttemptReason.DEADLINE_EXCEEDED,
                f"the attempt ran longer than activeDeadlineSeconds ({deadline}s); "
                f"worker pod {pod.name} stopped",
            )
    # Stalled: no heartbeat for progressDeadlineSeconds since the worker started, or since
    # `heard_at` (its last heartbeat, or the progress channel's (re)connection if later).
    # `heard_at` None: no channel, or it is down; detection is off.
    silence = progress_deadline(job, queue)
    if running and silence is not None and started is not None and heard_at is not None:
        stalled_at = max(started, heard_at) + datetime.timedelta(seconds=silence)
        recheck_at = stalled_at if recheck_at is None else min(recheck_at, stalled_at)
        if now >= stalled_at:
            return stopped(
                AttemptReason.STALLED,
                f"no heartbeat from worker pod {pod.name} for {silence}s "
                "(progressDeadlineSeconds); worker stopped",
            )
    status.phase = JobPhase.RUNNING if running else JobPhase.ADMITTED
    condition(
        JobConditionType.RUNNING,
        running,
        "WorkerRunning" if running else "WorkerStarting",
        f"worker pod {pod.name}",
    )
    memory = pod.memory or status.effective_memory_bytes or 0
    # The pod as it is (the template may have changed since), else as it would be now.
    if pod.pod_memory >= memory and pod.memory:
        beside = pod.pod_memory - memory
    else:
        beside = queue_overhead(queue, job.spec.type).beside(memory) if queue is not None else 0
    state = JobState.RUNNING if running else JobState.ADMITTED
    # Its requests as its pod has them (the template may have changed since it was built).
    view = job_view(
        job, status, now, memory=memory, overhead=beside, state=state, requests=pod.requests
    )
    return Assessment(status=status, view=view, notices=tuple(notices), recheck_at=recheck_at)
