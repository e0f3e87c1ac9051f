"""Queue order, positions and estimated start times, from objects as the API returns them."""

from __future__ import annotations

import datetime
import random
from typing import Any

import pytest

from videoqueue.api import QueueStatistics, VideoJob, VideoQueue
from videoqueue.cli import estimate
from videoqueue.cli.estimate import JobEstimate, RunTimes, estimate_queue, run_times_from

NOW = 1_800_000_000.0


def at(offset: float) -> str:
    moment = datetime.datetime.fromtimestamp(NOW + offset, datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def queue(
    concurrency: int = 2,
    budget: str = "4Gi",
    state: str = "Active",
    spec: dict[str, Any] | None = None,
    **memory: Any,
) -> VideoQueue:
    return VideoQueue.model_validate(
        {
            "metadata": {"name": "work", "namespace": "ns", "generation": 1},
            "spec": {
                "state": state,
                "concurrency": concurrency,
                "memory": {"budget": budget, "defaultRequest": "1Gi", **memory},
                **(spec or {}),
            },
        }
    )


def job(
    name: str,
    *,
    phase: str | None = None,
    priority: int = 5,
    created: float = -100,
    memory: str | None = None,
    started: float | None = None,
    type_: str = "transcode",
    queue_name: str = "work",
    run_seconds: float | None = None,
    **spec: Any,
) -> VideoJob:
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if started is not None:
        status["admittedTime"] = at(started)
        status["startTime"] = at(started)
    if run_seconds is not None:
        status["runSeconds"] = run_seconds
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": at(created)},
        "spec": {
            "queueName": queue_name,
            "priority": priority,
            "type": type_,
            "input": {"url": "file:///in.mp4"},
            **spec,
        },
        "status": status,
    }
    if memory:
        body["spec"]["resources"] = {"memory": memory}
    return VideoJob.model_validate(body)


def by_name(rows: list[JobEstimate]) -> dict[str, JobEstimate]:
    return {row.name: row for row in rows}


def offsets(rows: list[JobEstimate]) -> dict[str, float | None]:
    return {r.name: None if r.start is None else round(r.start - NOW, 3) for r in rows}


MINUTE = RunTimes(overall=60.0)


def test_order_is_priority_then_fifo_and_running_jobs_come_first() -> None:
    jobs = [
        job("old-low", priority=1, created=-300),
        job("new-high", priority=9, created=-10),
        job("running", phase="Running", started=-20, created=-400),
        job("old-high", priority=9, created=-200),
    ]
    rows = estimate_queue(queue(concurrency=1), jobs, NOW, MINUTE)
    assert [(r.name, r.position) for r in rows] == [
        ("running", None),
        ("old-high", 1),
        ("new-high", 2),
        ("old-low", 3),
    ]


def test_waiting_jobs_start_when_running_ones_are_expected_to_finish() -> None:
    jobs = [
        job("a", phase="Running", started=-20),
        job("b", phase="Running", started=-50),
        job("c", created=-30),
        job("d", created=-20),
        job("e", created=-10),
    ]
    rows = estimate_queue(queue(concurrency=2), jobs, NOW, MINUTE)
    # b ends at +10, a at +40; c takes b's slot, d a's; e follows c at +10+60.
    assert offsets(rows) == {"b": -50, "a": -20, "c": 10, "d": 40, "e": 70}
    assert all(r.estimated for r in rows if r.position)
    assert not any(r.estimated for r in rows if r.position is None)


def test_a_job_running_longer_than_the_mean_is_taken_to_finish_now() -> None:
    jobs = [job("slow", phase="Running", started=-500), job("next")]
    rows = by_name(estimate_queue(queue(concurrency=1), jobs, NOW, MINUTE))
    assert rows["next"].start == NOW


def test_memory_budget_and_backfill_follow_the_admission_rules() -> None:
    # 3Gi of 4Gi in use until +60; the 2Gi head waits, a 1Gi job behind it backfills now.
    jobs = [
        job("busy", phase="Running", started=0, memory="3Gi", created=-500),
        job("big", memory="2Gi", created=-100),
        job("small", memory="1Gi", created=-50),
    ]
    rows = by_name(estimate_queue(queue(concurrency=4), jobs, NOW, MINUTE))
    assert rows["small"].start == NOW
    assert rows["big"].start == NOW + 60
    assert (rows["big"].position, rows["small"].position) == (1, 2)


def test_mean_run_time_per_type_wins_over_the_overall_mean() -> None:
    jobs = [
        job("probe", phase="Running", started=0, type_="probe"),
        job("next", type_="transcode"),
    ]
    times = RunTimes(overall=600.0, by_type={"probe": 5.0})
    rows = by_name(estimate_queue(queue(concurrency=1), jobs, NOW, times))
    assert rows["next"].start == NOW + 5


@pytest.mark.parametrize(
    ("state", "note"),
    [
        pytest.param("Paused", "Paused", id="paused"),
        pytest.param("Draining", "Draining", id="draining"),
    ],
)
def test_a_queue_that_does_not_admit_gives_no_times(state: str, note: str) -> None:
    rows = by_name(estimate_queue(queue(state=state), [job("a")], NOW, MINUTE))
    assert rows["a"].start is None
    assert note in rows["a"].note


def test_without_a_measured_run_time_only_free_slots_are_estimated() -> None:
    jobs = [
        job("running", phase="Running", started=-5),
        job("a", created=-20),
        job("b", created=-10),
    ]
    rows = by_name(estimate_queue(queue(concurrency=2), jobs, NOW, RunTimes()))
    assert rows["a"].start == NOW
    assert rows["b"].start is None
    assert "no run time measured" in rows["b"].note


def test_delayed_and_backoff_jobs_enter_at_their_time() -> None:
    jobs = [job("later", startAfter=at(300)), job("now", created=-1)]
    rows = by_name(estimate_queue(queue(concurrency=1), jobs, NOW, MINUTE))
    assert rows["now"].start == NOW
    assert rows["later"].start == NOW + 300


def test_a_dependent_job_starts_after_its_dependency_is_expected_to_finish() -> None:
    jobs = [
        job("first", phase="Running", started=-10),
        job("second", dependsOn=["first"], created=-50),
        job("other", created=-5),
    ]
    rows = by_name(estimate_queue(queue(concurrency=2), jobs, NOW, MINUTE))
    assert rows["other"].start == NOW
    assert rows["second"].start == NOW + 50


def test_a_job_waiting_for_a_job_of_another_queue_gets_a_note() -> None:
    jobs = [job("elsewhere", queue_name="other"), job("after", dependsOn=["elsewhere"])]
    rows = by_name(estimate_queue(queue(), jobs, NOW, MINUTE))
    assert rows["after"].start is None
    assert "dependsOn" in rows["after"].note
    assert "elsewhere" not in rows


def test_too_big_jobs_are_noted_and_suspended_ones_come_last() -> None:
    jobs = [
        job("huge", memory="8Gi", created=-100),
        job("held", suspend=True, created=-200),
        job("fine", created=-50),
    ]
    rows = estimate_queue(queue(max="2Gi"), jobs, NOW, MINUTE)
    named = by_name(rows)
    assert "rejected" in named["huge"].note
    assert named["fine"].start == NOW
    assert rows[-1].name == "held"
    assert "suspend" in rows[-1].note


def test_a_job_whose_pod_outgrows_the_budget_is_noted_as_rejected() -> None:
    # 3Gi is within memory.max (the 4Gi budget), but with the 2Gi sidecar its pod is 5Gi: the
    # operator rejects it (PodExceedsBudget), and the jobs behind it are not held up.
    sidecar = {"name": "shipper", "image": "s:1", "resources": {"limits": {"memory": "2Gi"}}}
    template = {"spec": {"containers": [{"name": "worker", "image": "w:1"}, sidecar]}}
    jobs = [job("wide", memory="3Gi", created=-100), job("fine", created=-50)]
    rows = by_name(estimate_queue(queue(spec={"template": template}), jobs, NOW, MINUTE))
    assert rows["wide"].start is None
    assert rows["wide"].note == (
        "will be rejected: needs 5Gi for its whole pod, more than the queue's whole memory.budget"
    )
    assert rows["fine"].start == NOW


def test_finished_jobs_and_other_queues_are_left_out() -> None:
    jobs = [job("done", phase="Succeeded"), job("theirs", queue_name="other"), job("mine")]
    assert [r.name for r in estimate_queue(queue(), jobs, NOW, MINUTE)] == ["mine"]


def test_run_times_come_from_the_queue_statistics_when_written() -> None:
    stats = QueueStatistics.model_validate(
        {
            "windowSeconds": 900,
            "meanRunSeconds": 30.0,
            "byType": [{"type": "probe", "finished": 1, "meanRunSeconds": 2}],
        }
    )
    times = run_times_from(stats, [])
    assert (times.for_type("probe"), times.for_type("clip")) == (2.0, 30.0)


def test_run_times_fall_back_to_the_succeeded_jobs() -> None:
    jobs = [
        job("a", phase="Succeeded", run_seconds=10, type_="probe"),
        job("b", phase="Succeeded", run_seconds=30, type_="probe"),
        job("c", phase="Succeeded", run_seconds=80),
        job("d", phase="Failed", run_seconds=1000),
    ]
    times = run_times_from(None, jobs)
    assert times.for_type("probe") == 20
    assert times.for_type("transcode") == 80
    assert times.overall == 40


def test_aging_lifts_a_long_waiting_job_in_the_order() -> None:
    aged = queue(concurrency=1, spec={"aging": {"intervalSeconds": 60, "maxBoost": 5}})
    jobs = [
        job("running", phase="Running", started=-10, created=-1000),
        job("fresh-high", priority=7, created=-10),
        job("old-low", priority=3, created=-600),  # 10 minutes waited: 3 + 5 = 8
    ]
    rows = estimate_queue(aged, jobs, NOW, MINUTE)
    assert [r.name for r in rows if r.position] == ["old-low", "fresh-high"]
    assert by_name(rows)["old-low"].start == NOW + 50


def test_the_start_rate_limit_spaces_out_admissions() -> None:
    limited = queue(concurrency=10, spec={"rateLimit": {"startsPerMinute": 2}})
    jobs = [job(f"j{i}", created=-100 + i) for i in range(4)]
    rows = by_name(estimate_queue(limited, jobs, NOW, RunTimes(overall=600.0)))
    assert [rows[f"j{i}"].start for i in range(4)] == [NOW, NOW, NOW + 60, NOW + 60]


@pytest.mark.parametrize("seed", range(24))
def test_deciding_on_the_head_of_the_order_gives_the_same_estimate_as_on_all(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    sizes = ["512Mi", "1Gi", "2Gi", "3Gi", "6Gi"]
    spec: dict[str, Any] = {}
    if seed % 3 == 0:
        spec["rateLimit"] = {"startsPerMinute": rng.randint(1, 5)}
    if seed % 4 == 1:
        spec["aging"] = {"intervalSeconds": rng.choice([30, 120]), "maxBoost": 3}
    backfill = rng.choice([0, 90, 600])
    q = queue(concurrency=rng.randint(1, 4), budget="8Gi", spec=spec, backfillSeconds=backfill)
    jobs = [
        job(f"run-{i}", phase="Running", started=-rng.randint(0, 100), memory=rng.choice(sizes))
        for i in range(rng.randint(0, 3))
    ]
    jobs += [
        job(
            f"job-{i}",
            priority=rng.randint(0, 10),
            created=-rng.randint(0, 300),
            memory=rng.choice(sizes),
            type_=rng.choice(["probe", "transcode"]),
        )
        for i in range(150)
    ]
    times = RunTimes(overall=60.0, by_type={"probe": 7.0})
    monkeypatch.setattr(estimate, "_WINDOW", 10_000)
    everything = estimate_queue(q, jobs, NOW, times)
    monkeypatch.setattr(estimate, "_WINDOW", 1)
    assert estimate_queue(q, jobs, NOW, times) == everything


def test_a_small_job_far_back_in_the_order_backfills_free_memory() -> None:
    jobs = [job("busy", phase="Running", started=0, memory="6Gi", created=-500)]
    jobs += [job(f"big-{i:03}", memory="3Gi", created=-100 + i * 0.1) for i in range(200)]
    jobs.append(job("small", memory="1Gi", created=-1))
    rows = by_name(estimate_queue(queue(concurrency=3, budget="8Gi"), jobs, NOW, MINUTE))
    assert rows["small"].start == NOW
    assert rows["small"].position == 201
    assert rows["big-000"].start == NOW + 60


def test_a_sidecar_counts_against_the_budget_as_in_admission() -> None:
    # Each pod is its 1Gi worker plus a 1Gi sidecar: two fit a 4Gi budget, not three.
    sidecar = {"name": "shipper", "image": "s:1", "resources": {"limits": {"memory": "1Gi"}}}
    template = {"spec": {"containers": [{"name": "worker", "image": "w:1"}, sidecar]}}
    jobs = [job("a", created=-30), job("b", created=-20), job("c", created=-10)]
    rows = estimate_queue(queue(concurrency=3, spec={"template": template}), jobs, NOW, MINUTE)
    assert offsets(rows) == {"a": 0, "b": 0, "c": 60}
