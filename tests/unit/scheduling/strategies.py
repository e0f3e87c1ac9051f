"""Hypothesis strategies for scheduling inputs.

Memory comes in 512Mi steps and times in whole seconds from small ranges, so that jobs
collide on priority and creation time and fit or miss the budget by exactly one step often.
Jobs are drawn as plain tuples and built afterwards: it makes generation several times faster
than drawing field by field.

Budgets beyond memory (`QueuePolicy.budgets`) come the same way: CPU in 500m steps and GPUs
in ones, from small ranges, so that they bind as often as memory does; a job's pod requests
some of each (or none), and so do pods still stopping.
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

CPU_STEP = 500  # millicores
GPU = "example.com/gpu"
# No budgets (the queue as before), CPU only, a GPU only, or both.
budget_maps = st.fixed_dictionaries(
    {},
    optional={
        "cpu": st.integers(0, 8).map(lambda n: n * CPU_STEP),
        GPU: st.integers(0, 4),
    },
)
requests = st.fixed_dictionaries(
    {},
    optional={"cpu": st.integers(0, 4).map(lambda n: n * CPU_STEP), GPU: st.integers(0, 2)},
)


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
        budgets=budget_maps,
    )


_job_fields = st.tuples(
    st.integers(0, 3),  # priority
    st.integers(0, 50),  # created_at
    st.integers(0, 50),  # queued this long after creation
    memories,
    states,
    st.none() | times,  # eligible_at
    overheads,
    requests,
)

JobFields = tuple[int, int, int, int, JobState, float | None, int, dict[str, int]]


def _snapshot(
    policy: QueuePolicy, jobs: list[JobFields], stopping: list[tuple[int, dict[str, int]]]
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
            requests=wanted,
        )
        for i, (priority, created, queued_after, memory, state, eligible_at, overhead, wanted) in (
            enumerate(jobs)
        )
    )
    pods = tuple(
        StoppingPod(f"stopping-{i}", memory, wanted) for i, (memory, wanted) in enumerate(stopping)
    )
    return Snapshot(policy, tuple(views), stopping=pods)


def snapshots(*, max_jobs: int = 12, admitting: bool | None = None) -> st.SearchStrategy[Snapshot]:
    """Snapshots with up to `max_jobs` jobs and up to 3 worker pods still stopping."""
    return st.builds(
        _snapshot,
        policies(admitting=admitting),
        st.lists(_job_fields, max_size=max_jobs),
        st.lists(st.tuples(memories, requests), max_size=3),
    )


def roomy_snapshots(*, max_jobs: int = 12) -> st.SearchStrategy[Snapshot]:
    """Snapshots of an admitting queue with room for several jobs in every limit and budgets
    beyond memory always set, so that decisions admit jobs and budgets bind often (drawn
    freely, most snapshots are full or over a limit and admit nothing)."""
    roomy = st.builds(
        QueuePolicy,
        concurrency=st.integers(3, 8),
        memory_budget=st.integers(8, 24).map(lambda n: n * STEP),
        memory_max=st.just(24 * STEP),
        backfill_seconds=backfill_windows,
        budgets=st.fixed_dictionaries(
            {"cpu": st.integers(2, 8).map(lambda n: n * CPU_STEP)},
            optional={GPU: st.integers(1, 4)},
        ),
    )
    small = st.tuples(
        st.integers(0, 3),
        st.integers(0, 50),
        st.integers(0, 50),
        st.integers(0, 4).map(lambda n: n * STEP),
        st.sampled_from([*[JobState.PENDING] * 4, JobState.ADMITTED, JobState.RUNNING]),
        st.sampled_from([None, None, None, 0.0, 200.0]),  # eligible_at: mostly now
        overheads,
        requests,
    )
    return st.builds(
        _snapshot,
        roomy,
        st.lists(small, min_size=2, max_size=max_jobs),
        st.lists(st.tuples(st.integers(0, 2).map(lambda n: n * STEP), requests), max_size=1),
    )


_arrival_fields = st.tuples(
    st.integers(0, 60),  # arrives at
    memories,
    st.integers(1, 20),  # runs this long
    st.integers(0, 3),  # priority
    st.sampled_from([0, 0, 0, 5, 30]),  # delayed start
    requests,
)


def arrivals(*, max_jobs: int = 20) -> st.SearchStrategy[list[Arrival]]:
    def build(fields: list[tuple[int, int, int, int, int, dict[str, int]]]) -> list[Arrival]:
        return [
            Arrival(f"ns/j{i:02d}", float(at), memory, float(run), priority, float(delay), wanted)
            for i, (at, memory, run, priority, delay, wanted) in enumerate(fields)
        ]

    return st.lists(_arrival_fields, max_size=max_jobs).map(build)
