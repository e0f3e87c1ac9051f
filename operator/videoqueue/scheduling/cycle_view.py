"""What a queue's cycle reads and what it returns (`videoqueue.scheduling.cycle`): the queue
as the controller's index has it (`QueueView`, with `JobFacts` for each job to assess and
read-only `IndexedJob`s for the others) and the `CyclePlan` the controller applies."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any, Protocol

from videoqueue.api import JobPhase, VideoJob, VideoJobStatus, VideoQueue
from videoqueue.scheduling.inputs import SourceJob
from videoqueue.scheduling.jobs import Assessment, Notice
from videoqueue.scheduling.notifications import NotificationNews
from videoqueue.scheduling.pod_outcome import PodOutcome
from videoqueue.scheduling.pressure import PressureState
from videoqueue.scheduling.progress_board import ProgressReport
from videoqueue.scheduling.snapshot import JobView, StoppingPod
from videoqueue.scheduling.statistics import FinishedJob


class IndexedJob(Protocol):
    """What a cycle reads of a job in the index (the controller's `JobEntry`)."""

    @property
    def name(self) -> str: ...
    @property
    def uid(self) -> str | None: ...
    @property
    def type(self) -> str: ...
    @property
    def sizing_key(self) -> str: ...
    @property
    def generation(self) -> int | None: ...
    @property
    def created(self) -> str: ...
    @property
    def batch(self) -> str | None: ...
    @property
    def stored_phase(self) -> JobPhase | None: ...
    @property
    def stored_completion(self) -> datetime.datetime | None: ...
    @property
    def unwritten(self) -> VideoJobStatus | None: ...
    @property
    def assessment(self) -> Assessment | None: ...
    @property
    def deleting(self) -> bool: ...
    @property
    def pods(self) -> Mapping[str, Mapping[str, Any]]: ...
    @property
    def body(self) -> Mapping[str, Any]: ...
    @property
    def job(self) -> VideoJob | None: ...


@dataclass(frozen=True)
class JobFacts:
    """Everything observed about a job that is assessed in this cycle."""

    key: str
    # The object, its status the one the assessment starts from: the stored status, or the
    # one decided but not yet written.
    job: VideoJob
    pods: tuple[PodOutcome, ...] = ()
    dependencies: Mapping[str, JobPhase | None] = field(default_factory=dict)
    cycle: tuple[str, ...] | None = None  # a dependsOn cycle through the job
    source: SourceJob | None = None  # the job named by spec.input.fromJob, until resolved
    heard_at: datetime.datetime | None = None  # its worker's last heartbeat
    progress: ProgressReport | None = None  # its worker's released progress
    confirmed_missing: frozenset[str] = frozenset()  # pods the API server said are gone
    refusal: tuple[str, str] | None = None  # (reason, message) while its pod is refused
    new: bool = False  # no status of it was ever decided
    phase_before: JobPhase | None = None  # its phase as last assessed
    notification: NotificationNews | None = None  # what became of its owed notification


@dataclass(frozen=True)
class QueueView:
    """A queue as the index has it at the start of a cycle."""

    key: str
    queue: VideoQueue | None
    body: Mapping[str, Any] | None
    jobs: Mapping[str, IndexedJob]  # every job of the queue, by "namespace/name"
    changed: tuple[JobFacts, ...] = ()
    backlog: bool = False  # more changed jobs wait for the next cycles
    new_jobs: bool = False  # new jobs arrived since spec.maxPending was last checked
    # The jobs that take part in the decision, and which of them wait.
    competing: Mapping[str, JobView] = field(default_factory=dict)
    waiting: Set[str] = frozenset()
    stopping: Mapping[str, tuple[StoppingPod, ...]] = field(default_factory=dict)
    orphans: tuple[StoppingPod, ...] = ()  # still-running pods of deleted jobs
    held: Mapping[str, float] = field(default_factory=dict)  # refused jobs, until when
    refused_until: float = 0.0  # the queue's own pause after refusals
    oom_kills: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    pressure: PressureState | None = None
    pressured_nodes: Set[str] = frozenset()
    expired: tuple[str, ...] = ()  # jobs whose TTL may have run out
    # Finished jobs the queue's stored statistics do not count yet, by record key.
    uncounted: Mapping[str, FinishedJob] = field(default_factory=dict)
    next_timer: float | None = None  # the index's own next due time (re-checks, TTLs)
    status_changed: bool = False
    status_written_at: float = 0.0
    # Why each waiting job waits, as its status already says (its Admitted reason): a job
    # whose reason is unchanged costs the cycle a dict lookup, not a look at its status.
    explained: Mapping[str, str] = field(default_factory=dict)
    stall_detection: bool = True  # a progress channel hears workers' heartbeats
    stall_warned: bool = False
    worker_env: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class PodToCreate:
    """An admission: the worker pod to create, and what the job becomes once it exists."""

    key: str
    pod: dict[str, Any]
    attempt: int
    memory: int
    admitted: Assessment
    waited_seconds: float  # added to the job's wait by this admission (for the metrics)
    notice: Notice | None  # the Event of a retry's admission


@dataclass(frozen=True)
class CyclePlan:
    # New assessments in the order decided (the last one per job wins); status writes follow.
    assessments: tuple[tuple[str, Assessment], ...] = ()
    phase_changed: tuple[str, ...] = ()  # their dependents are assessed again
    preempted: tuple[str, ...] = ()
    create: tuple[PodToCreate, ...] = ()
    # Worker pods that could not even be built: (job key, reason, message).
    refused: tuple[tuple[str, str, str], ...] = ()
    released: tuple[str, ...] = ()  # refused jobs whose hold is over
    confirm_pods: tuple[tuple[str, str], ...] = ()  # (job key, pod): ask the API server
    delete_jobs: tuple[str, ...] = ()  # TTL ran out
    delete_once_counted: tuple[str, ...] = ()  # TTL ran out; the statistics count them later
    queue_events: tuple[Notice, ...] = ()
    pressure: PressureState | None = None
    status_checked: bool = False  # the queue's status was computed (`queue_status`: its patch)
    queue_status: dict[str, Any] | None = None
    finalizers: list[str] | None = None
    stall_warned: bool = False
    explained: tuple[tuple[str, str], ...] = ()  # (job key, Admitted reason) now on its status
    pending_checked: bool = False  # spec.maxPending was checked (QueueView.new_jobs is done)
    # A slice of a larger cycle (QueueView.backlog): its statuses wait for the last slice,
    # which may still change them (why each job waits).
    partial: bool = False
    wake_at: float | None = None
