"""Fluent builders for the pure admission core's inputs (JobView, QueuePolicy, Snapshot), in
the manner of Kueue's `MakeWorkload("a").Obj()`; videoqueue.envtest.builders builds the API objects.

    job("a").priority(3).memory("2Gi").created(10).obj()
    queue().concurrency(2).budget("8Gi").backfill(60).obj()

Memory may be given as bytes or as a "Mi"/"Gi" string; only the builders parse strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Self

from videoqueue.scheduling import JobState, JobView, QueuePolicy, Snapshot, StoppingPod
from videoqueue.scheduling.units import GiB, MiB

NAMESPACE = "ns"

_UNITS = {"Mi": MiB, "Gi": GiB}


def parse_memory(value: int | str) -> int:
    if isinstance(value, int):
        return value
    number, unit = value[:-2], value[-2:]
    return int(float(number) * _UNITS[unit])


def key(name: str) -> str:
    return f"{NAMESPACE}/{name}"


def names(keys: Iterable[str]) -> list[str]:
    """Job names without the namespace, for readable assertions."""
    return [k.removeprefix(f"{NAMESPACE}/") for k in keys]


class MakeJobView:
    def __init__(self, name: str) -> None:
        self._key = key(name)
        self._priority = 0
        self._created_at = 0.0
        self._queued_at: float | None = None
        self._memory = GiB
        self._overhead = 0
        self._state = JobState.PENDING
        self._eligible_at: float | None = None
        self._requests: dict[str, int] = {}

    def priority(self, priority: int) -> Self:
        self._priority = priority
        return self

    def created(self, at: float) -> Self:
        """Creation time; also the queue time unless `queued` says otherwise."""
        self._created_at = at
        return self

    def queued(self, at: float) -> Self:
        self._queued_at = at
        return self

    def memory(self, memory: int | str) -> Self:
        self._memory = parse_memory(memory)
        return self

    def overhead(self, memory: int | str) -> Self:
        """What the rest of the job's pod holds beside its worker (sidecars)."""
        self._overhead = parse_memory(memory)
        return self

    def requests(self, **requests: int) -> Self:
        """What its pod requests of budgeted resources: cpu in millicores, gpu (the extended
        resource example.com/gpu) in units."""
        self._requests.update(_resources(requests))
        return self

    def admitted(self) -> Self:
        self._state = JobState.ADMITTED
        return self

    def running(self) -> Self:
        self._state = JobState.RUNNING
        return self

    def eligible_at(self, at: float) -> Self:
        self._eligible_at = at
        return self

    def obj(self) -> JobView:
        return JobView(
            key=self._key,
            priority=self._priority,
            created_at=self._created_at,
            queued_at=self._created_at if self._queued_at is None else self._queued_at,
            memory=self._memory,
            state=self._state,
            eligible_at=self._eligible_at,
            overhead=self._overhead,
            requests=dict(self._requests),
        )


GPU = "example.com/gpu"


def _resources(values: dict[str, int]) -> dict[str, int]:
    return {GPU if name == "gpu" else name: value for name, value in values.items()}


class MakeQueuePolicy:
    def __init__(self) -> None:
        self._concurrency = 10
        self._budget = 8 * GiB
        self._max: int | None = None
        self._backfill = math.inf
        self._admitting = True
        self._budgets: dict[str, int] = {}
        self._preempt = False

    def concurrency(self, concurrency: int) -> Self:
        self._concurrency = concurrency
        return self

    def budget(self, memory: int | str) -> Self:
        self._budget = parse_memory(memory)
        return self

    def max(self, memory: int | str) -> Self:
        self._max = parse_memory(memory)
        return self

    def backfill(self, seconds: float) -> Self:
        self._backfill = seconds
        return self

    def budgets(self, **budgets: int) -> Self:
        """Budgets beyond memory: cpu in millicores, gpu (example.com/gpu) in units."""
        self._budgets.update(_resources(budgets))
        return self

    def preempting(self) -> Self:
        self._preempt = True
        return self

    def paused(self) -> Self:
        self._admitting = False
        return self

    def obj(self) -> QueuePolicy:
        return QueuePolicy(
            concurrency=self._concurrency,
            memory_budget=self._budget,
            memory_max=self._budget if self._max is None else self._max,
            backfill_seconds=self._backfill,
            admitting=self._admitting,
            budgets=dict(self._budgets),
            preempt_lower_priority=self._preempt,
        )


def job(name: str) -> MakeJobView:
    """A pending 1Gi job of priority 0 created at 0 (a shorthand, as `queue()` is)."""
    return MakeJobView(name)


def queue() -> MakeQueuePolicy:
    """A queue with 10 slots, 8Gi budget and max, and no starvation guard unless asked."""
    return MakeQueuePolicy()


def snapshot(
    policy: MakeQueuePolicy | QueuePolicy,
    *jobs: MakeJobView | JobView,
    stopping: Iterable[int | str] = (),
) -> Snapshot:
    """`stopping`: the memory of each worker pod still terminating after its attempt."""
    built_policy = policy.obj() if isinstance(policy, MakeQueuePolicy) else policy
    views = tuple(j.obj() if isinstance(j, MakeJobView) else j for j in jobs)
    pods = tuple(
        StoppingPod(f"stopping-{i}", parse_memory(memory)) for i, memory in enumerate(stopping)
    )
    return Snapshot(built_policy, views, stopping=pods)
