"""Small rules a queue's cycle decides with and the controller's index keeps its bookkeeping
by (so the two cannot disagree): when a job is looked at again, when a finished job's TTL
runs out, which OOM kills count for memory pressure, which finished jobs the statistics can
count, and the queue's finalizer. Pure: the time is passed in."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from videoqueue.api import (
    AttemptReason,
    JobPhase,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
)
from videoqueue.scheduling.cycle_view import QueueView
from videoqueue.scheduling.jobs import Assessment
from videoqueue.scheduling.notifications import holds_ttl
from videoqueue.scheduling.statistics import (
    FinishedJob,
    finished_record,
    split_uncounted,
    statistics_leave_at,
)

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


@dataclass(frozen=True)
class StatisticsStep:
    """What a cycle can count into the queue's statistics (`count_finished`'s input)."""

    confirmed: tuple[FinishedJob, ...]
    unconfirmed_since: datetime.datetime | None
    changed: bool  # something to count, or a bucket left the window: the status changes
    wake_at: float | None  # when the next bucket leaves the window


def statistics_step(
    view: QueueView,
    decided: Mapping[str, Assessment],
    current: Callable[[str], Assessment | None],
    now: float,
) -> StatisticsStep:
    """The finished jobs not counted yet (the index's, and those the cycle finished, whose
    outcome is not stored yet), split by `split_uncounted`."""
    records = dict(view.uncounted)
    for key, assessment in decided.items():
        job = view.jobs.get(key)
        found = (
            finished_record(job.uid, key, job.type, assessment.status, sizing_key=job.sizing_key)
            if job
            else None
        )
        if found is not None:
            records.setdefault(found.record_key, found)
    queue = view.queue
    stored = queue.status.statistics if queue is not None else None
    confirmed, waiting = split_uncounted(records.values(), view.jobs, current, stored)
    if queue is None:
        return StatisticsStep(tuple(confirmed), waiting, changed=False, wake_at=None)
    changed = any(waiting is None or r.completed < waiting for r in confirmed)
    leaves = statistics_leave_at(stored, queue.spec.statistics.window_seconds)
    if leaves is not None and leaves <= now:
        changed, leaves = True, None
    # Refresh the figures as buckets leave the window, but not too often.
    wake_at = max(leaves, now + STATISTICS_REFRESH) if leaves is not None else None
    return StatisticsStep(tuple(confirmed), waiting, changed, wake_at)


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
