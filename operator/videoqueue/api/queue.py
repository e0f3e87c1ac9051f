"""VideoQueue: where jobs wait, and the concurrency and memory budget they are admitted within."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self

from pydantic import ConfigDict, Field, model_validator

from videoqueue.api.common import (
    API_VERSION,
    CONDITION_LIST,
    MAX_CONDITIONS,
    NAME_MAX_LENGTH,
    PRESERVE_UNKNOWN_FIELDS,
    ApiModel,
    CelRule,
    Condition,
    ObjectMeta,
    cel_is_quantity,
    cel_quantity,
    cel_rules,
)
from videoqueue.api.quantity import PositiveQuantity, Quantity, parse_quantity

QUEUE_KIND = "VideoQueue"

# Each rule is guarded by isQuantity so a malformed quantity reports only the pattern error,
# not a CEL evaluation error on top of it.
MEMORY_MAX_WITHIN_BUDGET = CelRule(
    rule=(
        f"!has(self.max) || !{cel_is_quantity('self.max')} || "
        f"!{cel_is_quantity('self.budget')} || "
        f"{cel_quantity('self.max')}.compareTo({cel_quantity('self.budget')}) <= 0"
    ),
    message=(
        "spec.memory.max must not exceed spec.memory.budget: a job that large could never be "
        "admitted; lower max or raise budget"
    ),
    field_path=".max",
)
DEFAULT_REQUEST_WITHIN_MAX = CelRule(
    rule=(
        f"!has(self.max) || !has(self.defaultRequest) || "
        f"!{cel_is_quantity('self.max')} || !{cel_is_quantity('self.defaultRequest')} || "
        f"{cel_quantity('self.defaultRequest')}.compareTo({cel_quantity('self.max')}) <= 0"
    ),
    message=(
        "spec.memory.defaultRequest must not exceed spec.memory.max: jobs without "
        "resources.memory would all be rejected; lower defaultRequest or raise max"
    ),
    field_path=".defaultRequest",
)
DEFAULT_REQUEST_WITHIN_BUDGET = CelRule(
    rule=(
        f"!has(self.defaultRequest) || "
        f"!{cel_is_quantity('self.defaultRequest')} || !{cel_is_quantity('self.budget')} || "
        f"{cel_quantity('self.defaultRequest')}.compareTo({cel_quantity('self.budget')}) <= 0"
    ),
    message=(
        "spec.memory.defaultRequest (1Gi unless set) must not exceed spec.memory.budget: "
        "jobs without resources.memory could never be admitted; set a smaller defaultRequest "
        "or raise budget"
    ),
    field_path=".defaultRequest",
)
BACKOFF_INITIAL_WITHIN_MAX = CelRule(
    rule="self.initialSeconds <= self.maxSeconds",
    message=(
        "spec.retry.backoff.initialSeconds must not exceed spec.retry.backoff.maxSeconds; "
        "lower one or raise the other"
    ),
    field_path=".initialSeconds",
)
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


class Backoff(ApiModel):
    """Delay before a retry: initialSeconds * factor^(retries so far), capped at maxSeconds."""

    model_config = ConfigDict(json_schema_extra=cel_rules(BACKOFF_INITIAL_WITHIN_MAX))

    initial_seconds: int = Field(default=10, ge=0, le=86_400)
    """Delay before the first retry, in seconds."""
    factor: float = Field(default=2.0, ge=1, le=10)
    """Multiplier applied to the delay after each failed attempt."""
    max_seconds: int = Field(default=600, ge=0, le=604_800)
    """Upper bound on the delay, in seconds."""

    @model_validator(mode="after")
    def _initial_within_max(self) -> Self:
        if self.initial_seconds > self.max_seconds:
            raise ValueError(BACKOFF_INITIAL_WITHIN_MAX.message)
        return self


class RetryPolicy(ApiModel):
    """How failed attempts are retried. Disruptions (eviction, node loss, preemption) do not
    count as attempts."""

    max_attempts: int = Field(default=3, ge=1, le=100)
    """Attempts a job gets in total, the first one included."""
    # The schema default is the whole object: the API server checks a default against the
    # CEL rules without filling in the nested defaults first.
    backoff: Backoff = Field(
        default_factory=Backoff, json_schema_extra={"default": Backoff().to_dict()}
    )
    """Delay between attempts."""


class QueueMemory(ApiModel):
    """The memory budget jobs are admitted within. Every worker pod's memory request equals
    its limit, so the sum of admitted and running jobs' memory never exceeds budget."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            MEMORY_MAX_WITHIN_BUDGET, DEFAULT_REQUEST_WITHIN_MAX, DEFAULT_REQUEST_WITHIN_BUDGET
        )
    )

    budget: PositiveQuantity
    """Total memory of the queue's admitted and running jobs, e.g. 64Gi."""
    default_request: PositiveQuantity = "1Gi"
    """Memory of a job that does not set resources.memory."""
    max: PositiveQuantity | None = None
    """Largest memory a single job may use; larger jobs are Rejected. Defaults to budget."""
    oom_retry_multiplier: float = Field(default=2.0, gt=1, le=16)
    """After an OOMKilled attempt the next one gets this many times the memory, capped at max."""
    backfill_seconds: int = Field(default=300, ge=0, le=86_400)
    """Starvation guard: while the first job in order does not fit the free memory, smaller
    jobs behind it are still admitted for this many seconds; after that memory is held back
    for it until it fits. 0 disables backfill."""

    @property
    def budget_bytes(self) -> int:
        return parse_quantity(self.budget)

    @property
    def default_request_bytes(self) -> int:
        return parse_quantity(self.default_request)

    @property
    def max_bytes(self) -> int:
        """The per-job limit in bytes (budget when max is not set)."""
        return parse_quantity(self.max if self.max is not None else self.budget)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # The same checks as the CEL rules, for objects that never went through the API server.
        budget, default = self.budget_bytes, self.default_request_bytes
        if self.max is not None:
            limit = parse_quantity(self.max)
            if limit > budget:
                raise ValueError(MEMORY_MAX_WITHIN_BUDGET.message)
            if default > limit:
                raise ValueError(DEFAULT_REQUEST_WITHIN_MAX.message)
        if default > budget:
            raise ValueError(DEFAULT_REQUEST_WITHIN_BUDGET.message)
        return self


class VideoQueueSpec(ApiModel):
    """What the queue admits, how many at once, within which memory, and how it retries."""

    state: QueueState = QueueState.ACTIVE
    """Active admits jobs; Paused admits none but accepts new ones; Draining admits none and
    rejects new ones. Running jobs always finish."""
    concurrency: int = Field(default=4, ge=1, le=10_000)
    """Most jobs admitted or running at once."""
    memory: QueueMemory
    """Memory budget and per-job memory rules."""
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, json_schema_extra={"default": RetryPolicy().to_dict()}
    )
    """Retry policy for the queue's jobs; a job may override maxAttempts and backoff."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Default time limit of one attempt, for jobs that do not set their own."""
    template: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra={
            **PRESERVE_UNKNOWN_FIELDS,
            "x-kubernetes-embedded-resource": False,
        },
    )
    """Pod template (metadata and spec) for worker pods: image, security context, node
    selection. The operator sets memory, restartPolicy, deadline and the job's input."""


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


class QueueMemoryStatus(ApiModel):
    """Memory in use against the budget."""

    reserved: Quantity | None = None
    """Memory of the admitted and running jobs."""
    budget: Quantity | None = None
    """spec.memory.budget as last applied."""
    summary: str | None = Field(default=None, max_length=64)
    """reserved/budget for the printer column, e.g. 3Gi/8Gi."""


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


class VideoQueue(ApiModel):
    """A VideoQueue object as the API server returns it."""

    api_version: str = API_VERSION
    kind: str = QUEUE_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: VideoQueueSpec
    status: VideoQueueStatus = Field(default_factory=VideoQueueStatus)
