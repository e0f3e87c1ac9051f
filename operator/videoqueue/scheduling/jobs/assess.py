"""`assess_job`: the job's status and place in its queue at `now`, from its object, its worker
pods and its queue."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from videoqueue.api import (
    RETRY_ANNOTATION,
    AttemptReason,
    JobConditionType,
    JobPhase,
    ManualRetry,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
    find_condition,
    is_condition_true,
)
from videoqueue.scheduling.inputs import SourceJob
from videoqueue.scheduling.jobs.attempts import (
    assess_running,
    conclude,
    finish_attempt,
    hold,
    record_admission,
    requeue,
)
from videoqueue.scheduling.jobs.model import (
    Assessment,
    Notice,
    condition_setter,
    editable_status,
    history,
    parse_time,
    queue_overhead,
    set_kstatus_conditions,
)
from videoqueue.scheduling.jobs.waiting import assess_waiting
from videoqueue.scheduling.memory import PodOverhead
from videoqueue.scheduling.pod_outcome import PodOutcome
from videoqueue.scheduling.snapshot import StoppingPod


@dataclass(frozen=True)
class _Facts:
    """What `assess_job` is told beyond the job, its pods and its queue."""

    confirmed_missing: frozenset[str]
    dependencies: Mapping[str, JobPhase | None] | None
    heard_at: datetime.datetime | None
    cycle: Sequence[str] | None
    source: SourceJob | None


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
    source: SourceJob | None = None,
) -> Assessment:
    """The job's status and place in its queue at `now`, with the kstatus conditions that
    follow from its phase and its pods that are still stopping.

    `dependencies` maps each name in spec.dependsOn to that job's phase (None: no such job);
    it is only read until all of them have succeeded once.

    `cycle` is a dependency cycle through this job (`videoqueue.scheduling.find_cycle`:
    this job's name first, each job followed by one it depends on), or None. While the
    job's dependencies have not all succeeded, a cycle fails it (reason DependencyCycle):
    no job of a cycle can ever start.

    `source` is the job named by spec.input.fromJob (`videoqueue.scheduling.inputs`), read
    once, when the dependencies have all succeeded: its output becomes status.resolvedInput,
    or the job is rejected (InputNotResolved) when it has none that can be an input.

    A worker that exits with `EXIT_INVALID_JOB` (2) found the job itself wrong: the job
    fails at once (reason InvalidJob) with the worker's termination message, whatever
    attempts are left.

    `heard_at` is when the progress channel last knew the current attempt's worker alive (its
    last event, or the channel's (re)connection if later); None without a channel or while it
    is down, which turns stalled-worker detection (progressDeadlineSeconds) off.
    """
    facts = _Facts(confirmed_missing, dependencies, heard_at, cycle, source)
    assessment = _assess_job(job, pods, queue, now, facts)
    if assessment.unconfirmed_pod is None:
        set_kstatus_conditions(assessment.status, now, job.metadata.generation)
    stopping = stopping_pods(assessment.status, pods, queue, job.spec.type)
    return replace(assessment, stopping=stopping) if stopping else assessment


def stopping_pods(
    status: VideoJobStatus,
    pods: Sequence[PodOutcome],
    queue: VideoQueue | None,
    job_type: str | None,
) -> tuple[StoppingPod, ...]:
    """The job's worker pods that have not terminated although their attempt is over: every
    pod of a job that is not admitted or running, and the pods of earlier attempts of one
    that is. A deleted pod runs on through its grace period (preStop hooks, the worker
    finishing its write), so admission keeps counting its memory until the kubelet reports
    it terminated or it is gone. Each counts its whole pod as it is (the queue's template
    may have changed since), as admission counted it while it ran; a pod that does not say
    counts as the template of the job's type (`job_type`) would make it."""
    busy = status.phase in (JobPhase.ADMITTED, JobPhase.RUNNING)
    overhead = queue_overhead(queue, job_type) if queue is not None else PodOverhead()
    return tuple(
        StoppingPod(pod.name, pod.pod_memory or overhead.pod_memory(pod.memory), pod.requests)
        for pod in pods
        if pod.phase not in ("Succeeded", "Failed") and not (busy and pod.attempt == status.attempt)
    )


def _assess_job(
    job: VideoJob,
    pods: Sequence[PodOutcome],
    queue: VideoQueue | None,
    now: datetime.datetime,
    facts: _Facts,
) -> Assessment:
    """`assess_job` without the kstatus conditions and stopping pods."""
    status = editable_status(job.status)
    generation = job.metadata.generation
    status.observed_generation = generation
    created = job.metadata.creation_timestamp or now
    if status.queued_time is None:
        status.queued_time = created
    notices: list[Notice] = []

    condition = condition_setter(status, now, generation)

    request = job.metadata.annotations.get(RETRY_ANNOTATION)
    handled = status.manual_retry.request if status.manual_retry else None
    if request and request != handled:
        after = status.manual_retry.after_attempt if status.manual_retry else 0
        if status.phase == JobPhase.FAILED:
            # A fresh budget of attempts; the history stays for the record.
            after = status.attempt
            status.attempts_used = 0
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
        admitted = parse_time(adopted.admitted_at) or now
        record_admission(status, adopted.name, adopted.memory, admitted)
        condition(JobConditionType.ADMITTED, True, "Admitted", f"worker pod {adopted.name} created")

    pod = by_attempt.get(current)
    record = history(status, current)
    awaiting_outcome = current > 0 and (record is None or record.finish_time is None)
    # A finished worker's outcome stands even when a cancel or suspend came in meanwhile.
    finished = awaiting_outcome and pod is not None and pod.finished
    if (job.spec.cancel or job.spec.suspend) and not finished:
        return hold(job, status, current if awaiting_outcome else None, pod, now, condition)
    if is_condition_true(status.conditions, JobConditionType.SUSPENDED):
        condition(JobConditionType.SUSPENDED, False, "Resumed", "spec.suspend is false")
        notices.append(Notice("Normal", "Resumed", "spec.suspend is false: the job waits again"))

    if awaiting_outcome and pod is None:
        pod_name = record.pod if record is not None and record.pod else ""
        if pod_name not in facts.confirmed_missing:
            return Assessment(status=job.status, view=None, unconfirmed_pod=pod_name)
        record = finish_attempt(
            status,
            current,
            now,
            reason=AttemptReason.DISRUPTED,
            message=f"worker pod {pod_name} was deleted before it finished",
        )
        notices.append(
            Notice("Warning", "Disrupted", f"{record.message}; re-queued without using an attempt")
        )
        requeue(status, now, delay=0.0)
        condition(JobConditionType.ADMITTED, False, "Disrupted", record.message or "")
        condition(JobConditionType.RUNNING, False, "Disrupted", record.message or "")
    elif awaiting_outcome and pod is not None and pod.finished:
        # A worker that started and finished between two writes (the admission write is
        # deferred) was never seen running: its start is still on record in the pod.
        if status.start_time is None and pod.start_time is not None:
            status.start_time = parse_time(pod.start_time)
        notices.extend(conclude(job, queue, status, current, pod, now, condition))
        if status.phase is not None and status.phase.is_terminal:
            return Assessment(status=status, view=None, notices=tuple(notices), terminal=True)
    elif awaiting_outcome and pod is not None:
        return assess_running(
            job, queue, status, current, pod, record, now, facts.heard_at, condition, notices
        )

    return assess_waiting(
        job, queue, status, now, condition, notices, facts.dependencies, facts.cycle, facts.source
    )
