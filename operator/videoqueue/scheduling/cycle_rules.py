"""Small rules a queue's cycle decides with and the controller's index keeps its bookkeeping
by (so the two cannot disagree): when a job is looked at again, when a finished job's TTL
runs out, which OOM kills count for memory pressure, what a finished job leaves in the
statistics, and the queue's finalizer. Pure: the time is passed in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from videoqueue.api import (
    AttemptReason,
    JobPhase,
    StatisticsPolicy,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
)
from videoqueue.scheduling.jobs import Assessment
from videoqueue.scheduling.notifications import holds_ttl
from videoqueue.scheduling.queue_status import FinishedJob

# Set on every queue the operator manages: its deletion waits until running jobs finished.
QUEUE_FINALIZER = "videoqueue.dev/running-jobs"
# A queue's status is rewritten at most this often, however busy the queue.
QUEUE_STATUS_INTERVAL = 2.0
# How often at most a queue is woken only because finished jobs leave the statistics window.
STATISTICS_REFRESH = 10.0


def earliest(*times: float | None) -> float | None:
    return min((t for t in times if t is not None), default=None)


def due_at(assessment: Assessment) -> float | None:
    """When to assess the job again although nothing changed: a deadline or stall check,
    or the end of a backoff or delayed start."""
    view = assessment.view
    return earliest(
        assessment.recheck_at.timestamp() if assessment.recheck_at is not None else None,
        view.eligible_at if view is not None else None,
    )


def ttl_seconds(job: VideoJob, queue: VideoQueue | None, phase: JobPhase | None) -> int | None:
    """ttlSecondsAfterFinished for the job's outcome: the job's own, else the queue's."""
    outcome = "succeeded" if phase == JobPhase.SUCCEEDED else "failed"
    sources = (
        job.spec.ttl_seconds_after_finished,
        queue.spec.ttl_seconds_after_finished if queue else None,
    )
    for source in sources:
        if source is not None and (seconds := getattr(source, outcome)) is not None:
            return int(seconds)
    return None


def expires_at(
    job: VideoJob | None,
    assessment: Assessment | None,
    stored_phase: JobPhase | None,
    queue: VideoQueue | None,
    *,
    deleting: bool,
) -> float | None:
    """When a finished job's TTL runs out; None without a TTL, while its terminal status is
    not on record yet (`stored_phase`), while its completion notification is owed, or once
    its deletion was sent."""
    if job is None or assessment is None or deleting or not assessment.terminal:
        return None
    if holds_ttl(assessment.status, queue):
        return None  # looked at again when the notification is Delivered or GaveUp
    completion = assessment.status.completion_time
    if completion is None or stored_phase is None or not stored_phase.is_terminal:
        return None
    ttl = ttl_seconds(job, queue, assessment.status.phase)
    return None if ttl is None else completion.timestamp() + ttl


def oom_kill_times(status: VideoJobStatus) -> tuple[float, ...]:
    """When the job's attempts were OOM-killed (memory pressure counts them)."""
    return tuple(
        record.finish_time.timestamp()
        for record in status.attempts
        if record.reason == AttemptReason.OOM_KILLED and record.finish_time is not None
    )


def statistics_window(queue: VideoQueue | None) -> int:
    """The queue's spec.statistics.windowSeconds (the API's default while the queue is
    missing: its jobs still finish)."""
    policy = queue.spec.statistics if queue is not None else StatisticsPolicy()
    return policy.window_seconds


def finished_record(
    uid: str | None, job_type: str, status: VideoJobStatus, window_seconds: int, now: float
) -> tuple[str, FinishedJob] | None:
    """What a job that Succeeded or Failed within the statistics window leaves in them, by a
    key that is the same however often it is assessed; None for anything else."""
    if status.completion_time is None or status.phase not in (JobPhase.SUCCEEDED, JobPhase.FAILED):
        return None
    done = status.completion_time.timestamp()
    if done <= now - window_seconds:
        return None
    record = FinishedJob(
        finished_at=done,
        type=job_type,
        succeeded=status.phase == JobPhase.SUCCEEDED,
        wait_seconds=status.wait_seconds,
        run_seconds=status.run_seconds,
    )
    return f"{uid}/{done}", record


def finalizers_after(
    body: Mapping[str, Any] | None, stored_phases: Iterable[JobPhase | None]
) -> list[str] | None:
    """The queue's finalizers as they should be, or None when they already are: QUEUE_FINALIZER
    is kept on a live queue; a deleted one loses it once every job's terminal phase is on
    record (running jobs finished, pending ones recorded as cancelled)."""
    meta = (body or {}).get("metadata") or {}
    finalizers: list[str] = list(meta.get("finalizers") or [])
    if body is None:
        return None
    if meta.get("deletionTimestamp") is None:
        return None if QUEUE_FINALIZER in finalizers else [*finalizers, QUEUE_FINALIZER]
    if QUEUE_FINALIZER not in finalizers:
        return None
    if any(phase is None or not phase.is_terminal for phase in stored_phases):
        return None
    return [f for f in finalizers if f != QUEUE_FINALIZER]
