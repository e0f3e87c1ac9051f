"""What the plugin shows of a queue and its batches, from the operator's own summaries
(`videoqueue.scheduling.queue_status`): the queue's status as written when there is one,
else the same functions applied to the jobs still present. The two agree by construction,
so a figure does not change meaning when the operator's first status write arrives.

Only the adapters live here (VideoJob objects in, the summaries' inputs out); no count or
statistic is computed a second way.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from videoqueue.api import (
    BATCH_LABEL,
    BatchProgress,
    JobPhase,
    QueueStatistics,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
    VideoQueueStatus,
    format_bytes,
)
from videoqueue.cli.objects import created
from videoqueue.cli.render import duration
from videoqueue.cli.type_summary import type_summaries
from videoqueue.scheduling.queue_status import batch_progress, summarize_queue
from videoqueue.scheduling.sizing import learned_memory, percentile, sizing_key
from videoqueue.scheduling.statistics import FinishedJob, finished_record, rolling_statistics


def queue_summary(queue: VideoQueue, jobs: Sequence[VideoJob], now: float) -> dict[str, Any]:
    """`kubectl videoqueue stats` of one queue: each part from the queue's status where the
    operator wrote it, else summarised from `jobs` (which may hold other queues' jobs)."""
    mine = queue_jobs(queue, jobs)
    status = queue.status
    # previous=empty: conditions and health are the operator's to report, not ours.
    computed = summarize_queue(
        queue,
        [(job.spec.type, job.status) for job in mine],
        _moment(now),
        previous=VideoQueueStatus(),
    )
    counted = status if status.observed_generation is not None else computed
    memory = status.memory if status.memory and status.memory.summary else computed.memory
    # Reserved of each spec.budgets resource (the jobs alone cannot tell what pods still
    # stopping hold: the status can).
    budgets = status.budgets if status.budgets is not None else computed.budgets
    statistics, source = queue_statistics(queue, jobs, now)
    by_type = [t.to_dict() for t in statistics.by_type]
    for entry in by_type:
        for key in ("successRate", "meanWaitSeconds", "meanRunSeconds"):
            entry.setdefault(key, None)
    return {
        "name": queue.metadata.name,
        "state": queue.spec.state.value,
        "health": status.health.value if status.health else None,
        "concurrency": queue.spec.concurrency,
        "effectiveConcurrency": status.effective_concurrency,
        "memory": memory.summary if memory else None,
        "budgets": {b.resource: f"{b.reserved}/{b.budget}" for b in budgets or ()},
        # VideoQueueStatus counts each phase in a field of its name.
        "jobs": {p.value.lower(): getattr(counted, p.value.lower()) for p in JobPhase},
        "statisticsSource": source,
        "meanWaitSeconds": statistics.mean_wait_seconds,
        "meanRunSeconds": statistics.mean_run_seconds,
        "successRate": statistics.success_rate,
        "throughputPerMinute": statistics.throughput_per_minute,
        "byType": by_type,
        "types": type_summaries(queue, jobs),  # settings and usage per job type
        "sizing": sizing_summary(queue),
    }


def sizing_summary(queue: VideoQueue) -> dict[str, Any]:
    """What learned memory sizing knows (the queue's status.sizing) and the size each key
    gives a job without resources.memory now (`videoqueue.scheduling.sizing`)."""
    memory = queue.spec.memory
    learned = memory.learned
    keys = []
    for entry in queue.status.sizing:
        decided = learned_memory(queue, entry.key)
        keys.append(
            {
                "key": entry.key,
                "observations": entry.observations,
                "percentileMi": percentile(entry.peaks_mi, learned.percentile)
                if entry.peaks_mi
                else None,
                "size": format_bytes(decided.memory) if decided.memory is not None else None,
                "source": decided.source
                if decided.memory is not None
                else f"spec.memory.defaultRequest{decided.source}",
            }
        )
    return {
        "mode": memory.sizing.value,
        "percentile": learned.percentile,
        "headroom": learned.headroom,
        "minObservations": learned.min_observations,
        "keys": keys,
    }


def queue_statistics(
    queue: VideoQueue, jobs: Sequence[VideoJob], now: float
) -> tuple[QueueStatistics, str]:
    """The queue's rolling statistics and where they come from: its status when the operator
    wrote them, else `rolling_statistics` over the finished jobs still present (a job its TTL
    deleted is missing from those)."""
    written = queue.status.statistics
    if written is not None:
        window = duration(written.window_seconds)
        return written, f"the queue's status: jobs finished in the last {window}"
    computed = rolling_statistics(
        finished_jobs(queue_jobs(queue, jobs)), now, queue.spec.statistics.window_seconds
    )
    window = duration(computed.window_seconds)
    return computed, f"the finished jobs still present: {computed.finished} in the last {window}"


def finished_jobs(jobs: Sequence[VideoJob]) -> list[FinishedJob]:
    """The jobs that count for the rolling statistics, as the operator counts them when they
    finish: Succeeded or Failed (a cancelled or rejected job says nothing about the workers)."""
    records = (
        finished_record(
            job.metadata.uid,
            f"{job.metadata.namespace}/{job.metadata.name}",
            job.spec.type,
            job.status,
            sizing_key=sizing_key(job.spec.type, job.spec.params),
        )
        for job in jobs
    )
    return [record for record in records if record is not None]


def batches(jobs: Sequence[VideoJob], queue: str | None = None) -> list[BatchProgress]:
    """Progress of every batch among `jobs` (of `queue` only, if given), finished ones
    included, in the order their first job was created."""
    members: dict[str, list[VideoJobStatus]] = {}
    for job in sorted(jobs, key=created):
        name = job.metadata.labels.get(BATCH_LABEL)
        if name and (queue is None or job.spec.queue_name == queue):
            members.setdefault(name, []).append(job.status)
    return [_progress(name, statuses) for name, statuses in members.items()]


def _progress(name: str, statuses: Sequence[VideoJobStatus]) -> BatchProgress:
    # `batch_progress` leaves finished batches out (the queue's status lists the unfinished
    # ones), but `batch NAME` must show one after its last job ended: all succeeded or failed.
    unfinished = batch_progress((name, status) for status in statuses)
    if unfinished:
        return unfinished[0]
    succeeded = sum(1 for status in statuses if status.phase == JobPhase.SUCCEEDED)
    return BatchProgress(
        name=name, total=len(statuses), succeeded=succeeded, failed=len(statuses) - succeeded
    )


def queue_jobs(queue: VideoQueue, jobs: Sequence[VideoJob]) -> list[VideoJob]:
    return [job for job in jobs if job.spec.queue_name == queue.metadata.name]


def _moment(now: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(now, datetime.UTC)
