"""Admission's arithmetic over a queue's budgets beyond memory (`QueuePolicy.budgets`: CPU in
millicores, extended resources in whole units), used by `videoqueue.scheduling.admission`.

Every budgeted resource is counted exactly as memory is: admitted and running jobs hold what
their pods request (`JobView.requests`) and pods still stopping hold theirs
(`StoppingPod.requests`) until they are gone; a job fits when, for every budgeted resource,
its request is within what is left. Resources are checked in a fixed order, cpu first, then
by name, so a job waiting for several is always explained by the same one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from videoqueue.api import CPU
from videoqueue.scheduling.snapshot import JobView, QueuePolicy, StoppingPod

MEMORY = "memory"


def resource_order(budgets: Mapping[str, int]) -> list[str]:
    """The budgeted resources in the order they are checked: cpu first, then by name."""
    return sorted(budgets, key=lambda name: (name != CPU, name))


def free_of(
    policy: QueuePolicy, active: Sequence[JobView], stopping: Sequence[StoppingPod]
) -> tuple[dict[str, int], dict[str, int]]:
    """(what is left of each budget, what pods still stopping hold of each) for the
    admitted and running jobs `active` and the pods `stopping`."""
    free: dict[str, int] = {}
    held: dict[str, int] = {}
    for name, budget in policy.budgets.items():
        held[name] = sum(pod.requests.get(name, 0) for pod in stopping)
        free[name] = budget - sum(job.requests.get(name, 0) for job in active) - held[name]
    return free, held


def short_of(job: JobView, free: Mapping[str, int], order: Sequence[str]) -> str | None:
    """The first resource (in `order`) whose free amount `job`'s request exceeds, or None."""
    return next((name for name in order if job.requests.get(name, 0) > free[name]), None)


def over_budget(job: JobView, policy: QueuePolicy) -> str | None:
    """The first budgeted resource `job`'s pod requests more of than the whole budget."""
    order = resource_order(policy.budgets)
    return short_of(job, policy.budgets, order)


def take(job: JobView, free: dict[str, int]) -> None:
    """Count `job` as admitted: its requests leave `free`."""
    for name in free:
        free[name] -= job.requests.get(name, 0)


def _size(job: JobView, name: str) -> int:
    return job.pod_memory if name == MEMORY else job.requests.get(name, 0)


def fewest_victims(
    pool: Sequence[JobView], slots_needed: int, needed: Mapping[str, int]
) -> tuple[JobView, ...] | None:
    """Victims from `pool` that free a slot count and, per resource (`MEMORY` for the pods'
    memory), the amounts in `needed`; None when the whole pool would not do. Greedy: the job
    that covers most of what is still needed (each resource as a share of its need) first,
    preferring lower priority and later admission on a tie, then any taken job that the
    others make redundant is given back, so every victim is needed."""
    if len(pool) < slots_needed:
        return None
    if any(sum(_size(job, name) for job in pool) < amount for name, amount in needed.items()):
        return None
    preference = sorted(pool, key=lambda j: (j.priority, -(j.admitted_at or 0.0), j.key))
    left = dict(needed)
    chosen: list[JobView] = []
    while len(chosen) < slots_needed or any(amount > 0 for amount in left.values()):

        def cover(job: JobView) -> float:
            return sum(
                min(_size(job, name), amount) / amount
                for name, amount in left.items()
                if amount > 0
            )

        rest = [job for job in preference if job not in chosen]
        best = max(rest, key=cover)  # max keeps the first (most preferred) of equals
        chosen.append(best)
        for name in left:
            left[name] -= _size(best, name)
    for job in reversed(list(chosen)):
        others = [j for j in chosen if j is not job]
        if len(others) >= slots_needed and all(
            sum(_size(j, name) for j in others) >= amount for name, amount in needed.items()
        ):
            chosen = others
    return tuple(chosen)
