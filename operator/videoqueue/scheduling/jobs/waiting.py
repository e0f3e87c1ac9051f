"""A job without an attempt in flight: turned away for good (rejections, a dependency cycle or
failure) or waiting for admission, with its place in the queue (`JobView`)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from videoqueue.api import (
    JobConditionType,
    JobPhase,
    QueueState,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
    format_bytes,
    is_condition_true,
)
from videoqueue.scheduling.admission import BlockReason, Rejection, never_admitted
from videoqueue.scheduling.dependencies import describe_cycle
from videoqueue.scheduling.inputs import (
    REASON_INPUT_NOT_RESOLVED,
    SourceJob,
    Unresolved,
    resolve_input,
)
from videoqueue.scheduling.jobs.model import (
    Assessment,
    ConditionSetter,
    Notice,
    condition_setter,
    editable_status,
    job_requests,
    job_view,
    memory_decision,
    queue_overhead,
    queue_policy,
    set_kstatus_conditions,
)
from videoqueue.scheduling.memory import PodOverhead
from videoqueue.scheduling.snapshot import JobState
from videoqueue.scheduling.storage import REASON_STORAGE_NOT_CONFIGURED, storage_refusal


def reject_with(
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


def pod_exceeds_budget(job: VideoJob, memory: int, overhead: PodOverhead, budget: int) -> str:
    pod = overhead.pod_memory(memory)
    return (
        f"its worker pod needs {format_bytes(pod)}: the job's {format_bytes(memory)} plus "
        f"{format_bytes(overhead.beside(memory))} for the sidecar and init containers of queue "
        f"{job.spec.queue_name}'s pod template for {job.spec.type} jobs (their memory limits, in "
        f"spec.template or spec.types.{job.spec.type}.template), more than the queue's whole "
        f"memory budget of {format_bytes(budget)} (spec.memory.budget); lower "
        "spec.resources.memory, or have the queue's budget raised or its sidecars' limits "
        "lowered"
    )


def fail_cycle(
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


_GIVEN_UP = frozenset({JobPhase.FAILED, JobPhase.CANCELLED, JobPhase.REJECTED})


def check_dependencies(
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


def take_input(
    job: VideoJob,
    queue: VideoQueue,
    status: VideoJobStatus,
    source: SourceJob | None,
    now: datetime.datetime,
    condition: Any,
    notices: list[Notice],
) -> Assessment | None:
    """Resolve spec.input.fromJob into status.resolvedInput (its dependencies have all
    succeeded); the job is rejected when the dependency's output cannot be its input."""
    resolved = resolve_input(job.spec, source, now)
    if isinstance(resolved, Unresolved):
        return reject_with(
            status, REASON_INPUT_NOT_RESOLVED, resolved.message, now, condition, notices
        )
    if resolved is None:
        return None
    refusal = storage_refusal(
        job.spec, queue.spec.storage, job.spec.queue_name, resolved_input=resolved.url
    )
    if refusal is not None:
        return reject_with(status, REASON_STORAGE_NOT_CONFIGURED, refusal, now, condition, notices)
    status.resolved_input = resolved
    return None


def reject(
    job: VideoJob, status: VideoJobStatus, reason: str, message: str, now: datetime.datetime
) -> Assessment:
    """The assessment of a job the queue turns away for good (e.g. QueueFull)."""
    status = editable_status(status)
    generation = job.metadata.generation

    condition = condition_setter(status, now, generation)

    rejected = reject_with(status, reason, message, now, condition, [])
    set_kstatus_conditions(rejected.status, now, generation)
    return rejected


def assess_waiting(
    job: VideoJob,
    queue: VideoQueue | None,
    status: VideoJobStatus,
    now: datetime.datetime,
    condition: ConditionSetter,
    notices: list[Notice],
    dependencies: Mapping[str, JobPhase | None] | None,
    cycle: Sequence[str] | None,
    source: SourceJob | None = None,
) -> Assessment:
    """The job has no attempt in flight: cancelled with its queue, turned away for good
    (Draining queue, s3:// URLs without the queue's spec.storage.s3, memory over the queue's
    limits, a dependency cycle or failure), or
    waiting for its queue, its dependencies, its backoff or start time, or admission."""
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
        return reject_with(status, "QueueDraining", message, now, condition, notices)

    # Checked before every admission, not only the first: storage removed from the queue
    # after the job arrived would otherwise fail every attempt in the worker.
    resolved = status.resolved_input.url if status.resolved_input is not None else None
    refusal = storage_refusal(
        job.spec, queue.spec.storage, job.spec.queue_name, resolved_input=resolved
    )
    if refusal is not None:
        return reject_with(status, REASON_STORAGE_NOT_CONFIGURED, refusal, now, condition, notices)

    memory, status.memory_source = memory_decision(job, status, queue)
    status.effective_memory_bytes = memory
    overhead = queue_overhead(queue, job.spec.type)
    beside = overhead.beside(memory)
    requests = job_requests(job, queue)
    # Whether it can ever be admitted is admission's rule; the messages here name the fields.
    view = job_view(job, status, now, memory=memory, overhead=beside, requests=requests)
    verdict = never_admitted(view, queue_policy(queue))
    if isinstance(verdict, Rejection):
        limit = queue.spec.memory.max_bytes
        message = (
            f"needs {format_bytes(memory)} of memory but queue {job.spec.queue_name} allows at "
            f"most {format_bytes(limit)} per job (spec.memory.max); lower "
            "spec.resources.memory or raise the queue's memory.max"
        )
        return reject_with(status, verdict.reason.value, message, now, condition, notices)
    if verdict is not None and verdict.reason is BlockReason.EXCEEDS_BUDGET:
        # Its whole pod is bigger than the whole memory budget: turned away. A pod that
        # requests more CPU or of an extended resource than its budget waits instead (its
        # requests are the queue's template's, so the queue's owner has it to fix; admission
        # says so, ExceedsResourceBudget).
        budget = queue.spec.memory.budget_bytes
        message = pod_exceeds_budget(job, memory, overhead, budget)
        return reject_with(status, "PodExceedsBudget", message, now, condition, notices)

    if job.spec.depends_on and not is_condition_true(
        status.conditions, JobConditionType.DEPENDENCIES_MET
    ):
        if cycle:
            return fail_cycle(status, cycle, now, condition, notices)
        held = check_dependencies(job, status, dependencies or {}, now, condition, notices)
        if held is not None:
            return held

    if job.spec.input.from_job is not None and status.resolved_input is None:
        taken = take_input(job, queue, status, source, now, condition, notices)
        if taken is not None:
            return taken

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
    view = job_view(
        job,
        status,
        now,
        memory=memory,
        overhead=beside,
        eligible_at=eligible_at,
        requests=requests,
    )
    return Assessment(status=status, view=view, notices=tuple(notices))


def waiting_because(
    assessment: Assessment,
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int | None,
) -> Assessment:
    """The assessment with why the job waits: its message (cut to what status.message holds)
    and the Admitted=False condition."""
    status = editable_status(assessment.status)
    status.message = message[:1024]
    condition_setter(status, now, generation)(JobConditionType.ADMITTED, False, reason, message)
    return replace(assessment, status=status)


def explain_refusal(
    assessment: Assessment,
    refusal: tuple[str, str],
    now: datetime.datetime,
    generation: int | None,
) -> Assessment:
    """A waiting job's assessment with its worker pod's refusal as the Admitted condition."""
    if assessment.view is None or assessment.view.state is not JobState.PENDING:
        return assessment
    reason, message = refusal
    return waiting_because(assessment, reason, message, now, generation)
