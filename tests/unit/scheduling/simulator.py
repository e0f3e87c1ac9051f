"""A tiny deterministic simulator of one queue, driven by `decide_admissions`.

It plays the controller's part: jobs arrive, the queue decides at every event (arrival,
worker start, finish, eviction) and at the decision's `wake_at`, admitted jobs start after
`start_latency` and run for a fixed time. Time jumps from event to event, so a timeline
relies on `wake_at` being right: a missed wake-up shows as a job that never starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from videoqueue.scheduling import (
    AdmissionDecision,
    JobState,
    JobView,
    QueuePolicy,
    Snapshot,
    decide_admissions,
)

MAX_STEPS = 100_000


@dataclass(frozen=True)
class Arrival:
    """A job submitted at `at`; it runs `run_seconds` (> 0) once its worker starts."""

    key: str
    at: float
    memory: int
    run_seconds: float
    priority: int = 0
    start_after: float = 0.0  # delayed start: not eligible before at + start_after
    requests: Mapping[str, int] = field(default_factory=dict)  # of the budgeted resources


@dataclass(frozen=True)
class Step:
    now: float
    snapshot: Snapshot
    decision: AdmissionDecision


@dataclass
class Timeline:
    admitted_at: dict[str, float] = field(default_factory=dict)  # last admission of each job
    finished_at: dict[str, float] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)
    evicted: set[str] = field(default_factory=set)
    steps: list[Step] = field(default_factory=list)


@dataclass
class _Job:
    arrival: Arrival
    queued_at: float
    eligible_at: float | None
    state: JobState = JobState.PENDING
    admitted_at: float = 0.0
    ends_at: float = 0.0  # finish or eviction, once running

    def view(self) -> JobView:
        return JobView(
            key=self.arrival.key,
            priority=self.arrival.priority,
            created_at=self.arrival.at,
            queued_at=self.queued_at,
            memory=self.arrival.memory,
            state=self.state,
            eligible_at=self.eligible_at,
            requests=self.arrival.requests,
        )


def simulate(
    policy: QueuePolicy,
    arrivals: Iterable[Arrival],
    *,
    start_latency: float = 0.0,
    evict_once: frozenset[str] = frozenset(),
    on_step: Callable[[Step], None] | None = None,
) -> Timeline:
    """Run until nothing more can happen; `evict_once` jobs are evicted halfway, once."""
    incoming = sorted(arrivals, key=lambda a: (a.at, a.key))
    live: dict[str, _Job] = {}
    timeline = Timeline()
    now = incoming[0].at if incoming else 0.0

    def evicts(key: str) -> bool:
        return key in evict_once and key not in timeline.evicted

    for _ in range(MAX_STEPS):
        # Workers start, finish or are evicted.
        for job in list(live.values()):
            key = job.arrival.key
            if job.state is JobState.ADMITTED and job.admitted_at + start_latency <= now:
                job.state = JobState.RUNNING
                _plan_end(job, job.admitted_at + start_latency, evict=evicts(key))
            if job.state is JobState.RUNNING and job.ends_at <= now:
                if evicts(key):
                    # A disruption: back to pending at its old place, no backoff.
                    timeline.evicted.add(key)
                    job.state, job.queued_at, job.eligible_at = JobState.PENDING, now, None
                else:
                    timeline.finished_at[key] = job.ends_at
                    del live[key]

        # New jobs arrive.
        while incoming and incoming[0].at <= now:
            arrival = incoming.pop(0)
            eligible_at = arrival.at + arrival.start_after if arrival.start_after else None
            live[arrival.key] = _Job(arrival, queued_at=arrival.at, eligible_at=eligible_at)

        # Decide and apply, as the controller would.
        snapshot = Snapshot(policy, tuple(job.view() for job in live.values()))
        decision = decide_admissions(snapshot, now)
        step = Step(now, snapshot, decision)
        timeline.steps.append(step)
        if on_step is not None:
            on_step(step)
        for key in decision.admit:
            job = live[key]
            job.state, job.admitted_at = JobState.ADMITTED, now
            timeline.admitted_at[key] = now
            if start_latency == 0:
                job.state = JobState.RUNNING
                _plan_end(job, now, evict=evicts(key))
        for rejection in decision.reject:
            timeline.rejected.add(rejection.key)
            del live[rejection.key]

        # Jump to the next event.
        upcoming = [incoming[0].at] if incoming else []
        for job in live.values():
            if job.state is JobState.ADMITTED:
                upcoming.append(job.admitted_at + start_latency)
            elif job.state is JobState.RUNNING:
                upcoming.append(job.ends_at)
        if decision.wake_at is not None:
            upcoming.append(decision.wake_at)
        if not upcoming:
            return timeline
        assert min(upcoming) > now, "time must move forward"
        now = min(upcoming)
    raise AssertionError(f"simulation did not settle within {MAX_STEPS} steps")


def _plan_end(job: _Job, started_at: float, *, evict: bool) -> None:
    run = job.arrival.run_seconds
    job.ends_at = started_at + (run / 2 if evict else run)
