"""Rolling statistics, batch progress and health of a queue (scheduling.queue_status)."""

from __future__ import annotations

import datetime

from tests.unit.scheduling.test_queue_status import T0, condition, job, work_queue
from videoqueue.api import JobPhase, QueueHealth, VideoJobStatus
from videoqueue.scheduling.pressure import PressureState
from videoqueue.scheduling.queue_status import (
    FinishedJob,
    QueueFacts,
    batch_progress,
    rolling_statistics,
    summarize_queue,
)

NOW = T0.timestamp()


def finished(
    at: float, type_: str = "transcode", ok: bool = True, wait: float = 2, run: float = 10
) -> FinishedJob:
    return FinishedJob(NOW - at, type_, ok, wait, run)


def test_statistics_cover_only_the_window() -> None:
    items = [finished(10), finished(20, ok=False, wait=4, run=30), finished(1000)]
    stats = rolling_statistics(items, NOW, 900)
    assert (stats.finished, stats.succeeded, stats.failed) == (2, 1, 1)
    assert stats.success_rate == 0.5
    assert stats.mean_wait_seconds == 3
    assert stats.mean_run_seconds == 20
    assert stats.throughput_per_minute == round(2 * 60 / 900, 3)


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


def test_failure_rate_needs_enough_finished_jobs() -> None:
    queue = work_queue().model()
    few = QueueFacts(finished=tuple(finished(i, ok=False) for i in range(1, 4)))
    many = QueueFacts(finished=tuple(finished(i, ok=i > 3) for i in range(1, 11)))
    assert summarize_queue(queue, [], T0, facts=few).health == QueueHealth.HEALTHY
    status = summarize_queue(queue, [], T0, facts=many)
    assert status.health == QueueHealth.WARNING  # 30 %: over 10 %, under 50 %
    assert "30% of 10 jobs" in status.health_reasons[0]


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
