"""VideoQueue: where jobs wait, and the concurrency and memory budget they are admitted within."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import AwareDatetime, ConfigDict, Field, StringConstraints, model_validator

from videoqueue.api.budgets import MAX_BUDGETS, Budgets, QueueBudgetStatus
from videoqueue.api.common import (
    CONDITION_LIST,
    MAX_CONDITIONS,
    NAME_MAX_LENGTH,
    PRESERVE_UNKNOWN_FIELDS,
    ApiModel,
    ApiObject,
    CelRule,
    Condition,
    cel_rules,
)
from videoqueue.api.quantity import Quantity, memory_quantity, stored_bytes
from videoqueue.api.queue_policies import (
    Aging,
    FinishedTTL,
    HealthThresholds,
    MemoryPressurePolicy,
    Notifications,
    PreemptionPolicy,
    QueueMemory,
    RateLimit,
    RetryPolicy,
    StatisticsPolicy,
)
from videoqueue.api.queue_types import (
    MAX_QUEUE_TYPES,
    TYPE_DEFAULT_REQUEST_WITHIN_MAX,
    TYPE_KEYS,
    QueueTypeSettings,
    check_type_defaults,
)
from videoqueue.api.sizing import MAX_SIZING_KEYS, SizingSummary
from videoqueue.api.storage import Storage
from videoqueue.api.worker import WorkerSettings

__all__ = [
    "MAX_BATCHES",
    "MAX_STATISTICS_BUCKETS",
    "MAX_TYPE_STATISTICS",
    "BatchProgress",
    "QueueConditionType",
    "QueueHealth",
    "QueueMemoryStatus",
    "QueueState",
    "QueueStatistics",
    "StatisticsBucket",
    "StatisticsTotals",
    "TypeStatistics",
    "TypeTotals",
    "VideoQueue",
    "VideoQueueSpec",
    "VideoQueueStatus",
]


QUEUE_KIND = "VideoQueue"
QUEUE_NAME_LENGTH = CelRule(
    rule=f"size(self.metadata.name) <= {NAME_MAX_LENGTH}",
    message=(
        f"metadata.name of a VideoQueue must be at most {NAME_MAX_LENGTH} characters "
        "(it is used as a label value on worker pods); choose a shorter name"
    ),
    field_path=".metadata.name",
)


class QueueState(StrEnum):
    """Whether the queue admits jobs."""

    ACTIVE = "Active"
    PAUSED = "Paused"
    DRAINING = "Draining"


class VideoQueueSpec(ApiModel):
    """What the queue admits, how many at once, within which memory, and how it retries."""

    model_config = ConfigDict(json_schema_extra=cel_rules(TYPE_DEFAULT_REQUEST_WITHIN_MAX))

    state: QueueState = QueueState.ACTIVE
    """Active admits jobs; Paused admits none but accepts new ones; Draining admits none and
    rejects new ones. Running jobs always finish."""
    concurrency: int = Field(default=4, ge=1, le=10_000)
    """Most jobs admitted or running at once."""
    memory: QueueMemory
    """Memory budget and per-job memory rules."""
    budgets: Budgets | None = None
    """Caps on the total CPU and extended resources (e.g. nvidia.com/gpu) that admitted and
    running worker pods request, e.g. {cpu: "8", nvidia.com/gpu: "2"} (docs/queues.md)."""
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, json_schema_extra={"default": RetryPolicy().to_dict()}
    )
    """Retry policy for the queue's jobs; a job may override maxAttempts and backoff."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Default time limit of one attempt, for jobs that do not set their own."""
    progress_deadline_seconds: int | None = Field(default=None, ge=1, le=86_400)
    """A running worker that sends no heartbeat for this long is stalled: its pod is deleted
    and the attempt fails with reason Stalled (retried as any failure). Needs the operator's
    Redis progress channel (--redis-url); off without it. A job may set its own."""
    max_pending: int | None = Field(default=None, ge=1)
    """Most jobs waiting for admission (Pending, Waiting, Backoff); a job beyond it is Rejected
    with reason QueueFull. Unset: no limit."""
    preemption: PreemptionPolicy = PreemptionPolicy.NEVER
    """LowerPriority: a job that cannot fit evicts the fewest lowest-priority running jobs that
    make room; they are re-queued without using an attempt."""
    aging: Aging | None = None
    """Priority boost for long-waiting jobs; off unless set."""
    rate_limit: RateLimit | None = None
    """Most admissions per minute; unset: no limit."""
    ttl_seconds_after_finished: FinishedTTL | None = None
    """Delete finished jobs after this long; a job's own setting overrides it per outcome."""
    memory_pressure: MemoryPressurePolicy = Field(
        default_factory=MemoryPressurePolicy,
        json_schema_extra={"default": MemoryPressurePolicy().to_dict()},
    )
    """Lower the effective concurrency while workers run out of memory."""
    notifications: Notifications | None = None
    """Webhook on job success and/or failure."""
    health: HealthThresholds = Field(
        default_factory=HealthThresholds,
        json_schema_extra={"default": HealthThresholds().to_dict()},
    )
    """Thresholds of status.health."""
    statistics: StatisticsPolicy = Field(
        default_factory=StatisticsPolicy,
        json_schema_extra={"default": StatisticsPolicy().to_dict()},
    )
    """Window of the rolling statistics."""
    worker: WorkerSettings = Field(
        default_factory=WorkerSettings,
        json_schema_extra={"default": WorkerSettings().to_dict()},
    )
    """What workers may read, write and reach, and which job annotations reach their pods."""
    storage: Storage | None = None
    """Object storage for s3:// inputs and outputs (docs/storage.md)."""
    template: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra={
            **PRESERVE_UNKNOWN_FIELDS,
            "x-kubernetes-embedded-resource": False,
        },
    )
    """Pod template (metadata and spec) for worker pods: image, security context, node
    selection. The operator sets memory, restartPolicy, deadline and the job's input."""
    types: dict[str, QueueTypeSettings] | None = Field(
        default=None, max_length=MAX_QUEUE_TYPES, json_schema_extra=cel_rules(TYPE_KEYS)
    )
    """Settings per job type (keyed as VideoJob spec.type, at most 16): a patch over
    spec.template, default memory, activeDeadlineSeconds and maxAttempts. For each setting
    the job's own wins, then its type's, then the queue's (docs/queues.md)."""

    @model_validator(mode="after")
    def _type_defaults_within_max(self) -> Self:
        check_type_defaults(self.types or {}, self.memory.max_bytes)
        return self


class QueueHealth(StrEnum):
    """Overall health of the queue, for people and alerts."""

    HEALTHY = "Healthy"
    WARNING = "Warning"
    CRITICAL = "Critical"
    OFFLINE = "Offline"


class QueueConditionType(StrEnum):
    """Condition types on a VideoQueue (kstatus readers look for Ready/Reconciling/Stalled)."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    DRAINED = "Drained"  # Draining and nothing admitted or running any more
    MEMORY_PRESSURE = "MemoryPressure"  # effective concurrency lowered


class QueueMemoryStatus(ApiModel):
    """Memory in use against the budget."""

    reserved: Quantity | None = None
    """Memory of the admitted and running jobs."""
    budget: Quantity | None = None
    """spec.memory.budget as last applied."""
    summary: str | None = Field(default=None, max_length=64)
    """reserved/budget for the printer column, e.g. 3Gi/8Gi."""

    @classmethod
    def of(cls, *, reserved: int, budget: int) -> QueueMemoryStatus:
        """The status for `reserved` of `budget` bytes, summary included."""
        reserved_text, budget_text = memory_quantity(reserved), memory_quantity(budget)
        return cls(
            reserved=reserved_text, budget=budget_text, summary=f"{reserved_text}/{budget_text}"
        )

    @property
    def reserved_bytes(self) -> int | None:
        """`reserved` in bytes; None when unset."""
        return stored_bytes(self.reserved, "status.memory.reserved")

    @property
    def budget_bytes(self) -> int | None:
        """`budget` in bytes; None when unset."""
        return stored_bytes(self.budget, "status.memory.budget")


class TypeStatistics(ApiModel):
    """Rolling statistics of one job type."""

    type: str = Field(max_length=63)
    """The job type."""
    finished: int = Field(default=0, ge=0)
    """Jobs of this type that finished in the window."""
    success_rate: float | None = Field(default=None, ge=0, le=1)
    """Succeeded over Succeeded plus Failed in the window."""
    mean_wait_seconds: float | None = Field(default=None, ge=0)
    """Mean time finished jobs waited for admission."""
    mean_run_seconds: float | None = Field(default=None, ge=0)
    """Mean time their workers ran."""
    throughput_per_minute: float = Field(default=0, ge=0)
    """Jobs finished per minute over the window."""


MAX_TYPE_STATISTICS = 16
MAX_BATCHES = 20
# windowSeconds is cut into 15 buckets; the one the window's start falls in is kept too.
MAX_STATISTICS_BUCKETS = 16


class StatisticsTotals(ApiModel):
    """What the jobs counted in a bucket add up to."""

    succeeded: int = Field(default=0, ge=0)
    """Jobs that Succeeded."""
    failed: int = Field(default=0, ge=0)
    """Jobs that Failed."""
    wait_seconds_sum: float = Field(default=0, ge=0)
    """Their waitSeconds added up."""
    wait_seconds_count: int = Field(default=0, ge=0)
    """How many of them have a waitSeconds."""
    run_seconds_sum: float = Field(default=0, ge=0)
    """Their runSeconds added up."""
    run_seconds_count: int = Field(default=0, ge=0)
    """How many of them have a runSeconds."""


class TypeTotals(StatisticsTotals):
    """The totals of one job type in a bucket."""

    type: str = Field(max_length=63)
    """The job type."""


class StatisticsBucket(StatisticsTotals):
    """The jobs that finished within one bucketSeconds-long stretch of time."""

    start: AwareDatetime
    """Start of the bucket (a multiple of bucketSeconds since the epoch)."""
    by_type: list[TypeTotals] = Field(default_factory=list, max_length=MAX_TYPE_STATISTICS)
    """The same per job type: the first 16 types to finish in the bucket (jobs of others
    count in the bucket's totals only)."""


class QueueStatistics(ApiModel):
    """Rolling statistics over the jobs that finished in the last windowSeconds, kept as
    counters in fixed buckets so that they outlive the jobs and the operator's restarts."""

    window_seconds: int = Field(ge=0)
    """Length of the window."""
    finished: int = Field(default=0, ge=0)
    """Jobs that finished in the window (Succeeded, Failed)."""
    succeeded: int = Field(default=0, ge=0)
    """Of those, Succeeded."""
    failed: int = Field(default=0, ge=0)
    """Of those, Failed."""
    success_rate: float | None = Field(default=None, ge=0, le=1)
    """succeeded / finished; unset while nothing finished."""
    mean_wait_seconds: float | None = Field(default=None, ge=0)
    """Mean time the finished jobs waited for admission."""
    mean_run_seconds: float | None = Field(default=None, ge=0)
    """Mean time their workers ran."""
    throughput_per_minute: float = Field(default=0, ge=0)
    """Jobs finished per minute over the window."""
    by_type: list[TypeStatistics] = Field(default_factory=list, max_length=MAX_TYPE_STATISTICS)
    """The same per job type (the busiest types if there are many)."""
    bucket_seconds: int | None = Field(default=None, ge=1)
    """Width of the buckets: windowSeconds / 15, rounded up to a whole second."""
    counted_through: AwareDatetime | None = None
    """The buckets count exactly the Succeeded and Failed jobs whose completionTime is at or
    before this time (a restarted operator counts only the jobs finished after it)."""
    buckets: list[StatisticsBucket] = Field(default_factory=list, max_length=MAX_STATISTICS_BUCKETS)
    """The counters the figures above are computed from, oldest first: the buckets that
    overlap the window."""


class BatchProgress(ApiModel):
    """Progress of the jobs sharing one videoqueue.dev/batch label value."""

    name: str = Field(max_length=63)
    """The label value."""
    total: int = Field(default=0, ge=0)
    """Jobs in the batch."""
    pending: int = Field(default=0, ge=0)
    """Not yet admitted (Pending, Waiting, Backoff)."""
    running: int = Field(default=0, ge=0)
    """Admitted or running."""
    succeeded: int = Field(default=0, ge=0)
    """Succeeded."""
    failed: int = Field(default=0, ge=0)
    """Failed, Cancelled or Rejected."""


class VideoQueueStatus(ApiModel):
    """What the operator observed. Bounded in size: counts, never per-job lists."""

    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation this status describes."""
    conditions: list[Condition] = Field(
        default_factory=list, max_length=MAX_CONDITIONS, json_schema_extra=CONDITION_LIST
    )
    """Current conditions of the queue, one per type."""
    health: QueueHealth | None = None
    """Healthy, Warning, Critical or Offline; the Ready condition says why."""
    pending: int = Field(default=0, ge=0)
    """Jobs waiting for admission."""
    waiting: int = Field(default=0, ge=0)
    """Jobs held by startAfter, dependencies or a missing queue."""
    admitted: int = Field(default=0, ge=0)
    """Jobs admitted whose worker has not started yet."""
    running: int = Field(default=0, ge=0)
    """Jobs whose worker is running."""
    backoff: int = Field(default=0, ge=0)
    """Jobs waiting out the delay before a retry."""
    succeeded: int = Field(default=0, ge=0)
    """Jobs that finished successfully."""
    failed: int = Field(default=0, ge=0)
    """Jobs that failed for good."""
    cancelled: int = Field(default=0, ge=0)
    """Jobs cancelled by a user."""
    rejected: int = Field(default=0, ge=0)
    """Jobs the queue can never run."""
    memory: QueueMemoryStatus | None = None
    """Memory reserved by admitted and running jobs, and the budget."""
    budgets: list[QueueBudgetStatus] | None = Field(default=None, max_length=MAX_BUDGETS)
    """Requested by admitted and running worker pods of each resource in spec.budgets, and
    the budget; unset without spec.budgets."""
    health_reasons: list[Annotated[str, StringConstraints(max_length=256)]] = Field(
        default_factory=list, max_length=8
    )
    """Why health is not Healthy, one line per finding."""
    effective_concurrency: int | None = Field(default=None, ge=0)
    """Concurrency in force: spec.concurrency, or less under memory pressure."""
    effective_concurrency_since: AwareDatetime | None = None
    """When effectiveConcurrency last moved under memory pressure (unset once back at
    spec.concurrency): a restarted operator resumes stepping down and recovering from it."""
    statistics: QueueStatistics | None = None
    """Rolling statistics of finished jobs."""
    batches: list[BatchProgress] = Field(default_factory=list, max_length=MAX_BATCHES)
    """Progress of batches with unfinished jobs (the oldest first, at most 20)."""
    sizing: list[SizingSummary] = Field(default_factory=list, max_length=MAX_SIZING_KEYS)
    """What learned memory sizing knows per sizing key (at most 32 keys, the one updated
    longest ago first): fed once per finished job, kept across restarts and job deletion."""


class VideoQueue(ApiObject):
    """A VideoQueue object as the API server returns it."""

    kind: str = QUEUE_KIND
    spec: VideoQueueSpec
    status: VideoQueueStatus = Field(default_factory=VideoQueueStatus)
