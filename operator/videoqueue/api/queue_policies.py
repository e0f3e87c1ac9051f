"""The parts of a VideoQueue's spec (`videoqueue.api.queue`): memory, retry and backoff,
preemption, aging, rate limit, finished-job TTL, memory pressure, notifications, health
thresholds and statistics, with the CEL rules the API server checks them by."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import ConfigDict, Field, model_validator

from videoqueue.api.common import (
    NAME_PATTERN,
    ApiModel,
    CelRule,
    cel_is_quantity,
    cel_quantity,
    cel_rules,
)
from videoqueue.api.quantity import PositiveQuantity, parse_quantity
from videoqueue.api.sizing import LearnedSizing, MemorySizing

__all__ = [
    "Aging",
    "Backoff",
    "FinishedTTL",
    "HealthThresholds",
    "MemoryPressurePolicy",
    "NotificationEvent",
    "Notifications",
    "PreemptionPolicy",
    "QueueMemory",
    "RateLimit",
    "RetryPolicy",
    "SecretKeyRef",
    "StatisticsPolicy",
]


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
LEARNED_FLOOR_WITHIN_MAX = CelRule(
    rule=(
        f"!has(self.learned) || !has(self.learned.floor) || "
        f"!{cel_is_quantity('self.learned.floor')} || "
        f"!{cel_is_quantity('has(self.max) ? self.max : self.budget')} || "
        f"{cel_quantity('self.learned.floor')}.compareTo("
        f"{cel_quantity('has(self.max) ? self.max : self.budget')}) <= 0"
    ),
    message=(
        "spec.memory.learned.floor (32Mi unless set) must not exceed spec.memory.max (budget "
        "unless set): learned sizes could never fit; lower learned.floor or raise max"
    ),
    field_path=".learned.floor",
)
BACKOFF_INITIAL_WITHIN_MAX = CelRule(
    rule="self.initialSeconds <= self.maxSeconds",
    message=(
        "spec.retry.backoff.initialSeconds must not exceed spec.retry.backoff.maxSeconds; "
        "lower one or raise the other"
    ),
    field_path=".initialSeconds",
)
BACKLOG_WARNING_WITHIN_CRITICAL = CelRule(
    rule="self.backlogWarning <= self.backlogCritical",
    message=(
        "spec.health.backlogWarning must not exceed spec.health.backlogCritical (the queue "
        "would turn Critical before Warning); lower backlogWarning or raise backlogCritical"
    ),
    field_path=".backlogWarning",
)
FAILURE_RATE_WARNING_WITHIN_CRITICAL = CelRule(
    rule="self.failureRateWarning <= self.failureRateCritical",
    message=(
        "spec.health.failureRateWarning must not exceed spec.health.failureRateCritical (the "
        "queue would turn Critical before Warning); lower failureRateWarning or raise "
        "failureRateCritical"
    ),
    field_path=".failureRateWarning",
)


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
            MEMORY_MAX_WITHIN_BUDGET,
            DEFAULT_REQUEST_WITHIN_MAX,
            DEFAULT_REQUEST_WITHIN_BUDGET,
            LEARNED_FLOOR_WITHIN_MAX,
        )
    )

    budget: PositiveQuantity
    """Total memory of the queue's admitted and running jobs, e.g. 64Gi."""
    default_request: PositiveQuantity = "1Gi"
    """Memory of a job that does not set resources.memory (with sizing Learned: until its
    sizing key has learned.minObservations)."""
    max: PositiveQuantity | None = None
    """Largest memory a single job may use; larger jobs are Rejected. Defaults to budget."""
    oom_retry_multiplier: float = Field(default=2.0, gt=1, le=16)
    """After an OOMKilled attempt the next one gets this many times the memory, capped at max."""
    backfill_seconds: int = Field(default=300, ge=0, le=86_400)
    """Starvation guard: while the first job in order does not fit the free memory, smaller
    jobs behind it are still admitted for this many seconds; after that memory is held back
    for it until it fits. 0 disables backfill."""
    sizing: MemorySizing = MemorySizing.LEARNED
    """Learned: a job without resources.memory gets a size learned from the peaks of past
    jobs of its sizing key (see learned) once there are enough, else defaultRequest. Static:
    always defaultRequest. resources.memory and the growth after an OOM kill win either way."""
    learned: LearnedSizing = Field(
        default_factory=LearnedSizing, json_schema_extra={"default": LearnedSizing().to_dict()}
    )
    """How sizes are learned (with sizing Learned)."""

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
        if self.learned.floor_bytes > self.max_bytes:
            raise ValueError(LEARNED_FLOOR_WITHIN_MAX.message)
        return self


class PreemptionPolicy(StrEnum):
    """Whether a job that cannot fit may evict running jobs of lower priority."""

    NEVER = "Never"
    LOWER_PRIORITY = "LowerPriority"


class Aging(ApiModel):
    """A boost for long-waiting jobs: for every intervalSeconds a pending job has waited, its
    priority in the admission order rises by one, up to maxBoost and never above 10. A job of
    priority p therefore competes as a priority-10 job after (10 - p) * intervalSeconds, and
    within a priority the older job goes first, so a steady stream of high-priority work
    cannot starve low-priority jobs forever. Off unless set."""

    interval_seconds: int = Field(default=600, ge=1, le=604_800)
    """Waiting time that earns one step of priority."""
    max_boost: int = Field(default=10, ge=1, le=10)
    """Most steps a job can earn."""


class RateLimit(ApiModel):
    """A ceiling on how fast the queue starts jobs, e.g. to spare a shared origin server."""

    starts_per_minute: int = Field(ge=1, le=100_000)
    """Most admissions in any 60-second window."""


class FinishedTTL(ApiModel):
    """How long finished jobs (and their worker pods) are kept; unset keeps them forever."""

    succeeded: int | None = Field(default=None, ge=0)
    """Seconds a Succeeded job is kept after it finished."""
    failed: int | None = Field(default=None, ge=0)
    """Seconds a Failed, Cancelled or Rejected job is kept after it finished."""


class MemoryPressurePolicy(ApiModel):
    """Backing off when workers run out of memory. When oomKills attempts end OOMKilled within
    windowSeconds, or a node running the queue's workers reports MemoryPressure, the effective
    concurrency is halved (at least 1); after recoverySeconds without either it grows by one
    step at a time back to spec.concurrency."""

    enabled: bool = True
    """Lower the effective concurrency under memory pressure."""
    oom_kills: int = Field(default=3, ge=1, le=1000)
    """OOMKilled attempts within windowSeconds that count as pressure."""
    window_seconds: int = Field(default=600, ge=1, le=86_400)
    """Window for counting OOMKilled attempts."""
    recovery_seconds: int = Field(default=60, ge=1, le=86_400)
    """Calm time before each step back up, and between two steps down."""


class NotificationEvent(StrEnum):
    """Job outcomes a webhook can be sent for."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class SecretKeyRef(ApiModel):
    """One key of a Secret in the queue's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN)
    """Name of the Secret (a DNS subdomain: lowercase letters, digits, '-' and '.')."""
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key within the Secret's data."""


class Notifications(ApiModel):
    """A JSON webhook POSTed when a job of the queue finishes (queue, job, type, outcome,
    durations, result summary). Delivered at least once: the job's status.notification
    records that it is owed until a 2xx answer (Delivered) or maxAttempts failed tries
    (GaveUp), and a restarted operator or the replica taking over sends what is still owed.
    Admission never waits for it. See docs/notifications.md for the receiver's side."""

    url: str = Field(max_length=2048, pattern=r"^https?://[^\s]+$")
    """http(s) URL the JSON is POSTed to."""
    on: list[NotificationEvent] = Field(
        default_factory=lambda: [NotificationEvent.SUCCEEDED, NotificationEvent.FAILED],
        max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Outcomes to notify about: Succeeded, Failed (Failed covers Rejected and Cancelled too)."""
    max_attempts: int = Field(default=5, ge=1, le=20)
    """Tries per notification before it is given up: status.notification.state GaveUp, the
    job's NotificationFailed condition and Warning Events on the job and the queue."""
    timeout_seconds: int = Field(default=10, ge=1, le=120)
    """Time limit of one try."""
    secret_ref: SecretKeyRef | None = None
    """Sign each try with HMAC-SHA256 keyed by this Secret's value (headers
    X-VideoQueue-Timestamp and X-VideoQueue-Signature). The operator reads only the Secret
    named here; while it or its key is missing nothing is sent (never unsigned): the job
    shows the problem and the try is repeated with backoff until the Secret is there."""


class HealthThresholds(ApiModel):
    """When status.health turns Warning or Critical. Offline is when workers cannot start:
    admitted jobs' pods cannot be scheduled and nothing runs. Each Warning threshold must not
    exceed its Critical one."""

    # Checked by the API server only: a queue stored before the rule existed must still be
    # readable by the operator (which would otherwise ignore the whole queue).
    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            BACKLOG_WARNING_WITHIN_CRITICAL, FAILURE_RATE_WARNING_WITHIN_CRITICAL
        )
    )

    backlog_warning: int = Field(default=1_000, ge=1)
    """Jobs waiting for admission (pending and in backoff) that make the queue Warning."""
    backlog_critical: int = Field(default=10_000, ge=1)
    """Jobs waiting for admission that make the queue Critical."""
    failure_rate_warning: float = Field(default=0.1, ge=0, le=1)
    """Share of jobs finished in the statistics window that failed, for Warning."""
    failure_rate_critical: float = Field(default=0.5, ge=0, le=1)
    """Share of jobs finished in the statistics window that failed, for Critical."""
    min_finished: int = Field(default=5, ge=1)
    """Finished jobs in the window before the failure rate is judged at all."""
    memory_utilization_warning: float = Field(default=0.95, ge=0, le=1)
    """Reserved memory over budget above which the queue is Warning."""


class StatisticsPolicy(ApiModel):
    """The window of the rolling statistics in status.statistics."""

    window_seconds: int = Field(default=900, ge=60, le=86_400)
    """Jobs that finished within this many seconds count."""
