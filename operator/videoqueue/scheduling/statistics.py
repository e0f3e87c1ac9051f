"""A queue's rolling statistics as durable counters: fixed time buckets kept in the queue's
status (`status.statistics.buckets`), so that they outlive the finished jobs (a TTL deletes
them) and the operator (a restart, a failover). Pure: the time is passed in.

Buckets. `spec.statistics.windowSeconds` is cut into 15 buckets of `bucket_seconds(window)`
seconds (the window / 15 rounded up), aligned to the epoch. A job that finishes is added to
the bucket its completionTime falls in: its outcome, waitSeconds and runSeconds, in the
bucket's totals and in those of its type (the first 16 types of a bucket). A bucket is kept
while it overlaps the window, (now - windowSeconds, now], so a job counts for between
windowSeconds and windowSeconds plus one bucket after it finished. The published figures
(`finished`, `successRate`, means, throughput, `byType`) are computed from the buckets.

Counted exactly once. `status.statistics.countedThrough` is a watermark: the buckets hold
exactly the Succeeded and Failed jobs whose completionTime is at or before it. A job is
counted once its terminal status is stored (the index has it from the API server), and the
watermark moves only up to the newest completionTime counted, never past a job that finished
but whose terminal status is not stored yet: so every job at or under the watermark is both
on record and counted, and a restarted operator (or the replica taking over) reads buckets
and watermark back and counts only the jobs that finished after it. completionTime is
written with microseconds and compared as written, so jobs that finished in the same cycle
(the same completionTime) are counted together or not at all. A job deleted before it was
counted is counted as the operator saw it finish, unless the operator restarts first. Learned memory
sizing (`status.sizing`) is fed from the same jobs (`fresh_finished`) in the same status
write, so it is exactly once too (`videoqueue.scheduling.sizing`).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard

from videoqueue.api import (
    MAX_STATISTICS_BUCKETS,
    MAX_TYPE_STATISTICS,
    JobPhase,
    QueueStatistics,
    StatisticsBucket,
    StatisticsTotals,
    TypeStatistics,
    TypeTotals,
    VideoJobStatus,
)
from videoqueue.scheduling.sizing import attempt_peaks

__all__ = [
    "BUCKETS_PER_WINDOW",
    "FinishedJob",
    "awaits_count",
    "bucket_seconds",
    "count_finished",
    "finished_record",
    "fresh_finished",
    "rolling_statistics",
    "split_uncounted",
    "statistics_leave_at",
]

BUCKETS_PER_WINDOW = MAX_STATISTICS_BUCKETS - 1
_COUNTED = frozenset({JobPhase.SUCCEEDED, JobPhase.FAILED})


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """A job that Succeeded or Failed, as the statistics count it."""

    uid: str | None
    key: str  # "namespace/name": where the index has it while it exists
    completed: datetime.datetime
    type: str
    succeeded: bool
    wait_seconds: float | None
    run_seconds: float | None
    # What learned memory sizing learns from it (`videoqueue.scheduling.sizing`): its sizing
    # key and its attempts' peaks in MiB.
    sizing_key: str = ""
    peaks_mib: tuple[int, ...] = ()

    @property
    def record_key(self) -> str:
        """The same however often the job is assessed; a new one after a manual retry."""
        return f"{self.uid}/{self.completed.isoformat()}"


def finished_record(
    uid: str | None,
    key: str,
    job_type: str,
    status: VideoJobStatus,
    *,
    sizing_key: str | None = None,
) -> FinishedJob | None:
    """What a job whose status is Succeeded or Failed counts as; None for anything else
    (a cancelled or rejected job says nothing about the workers). `sizing_key`: the job's
    (`videoqueue.scheduling.sizing.sizing_key`), its type unless given."""
    if status.completion_time is None or status.phase not in _COUNTED:
        return None
    return FinishedJob(
        uid=uid,
        key=key,
        completed=status.completion_time,
        type=job_type,
        succeeded=status.phase == JobPhase.SUCCEEDED,
        wait_seconds=status.wait_seconds,
        run_seconds=status.run_seconds,
        sizing_key=sizing_key if sizing_key is not None else job_type,
        peaks_mib=attempt_peaks(status),
    )


def bucket_seconds(window_seconds: int) -> int:
    """Width of a bucket: the window in BUCKETS_PER_WINDOW parts, rounded up to a second."""
    return max(1, -(-window_seconds // BUCKETS_PER_WINDOW))


@dataclass(slots=True)
class _Totals:
    succeeded: int = 0
    failed: int = 0
    wait_sum: float = 0.0
    wait_count: int = 0
    run_sum: float = 0.0
    run_count: int = 0

    @classmethod
    def of(cls, stored: StatisticsTotals) -> _Totals:
        return cls(
            stored.succeeded,
            stored.failed,
            stored.wait_seconds_sum,
            stored.wait_seconds_count,
            stored.run_seconds_sum,
            stored.run_seconds_count,
        )

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    def add(self, other: _Totals) -> None:
        self.succeeded += other.succeeded
        self.failed += other.failed
        # Rounded to the millisecond: the sums stay short in the status and the same
        # however often they are read back and written again.
        self.wait_sum = round(self.wait_sum + other.wait_sum, 3)
        self.wait_count += other.wait_count
        self.run_sum = round(self.run_sum + other.run_sum, 3)
        self.run_count += other.run_count

    def fields(self) -> dict[str, Any]:
        return {
            "succeeded": self.succeeded,
            "failed": self.failed,
            "wait_seconds_sum": self.wait_sum,
            "wait_seconds_count": self.wait_count,
            "run_seconds_sum": self.run_sum,
            "run_seconds_count": self.run_count,
        }


def _totals_of(job: FinishedJob) -> _Totals:
    return _Totals(
        succeeded=int(job.succeeded),
        failed=int(not job.succeeded),
        wait_sum=job.wait_seconds or 0.0,
        wait_count=int(job.wait_seconds is not None),
        run_sum=job.run_seconds or 0.0,
        run_count=int(job.run_seconds is not None),
    )


@dataclass(slots=True)
class _Bucket:
    totals: _Totals = field(default_factory=_Totals)
    types: dict[str, _Totals] = field(default_factory=dict)
    # The stored bucket it was read from, while nothing was added: written back as it is
    # (most buckets of a status do not change, and building them is most of its cost).
    stored: StatisticsBucket | None = None

    def add(self, totals: _Totals, types: Iterable[tuple[str, _Totals]]) -> None:
        self.stored = None
        self.totals.add(totals)
        for name, type_totals in types:
            if name in self.types:
                self.types[name].add(type_totals)
            elif len(self.types) < MAX_TYPE_STATISTICS:
                self.types[name] = _Totals()
                self.types[name].add(type_totals)


def _read_buckets(stored: QueueStatistics | None, width: int) -> dict[int, _Bucket]:
    """The stored buckets by index (start // width). Buckets of another width (windowSeconds
    changed) go into the bucket of the new width their start falls in."""
    buckets: dict[int, _Bucket] = {}
    for bucket in stored.buckets if stored is not None else ():
        index = int(bucket.start.timestamp()) // width
        types = ((t.type, _Totals.of(t)) for t in bucket.by_type)
        buckets.setdefault(index, _Bucket()).add(_Totals.of(bucket), types)
    if stored is not None and stored.bucket_seconds == width:
        for bucket in stored.buckets:
            read = buckets[int(bucket.start.timestamp()) // width]
            # (As it is only if it was read alone and its start is where it belongs.)
            if read.totals == _Totals.of(bucket) and bucket.start.timestamp() % width == 0:
                read.stored = bucket
    return buckets


def fresh_finished(
    stored: QueueStatistics | None,
    confirmed: Iterable[FinishedJob],
    *,
    unconfirmed_since: datetime.datetime | None,
) -> list[FinishedJob]:
    """The `confirmed` jobs `count_finished` adds to the `stored` statistics, oldest first:
    those that finished after its watermark and before `unconfirmed_since`. Whatever else is
    fed from finished jobs exactly once (learned memory sizing) is fed from these, in the same
    status write."""
    watermark = stored.counted_through if stored is not None else None
    return sorted(
        (
            job
            for job in confirmed
            if (watermark is None or job.completed > watermark)
            # Counted once everything that finished before it is on record too.
            and (unconfirmed_since is None or job.completed < unconfirmed_since)
        ),
        key=lambda job: job.completed,
    )


def count_finished(
    stored: QueueStatistics | None,
    confirmed: Iterable[FinishedJob],
    *,
    unconfirmed_since: datetime.datetime | None,
    window_seconds: int,
    now: datetime.datetime,
) -> QueueStatistics:
    """The statistics as they should be at `now`: the `stored` ones (as read from the queue's
    status) plus the `confirmed` jobs (terminal status stored) that finished after its
    watermark and before `unconfirmed_since`, the oldest completionTime of a job whose
    terminal status is not stored yet; buckets that left the window are dropped."""
    width = bucket_seconds(window_seconds)
    watermark = stored.counted_through if stored is not None else None
    fresh = fresh_finished(stored, confirmed, unconfirmed_since=unconfirmed_since)
    if not fresh and _unchanged(stored, window_seconds, width, now.timestamp()):
        return stored  # (the common case, so it costs no rebuilding)
    buckets = _read_buckets(stored, width)
    for job in fresh:
        totals = _totals_of(job)
        index = int(job.completed.timestamp()) // width
        buckets.setdefault(index, _Bucket()).add(totals, [(job.type, totals)])
        watermark = job.completed
    return _summary(buckets, watermark, window_seconds, width, now.timestamp())


def _unchanged(
    stored: QueueStatistics | None, window_seconds: int, width: int, now: float
) -> TypeGuard[QueueStatistics]:
    """Whether the `stored` statistics stand as they are at `now`: same window, and no
    bucket has left it."""
    if stored is None or stored.window_seconds != window_seconds or stored.bucket_seconds != width:
        return False
    leaves = statistics_leave_at(stored, window_seconds)
    return leaves is None or leaves > now


def rolling_statistics(
    finished: Iterable[FinishedJob], now: float, window_seconds: int
) -> QueueStatistics:
    """The statistics `finished` alone add up to at `now` (the operator's, from nothing)."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    jobs = [job for job in finished if job.completed <= moment]
    return count_finished(
        None, jobs, unconfirmed_since=None, window_seconds=window_seconds, now=moment
    )


def statistics_leave_at(stored: QueueStatistics | None, window_seconds: int) -> float | None:
    """When the oldest stored bucket leaves the window (the figures change then)."""
    if stored is None or not stored.buckets:
        return None
    width = bucket_seconds(window_seconds)
    oldest = min(int(bucket.start.timestamp()) // width for bucket in stored.buckets)
    return float((oldest + 1) * width + window_seconds)


def _summary(
    buckets: dict[int, _Bucket],
    watermark: datetime.datetime | None,
    window_seconds: int,
    width: int,
    now: float,
) -> QueueStatistics:
    kept = sorted(i for i in buckets if (i + 1) * width > now - window_seconds)
    kept = kept[-MAX_STATISTICS_BUCKETS:]  # (a clock set back could leave more)
    total, types = _Totals(), dict[str, _Totals]()
    for index in kept:
        total.add(buckets[index].totals)
        for name, type_totals in buckets[index].types.items():
            types.setdefault(name, _Totals()).add(type_totals)
    busiest = sorted(types.items(), key=lambda kv: (-kv[1].finished, kv[0]))[:MAX_TYPE_STATISTICS]
    figures = _figures(total, window_seconds)
    return QueueStatistics(
        window_seconds=window_seconds,
        finished=total.finished,
        succeeded=total.succeeded,
        failed=total.failed,
        success_rate=figures.success_rate,
        mean_wait_seconds=figures.mean_wait_seconds,
        mean_run_seconds=figures.mean_run_seconds,
        throughput_per_minute=figures.throughput_per_minute,
        by_type=[
            _figures(t, window_seconds).model_copy(update={"type": name}) for name, t in busiest
        ],
        bucket_seconds=width,
        counted_through=watermark,
        buckets=[
            buckets[index].stored
            or StatisticsBucket(
                start=datetime.datetime.fromtimestamp(index * width, datetime.UTC),
                **buckets[index].totals.fields(),
                by_type=[
                    TypeTotals(type=name, **t.fields())
                    for name, t in sorted(buckets[index].types.items())
                ],
            )
            for index in kept
        ],
    )


def _figures(totals: _Totals, window_seconds: int) -> TypeStatistics:
    finished = totals.finished
    return TypeStatistics(
        type="",
        finished=finished,
        success_rate=round(totals.succeeded / finished, 4) if finished else None,
        mean_wait_seconds=(
            round(totals.wait_sum / totals.wait_count, 3) if totals.wait_count else None
        ),
        mean_run_seconds=round(totals.run_sum / totals.run_count, 3) if totals.run_count else None,
        throughput_per_minute=round(finished * 60 / window_seconds, 3),
    )


def awaits_count(status: VideoJobStatus, stored: QueueStatistics | None) -> bool:
    """Whether the job Succeeded or Failed but the queue's stored statistics do not count it
    yet (its TTL waits for them, so that deleting it loses no count)."""
    if status.phase not in _COUNTED or status.completion_time is None:
        return False
    watermark = stored.counted_through if stored is not None else None
    return watermark is None or status.completion_time > watermark


class StoredOutcome(Protocol):
    """What `split_uncounted` reads of a job in the index (the controller's `JobEntry`)."""

    @property
    def uid(self) -> str | None: ...
    @property
    def stored_phase(self) -> JobPhase | None: ...
    @property
    def stored_completion(self) -> datetime.datetime | None: ...


class _Assessed(Protocol):
    @property
    def terminal(self) -> bool: ...
    @property
    def status(self) -> VideoJobStatus: ...


def split_uncounted(
    records: Iterable[FinishedJob],
    jobs: Mapping[str, StoredOutcome],
    current: Callable[[str], _Assessed | None],
    stored: QueueStatistics | None,
) -> tuple[list[FinishedJob], datetime.datetime | None]:
    """Of the finished jobs not counted by the `stored` statistics: those to count now, whose
    terminal status is stored (or that are gone: counted as last seen), and the oldest
    completionTime of those whose terminal status is not stored yet (`count_finished` stops
    before it). `current(key)` is a job's latest assessment; a record that is no longer its
    job's outcome (a manual retry before it was stored) is neither."""
    watermark = stored.counted_through if stored is not None else None
    confirmed: list[FinishedJob] = []
    waiting: datetime.datetime | None = None
    for record in records:
        if watermark is not None and record.completed <= watermark:
            continue  # counted already (the index lets go of it once it sees that)
        job = jobs.get(record.key)
        if job is None or job.uid != record.uid:
            confirmed.append(record)  # deleted: counted as last seen
        elif job.stored_phase in _COUNTED and job.stored_completion == record.completed:
            confirmed.append(record)  # stored
        elif (latest := current(record.key)) is not None and (
            latest.terminal and latest.status.completion_time == record.completed
        ):
            waiting = record.completed if waiting is None else min(waiting, record.completed)
    return confirmed, waiting
