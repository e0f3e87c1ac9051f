"""VideoJob: one piece of video work, run as one worker pod per attempt."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, Self

from pydantic import AwareDatetime, ConfigDict, Field, model_validator

from videoqueue.api.common import (
    CONDITION_LIST,
    MAX_CONDITIONS,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    PRESERVE_UNKNOWN_FIELDS,
    ApiModel,
    ApiObject,
    CelRule,
    Condition,
    cel_rules,
    cel_string_list,
)
from videoqueue.api.job_input import (
    FROM_JOB_IN_DEPENDS_ON,
    JobInput,
    JobOutput,
    ObjectName,
    ResolvedInput,
)
from videoqueue.api.job_payload import PARAMS_KEYS_AND_SIZE, Params
from videoqueue.api.quantity import PositiveQuantity, Quantity, QuantityBytes, stored_bytes
from videoqueue.api.queue_policies import Backoff, FinishedTTL

__all__ = [
    "BATCH_LABEL",
    "KNOWN_JOB_TYPES",
    "MAX_ATTEMPT_HISTORY",
    "RETRY_ANNOTATION",
    "AttemptReason",
    "AttemptRecord",
    "BackoffOverride",
    "JobConditionType",
    "JobInput",
    "JobOutput",
    "JobPhase",
    "JobResources",
    "ManualRetry",
    "NotificationState",
    "NotificationStatus",
    "ResolvedInput",
    "VideoJob",
    "VideoJobSpec",
    "VideoJobStatus",
]


JOB_KIND = "VideoJob"

KNOWN_JOB_TYPES = ("probe", "transcode", "thumbnail", "audio", "clip", "hls")
"""Types the stock worker image runs; any other name is a custom type for a custom image."""
JOB_TYPE_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"

MIN_PRIORITY, DEFAULT_PRIORITY, MAX_PRIORITY = 0, 5, 10
MAX_DEPENDENCIES = 32
MAX_ATTEMPT_HISTORY = 20
"""status.attempts keeps the most recent attempts only, so status stays small."""

QUEUE_NAME_IMMUTABLE = CelRule(
    rule="self == oldSelf",
    message=(
        "spec.queueName is immutable: delete and recreate the job to move it to another queue"
    ),
)
NOT_DEPENDING_ON_ITSELF = CelRule(
    rule="!has(self.spec.dependsOn) || !(self.metadata.name in self.spec.dependsOn)",
    message=(
        "spec.dependsOn must not name the job itself (it would wait forever); "
        "remove its own name from the list"
    ),
    field_path=".spec.dependsOn",
)
JOB_NAME_LENGTH = CelRule(
    rule=f"size(self.metadata.name) <= {NAME_MAX_LENGTH}",
    message=(
        f"metadata.name of a VideoJob must be at most {NAME_MAX_LENGTH} characters "
        "(it is used as a label value on worker pods); choose a shorter name"
    ),
    field_path=".metadata.name",
)
BACKOFF_OVERRIDE_INITIAL_WITHIN_MAX = CelRule(
    rule="!has(self.initialSeconds) || !has(self.maxSeconds) || "
    "self.initialSeconds <= self.maxSeconds",
    message=(
        "spec.backoff.initialSeconds must not exceed spec.backoff.maxSeconds; "
        "lower one or raise the other"
    ),
    field_path=".initialSeconds",
)

STOCK_URL_PATTERN: Final = (
    r"^(/|(?i:file):(//(localhost)?/|/([^/]|$))|(?i:https?)://[^/?#]|(?i:s3)://[^/?#]+/)"
)
"""What the stock worker reads and writes: an absolute path, file:///path (or file:/path,
file://localhost/path), http(s)://host/... and s3://bucket/key (videoqueue_worker.transfer;
s3:// needs the queue's spec.storage.s3, which the operator checks)."""
STOCK_URLS = (
    "an absolute path (/media/in.mp4), a file:///path URL, an http(s):// URL or an "
    "s3://bucket/key URL"
)


def _stock_url_rule(field: str, expr: str, *, guard: str | None = None) -> CelRule:
    checked = f"!(self.type in {cel_string_list(KNOWN_JOB_TYPES)}) || " + (
        f"{expr}.matches(r'{STOCK_URL_PATTERN}')"
    )
    return CelRule(
        rule=checked if guard is None else f"!{guard} || {checked}",
        message=(
            f"{field} of a stock job type ({', '.join(KNOWN_JOB_TYPES)}) must be {STOCK_URLS}: "
            "the stock worker reads and writes no other scheme (not ftp://, gs://, ...); use "
            "one of those, or a custom type run by your own worker image"
        ),
        field_path="." + field.removeprefix("spec."),
    )


STOCK_INPUT_SCHEME = _stock_url_rule(
    "spec.input.url", "self.input.url", guard="has(self.input.url)"
)
STOCK_OUTPUT_SCHEME = _stock_url_rule(
    "spec.output.url", "self.output.url", guard="has(self.output)"
)


class JobPhase(StrEnum):
    """A one-word summary of the job for people (logic reads conditions, not the phase)."""

    PENDING = "Pending"
    WAITING = "Waiting"
    ADMITTED = "Admitted"
    RUNNING = "Running"
    BACKOFF = "Backoff"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    REJECTED = "Rejected"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_PHASES


_TERMINAL_PHASES = frozenset(
    {JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED, JobPhase.REJECTED}
)


class JobConditionType(StrEnum):
    """Condition types on a VideoJob. Complete and Failed match batch/v1 Job, so
    `kubectl wait --for=condition=Complete vj/NAME` works the same way."""

    ADMITTED = "Admitted"
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"
    REJECTED = "Rejected"
    QUEUE_MISSING = "QueueMissing"
    SUSPENDED = "Suspended"
    CANCELLED = "Cancelled"
    DEPENDENCIES_MET = "DependenciesMet"  # every job in spec.dependsOn succeeded (sticky)
    # The kstatus conditions (Flux, kpt): Reconciling while unfinished, Stalled once Failed
    # or Rejected, so a GitOps wait follows the job to its end.
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    # True while the completion notification cannot be sent (its Secret is missing) or once
    # it was given up; False again once delivered.
    NOTIFICATION_FAILED = "NotificationFailed"


class AttemptReason(StrEnum):
    """How an attempt ended. Evicted, Preempted, Disrupted and Suspended do not use up an
    attempt."""

    COMPLETED = "Completed"
    ERROR = "Error"
    OOM_KILLED = "OOMKilled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    STALLED = "Stalled"
    EVICTED = "Evicted"
    PREEMPTED = "Preempted"
    DISRUPTED = "Disrupted"
    SUSPENDED = "Suspended"
    CANCELLED = "Cancelled"


class JobResources(ApiModel):
    """Resources of the job's worker pod."""

    memory: PositiveQuantity | None = None
    """Memory request and limit of the worker; if unset, the queue's
    types.<type>.memory.defaultRequest, else its memory.defaultRequest."""

    @property
    def memory_bytes(self) -> int | None:
        """`memory` in bytes; None when unset (the queue's default applies)."""
        return stored_bytes(self.memory, "spec.resources.memory")


class BackoffOverride(ApiModel):
    """Per-job retry delay settings; each one unset falls back to the queue's."""

    model_config = ConfigDict(json_schema_extra=cel_rules(BACKOFF_OVERRIDE_INITIAL_WITHIN_MAX))

    initial_seconds: int | None = Field(default=None, ge=0, le=86_400)
    """Delay before the first retry, in seconds."""
    factor: float | None = Field(default=None, ge=1, le=10)
    """Multiplier applied to the delay after each failed attempt."""
    max_seconds: int | None = Field(default=None, ge=0, le=604_800)
    """Upper bound on the delay, in seconds."""

    def apply_to(self, base: Backoff) -> Backoff:
        """The queue's backoff with this job's settings on top. When the job raises
        initialSeconds above the queue's maxSeconds, the cap rises to match rather than
        silently discarding what the job asked for."""
        initial = base.initial_seconds if self.initial_seconds is None else self.initial_seconds
        factor = base.factor if self.factor is None else self.factor
        cap = base.max_seconds if self.max_seconds is None else self.max_seconds
        return Backoff(initial_seconds=initial, factor=factor, max_seconds=max(cap, initial))


class VideoJobSpec(ApiModel):
    """The work to do, in which queue, and how urgently."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            STOCK_INPUT_SCHEME, STOCK_OUTPUT_SCHEME, PARAMS_KEYS_AND_SIZE, FROM_JOB_IN_DEPENDS_ON
        )
    )

    queue_name: str = Field(
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
        json_schema_extra=cel_rules(QUEUE_NAME_IMMUTABLE),
    )
    """Name of the VideoQueue in the same namespace. Immutable."""
    priority: int = Field(default=DEFAULT_PRIORITY, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    """0 to 10; higher runs first, first come first served within a priority."""
    type: str = Field(max_length=63, pattern=JOB_TYPE_PATTERN)
    """What the worker does: probe, transcode, thumbnail, audio, clip, hls, or a custom type."""
    input: JobInput
    """The source media: a URL, or the output of a job in dependsOn (fromJob)."""
    output: JobOutput | None = None
    """Where results go, for types that write files."""
    params: Params = Field(default_factory=dict)
    """Type-specific parameters handed to the worker as they are: at most 32 entries, each
    keyed by 1 to 63 letters, digits, '_', '-' or '.' and holding a number, a boolean, a
    string of at most 128 characters or a list of at most 8 numbers, booleans or strings of
    at most 16 characters (no nested objects). The job is handed to its worker in one
    environment variable; larger inputs belong behind spec.input.url."""
    resources: JobResources = Field(default_factory=JobResources)
    """Resources of the worker pod."""
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    """Overrides the queue's types.<type>.maxAttempts and retry.maxAttempts."""
    backoff: BackoffOverride | None = None
    """Overrides parts of the queue's retry.backoff."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Time limit of one attempt; if unset, the queue's types.<type>.activeDeadlineSeconds,
    else its activeDeadlineSeconds."""
    progress_deadline_seconds: int | None = Field(default=None, ge=1, le=86_400)
    """Heartbeat silence after which a running worker is stalled (its attempt fails with
    reason Stalled); the queue's progressDeadlineSeconds if unset. Needs the Redis channel."""
    start_after: AwareDatetime | None = None
    """Not admitted before this time (RFC 3339)."""
    depends_on: list[ObjectName] = Field(
        default_factory=list,
        max_length=MAX_DEPENDENCIES,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Names of VideoJobs in the same namespace that must succeed before this one starts."""
    suspend: bool = False
    """Hold the job: not admitted while true; a running attempt is stopped and re-queued."""
    cancel: bool = False
    """Cancel the job for good: its worker is stopped and the phase becomes Cancelled."""
    ttl_seconds_after_finished: FinishedTTL | None = None
    """Delete the job this long after it finished; each outcome set here overrides the
    queue's."""

    @model_validator(mode="after")
    def _from_job_in_depends_on(self) -> Self:
        if self.input.from_job is not None and self.input.from_job not in self.depends_on:
            raise ValueError(FROM_JOB_IN_DEPENDS_ON.message)
        return self


class AttemptRecord(ApiModel):
    """One attempt of a job, kept in status.attempts."""

    attempt: int = Field(ge=1)
    """Attempt number, from 1."""
    pod: str | None = Field(default=None, max_length=253)
    """Worker pod of the attempt."""
    node: str | None = Field(default=None, max_length=253)
    """Node the worker ran on."""
    memory: Quantity | None = None
    """Memory the attempt was given."""
    peak_memory: Quantity | None = None
    """Most memory the worker container used, as its cgroup counts it against the limit (page
    cache included): reported by the worker with its result (rounded up to a whole Mi, at
    most `memory`); `memory` itself for an OOM-killed attempt; unset otherwise."""
    exit_code: int | None = None
    """Exit code of the worker container."""
    reason: AttemptReason | None = None
    """How the attempt ended."""
    message: str | None = Field(default=None, max_length=1024)
    """Details of how the attempt ended."""
    start_time: AwareDatetime | None = None
    """When the worker started."""
    finish_time: AwareDatetime | None = None
    """When the attempt ended."""

    memory_bytes = QuantityBytes("memory", "status.attempts[].memory")
    """`memory` in bytes; None when unset. Setting it stores the quantity (None unsets)."""
    peak_memory_bytes = QuantityBytes("peak_memory", "status.attempts[].peakMemory")
    """`peak_memory` in bytes; None when unset. Setting it stores the quantity (None
    unsets)."""


BATCH_LABEL = "videoqueue.dev/batch"
"""Jobs sharing this label's value form a batch: the queue's status.batches reports its
progress, `kubectl videoqueue batch NAME` shows it, `kubectl videoqueue submit --batch` sets it."""

RETRY_ANNOTATION = "videoqueue.dev/retry"
"""Set (or change) this annotation on a Failed job to run it again with a fresh budget of
attempts: `kubectl annotate vj NAME videoqueue.dev/retry="$(date +%s)" --overwrite`."""


class ManualRetry(ApiModel):
    """A retry asked for by a user, recorded so that it is acted on once."""

    request: str = Field(max_length=253)
    """The value of the videoqueue.dev/retry annotation that was acted on."""
    after_attempt: int = Field(ge=0)
    """Attempts up to this number no longer count against maxAttempts."""


class NotificationState(StrEnum):
    """Where a job's completion notification stands."""

    OWED = "Owed"
    DELIVERED = "Delivered"
    GAVE_UP = "GaveUp"


class NotificationStatus(ApiModel):
    """The completion notification of the job's last outcome (the queue's
    spec.notifications). Recorded as Owed with the terminal status itself, so an operator
    that restarts or takes over sends what is still owed."""

    key: str = Field(max_length=128)
    """Idempotency key "<job uid>/<attempt>/<phase>", sent as the body's idempotencyKey and
    the X-VideoQueue-Delivery header: the same for every try of this outcome."""
    state: NotificationState
    """Owed until a 2xx answer (Delivered) or the queue's maxAttempts failed tries (GaveUp)."""
    owed_time: AwareDatetime | None = None
    """When the outcome was recorded and the notification became owed."""
    delivered_time: AwareDatetime | None = None
    """When the receiver answered 2xx."""
    tries: int | None = Field(default=None, ge=0)
    """POSTs made by the operator process that delivered it or gave it up (a replica that
    takes over starts counting again)."""
    last_try_time: AwareDatetime | None = None
    """When the last failed try or problem was recorded."""
    message: str | None = Field(default=None, max_length=1024)
    """The last problem (an HTTP status, a refused connection, a missing Secret)."""


class VideoJobStatus(ApiModel):
    """What the operator observed about the job."""

    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation this status describes."""
    phase: JobPhase | None = None
    """Summary for people; conditions are authoritative."""
    conditions: list[Condition] = Field(
        default_factory=list, max_length=MAX_CONDITIONS, json_schema_extra=CONDITION_LIST
    )
    """Current conditions of the job, one per type."""
    attempt: int = Field(default=0, ge=0)
    """Number of the current or last attempt; 0 before the first."""
    attempts: list[AttemptRecord] = Field(default_factory=list, max_length=MAX_ATTEMPT_HISTORY)
    """The most recent attempts, oldest first."""
    attempts_used: int | None = Field(default=None, ge=0)
    """Attempts that counted against maxAttempts since the job was created or last retried
    (disruptions do not count). Kept apart from `attempts`, which holds only the last ones."""
    effective_memory: Quantity | None = None
    """Memory of the current or next attempt (grows after OOMKilled)."""
    memory_source: str | None = Field(default=None, max_length=256)
    """Where effectiveMemory came from, e.g. "spec.resources.memory", "p95 of 24 past
    transcode/720p jobs x 1.2", "grown after OOMKilled"."""
    stage: str | None = Field(default=None, max_length=63)
    """Current stage as the worker reports it, e.g. download, encode, upload."""
    progress: int | None = Field(default=None, ge=0, le=100)
    """Percent done as the worker reports it."""
    message: str | None = Field(default=None, max_length=1024)
    """Latest human-readable news about the job."""
    queued_time: AwareDatetime | None = None
    """When the job entered the queue's order."""
    admitted_time: AwareDatetime | None = None
    """When the current or last attempt was admitted."""
    start_time: AwareDatetime | None = None
    """When the first attempt's worker started."""
    completion_time: AwareDatetime | None = None
    """When the job reached a terminal phase."""
    next_attempt_time: AwareDatetime | None = None
    """When the job becomes eligible again after a failed attempt."""
    wait_seconds: float | None = Field(default=None, ge=0)
    """Seconds spent waiting for admission, all attempts together."""
    run_seconds: float | None = Field(default=None, ge=0)
    """Seconds workers ran, all attempts together."""
    result: dict[str, Any] | None = Field(default=None, json_schema_extra=PRESERVE_UNKNOWN_FIELDS)
    """What the worker returned (from its termination message): for types that write files
    the URL it wrote in `output` (a series: `outputs`), which jobs with spec.input.fromJob
    read."""
    resolved_input: ResolvedInput | None = None
    """The input taken from spec.input.fromJob, set once when the job's dependencies have
    succeeded; every attempt reads this URL."""
    manual_retry: ManualRetry | None = None
    """The last retry a user asked for with the videoqueue.dev/retry annotation."""
    notification: NotificationStatus | None = None
    """The completion notification of the last outcome, when the queue sends one."""

    effective_memory_bytes = QuantityBytes("effective_memory", "status.effectiveMemory")
    """`effective_memory` in bytes; None when unset. Setting it stores the quantity (None
    unsets)."""


class VideoJob(ApiObject):
    """A VideoJob object as the API server returns it."""

    kind: str = JOB_KIND
    spec: VideoJobSpec
    status: VideoJobStatus = Field(default_factory=VideoJobStatus)

    @model_validator(mode="after")
    def _not_depending_on_itself(self) -> Self:
        if self.metadata.name and self.metadata.name in self.spec.depends_on:
            raise ValueError(NOT_DEPENDING_ON_ITSELF.message)
        return self
