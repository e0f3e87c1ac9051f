"""`stats` and `batch` summarise with the operator's own functions: before the operator has
written a queue's status they show what it will write, and after, what it wrote."""

from __future__ import annotations

import datetime
import io
from typing import Any

from videoqueue.api import BATCH_LABEL, SizingSummary, VideoJob, VideoQueue
from videoqueue.cli.queues import _sizing_table
from videoqueue.cli.summary import batches, finished_jobs, queue_summary, sizing_summary
from videoqueue.scheduling.queue_status import QueueFacts, summarize_queue

NOW = 1_800_000_000.0
SIDECAR = {"name": "shipper", "image": "s:1", "resources": {"limits": {"memory": "1Gi"}}}


def at(offset: float) -> str:
    return datetime.datetime.fromtimestamp(NOW + offset, datetime.UTC).isoformat()


def queue(**spec: Any) -> VideoQueue:
    return VideoQueue.model_validate(
        {
            "metadata": {"name": "work", "namespace": "ns", "generation": 1},
            "spec": {"concurrency": 2, "memory": {"budget": "8Gi"}, **spec},
        }
    )


def job(
    name: str,
    phase: str | None = None,
    *,
    type_: str = "probe",
    finished: float | None = None,
    batch: str | None = None,
    **status: Any,
) -> VideoJob:
    if phase:
        status["phase"] = phase
    if finished is not None:
        status["completionTime"] = at(finished)
    return VideoJob.model_validate(
        {
            "metadata": {
                "name": name,
                "creationTimestamp": at(-1000),
                "labels": {BATCH_LABEL: batch} if batch else {},
            },
            "spec": {"queueName": "work", "type": type_, "input": {"url": "file:///a"}},
            "status": status,
        }
    )


JOBS = [
    job("running", "Running", effectiveMemory="1Gi"),
    job("admitted", "Admitted", effectiveMemory="2Gi"),
    job("waiting"),
    job("ok", "Succeeded", finished=-60, runSeconds=10, waitSeconds=3),
    job("broke", "Failed", type_="clip", finished=-120, runSeconds=100, waitSeconds=5),
    job("long-ago", "Succeeded", finished=-5000, runSeconds=50),
    job("cancelled", "Cancelled", finished=-10),
]


def test_stats_before_the_first_status_write_show_what_the_operator_will_write() -> None:
    fresh = queue(template={"spec": {"containers": [{"name": "worker", "image": "w"}, SIDECAR]}})
    status = summarize_queue(
        fresh,
        [j.status for j in JOBS],
        datetime.datetime.fromtimestamp(NOW, datetime.UTC),
        facts=QueueFacts(finished=tuple(finished_jobs(JOBS))),
    )
    written = fresh.model_copy(update={"status": status})

    before, after = queue_summary(fresh, JOBS, NOW), queue_summary(written, JOBS, NOW)

    assert before["statisticsSource"] == "the finished jobs still present: 2 in the last 15m"
    assert after["statisticsSource"] == "the queue's status: jobs finished in the last 15m"
    # Health and the effective concurrency are the operator's to judge.
    assert (before["health"], after["health"]) == (None, "Healthy")
    assert (before["effectiveConcurrency"], after["effectiveConcurrency"]) == (None, 2)
    same = before.keys() - {"statisticsSource", "health", "effectiveConcurrency"}
    assert {k: before[k] for k in same} == {k: after[k] for k in same}
    # Whole pods, as admission counts them: each busy job's worker plus the 1Gi sidecar.
    assert before["memory"] == "5Gi/8Gi"
    assert before["jobs"]["running"] == before["jobs"]["admitted"] == 1
    # The window's Succeeded and Failed jobs, failed runs included, as in status.statistics.
    assert (before["successRate"], before["meanRunSeconds"]) == (0.5, 55.0)
    assert [t["type"] for t in before["byType"]] == ["clip", "probe"]


def test_a_batch_whose_jobs_all_ended_is_still_shown() -> None:
    jobs = [
        job("a", "Succeeded", batch="done"),
        job("b", "Rejected", batch="done"),
        job("c", "Running", batch="busy"),
    ]
    assert [b.to_dict() for b in batches(jobs)] == [
        {"name": "done", "total": 2, "pending": 0, "running": 0, "succeeded": 1, "failed": 1},
        {"name": "busy", "total": 1, "pending": 0, "running": 1, "succeeded": 0, "failed": 0},
    ]


def test_stats_show_what_memory_sizing_learned_per_key_and_the_size_it_gives() -> None:
    learned = queue(memory={"budget": "8Gi", "learned": {"minObservations": 3}})
    learned.status.sizing = [
        SizingSummary(key="transcode/720p/h264/medium", observations=40, peaks_mi=[250, 263]),
        SizingSummary(key="probe", observations=2, peaks_mi=[40, 41]),
    ]

    sizing = sizing_summary(learned)
    out = io.StringIO()
    _sizing_table(sizing, out)

    assert sizing["keys"][0] == {
        "key": "transcode/720p/h264/medium",
        "observations": 40,
        "percentileMi": 263,
        "size": "316Mi",  # 263 x 1.2, rounded up
        "source": "p95 of 2 past transcode/720p/h264/medium jobs x 1.2",
    }
    assert sizing["keys"][1]["size"] is None
    assert sizing["keys"][1]["source"] == (
        "spec.memory.defaultRequest (2 of 3 observations of probe)"
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == "Memory sizing (Learned: p95 x 1.2 once a key has 3 observations):"
    assert lines[1].split() == ["KEY", "OBSERVATIONS", "P95", "SIZE"]
    assert lines[2].split() == ["transcode/720p/h264/medium", "40", "263Mi", "316Mi"]
    assert lines[3].split() == ["probe", "2", "41Mi", "default"]


def test_stats_show_what_is_reserved_of_each_budget() -> None:
    worker = {"name": "worker", "image": "w", "resources": {"requests": {"cpu": "1500m"}}}
    budgeted = queue(
        budgets={"cpu": "4", "example.com/gpu": 2}, template={"spec": {"containers": [worker]}}
    )

    summary = queue_summary(budgeted, JOBS, NOW)

    # Two busy jobs of 1500m each; the workers request no GPU.
    assert summary["budgets"] == {"cpu": "3/4", "example.com/gpu": "0/2"}
    assert queue_summary(queue(), JOBS, NOW)["budgets"] == {}
