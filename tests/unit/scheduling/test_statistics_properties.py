"""Exactly once, whatever happens in between: a simulation of the counting protocol
(`split_uncounted`, `count_finished`, the watermark) through random outcome writes, lost
queue status writes, restarts that lose the outcomes not yet stored, and TTL deletions of
counted jobs. At the end every job is counted once, with its last outcome, and learned
memory sizing (fed in the same queue status, by `summarize_queue`) has observed each job's
peak once."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from videoqueue.api import (
    JobPhase,
    QueueStatistics,
    SizingSummary,
    VideoJobStatus,
    VideoQueue,
    VideoQueueStatus,
)
from videoqueue.scheduling.queue_status import QueueFacts, summarize_queue
from videoqueue.scheduling.statistics import (
    FinishedJob,
    awaits_count,
    count_finished,
    split_uncounted,
)

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
WINDOW = 86_400
QUEUE = VideoQueue.model_validate(
    {
        "metadata": {"name": "q", "namespace": "ns"},
        "spec": {"memory": {"budget": "8Gi"}, "statistics": {"windowSeconds": WINDOW}},
    }
)


@dataclass
class Job:
    """A job as the API server has it (`stored_*`) and as the operator decided it."""

    uid: str
    ok: bool
    completed: datetime.datetime | None = None  # the operator's latest outcome
    stored_phase: JobPhase | None = None
    stored_completion: datetime.datetime | None = None

    @property
    def record(self) -> FinishedJob:
        assert self.completed is not None
        return FinishedJob(
            self.uid, self.uid, self.completed, "t", self.ok, 1.0, 2.0, "t", (self.peak,)
        )

    @property
    def peak(self) -> int:
        return 100 + int(self.uid[1:])  # MiB, one per job


@dataclass
class Latest:
    terminal: bool
    status: VideoJobStatus


steps = st.lists(
    st.tuples(
        st.sampled_from(["finish", "store", "count", "lose-write", "restart", "ttl"]),
        st.integers(0, 9),  # which job
        st.sampled_from([0, 0, 1, 250_000, 2_000_000]),  # microseconds that pass
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=10), steps)
# Two jobs finish together, only one outcome is stored: neither counts (nor feeds sizing) yet.
@example([False, False], [("finish", 0, 0), ("finish", 1, 0), ("store", 0, 0), ("count", 0, 0)])
def test_every_job_is_counted_exactly_once(
    outcomes: list[bool], script: list[tuple[str, int, int]]
) -> None:
    jobs = {f"j{i}": Job(f"j{i}", ok) for i, ok in enumerate(outcomes)}
    now = T0
    stored: QueueStatistics | None = None  # the queue's status as the API server has it
    sizing: list[SizingSummary] = []

    def count(write: bool) -> None:
        nonlocal stored, sizing
        known = [j for j in jobs.values() if j.completed is not None]
        latest = {
            j.uid: Latest(
                True, VideoJobStatus(phase=JobPhase.SUCCEEDED, completion_time=j.completed)
            )
            for j in known
        }
        confirmed, waiting = split_uncounted([j.record for j in known], jobs, latest.get, stored)
        counted = count_finished(
            stored, confirmed, unconfirmed_since=waiting, window_seconds=WINDOW, now=now
        )
        status = summarize_queue(
            QUEUE,
            [],
            now,
            previous=VideoQueueStatus(statistics=stored, sizing=sizing),
            facts=QueueFacts(finished=tuple(confirmed), unconfirmed_since=waiting),
        )
        assert status.statistics == counted  # the queue's status counts the same
        if write:
            written = VideoQueueStatus.model_validate(status.to_dict())
            stored, sizing = written.statistics, written.sizing

    for action, index, passes in script:
        now += datetime.timedelta(microseconds=passes)
        job = jobs.get(f"j{index}")
        if action == "finish" and job is not None and job.completed is None:
            job.completed = now  # (jobs finishing in the same cycle share it: passes == 0)
        elif action == "store" and job is not None and job.completed is not None:
            job.stored_phase = JobPhase.SUCCEEDED if job.ok else JobPhase.FAILED
            job.stored_completion = job.completed
        elif action in ("count", "lose-write"):
            count(write=action == "count")
        elif action == "restart":
            # Outcomes not stored are forgotten: the next operator decides them again.
            for other in jobs.values():
                if other.stored_completion is None:
                    other.completed = None
        elif action == "ttl" and job is not None and job.stored_completion is not None:
            status = VideoJobStatus(phase=job.stored_phase, completion_time=job.stored_completion)
            if not awaits_count(status, stored):
                del jobs[job.uid]  # counted: its TTL may delete it

    deleted = len(outcomes) - len(jobs)
    for job in jobs.values():  # the run ends: everything finishes, is stored and counted
        now += datetime.timedelta(seconds=1)
        job.completed = job.completed or now
        job.stored_phase = JobPhase.SUCCEEDED if job.ok else JobPhase.FAILED
        job.stored_completion = job.completed
    count(write=True)
    assert stored is not None
    assert stored.finished == len(jobs) + deleted == len(outcomes)
    assert stored.succeeded == sum(outcomes)
    (learned,) = sizing
    assert learned.observations == len(outcomes)
    assert sorted(learned.peaks_mi) == [100 + i for i in range(len(outcomes))]
