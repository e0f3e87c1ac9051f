"""What the job state machine returns (`Assessment`) and the small rules every phase
shares: a job's key, its memory, its queue's policy and pod overhead, its kstatus conditions."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from videoqueue.api import (
    AttemptReason,
    AttemptRecord,
    Condition,
    JobConditionType,
    JobPhase,
    PreemptionPolicy,
    QueueState,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
    budget_units,
    find_condition,
    put_condition,
)
from videoqueue.scheduling.job_types import (
    TemplateError,
    template_to_read,
    type_default_memory_source,
)
from videoqueue.scheduling.memory import PodOverhead
from videoqueue.scheduling.pod_requests import pod_requests
from videoqueue.scheduling.sizing import (
    SOURCE_GROWN,
    SOURCE_REQUESTED,
    learned_memory,
    sizing_key,
)
from videoqueue.scheduling.snapshot import JobState, JobView, QueuePolicy, StoppingPod
from videoqueue.scheduling.worker_pod import pod_memory_overhead

MAX_HISTORY = 20  # attempts kept in status.attempts

# `condition(type, value, reason, message="")`: put a condition on the status being assessed.
ConditionSetter = Callable[..., None]


@dataclass(frozen=True)
class Notice:
    """A Kubernetes Event to post about a transition."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Assessment:
    status: VideoJobStatus
    # The job's place in its queue's admission, or None when it is not competing
    # (finished, rejected, its queue missing).
    view: JobView | None
    notices: tuple[Notice, ...] = ()
    # The pod of the current attempt according to status, not in the index: the caller
    # confirms with a GET that it is really gone before trusting `assess_job` with it.
    unconfirmed_pod: str | None = None
    terminal: bool = False
    # Worker pods to delete (cancelled, suspended, preempted, past the deadline), after the
    # status is written.
    stop_pods: tuple[str, ...] = ()
    # When to assess again although nothing changed (an attempt's deadline).
    recheck_at: datetime.datetime | None = None
    # The job's pods whose attempt is over but which still run (see `stopping_pods`).
    stopping: tuple[StoppingPod, ...] = ()


@dataclass(frozen=True)
class Admission:
    """What the controller records when the scheduler admits a job."""

    attempt: int
    memory: int


def condition_setter(
    status: VideoJobStatus, now: datetime.datetime, generation: int | None
) -> ConditionSetter:
    """`condition(type, value, reason, message="")`: put a condition on `status` at `now`."""

    def condition(type_: JobConditionType, value: bool, reason: str, message: str = "") -> None:
        status.conditions = put_condition(
            status.conditions, type_, value, reason, message, now=now, generation=generation
        )

    return condition


def editable_status(status: VideoJobStatus) -> VideoJobStatus:
    """A copy of `status` for an assessment to change. The state machine sets the status's
    own fields, replaces its conditions list (`put_condition` returns a new one) and its
    other parts whole, and changes attempt records in place: those are copied, the rest is
    shared. A deep copy cost a third of assessing a waiting job."""
    copied = status.model_copy()
    copied.conditions = list(status.conditions)
    copied.attempts = [record.model_copy() for record in status.attempts]
    return copied


# Shared by the statuses kept in the index instead of a set of their own (`keep_status`).
_NO_FIELDS_SET: set[str] = set()
# Conditions equal in every field, shared by the statuses kept in the index: a queue's waiting
# jobs mostly carry the same ones (the cycle that told them why they wait set reason, message
# and time alike). Conditions are never changed in place (`put_condition` makes new ones), so
# one instance serves them all. Emptied when full.
_SHARED_CONDITIONS: dict[tuple[object, ...], Condition] = {}
MAX_SHARED_CONDITIONS = 2_048
# Status strings most jobs repeat, kept once (made per job by f-strings).
_SHARED_STRINGS = ("message", "memory_source", "effective_memory")
# Whole statuses equal in every field, of jobs that never ran (no attempt records, result or
# resolved input: only plain values and the shared conditions): jobs created in the same
# second and told the same reason to wait, as a burst of submissions is. A status model is
# ~1.2 KiB (its field dictionary), most of what a waiting job costs the index. Kept
# statuses are never changed in place (`editable_status` copies first), so one serves them
# all. Emptied when full.
_SHARED_STATUSES: dict[tuple[object, ...], VideoJobStatus] = {}
MAX_SHARED_STATUSES = 1_024
_PLAIN_VALUES = (str, int, float, datetime.datetime, type(None))
_T = TypeVar("_T")


def keep_status(status: VideoJobStatus) -> VideoJobStatus:
    """`status` made lighter to keep: pydantic gives every model instance a set of the
    fields it was given (for exclude_unset, which nothing here uses), 0.5-0.7 KiB each for a
    status and each of its conditions and attempt records: a third of what the index held
    per waiting job. They share one empty set instead. `editable_status` copies give the
    copy a set of its own again. Conditions and strings equal to those of other kept
    statuses are replaced by the shared ones (equal values: whoever else holds the list or
    the status sees no change). Returns the status to keep: a shared one equal to `status`,
    or `status`."""
    for model in (status, *status.conditions, *status.attempts):
        object.__setattr__(model, "__pydantic_fields_set__", _NO_FIELDS_SET)
    conditions = status.conditions
    for index, condition in enumerate(conditions):
        conditions[index] = _shared_condition(condition)
    fields = status.__dict__
    for name in _SHARED_STRINGS:
        if isinstance(value := fields.get(name), str):
            fields[name] = sys.intern(value)
    return _shared_status(status)


def _shared_status(status: VideoJobStatus) -> VideoJobStatus:
    if status.attempts:
        return status
    key: list[object] = []
    for value in status.__dict__.values():
        if isinstance(value, list):  # the conditions (shared: their identity is their value)
            key.append(tuple(id(item) for item in value))
        elif isinstance(value, _PLAIN_VALUES):  # (enums are str)
            key.append(value)
        else:
            return status  # a result, a resolved input, a notification: its own
    return _one_of(_SHARED_STATUSES, tuple(key), status, MAX_SHARED_STATUSES)


def _shared_condition(condition: Condition) -> Condition:
    key = (
        condition.type,
        condition.status,
        condition.reason,
        condition.message,
        condition.last_transition_time,
        condition.observed_generation,
    )
    return _one_of(_SHARED_CONDITIONS, key, condition, MAX_SHARED_CONDITIONS)


def _one_of(
    cache: dict[tuple[object, ...], _T], key: tuple[object, ...], value: _T, size: int
) -> _T:
    """The value cached under `key`, else `value`, cached (the cache emptied when full)."""
    if (found := cache.get(key)) is not None:
        return found
    if len(cache) >= size:
        cache.clear()
    cache[key] = value
    return value


def job_key(job: VideoJob) -> str:
    return f"{job.metadata.namespace}/{job.metadata.name}"


def effective_memory(job: VideoJob, status: VideoJobStatus, queue: VideoQueue) -> int:
    """Memory of the job's next attempt (`memory_decision`)."""
    return memory_decision(job, status, queue)[0]


def memory_decision(job: VideoJob, status: VideoJobStatus, queue: VideoQueue) -> tuple[int, str]:
    """Memory of the job's next attempt and where it came from (status.memorySource): what
    it grew to after OOM kills (as recorded in `status`, the status being assessed), else
    what the job asks for now (a pending job's spec.resources.memory may still be edited),
    else what the queue learned for its sizing key (`videoqueue.scheduling.sizing`), else
    the default."""
    grown = any(r.reason == AttemptReason.OOM_KILLED for r in status.attempts)
    if grown and (grown_to := status.effective_memory_bytes) is not None:
        return grown_to, SOURCE_GROWN
    if (requested := job.spec.resources.memory_bytes) is not None:
        return requested, SOURCE_REQUESTED
    learned = learned_memory(queue, sizing_key(job.spec.type, job.spec.params))
    if learned.memory is not None:
        return learned.memory, learned.source
    default, source = type_default_memory_source(
        queue, job.spec.type
    )  # the type's, else the queue's
    return default, source + learned.source


def queue_overhead(queue: VideoQueue, job_type: str | None) -> PodOverhead:
    """What the queue's worker pods for jobs of `job_type` hold beside the worker (sidecars,
    init containers, which a type's template patch may change), as the budget counts it;
    `job_type` None: the queue's spec.template alone. A template that `build_worker_pod`
    refuses (a container without a memory limit, a patch that cannot be merged) counts
    what it can here: its jobs are held when their pod is refused, so no memory is really
    at stake."""
    try:
        template = template_to_read(queue, job_type)
    except TemplateError:
        template = queue.spec.template
    return pod_memory_overhead(template, strict=False)


def job_requests(job: VideoJob, queue: VideoQueue) -> dict[str, int]:
    """What `job`'s worker pods request of each resource in the queue's spec.budgets
    (`type_requests` of its type)."""
    return type_requests(queue, job.spec.type)


def type_requests(queue: VideoQueue, job_type: str | None) -> dict[str, int]:
    """What the worker pods of `job_type`'s jobs request of each resource in the queue's
    spec.budgets (CPU in millicores, others in whole units), counted from the template they
    are built from (the type's patch over the queue's) as Kubernetes counts a pod's request
    (`videoqueue.scheduling.pod_requests`). The one place a job's requests are counted; the
    worker's memory is counted apart (`effective_memory`). A patch that cannot be merged
    counts the queue's template: its jobs are held when their pod is refused."""
    if not queue.spec.budgets:
        return {}
    try:
        template = template_to_read(queue, job_type)
    except TemplateError:
        template = queue.spec.template
    return pod_requests(template, queue.spec.budgets)


def queue_policy(queue: VideoQueue, *, concurrency: int | None = None) -> QueuePolicy:
    """The scheduling policy of `queue`; `concurrency` overrides spec.concurrency (the
    effective value under memory pressure). The one conversion used by the controller and
    by the kubectl plugin's estimates."""
    memory = queue.spec.memory
    aging = queue.spec.aging
    rate_limit = queue.spec.rate_limit
    return QueuePolicy(
        concurrency=queue.spec.concurrency if concurrency is None else concurrency,
        memory_budget=memory.budget_bytes,
        memory_max=memory.max_bytes,
        backfill_seconds=float(memory.backfill_seconds),
        admitting=queue.spec.state == QueueState.ACTIVE
        and queue.metadata.deletion_timestamp is None,
        aging_interval=float(aging.interval_seconds) if aging else None,
        aging_max_boost=aging.max_boost if aging else 10,
        starts_per_minute=rate_limit.starts_per_minute if rate_limit else None,
        preempt_lower_priority=queue.spec.preemption == PreemptionPolicy.LOWER_PRIORITY,
        budgets=budget_units(queue.spec.budgets or {}),
    )


def set_kstatus_conditions(
    status: VideoJobStatus, now: datetime.datetime, generation: int | None
) -> None:
    """Reconciling True until the job ends; Stalled True when it Failed or was Rejected."""
    phase = status.phase
    if phase is None:
        return

    condition = condition_setter(status, now, generation)

    if not phase.is_terminal:
        condition(JobConditionType.RECONCILING, True, phase.value, f"the job is {phase.value}")
    else:
        condition(JobConditionType.RECONCILING, False, phase.value, f"the job {phase.value}")
    if phase in (JobPhase.FAILED, JobPhase.REJECTED):
        failed = find_condition(status.conditions, JobConditionType.FAILED)
        reason = failed.reason if failed is not None else phase.value
        condition(JobConditionType.STALLED, True, reason, status.message or "")
    elif find_condition(status.conditions, JobConditionType.STALLED) is not None:
        condition(JobConditionType.STALLED, False, phase.value, "")


def history(status: VideoJobStatus, attempt: int) -> AttemptRecord | None:
    return next((r for r in reversed(status.attempts) if r.attempt == attempt), None)


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def job_view(
    job: VideoJob,
    status: VideoJobStatus,
    now: datetime.datetime,
    *,
    memory: int,
    overhead: int,
    state: JobState = JobState.PENDING,
    eligible_at: datetime.datetime | None = None,
    requests: Mapping[str, int] | None = None,
) -> JobView:
    """The job as admission sees it (`videoqueue.scheduling.JobView`): its place in the order
    (priority, creation, when it was last queued), its pod's memory and its pod's requests
    of the budgeted resources (`job_requests`)."""
    created = job.metadata.creation_timestamp or now
    admitted = status.admitted_time if state is not JobState.PENDING else None
    return JobView(
        key=job_key(job),
        priority=job.spec.priority,
        created_at=created.timestamp(),
        queued_at=(status.queued_time or created).timestamp(),
        memory=memory,
        state=state,
        eligible_at=eligible_at.timestamp() if eligible_at else None,
        admitted_at=admitted.timestamp() if admitted else None,
        overhead=overhead,
        requests=dict(requests or {}),
    )


def pending_view(
    job: VideoJob, status: VideoJobStatus, queue: VideoQueue | None, now: datetime.datetime
) -> JobView | None:
    """The job's place in the queue right after an attempt ended and it was re-queued; None
    when it does not compete: no queue, or more memory than the queue's memory.max (lowered
    while it ran; its next assessment turns it away)."""
    if queue is None:
        return None
    eligible = status.next_attempt_time
    memory = effective_memory(job, status, queue)
    if memory > queue.spec.memory.max_bytes:
        return None
    return job_view(
        job,
        status,
        now,
        memory=memory,
        overhead=queue_overhead(queue, job.spec.type).beside(memory),
        eligible_at=eligible if eligible and eligible > now else None,
        requests=job_requests(job, queue),
    )
