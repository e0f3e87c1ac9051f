"""Rolling statistics, batch progress and health of a queue (scheduling.queue_status,
scheduling.statistics): counters in fixed buckets, counted exactly once behind a watermark."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import pytest

from tests.unit.scheduling.test_queue_status import T0, condition, job, work_queue
from videoqueue.api import (
    JobPhase,
    QueueHealth,
    QueueStatistics,
    VideoJobStatus,
    VideoQueueStatus,
)
from videoqueue.scheduling.pressure import PressureState
from videoqueue.scheduling.queue_status import QueueFacts, batch_progress, summarize_queue
from videoqueue.scheduling.statistics import (
    FinishedJob,
    awaits_count,
    bucket_seconds,
    count_finished,
    rolling_statistics,
    split_uncounted,
    statistics_leave_at,
)

NOW = T0.timestamp()  # 10:00:00, a multiple of 60 s (and of 5760 s? no: see the tests)
SECOND = datetime.timedelta(seconds=1)
MICRO = datetime.timedelta(microseconds=1)


def finished(
    ago: float,
    type_: str = "transcode",
    ok: bool = True,
    wait: float | None = 2,
    run: float | None = 10,
    *,
    name: str | None = None,
) -> FinishedJob:
    """A job that finished `ago` seconds before T0."""
    completed = T0 - datetime.timedelta(seconds=ago)
    name = name or f"j-{ago}-{type_}"
    return FinishedJob(f"uid-{name}", f"media/{name}", completed, type_, ok, wait, run)


def count(
    jobs: list[FinishedJob],
    stored: QueueStatistics | None = None,
    *,
    at: datetime.datetime = T0,
    window: int = 900,
    unconfirmed_since: datetime.datetime | None = None,
) -> QueueStatistics:
    return count_finished(
        stored, jobs, unconfirmed_since=unconfirmed_since, window_seconds=window, now=at
    )


def read_back(stats: QueueStatistics) -> QueueStatistics:
    """As a restarted operator reads it: through the API server's JSON."""
    return QueueStatistics.model_validate(stats.to_dict())


# -- figures -------------------------------------------------------------------------------


def test_statistics_cover_the_window() -> None:
    items = [finished(10), finished(20, ok=False, wait=4, run=30), finished(1000)]
    stats = rolling_statistics(items, NOW, 900)
    assert (stats.finished, stats.succeeded, stats.failed) == (2, 1, 1)
    assert stats.success_rate == 0.5
    assert stats.mean_wait_seconds == 3
    assert stats.mean_run_seconds == 20
    assert stats.throughput_per_minute == round(2 * 60 / 900, 3)


def test_means_leave_out_jobs_without_a_wait_or_run_time() -> None:
    stats = rolling_statistics([finished(1, run=None), finished(2, run=30)], NOW, 900)
    assert (stats.finished, stats.mean_run_seconds, stats.mean_wait_seconds) == (2, 30, 2)


def test_statistics_per_type() -> None:
    items = [
        finished(1, "probe", run=1),
        finished(2, "probe", run=3),
        finished(3, "clip", ok=False),
    ]
    by_type = {t.type: t for t in rolling_statistics(items, NOW, 600).by_type}
    assert by_type["probe"].finished == 2
    assert by_type["probe"].mean_run_seconds == 2
    assert by_type["clip"].success_rate == 0
    assert [t.type for t in rolling_statistics(items, NOW, 600).by_type] == ["probe", "clip"]


def test_empty_window_has_no_rates() -> None:
    stats = rolling_statistics([], NOW, 600)
    assert stats.finished == 0
    assert stats.success_rate is None
    assert stats.throughput_per_minute == 0
    assert (stats.buckets, stats.counted_through) == ([], None)


# -- buckets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "width"),
    [
        pytest.param(60, 4, id="minimum window"),
        pytest.param(61, 5, id="rounded up"),
        pytest.param(900, 60, id="default window"),
        pytest.param(86_400, 5760, id="a day"),
    ],
)
def test_a_window_is_cut_into_at_most_fifteen_buckets(window: int, width: int) -> None:
    assert bucket_seconds(window) == width
    assert -(-window // width) <= 15


def test_a_job_counts_while_its_bucket_overlaps_the_window() -> None:
    # Finished 1 s into the bucket 09:45:00-09:46:00; the window is 900 s.
    stats = count([finished(899)])
    assert [b.start for b in stats.buckets] == [T0 - 900 * SECOND]
    bucket_end = T0 - 840 * SECOND
    assert count([], stats, at=bucket_end + 900 * SECOND - MICRO).finished == 1
    gone = count([], stats, at=bucket_end + 900 * SECOND)
    assert (gone.finished, gone.buckets) == (0, [])
    assert gone.counted_through == stats.counted_through  # what was counted stays counted
    assert statistics_leave_at(stats, 900) == (bucket_end + 900 * SECOND).timestamp()


def test_a_day_long_window_holds_at_most_sixteen_buckets() -> None:
    items = [finished(ago) for ago in range(0, 86_400 + 5760, 600)]
    stats = count(items, window=86_400)
    assert len(stats.buckets) <= 16
    # Every job in the last windowSeconds counts (and those sharing the oldest bucket).
    within = sum(1 for ago in range(0, 86_400 + 5760, 600) if ago < 86_400)
    assert within <= stats.finished <= len(items)
    assert stats.finished == sum(b.succeeded for b in stats.buckets)


def test_a_bucket_keeps_its_first_sixteen_types_and_counts_the_others_in_its_totals() -> None:
    # Twenty types finish in one bucket, "type-00" first; "type-19" three times.
    items = [finished(50 - i, f"type-{i:02d}") for i in range(20)]
    items += [finished(5, "type-19"), finished(4, "type-19")]
    stats = count(items)
    [bucket] = stats.buckets
    assert bucket.succeeded == 22  # every job counts in the totals
    assert [t.type for t in bucket.by_type] == [f"type-{i:02d}" for i in range(16)]
    assert len(stats.by_type) == 16
    assert stats.finished == 22
    assert sum(t.finished for t in stats.by_type) == 16


def test_the_busiest_types_of_the_window_are_published() -> None:
    items = [finished(1, "clip"), finished(2, "probe"), finished(3, "probe")]
    items += [finished(65 + i, f"type-{i:02d}") for i in range(16)]  # an older bucket
    stats = count(items)
    assert len(stats.by_type) == 16
    assert stats.by_type[0].type == "probe"
    assert stats.by_type[0].finished == 2


def test_a_changed_window_puts_the_counts_into_buckets_of_the_new_width() -> None:
    stats = count([finished(ago) for ago in (10, 70, 130, 500)])
    assert (stats.bucket_seconds, len(stats.buckets)) == (60, 4)
    wider = count([], read_back(stats), window=3600)
    assert (wider.bucket_seconds, wider.finished) == (240, 4)
    assert len(wider.buckets) < 4


# -- counted exactly once ---------------------------------------------------------------------


def test_the_watermark_is_the_newest_completion_time_counted() -> None:
    items = [finished(30), finished(10), finished(20)]
    stats = count(items)
    assert stats.counted_through == T0 - 10 * SECOND
    assert stats.finished == 3


def test_counting_the_same_jobs_again_changes_nothing() -> None:
    items = [finished(30), finished(10, ok=False)]
    once = count(items)
    again = count(items, read_back(once))
    assert again == once
    assert again.to_dict() == once.to_dict()  # so the status patch is empty: no write


def test_counting_in_steps_adds_up_to_counting_at_once() -> None:
    """Each count starts from the stored status (its unchanged buckets written back as they
    are): the result is the same as counting every job from nothing."""
    # Oldest first, as outcomes are stored (a step never has older ones left behind).
    items = [finished(ago, f"type-{ago % 5}", ok=ago % 3 > 0) for ago in range(800, 0, -7)]
    stored: QueueStatistics | None = None
    for step in range(0, len(items), 9):
        stored = read_back(count(items[: step + 9], stored))
    assert stored == count(items)


def test_a_restarted_operator_counts_only_jobs_finished_after_the_watermark() -> None:
    before = [finished(30), finished(20, ok=False)]
    stored = read_back(count(before, at=T0 - 15 * SECOND))
    # After the restart it sees every job that still exists, old and new.
    after = count([*before, finished(5), finished(1, ok=False)], stored)
    assert (after.succeeded, after.failed) == (2, 2)
    assert after.counted_through == T0 - 1 * SECOND


def test_counting_stops_before_a_job_whose_outcome_is_not_stored_yet() -> None:
    stored_first, unstored, stored_later = finished(30), finished(20), finished(10)
    stats = count([stored_first, stored_later], unconfirmed_since=unstored.completed)
    assert stats.finished == 1
    assert stats.counted_through == stored_first.completed
    # Once it is stored, it and the one after it are counted, each once.
    stats = count([stored_first, unstored, stored_later], read_back(stats))
    assert (stats.finished, stats.counted_through) == (3, stored_later.completed)


def test_jobs_finished_in_the_same_cycle_are_counted_together_or_not_at_all() -> None:
    a = finished(10, name="a")
    b = finished(10, name="b")  # the same completionTime: finished in the same cycle
    stats = count([a], unconfirmed_since=b.completed)
    assert (stats.finished, stats.counted_through) == (0, None)
    stats = count([a, b], read_back(stats))
    assert (stats.finished, stats.counted_through) == (2, a.completed)


def test_completion_times_are_compared_to_the_microsecond() -> None:
    first = finished(10, name="first")
    later = FinishedJob("uid-l", "media/l", first.completed + MICRO, "transcode", True, 1, 1)
    stats = read_back(count([first]))
    assert stats.counted_through == first.completed
    assert count([first, later], stats).finished == 2


def test_a_job_awaits_its_count_until_the_watermark_reaches_it() -> None:
    done = VideoJobStatus(phase=JobPhase.SUCCEEDED, completion_time=T0)
    assert awaits_count(done, None)
    assert awaits_count(done, QueueStatistics(window_seconds=900, counted_through=T0 - MICRO))
    assert not awaits_count(done, QueueStatistics(window_seconds=900, counted_through=T0))
    cancelled = VideoJobStatus(phase=JobPhase.CANCELLED, completion_time=T0)
    assert not awaits_count(cancelled, None)  # not in the statistics: nothing to wait for


# -- which finished jobs can be counted -------------------------------------------------------


@dataclass
class Indexed:
    uid: str | None
    stored_phase: JobPhase | None
    stored_completion: datetime.datetime | None


@dataclass
class Latest:
    terminal: bool
    status: VideoJobStatus


def test_split_uncounted_counts_stored_and_deleted_jobs_and_waits_for_unstored_ones() -> None:
    stored = finished(50, name="stored")
    deleted = finished(40, name="deleted")
    unstored = finished(30, name="unstored")
    retried = finished(20, name="retried")
    old = finished(100, name="old")
    jobs = {
        stored.key: Indexed(stored.uid, JobPhase.SUCCEEDED, stored.completed),
        unstored.key: Indexed(unstored.uid, JobPhase.RUNNING, None),
        retried.key: Indexed(retried.uid, JobPhase.RUNNING, None),
        old.key: Indexed(old.uid, JobPhase.SUCCEEDED, old.completed),
        # A job of the same name, created again: the finished one is gone.
        deleted.key: Indexed("another-uid", None, None),
    }
    latest = {
        unstored.key: Latest(
            True, VideoJobStatus(phase=JobPhase.SUCCEEDED, completion_time=unstored.completed)
        ),
        retried.key: Latest(False, VideoJobStatus(phase=JobPhase.PENDING)),
    }
    watermark = QueueStatistics(window_seconds=900, counted_through=T0 - 60 * SECOND)
    confirmed, waiting = split_uncounted(
        [stored, deleted, unstored, retried, old], jobs, latest.get, watermark
    )
    assert [r.key for r in confirmed] == [stored.key, deleted.key]
    assert waiting == unstored.completed


# -- health --------------------------------------------------------------------------------


def test_failure_rate_needs_enough_finished_jobs() -> None:
    queue = work_queue().model()
    few = QueueFacts(finished=tuple(finished(i, ok=False) for i in range(1, 4)))
    many = QueueFacts(finished=tuple(finished(i, ok=i > 3) for i in range(1, 11)))
    assert summarize_queue(queue, [], T0, facts=few).health == QueueHealth.HEALTHY
    status = summarize_queue(queue, [], T0, facts=many)
    assert status.health == QueueHealth.WARNING  # 30 %: over 10 %, under 50 %
    assert "30% of 10 jobs" in status.health_reasons[0]


def test_health_reads_the_stored_counters_when_the_jobs_are_gone() -> None:
    """A restarted operator with none of the finished jobs left (a TTL deleted them) still
    sees the failures: they are counted in the queue's status."""
    queue = work_queue().model()
    many = QueueFacts(finished=tuple(finished(i, ok=i > 6) for i in range(1, 11)))
    before = summarize_queue(queue, [], T0, facts=many)
    queue.status = VideoQueueStatus.model_validate(before.to_dict())
    after = summarize_queue(queue, [], T0 + 60 * SECOND)
    assert after.statistics == before.statistics  # carried over, nothing lost or added
    assert after.statistics is not None
    assert (after.statistics.succeeded, after.statistics.failed) == (4, 6)
    assert after.health == QueueHealth.CRITICAL  # 60 % failed
    assert after.health_reasons == before.health_reasons


def test_batches_list_only_unfinished_ones_and_stay_bounded() -> None:
    members = [
        ("done", job(JobPhase.SUCCEEDED)),
        ("live", job(JobPhase.RUNNING)),
        ("live", job(JobPhase.SUCCEEDED)),
        ("live", job(JobPhase.FAILED)),
        ("live", job(JobPhase.PENDING)),
    ]
    members += [(f"b{i}", job(JobPhase.PENDING)) for i in range(50)]
    batches = batch_progress(members)
    assert len(batches) == 20
    live = batches[0]
    assert (live.name, live.total, live.pending, live.running, live.succeeded, live.failed) == (
        "live",
        4,
        1,
        1,
        1,
        1,
    )
    assert "done" not in {b.name for b in batches}


def statuses(**phases: int) -> list[VideoJobStatus]:
    return [job(JobPhase(p.capitalize())) for p, n in phases.items() for _ in range(n)]


def test_healthy_by_default() -> None:
    status = summarize_queue(work_queue().model(), statuses(running=2, pending=3), T0)
    assert (status.health, status.health_reasons) == (QueueHealth.HEALTHY, [])


def test_backlog_thresholds() -> None:
    queue = work_queue().model()
    queue.spec.health.backlog_warning = 3
    queue.spec.health.backlog_critical = 5
    assert summarize_queue(queue, statuses(pending=3), T0).health == QueueHealth.WARNING
    assert summarize_queue(queue, statuses(pending=3, backoff=2), T0).health == QueueHealth.CRITICAL


def test_unschedulable_workers_with_nothing_running_is_offline_and_stalled() -> None:
    status = summarize_queue(
        work_queue().model(), statuses(admitted=2), T0, facts=QueueFacts(unschedulable=2)
    )
    assert status.health == QueueHealth.OFFLINE
    assert condition(status, "Stalled").status == "True"
    assert condition(status, "Ready").reason == "WorkersCannotStart"
    running = summarize_queue(
        work_queue().model(), statuses(admitted=1, running=1), T0, facts=QueueFacts(unschedulable=1)
    )
    assert running.health == QueueHealth.WARNING


def test_memory_pressure_is_a_condition_and_a_warning() -> None:
    pressure = PressureState(2, NOW, "OOMKills", "3 attempts ended OOMKilled within 600s")
    status = summarize_queue(work_queue().model(), [], T0, facts=QueueFacts(pressure=pressure))
    assert status.effective_concurrency == 2
    assert condition(status, "MemoryPressure").reason == "OOMKills"
    assert status.health == QueueHealth.WARNING
    calm = summarize_queue(
        work_queue().model(), [], T0 + datetime.timedelta(minutes=5), previous=status
    )
    assert condition(calm, "MemoryPressure").status == "False"
