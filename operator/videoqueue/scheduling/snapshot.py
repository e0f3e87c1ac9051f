"""The immutable input of a scheduling decision: one queue's policy and a view of its jobs.

These types are deliberately independent of the CRD models in `videoqueue.api`: the
controller converts a VideoQueue and its VideoJobs into them (quantities already in bytes,
timestamps already in epoch seconds), so the decision code never parses anything and tests
can build inputs in one line.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field


class JobState(enum.Enum):
    """Where a job stands as far as admission is concerned.

    Finished jobs are left out of the snapshot; a job in backoff or waiting for its start time
    is passed as PENDING with `eligible_at` set.
    """

    PENDING = "Pending"
    ADMITTED = "Admitted"  # admitted, worker pod not running yet: already holds slot and memory
    RUNNING = "Running"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """The parts of a VideoQueue spec that admission reads.

    `memory_budget` is the ceiling for the sum of the memory of admitted and running jobs;
    `memory_max` is the most a single job may ask for (a bigger job is rejected).
    `backfill_seconds` is how long the first job that does not fit may be overtaken by smaller
    jobs before memory is reserved for it (see `videoqueue.scheduling.admission`); use
    `math.inf` to never reserve and 0 to never backfill. `admitting` is False while the queue
    is Paused or Draining. `budgets` caps, per resource, what admitted and running jobs'
    pods request (`JobView.requests`; CPU in millicores, others in whole units), as
    `memory_budget` caps their memory (the queue's spec.budgets).
    """

    concurrency: int
    memory_budget: int
    memory_max: int
    backfill_seconds: float = 300.0
    admitting: bool = True
    # Aging: one step of priority per `aging_interval` seconds waited (since `queued_at`), at
    # most `aging_max_boost` steps, never above `max_priority`. None: no aging.
    aging_interval: float | None = None
    aging_max_boost: int = 10
    max_priority: int = 10
    # At most this many admissions in any 60 s window (see `Snapshot.recent_starts`).
    starts_per_minute: int | None = None
    # Evict lower-priority running jobs to make room for the first job that does not fit.
    preempt_lower_priority: bool = False
    budgets: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("concurrency", "memory_budget", "memory_max"):
            if (value := getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if any(value < 0 for value in self.budgets.values()) or "memory" in self.budgets:
            raise ValueError(f"budgets must be >= 0 and leave out memory, got {self.budgets}")
        if math.isnan(self.backfill_seconds) or self.backfill_seconds < 0:
            raise ValueError(f"backfill_seconds must be >= 0, got {self.backfill_seconds}")
        if self.aging_interval is not None and not self.aging_interval > 0:
            raise ValueError(f"aging_interval must be > 0, got {self.aging_interval}")
        if self.starts_per_minute is not None and self.starts_per_minute < 1:
            raise ValueError(f"starts_per_minute must be >= 1, got {self.starts_per_minute}")


@dataclass(frozen=True, slots=True)
class JobView:
    """One job of the queue, as admission sees it.

    `key` is "namespace/name" and breaks ties in the order. `created_at` fixes the job's place
    in the order for good (a disrupted job keeps its place); `queued_at` is when it last entered
    the pending state (creation, or re-queue after a failure or disruption) and only feeds the
    starvation guard. `memory` is the effective memory of the next attempt in bytes (it grows
    after an OOM): what its worker container gets. `overhead` is what the rest of its pod
    holds beside the worker (sidecars, init containers; see `videoqueue.scheduling.memory`),
    so `pod_memory`, the sum, is what the job counts against the queue's memory budget. A
    pending job is not admitted before `eligible_at` (backoff, delayed start). `requests`
    is what its pod requests of each resource the queue budgets (`QueuePolicy.budgets`;
    `videoqueue.scheduling.pod_requests`); a resource left out counts 0.
    """

    key: str
    priority: int
    created_at: float
    queued_at: float
    memory: int
    state: JobState = JobState.PENDING
    eligible_at: float | None = None
    admitted_at: float | None = None  # admitted and running jobs: when (preemption prefers
    # the most recently admitted victims, which lose the least work)
    overhead: int = 0
    requests: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.memory < 0:
            raise ValueError(f"{self.key}: memory must be >= 0, got {self.memory}")
        if self.overhead < 0:
            raise ValueError(f"{self.key}: overhead must be >= 0, got {self.overhead}")
        if any(value < 0 for value in self.requests.values()):
            raise ValueError(f"{self.key}: requests must be >= 0, got {self.requests}")

    @property
    def pod_memory(self) -> int:
        """What the job counts against the budget: its worker's memory plus `overhead`."""
        return self.memory + self.overhead


@dataclass(frozen=True, slots=True)
class StoppingPod:
    """A worker pod whose attempt is over (cancelled, preempted, past its deadline, stalled,
    or replaced by a retry) but which has not terminated yet: its containers run on through
    their grace period and preStop hooks, and the kernel still charges their memory. It holds
    a slot and `memory` (its whole pod, in bytes) and `requests` (of the budgeted resources,
    as `JobView.requests`) until the kubelet reports it gone."""

    name: str
    memory: int
    requests: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.memory < 0:
            raise ValueError(f"{self.name}: memory must be >= 0, got {self.memory}")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A queue's policy and all of its unfinished jobs at one instant. Keys are unique."""

    policy: QueuePolicy
    jobs: tuple[JobView, ...] = ()
    # Admission times within the last minute, for the start rate limit.
    recent_starts: tuple[float, ...] = ()
    # Pods of ended attempts still terminating (any job of the queue, finished ones too).
    stopping: tuple[StoppingPod, ...] = ()

    def __post_init__(self) -> None:
        keys = [job.key for job in self.jobs]
        if len(keys) != len(set(keys)):
            duplicates = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"duplicate job keys in snapshot: {duplicates}")
