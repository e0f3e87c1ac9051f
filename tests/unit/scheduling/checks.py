"""Invariants every admission decision must satisfy, shared by examples and properties.

Every budget counts: concurrency, memory and each resource in `QueuePolicy.budgets`."""

from __future__ import annotations

from collections.abc import Mapping

from videoqueue.scheduling import AdmissionDecision, JobState, JobView, QueuePolicy, Snapshot


def usage(snapshot: Snapshot, admit: tuple[str, ...] = ()) -> tuple[int, int]:
    """(slots, memory) held by admitted and running jobs and by pods still stopping, plus
    `admit` if given; a job holds its whole pod's memory (`pod_memory`)."""
    holding = [
        job for job in snapshot.jobs if job.state is not JobState.PENDING or job.key in admit
    ]
    stopping = snapshot.stopping
    return (
        len(holding) + len(stopping),
        sum(job.pod_memory for job in holding) + sum(pod.memory for pod in stopping),
    )


def resource_usage(snapshot: Snapshot, admit: tuple[str, ...] = ()) -> dict[str, int]:
    """What admitted and running jobs' pods, pods still stopping and `admit` (if given)
    request of each budgeted resource."""
    holding = [
        job for job in snapshot.jobs if job.state is not JobState.PENDING or job.key in admit
    ]
    return {
        name: sum(job.requests.get(name, 0) for job in holding)
        + sum(pod.requests.get(name, 0) for pod in snapshot.stopping)
        for name in snapshot.policy.budgets
    }


def over_a_budget(policy: QueuePolicy, used: Mapping[str, int]) -> list[str]:
    """The budgeted resources whose `used` exceeds the budget."""
    return [name for name, budget in policy.budgets.items() if used[name] > budget]


def resources_fit(job: JobView, free: Mapping[str, int]) -> bool:
    return all(job.requests.get(name, 0) <= left for name, left in free.items())


def assert_admissions_within_limits(snapshot: Snapshot, decision: AdmissionDecision) -> None:
    """Admitting never takes the queue over a limit (and nothing is admitted if it is over)."""
    if not decision.admit:
        return
    jobs, memory = usage(snapshot, decision.admit)
    assert jobs <= snapshot.policy.concurrency, (jobs, snapshot.policy)
    assert memory <= snapshot.policy.memory_budget, (memory, snapshot.policy)
    used = resource_usage(snapshot, decision.admit)
    assert not over_a_budget(snapshot.policy, used), (used, snapshot.policy)


def candidates(snapshot: Snapshot, now: float) -> list[JobView]:
    """Pending jobs that may start now, in the admission order, as the contract states it."""
    eligible = [
        job
        for job in snapshot.jobs
        if job.state is JobState.PENDING
        and job.memory <= snapshot.policy.memory_max
        and (job.eligible_at is None or job.eligible_at <= now)
    ]
    return sorted(eligible, key=lambda job: (-job.priority, job.created_at, job.key))


def assert_follows_the_order(snapshot: Snapshot, now: float, decision: AdmissionDecision) -> None:
    """Replays the decision along the admission order and checks every job at its turn.

    At its turn a job *fits* when a slot is free and its memory is within what the admitted and
    running jobs, plus the jobs admitted ahead of it, leave of the budget. Then:
    - an admitted job fitted and was not behind a reservation;
    - a job left waiting did not fit, or was behind a reservation (or the queue is paused);
    - memory is reserved exactly for the first job that had a slot and was within the budget
      but did not fit, once its backfill window has closed.
    """
    policy = snapshot.policy
    admitted = set(decision.admit)
    order = candidates(snapshot, now)
    assert decision.admit == tuple(job.key for job in order if job.key in admitted)

    jobs, memory = usage(snapshot)
    slots_free, memory_free = policy.concurrency - jobs, policy.memory_budget - memory
    used = resource_usage(snapshot)
    free = {name: budget - used[name] for name, budget in policy.budgets.items()}
    head: JobView | None = None
    reserved: JobView | None = None
    for job in order:
        fits = slots_free > 0 and job.pod_memory <= memory_free and resources_fit(job, free)
        if job.key in admitted:
            assert policy.admitting, job
            assert fits, job
            assert reserved is None, job
            slots_free, memory_free = slots_free - 1, memory_free - job.pod_memory
            free = {name: left - job.requests.get(name, 0) for name, left in free.items()}
            continue
        assert not fits or reserved is not None or not policy.admitting, job
        within_budget = job.pod_memory <= policy.memory_budget and resources_fit(
            job, policy.budgets
        )
        if policy.admitting and head is None and slots_free > 0 and within_budget:
            head = job
            if now - job.queued_at >= policy.backfill_seconds:
                reserved = job
    assert decision.reserved_for == (None if reserved is None else reserved.key)
