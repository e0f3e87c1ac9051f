"""The job state machine, one transition per row: a job as stored, its worker pods as a
kubelet reports them, its queue and the time in; its phase, attempts, memory, the pods to
stop, the Events and its place in the queue out.

Every row starts from what the API server would hold (builders in
`videoqueue.envtest.builders`) and calls `assess_job` as the controller does; `now` is 2
minutes after the job was created and its worker started, unless the row says otherwise.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import pytest

from videoqueue.api import JobPhase, find_condition, parse_quantity
from videoqueue.envtest.builders import T0, WORKER, MakeJob, MakePod, MakeQueue, at, condition, iso
from videoqueue.scheduling import JobState
from videoqueue.scheduling.jobs import Admission, admit, assess_job, preempt, reject

NOW = at(120)
RUNNING, FAILED, SUCCEEDED = JobPhase.RUNNING, JobPhase.FAILED, JobPhase.SUCCEEDED


def work_queue() -> MakeQueue:
    """Queue `work`: 8Gi budget (and max), 1Gi default request, 3 attempts, 10s x2 backoff."""
    queue = MakeQueue("work", "media").uid("queue-uid").default_request("1Gi")
    return queue.retry(3, initial_seconds=10, factor=2, max_seconds=600).template(WORKER)


def clip() -> MakeJob:
    """Job `clip` of queue `work`, created at T0, never assessed (no status)."""
    job = MakeJob("clip", "media", queue="work").uid("uid-clip").generation(1).created(T0)
    return job.type("probe")


@dataclass(frozen=True)
class Given:
    job: MakeJob
    queue: MakeQueue | None = field(default_factory=work_queue)
    pods: tuple[MakePod, ...] = ()
    now: datetime.datetime = NOW
    confirmed_missing: frozenset[str] = frozenset()
    dependencies: dict[str, JobPhase | None] | None = None
    cycle: tuple[str, ...] | None = None
    heard_at: datetime.datetime | None = None


@dataclass(frozen=True)
class Expect:
    phase: JobPhase
    attempt: int = 0
    # (attempt, reason) of each record in status.attempts; reason None while under way.
    attempts: tuple[tuple[int, str | None], ...] = ()
    memory: str | None = None  # status.effectiveMemory
    stop_pods: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()  # Event reasons
    view: JobState | None = None  # the job's state in its queue's admission; None: not in it
    eligible_in: float | None = None  # seconds until it may be admitted (backoff, startAfter)
    recheck_in: float | None = None  # seconds until it must be assessed again (deadlines)
    # A condition that must be on the job: (type, status, reason).
    condition: tuple[str, str, str] | None = None
    unconfirmed_pod: str | None = None


def pod(attempt: int = 1, memory: str = "1Gi", queue: MakeQueue | None = None) -> MakePod:
    """Worker pod of job `clip` for `attempt`, as the operator built it; Pending."""
    return MakePod(clip(), queue or work_queue(), attempt=attempt, memory=memory, admitted_at=T0)


def row(id_: str, given: Given, expect: Expect) -> object:
    return pytest.param(given, expect, id=id_)


ONE_ERROR = [{"attempt": 1, "pod": "clip-a1", "reason": "Error", "finishTime": iso(at(60))}]
QUEUE_MISSING = condition("QueueMissing", "True", "QueueNotFound")
SUSPENDED = condition("Suspended", "True", "Suspended")

WAITING_FOR_ADMISSION = [
    row(
        "new job -> Pending with the queue's default memory",
        Given(clip()),
        Expect(
            JobPhase.PENDING,
            memory="1Gi",
            view=JobState.PENDING,
            condition=("Admitted", "False", "Pending"),
        ),
    ),
    row(
        "new job asking 2Gi -> Pending with 2Gi",
        Given(clip().memory("2Gi")),
        Expect(JobPhase.PENDING, memory="2Gi", view=JobState.PENDING),
    ),
    row(
        "no such queue -> Pending, QueueMissing, out of the competition",
        Given(clip(), queue=None),
        Expect(JobPhase.PENDING, condition=("QueueMissing", "True", "QueueNotFound")),
    ),
    row(
        "queue created after all -> QueueMissing cleared, Pending",
        Given(clip().pending(conditions=[QUEUE_MISSING])),
        Expect(
            JobPhase.PENDING,
            memory="1Gi",
            view=JobState.PENDING,
            condition=("QueueMissing", "False", "QueueFound"),
        ),
    ),
    row(
        "asks more than memory.max -> Rejected MemoryExceedsMax",
        Given(clip().memory("6Gi"), queue=work_queue().max("4Gi")),
        Expect(
            JobPhase.REJECTED,
            memory="6Gi",
            notices=("Rejected",),
            condition=("Rejected", "True", "MemoryExceedsMax"),
        ),
    ),
    row(
        "pod with its sidecar over the whole budget -> Rejected PodExceedsBudget",
        Given(clip(), queue=work_queue().budget("4Gi").sidecar("4Gi")),
        Expect(
            JobPhase.REJECTED,
            memory="1Gi",
            notices=("Rejected",),
            condition=("Rejected", "True", "PodExceedsBudget"),
        ),
    ),
    row(
        "new job in a Draining queue -> Rejected QueueDraining",
        Given(clip(), queue=work_queue().state("Draining")),
        Expect(
            JobPhase.REJECTED,
            notices=("Rejected",),
            condition=("Rejected", "True", "QueueDraining"),
        ),
    ),
    row(
        "s3:// input, queue without spec.storage.s3 -> Rejected StorageNotConfigured",
        Given(clip().input("s3://media/in.mp4")),
        Expect(
            JobPhase.REJECTED,
            notices=("Rejected",),
            condition=("Rejected", "True", "StorageNotConfigured"),
        ),
    ),
    row(
        "s3:// output, storage removed while the job waited -> Rejected StorageNotConfigured",
        Given(clip().output("s3://media/out/").pending()),
        Expect(
            JobPhase.REJECTED,
            notices=("Rejected",),
            condition=("Rejected", "True", "StorageNotConfigured"),
        ),
    ),
    row(
        "s3:// input and output, queue with spec.storage.s3 -> Pending",
        Given(
            clip().input("s3://media/in.mp4").output("s3://media/out/"),
            queue=work_queue().s3_storage(endpoint="http://s3.media.internal:8333"),
        ),
        Expect(JobPhase.PENDING, memory="1Gi", view=JobState.PENDING),
    ),
    row(
        "job already waiting in a Draining queue -> still Pending",
        Given(clip().pending(), queue=work_queue().state("Draining")),
        Expect(JobPhase.PENDING, memory="1Gi", view=JobState.PENDING),
    ),
    row(
        "queue being deleted -> pending job Cancelled (QueueDeleted)",
        Given(clip().pending(), queue=work_queue().deleted()),
        Expect(
            JobPhase.CANCELLED,
            notices=("Cancelled",),
            condition=("Cancelled", "True", "QueueDeleted"),
        ),
    ),
    row(
        "startAfter still ahead -> Waiting, eligible then",
        Given(clip().start_after(at(600))),
        Expect(JobPhase.WAITING, memory="1Gi", view=JobState.PENDING, eligible_in=480),
    ),
    row(
        "startAfter passed -> Pending",
        Given(clip().start_after(at(60))),
        Expect(JobPhase.PENDING, memory="1Gi", view=JobState.PENDING),
    ),
    row(
        "backoff not over -> Backoff, eligible when it is",
        Given(clip().pending(attempts=ONE_ERROR, phase="Backoff", nextAttemptTime=iso(at(130)))),
        Expect(
            JobPhase.BACKOFF,
            attempt=1,
            attempts=((1, "Error"),),
            memory="1Gi",
            view=JobState.PENDING,
            eligible_in=10,
        ),
    ),
    row(
        "backoff over -> Pending",
        Given(clip().pending(attempts=ONE_ERROR, phase="Backoff", nextAttemptTime=iso(at(100)))),
        Expect(
            JobPhase.PENDING,
            attempt=1,
            attempts=((1, "Error"),),
            memory="1Gi",
            view=JobState.PENDING,
        ),
    ),
]

DEPENDENCIES = [
    row(
        "dependency still running -> Waiting for it, out of the competition",
        Given(clip().depends_on("encode"), dependencies={"encode": RUNNING}),
        Expect(
            JobPhase.WAITING,
            memory="1Gi",
            condition=("DependenciesMet", "False", "WaitingForDependencies"),
        ),
    ),
    row(
        "dependency not created yet -> Waiting for it",
        Given(clip().depends_on("encode"), dependencies={"encode": None}),
        Expect(JobPhase.WAITING, memory="1Gi"),
    ),
    row(
        "dependency failed -> Failed DependencyFailed",
        Given(clip().depends_on("encode"), dependencies={"encode": FAILED}),
        Expect(
            JobPhase.FAILED,
            memory="1Gi",
            notices=("DependencyFailed",),
            condition=("Failed", "True", "DependencyFailed"),
        ),
    ),
    row(
        "dependency cancelled -> Failed DependencyFailed",
        Given(clip().depends_on("encode"), dependencies={"encode": JobPhase.CANCELLED}),
        Expect(JobPhase.FAILED, memory="1Gi", notices=("DependencyFailed",)),
    ),
    row(
        "dependencies succeeded -> Pending, DependenciesMet",
        Given(
            clip().depends_on("encode", "probe"),
            dependencies={"encode": SUCCEEDED, "probe": SUCCEEDED},
        ),
        Expect(
            JobPhase.PENDING,
            memory="1Gi",
            view=JobState.PENDING,
            condition=("DependenciesMet", "True", "DependenciesSucceeded"),
        ),
    ),
    row(
        "dependency met once, then deleted -> still Pending (DependenciesMet sticks)",
        Given(
            clip()
            .depends_on("encode")
            .pending(conditions=[condition("DependenciesMet", "True", "DependenciesSucceeded")]),
            dependencies={"encode": None},
        ),
        Expect(JobPhase.PENDING, memory="1Gi", view=JobState.PENDING),
    ),
    row(
        "dependency cycle -> Failed DependencyCycle",
        Given(
            clip().depends_on("encode"),
            dependencies={"encode": JobPhase.WAITING},
            cycle=("clip", "encode", "clip"),
        ),
        Expect(
            JobPhase.FAILED,
            memory="1Gi",
            notices=("DependencyCycle",),
            condition=("Failed", "True", "DependencyCycle"),
        ),
    ),
]

RUNNING_ROWS = [
    row(
        "admitted, pod not started yet -> Admitted",
        Given(clip().admitted(), pods=(pod(),)),
        Expect(
            JobPhase.ADMITTED,
            attempt=1,
            attempts=((1, None),),
            memory="1Gi",
            view=JobState.ADMITTED,
            condition=("Running", "False", "WorkerStarting"),
        ),
    ),
    row(
        "pod running -> Running",
        Given(clip().admitted(), pods=(pod().running(),)),
        Expect(
            RUNNING,
            attempt=1,
            attempts=((1, None),),
            memory="1Gi",
            view=JobState.RUNNING,
            condition=("Running", "True", "WorkerRunning"),
        ),
    ),
    row(
        "pod of attempt 2 not on record (operator restarted) -> attempt 2 adopted, Running",
        Given(
            clip().pending(attempts=ONE_ERROR),
            pods=(pod(1).running().failed(), pod(2, "2Gi").running()),
        ),
        Expect(
            RUNNING,
            attempt=2,
            attempts=((1, "Error"), (2, None)),
            memory="2Gi",
            view=JobState.RUNNING,
        ),
    ),
    row(
        "pod being deleted but still running -> Running until it ends",
        Given(clip().running(), pods=(pod().running().deleted(),)),
        Expect(RUNNING, attempt=1, attempts=((1, None),), memory="1Gi", view=JobState.RUNNING),
    ),
    row(
        "worker succeeded -> Succeeded",
        Given(clip().running(), pods=(pod().running().succeeded(),)),
        Expect(
            SUCCEEDED,
            attempt=1,
            attempts=((1, "Completed"),),
            memory="1Gi",
            notices=(),  # the status says it: no Event for a first attempt's success
            condition=("Complete", "True", "Completed"),
        ),
    ),
    row(
        "worker of attempt 2 succeeded -> Succeeded, with an Event (after retries)",
        Given(
            clip().running(2, "2Gi", earlier="Error"),
            pods=(pod(2, "2Gi").running().succeeded(),),
        ),
        Expect(
            SUCCEEDED,
            attempt=2,
            attempts=((1, "Error"), (2, "Completed")),
            memory="2Gi",
            notices=("Completed",),
            condition=("Complete", "True", "Completed"),
        ),
    ),
    row(
        "worker succeeded before it was seen running -> Succeeded",
        Given(clip().admitted(), pods=(pod().succeeded(),)),
        Expect(
            SUCCEEDED,
            attempt=1,
            attempts=((1, "Completed"),),
            memory="1Gi",
            notices=(),
        ),
    ),
]

FAILURES = [
    row(
        "worker failed (exit 1) -> Backoff 10s, attempt used",
        Given(clip().running(), pods=(pod().running().failed(),)),
        Expect(
            JobPhase.BACKOFF,
            attempt=1,
            attempts=((1, "Error"),),
            memory="1Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=10,
            condition=("Running", "False", "Error"),
        ),
    ),
    row(
        "second failure -> Backoff 20s (the delay doubles)",
        Given(clip().running(2, earlier="Error"), pods=(pod(2).running().failed(),)),
        Expect(
            JobPhase.BACKOFF,
            attempt=2,
            attempts=((1, "Error"), (2, "Error")),
            memory="1Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=20,
        ),
    ),
    row(
        "job's own backoff overrides the queue's -> Backoff 60s",
        Given(clip().backoff(initial_seconds=60).running(), pods=(pod().running().failed(),)),
        Expect(
            JobPhase.BACKOFF,
            attempt=1,
            attempts=((1, "Error"),),
            memory="1Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=60,
        ),
    ),
    row(
        "last attempt fails -> Failed",
        Given(clip().running(3, earlier="Error"), pods=(pod(3).running().failed(),)),
        Expect(
            FAILED,
            attempt=3,
            attempts=((1, "Error"), (2, "Error"), (3, "Error")),
            memory="1Gi",
            notices=("Failed",),
            condition=("Failed", "True", "Error"),
        ),
    ),
    row(
        "job's maxAttempts 1 overrides the queue's 3 -> Failed after one failure",
        Given(clip().max_attempts(1).running(), pods=(pod().running().failed(),)),
        Expect(FAILED, attempt=1, attempts=((1, "Error"),), memory="1Gi", notices=("Failed",)),
    ),
    row(
        "worker found the job invalid (exit 2) -> Failed at once, InvalidJob",
        Given(clip().running(), pods=(pod().running().failed(2, "crf: not a number"),)),
        Expect(
            FAILED,
            attempt=1,
            attempts=((1, "Error"),),
            memory="1Gi",
            notices=("Failed",),
            condition=("Failed", "True", "InvalidJob"),
        ),
    ),
    row(
        "pod past its own activeDeadlineSeconds (kubelet) -> Backoff, attempt DeadlineExceeded",
        Given(clip().running(), pods=(pod().running().past_its_deadline(),)),
        Expect(
            JobPhase.BACKOFF,
            attempt=1,
            attempts=((1, "DeadlineExceeded"),),
            memory="1Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=10,
        ),
    ),
]

MEMORY = [
    row(
        "running pod OOMKilled -> Backoff with 2x memory",
        Given(clip().running(), pods=(pod().running().oom_killed(),)),
        Expect(
            JobPhase.BACKOFF,
            attempt=1,
            attempts=((1, "OOMKilled"),),
            memory="2Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=10,
        ),
    ),
    row(
        "OOMKilled again -> grows from the grown memory (4Gi)",
        Given(
            clip().running(2, "2Gi", earlier="OOMKilled"),
            pods=(pod(2, "2Gi").running().oom_killed(),),
        ),
        Expect(
            JobPhase.BACKOFF,
            attempt=2,
            attempts=((1, "OOMKilled"), (2, "OOMKilled")),
            memory="4Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=20,
        ),
    ),
    row(
        "OOMKilled with a 3x multiplier -> 3x memory",
        Given(
            clip().running(),
            queue=work_queue().oom_multiplier(3),
            pods=(pod().running().oom_killed(),),
        ),
        Expect(
            JobPhase.BACKOFF,
            attempt=1,
            attempts=((1, "OOMKilled"),),
            memory="3Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=10,
        ),
    ),
    row(
        "OOMKilled at 3Gi under memory.max 4Gi -> Backoff with 4Gi, not 6Gi",
        Given(
            clip().running(memory="3Gi"),
            queue=work_queue().max("4Gi"),
            pods=(pod(memory="3Gi").running().oom_killed(),),
        ),
        Expect(
            JobPhase.BACKOFF,
            attempt=1,
            attempts=((1, "OOMKilled"),),
            memory="4Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=10,
        ),
    ),
    row(
        "OOMKilled at 3Gi beside a 4Gi sidecar in 8Gi -> 4Gi, as much as the pod still fits",
        Given(
            clip().running(memory="3Gi"),
            queue=work_queue().sidecar("4Gi"),
            pods=(pod(memory="3Gi", queue=work_queue().sidecar("4Gi")).running().oom_killed(),),
        ),
        Expect(
            JobPhase.BACKOFF,
            attempt=1,
            attempts=((1, "OOMKilled"),),
            memory="4Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=10,
        ),
    ),
    row(
        "OOMKilled on the last attempt -> Failed, memory not grown",
        Given(clip().running(3, earlier="Error"), pods=(pod(3).running().oom_killed(),)),
        Expect(
            FAILED,
            attempt=3,
            attempts=((1, "Error"), (2, "Error"), (3, "OOMKilled")),
            memory="1Gi",
            notices=("Failed",),
            condition=("Failed", "True", "OOMKilled"),
        ),
    ),
    row(
        "memory over memory.max after OOM growth (max lowered since) -> Rejected",
        Given(
            clip().pending(
                attempts=[
                    {"attempt": 1, "reason": "OOMKilled", "memory": "1Gi", "finishTime": iso(T0)}
                ],
                effectiveMemory="2Gi",
            ),
            queue=work_queue().max("1Gi"),
        ),
        Expect(
            JobPhase.REJECTED,
            attempt=1,
            attempts=((1, "OOMKilled"),),
            memory="2Gi",
            notices=("Rejected",),
            condition=("Rejected", "True", "MemoryExceedsMax"),
        ),
    ),
    row(
        "grown memory on record but no OOM kill -> the job's own memory",
        Given(clip().memory("512Mi").pending(effectiveMemory="2Gi")),
        Expect(JobPhase.PENDING, memory="512Mi", view=JobState.PENDING),
    ),
]

DEADLINES = [
    row(
        "deadline passed -> pod stopped, attempt DeadlineExceeded",
        Given(clip().running(), queue=work_queue().deadline(100), pods=(pod().running(),)),
        Expect(
            JobPhase.BACKOFF,
            attempt=1,
            attempts=((1, "DeadlineExceeded"),),
            memory="1Gi",
            stop_pods=("clip-a1",),
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=10,
        ),
    ),
    row(
        "deadline ahead -> Running, assessed again at the deadline",
        Given(clip().running(), queue=work_queue().deadline(300), pods=(pod().running(),)),
        Expect(
            RUNNING,
            attempt=1,
            attempts=((1, None),),
            memory="1Gi",
            view=JobState.RUNNING,
            recheck_in=180,
        ),
    ),
    row(
        "job's own deadline overrides the queue's -> pod stopped",
        Given(
            clip().deadline(60).running(),
            queue=work_queue().deadline(1000),
            pods=(pod().running(),),
        ),
        Expect(
            JobPhase.BACKOFF,
            attempt=1,
            attempts=((1, "DeadlineExceeded"),),
            memory="1Gi",
            stop_pods=("clip-a1",),
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=10,
        ),
    ),
    row(
        "deadline passed on the last attempt -> Failed, pod stopped",
        Given(
            clip().running(3, earlier="Error"),
            queue=work_queue().deadline(100),
            pods=(pod(3).running(),),
        ),
        Expect(
            FAILED,
            attempt=3,
            attempts=((1, "Error"), (2, "Error"), (3, "DeadlineExceeded")),
            memory="1Gi",
            stop_pods=("clip-a3",),
            notices=("Failed",),
        ),
    ),
    row(
        "deadline does not run while the pod waits for a node -> Admitted",
        Given(clip().admitted(), queue=work_queue().deadline(100), pods=(pod(),)),
        Expect(
            JobPhase.ADMITTED,
            attempt=1,
            attempts=((1, None),),
            memory="1Gi",
            view=JobState.ADMITTED,
        ),
    ),
    row(
        "no heartbeat for progressDeadlineSeconds -> pod stopped, attempt Stalled",
        Given(
            clip().running(),
            queue=work_queue().progress_deadline(60),
            pods=(pod().running(),),
            heard_at=at(30),
        ),
        Expect(
            JobPhase.BACKOFF,
            attempt=1,
            attempts=((1, "Stalled"),),
            memory="1Gi",
            stop_pods=("clip-a1",),
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=10,
        ),
    ),
    row(
        "recent heartbeat -> Running, assessed again when it would stall",
        Given(
            clip().running(),
            queue=work_queue().progress_deadline(60),
            pods=(pod().running(),),
            heard_at=at(100),
        ),
        Expect(
            RUNNING,
            attempt=1,
            attempts=((1, None),),
            memory="1Gi",
            view=JobState.RUNNING,
            recheck_in=40,
        ),
    ),
    row(
        "progress channel down -> stall detection off, Running",
        Given(
            clip().running(),
            queue=work_queue().progress_deadline(60),
            pods=(pod().running(),),
            heard_at=None,
        ),
        Expect(RUNNING, attempt=1, attempts=((1, None),), memory="1Gi", view=JobState.RUNNING),
    ),
]

DISRUPTIONS = [
    row(
        "pod gone, not yet confirmed -> status untouched, the caller looks again",
        Given(clip().running()),
        Expect(
            RUNNING,
            attempt=1,
            attempts=((1, None),),
            memory="1Gi",
            unconfirmed_pod="clip-a1",
        ),
    ),
    row(
        "disrupted pod (node gone) -> requeued without using an attempt",
        Given(clip().running(), confirmed_missing=frozenset({"clip-a1"})),
        Expect(
            JobPhase.PENDING,
            attempt=1,
            attempts=((1, "Disrupted"),),
            memory="1Gi",
            notices=("Disrupted",),
            view=JobState.PENDING,
        ),
    ),
    row(
        "pod evicted (DisruptionTarget) -> requeued at once, no attempt used",
        Given(clip().running(), pods=(pod().running().evicted(),)),
        Expect(
            JobPhase.PENDING,
            attempt=1,
            attempts=((1, "Evicted"),),
            memory="1Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
        ),
    ),
    row(
        "evicted on the last attempt -> requeued all the same",
        Given(clip().running(3, earlier="Error"), pods=(pod(3).running().evicted(),)),
        Expect(
            JobPhase.PENDING,
            attempt=3,
            attempts=((1, "Error"), (2, "Error"), (3, "Evicted")),
            memory="1Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
        ),
    ),
    row(
        "evicted twice, then its one attempt fails -> Failed on attempt 3",
        Given(
            clip().max_attempts(1).running(3, earlier="Evicted"),
            pods=(pod(3).running().failed(),),
        ),
        Expect(
            FAILED,
            attempt=3,
            attempts=((1, "Evicted"), (2, "Evicted"), (3, "Error")),
            memory="1Gi",
            notices=("Failed",),
        ),
    ),
    row(
        "node turned the pod away before the worker ran -> requeued, no attempt used",
        Given(clip().admitted(), pods=(pod().refused_by_node(),)),
        Expect(
            JobPhase.PENDING,
            attempt=1,
            attempts=((1, "Disrupted"),),
            memory="1Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
        ),
    ),
]

CANCEL_AND_SUSPEND = [
    row(
        "cancel while pending -> Cancelled, no pod",
        Given(clip().cancel().pending()),
        Expect(
            JobPhase.CANCELLED,
            notices=("Cancelled",),
            condition=("Cancelled", "True", "Cancelled"),
        ),
    ),
    row(
        "cancel while running -> Cancelled, pod stopped, attempt Cancelled",
        Given(clip().cancel().running(), pods=(pod().running(),)),
        Expect(
            JobPhase.CANCELLED,
            attempt=1,
            attempts=((1, "Cancelled"),),
            memory="1Gi",
            stop_pods=("clip-a1",),
            notices=("Cancelled",),
        ),
    ),
    row(
        "cancel while the pod waits for a node -> Cancelled, pod stopped",
        Given(clip().cancel().admitted(), pods=(pod(),)),
        Expect(
            JobPhase.CANCELLED,
            attempt=1,
            attempts=((1, "Cancelled"),),
            memory="1Gi",
            stop_pods=("clip-a1",),
            notices=("Cancelled",),
        ),
    ),
    row(
        "cancel after the worker succeeded -> Succeeded (the outcome stands)",
        Given(clip().cancel().running(), pods=(pod().running().succeeded(),)),
        Expect(
            SUCCEEDED,
            attempt=1,
            attempts=((1, "Completed"),),
            memory="1Gi",
            notices=(),
        ),
    ),
    row(
        "suspended while pending -> Waiting, out of the competition",
        Given(clip().suspend().pending()),
        Expect(
            JobPhase.WAITING,
            notices=("Suspended",),
            condition=("Suspended", "True", "Suspended"),
        ),
    ),
    row(
        "suspended while running -> pod stopped, attempt Suspended, Waiting",
        Given(clip().suspend().running(), pods=(pod().running(),)),
        Expect(
            JobPhase.WAITING,
            attempt=1,
            attempts=((1, "Suspended"),),
            memory="1Gi",
            stop_pods=("clip-a1",),
            notices=("Suspended",),
        ),
    ),
    row(
        "suspended on the last attempt -> stopped without using it up",
        Given(clip().suspend().running(3, earlier="Error"), pods=(pod(3).running(),)),
        Expect(
            JobPhase.WAITING,
            attempt=3,
            attempts=((1, "Error"), (2, "Error"), (3, "Suspended")),
            memory="1Gi",
            stop_pods=("clip-a3",),
            notices=("Suspended",),
        ),
    ),
    row(
        "still suspended -> Waiting, no second Suspended event",
        Given(clip().suspend().pending(phase="Waiting", conditions=[SUSPENDED])),
        Expect(JobPhase.WAITING),
    ),
    row(
        "resumed -> Pending, Resumed event",
        Given(clip().pending(phase="Waiting", conditions=[SUSPENDED])),
        Expect(
            JobPhase.PENDING,
            memory="1Gi",
            notices=("Resumed",),
            view=JobState.PENDING,
            condition=("Suspended", "False", "Resumed"),
        ),
    ),
]

RETRY_AND_TERMINAL = [
    row(
        "retry annotation on Failed -> Pending with a fresh budget",
        Given(clip().retry_requested().finished("Failed", 3)),
        Expect(
            JobPhase.PENDING,
            attempt=3,
            attempts=((1, "Error"), (2, "Error"), (3, "Error")),
            memory="1Gi",
            notices=("RetryRequested",),
            view=JobState.PENDING,
            condition=("Failed", "False", "RetryRequested"),
        ),
    ),
    row(
        "retried job fails once more -> Backoff 10s, not Failed (the fresh budget)",
        Given(
            clip()
            .retry_requested()
            .running(4, earlier="Error", manualRetry={"request": "1", "afterAttempt": 3}),
            pods=(pod(4).running().failed(),),
        ),
        Expect(
            JobPhase.BACKOFF,
            attempt=4,
            attempts=((1, "Error"), (2, "Error"), (3, "Error"), (4, "Error")),
            memory="1Gi",
            notices=("Retrying",),
            view=JobState.PENDING,
            eligible_in=10,
        ),
    ),
    row(
        "retry annotation already acted on -> stays Failed",
        Given(
            clip()
            .retry_requested()
            .finished("Failed", 3)
            .status(
                phase="Failed",
                attempt=3,
                manualRetry={"request": "1", "afterAttempt": 0},
            )
        ),
        Expect(FAILED, attempt=3),
    ),
    row(
        "retry annotation on Succeeded -> stays Succeeded",
        Given(clip().retry_requested().finished("Succeeded", 1, "Completed")),
        Expect(SUCCEEDED, attempt=1, attempts=((1, "Completed"),)),
    ),
    row(
        "retry annotation on Cancelled -> stays Cancelled",
        Given(clip().retry_requested().finished("Cancelled", 1, "Cancelled")),
        Expect(JobPhase.CANCELLED, attempt=1, attempts=((1, "Cancelled"),)),
    ),
    row(
        "retry annotation on a running job -> ignored, Running",
        Given(clip().retry_requested().running(), pods=(pod().running(),)),
        Expect(RUNNING, attempt=1, attempts=((1, None),), memory="1Gi", view=JobState.RUNNING),
    ),
    row(
        "Succeeded job with a pod still running -> unchanged",
        Given(clip().finished("Succeeded", 1, "Completed"), pods=(pod().running(),)),
        Expect(SUCCEEDED, attempt=1, attempts=((1, "Completed"),)),
    ),
    row(
        "Failed job cancelled afterwards -> stays Failed",
        Given(clip().cancel().finished("Failed", 3)),
        Expect(FAILED, attempt=3, attempts=((1, "Error"), (2, "Error"), (3, "Error"))),
    ),
    row(
        "Rejected job whose memory.max was raised -> stays Rejected",
        Given(
            clip().memory("6Gi").finished("Rejected", 0),
            queue=work_queue().max("8Gi"),
        ),
        Expect(JobPhase.REJECTED),
    ),
]


@pytest.mark.parametrize(
    ("given", "expect"),
    [
        *WAITING_FOR_ADMISSION,
        *DEPENDENCIES,
        *RUNNING_ROWS,
        *FAILURES,
        *MEMORY,
        *DEADLINES,
        *DISRUPTIONS,
        *CANCEL_AND_SUSPEND,
        *RETRY_AND_TERMINAL,
    ],
)
def test_job_state(given: Given, expect: Expect) -> None:
    queue = given.queue.model() if given.queue is not None else None

    assessment = assess_job(
        given.job.model(),
        [p.outcome() for p in given.pods],
        queue,
        given.now,
        confirmed_missing=given.confirmed_missing,
        dependencies=given.dependencies,
        heard_at=given.heard_at,
        cycle=given.cycle,
    )

    status = assessment.status
    assert status.phase == expect.phase, status.message
    assert status.attempt == expect.attempt
    assert tuple((r.attempt, r.reason) for r in status.attempts) == expect.attempts
    assert status.effective_memory == expect.memory
    assert assessment.stop_pods == expect.stop_pods
    assert tuple(n.reason for n in assessment.notices) == expect.notices
    assert assessment.unconfirmed_pod == expect.unconfirmed_pod
    assert assessment.terminal == (expect.phase.is_terminal and expect.unconfirmed_pod is None)
    view = assessment.view
    assert (view.state if view is not None else None) == expect.view
    if view is not None:
        assert view.memory == parse_quantity(status.effective_memory or "0")
        eligible_at = view.eligible_at
        assert eligible_at == (
            None if expect.eligible_in is None else (given.now.timestamp() + expect.eligible_in)
        )
    waits_for = status.next_attempt_time or (given.job.model().spec.start_after)
    if expect.eligible_in is not None:
        assert waits_for == given.now + datetime.timedelta(seconds=expect.eligible_in)
    recheck = None if expect.recheck_in is None else given.now.timestamp() + expect.recheck_in
    assert (assessment.recheck_at.timestamp() if assessment.recheck_at else None) == recheck
    if expect.condition is not None:
        type_, value, reason = expect.condition
        found = find_condition(status.conditions, type_)
        assert found is not None, status.conditions
        assert (found.status, found.reason) == (value, reason)


# --- The other transitions: admission, preemption, rejection by the queue -------------------


def test_admission_records_the_attempt_its_pod_and_memory() -> None:
    waiting = assess_job(clip().memory("2Gi").model(), [], work_queue().model(), NOW)
    assert waiting.view is not None

    status = admit(
        waiting.status,
        pod_name="clip-a1",
        admission=Admission(attempt=1, memory=waiting.view.memory),
        now=at(130),
        generation=1,
    )

    assert (status.phase, status.attempt, status.effective_memory) == (
        JobPhase.ADMITTED,
        1,
        "2Gi",
    )
    assert [(r.attempt, r.pod, r.memory, r.reason) for r in status.attempts] == [
        (1, "clip-a1", "2Gi", None)
    ]
    assert status.admitted_time == at(130)
    assert status.wait_seconds == 130  # queued when created, at T0
    admitted = find_condition(status.conditions, "Admitted")
    assert admitted is not None
    assert (admitted.status, admitted.reason) == ("True", "Admitted")


def test_preempted_job_is_requeued_at_its_place_without_using_an_attempt() -> None:
    job = clip().running().model()
    running = assess_job(job, [pod().running().outcome()], work_queue().model(), NOW)

    preempted = preempt(job, running, "clip-a1", "media/urgent", NOW)

    status = preempted.status
    assert status.phase == JobPhase.PENDING
    assert [(r.attempt, r.reason) for r in status.attempts] == [(1, "Preempted")]
    assert status.next_attempt_time is None
    assert preempted.stop_pods == ("clip-a1",)
    assert [n.reason for n in preempted.notices] == ["Preempted"]
    assert preempted.view is not None
    assert preempted.view.state is JobState.PENDING
    assert running.view is not None
    assert preempted.view.created_at == running.view.created_at  # its old place in the order


def test_job_turned_away_by_its_queue_is_rejected_for_good() -> None:
    job = clip().model()
    waiting = assess_job(job, [], work_queue().model(), NOW)

    rejected = reject(job, waiting.status, "QueueFull", "the queue holds 100 pending jobs", NOW)

    assert (rejected.status.phase, rejected.terminal, rejected.view) == (
        JobPhase.REJECTED,
        True,
        None,
    )
    assert [n.reason for n in rejected.notices] == ["Rejected"]
    stalled = find_condition(rejected.status.conditions, "Stalled")
    assert stalled is not None
    assert (stalled.status, stalled.reason) == ("True", "QueueFull")
