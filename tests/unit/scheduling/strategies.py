"""Hypothesis strategies for scheduling inputs.

Memory comes in 512Mi steps and times in whole seconds from small ranges, so that jobs
collide on priority and creation time and fit or miss the budget by exactly one step often.
Jobs are drawn as plain tuples and built afterwards: it makes generation several times faster
than drawing field by field.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st

from tests.unit.scheduling.simulator import Arrival
from videoqueue.scheduling import JobState, JobView, QueuePolicy, Snapshot, StoppingPod
from videoqueue.scheduling.units import MiB

STEP = 512 * MiB

memories = st.integers(0, 12).map(lambda n: n * STEP)
# What the rest of a job's pod holds beside its worker (sidecars): mostly nothing.
overheads = st.sampled_from([0, 0, 0, STEP, 3 * STEP])
times = st.integers(0, 150).map(float)
backfill_windows = st.sampled_from([0.0, 10.0, 60.0, math.inf]) | st.integers(0, 100).map(float)
states = st.sampled_from([JobState.PENDING, JobState.PENDING, JobState.ADMITTED, JobState.RUNNING])


def policies(
    *, admitting: bool | None = None, min_concurrency: int = 0
) -> st.SearchStrategy[QueuePolicy]:
    return st.builds(
        QueuePolicy,
        concurrency=st.integers(min_concurrency, 6),
        memory_budget=st.integers(0, 16).map(lambda n: n * STEP),
        memory_max=st.integers(0, 18).map(lambda n: n * STEP),
        backfill_seconds=backfill_windows,
        admitting=st.sampled_from([True, True, True, False] if admitting is None else [admitting]),
    )


_job_fields = st.tuples(
    st.integers(0, 3),  # priority
    st.integers(0, 50),  # created_at
    st.integers(0, 50),  # queued this long after creation
    memories,
    states,
    st.none() | times,  # eligible_at
    overheads,
)


def _snapshot(
    policy: QueuePolicy,
    jobs: list[tuple[int, int, int, int, JobState, float | None, int]],
    stopping: list[int],
) -> Snapshot:
    views = (
        JobView(
            key=f"ns/j{i}",
            priority=priority,
            created_at=float(created),
            queued_at=float(created + queued_after),
            memory=memory,
            state=state,
            eligible_at=eligible_at,
            overhead=overhead,
        )
        for i, (priority, created, queued_after, memory, state, eligible_at, overhead) in enumerate(
            jobs
        )
    )
    pods = tuple(StoppingPod(f"stopping-{i}", memory) for i, memory in enumerate(stopping))
    return Snapshot(policy, tuple(views), stopping=pods)


def snapshots(*, max_jobs: int = 12, admitting: bool | None = None) -> st.SearchStrategy[Snapshot]:
    """Snapshots with up to `max_jobs` jobs and up to 3 worker pods still stopping."""
    return st.builds(
        _snapshot,
        policies(admitting=admitting),
        st.lists(_job_fields, max_size=max_jobs),
        st.lists(memories, max_size=3),
    )


_arrival_fields = st.tuples(
    st.integers(0, 60),  # arrives at
    memories,
    st.integers(1, 20),  # runs this long
    st.integers(0, 3),  # priority
    st.sampled_from([0, 0, 0, 5, 30]),  # delayed start
)


def arrivals(*, max_jobs: int = 20) -> st.SearchStrategy[list[Arrival]]:
    def build(fields: list[tuple[int, int, int, int, int]]) -> list[Arrival]:
        return [
            Arrival(f"ns/j{i:02d}", float(at), memory, float(run), priority, float(delay))
            for i, (at, memory, run, priority, delay) in enumerate(fields)
        ]

    return st.lists(_arrival_fields, max_size=max_jobs).map(build)
