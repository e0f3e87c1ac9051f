"""Properties of the job state machine over random sequences of events.

`JobWorld` holds one job, its worker pods and its queue, and plays the controller's part
(`controller/loop.py`): after every event it assesses the job (`assess_job`), stores the
status, deletes the pods in `stop_pods`, and on an admission builds the worker
pod `<job>-a<n>` (`build_worker_pod`) and records it (`admit`). Events are what the world
does to a job: its pod starts, ends in one of many ways or vanishes, time passes, the user
cancels, suspends, resumes or asks for a retry, the queue's memory.max changes, a more
urgent job preempts it. After every event the invariants of the state machine are checked.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Literal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from videoqueue.api import JobPhase, VideoJobStatus, find_condition, parse_quantity
from videoqueue.envtest.builders import T0, WORKER, MakeJob, MakePod, MakeQueue, at
from videoqueue.scheduling import JobState, Snapshot, consumes_attempt, decide_admissions
from videoqueue.scheduling.jobs import (
    MAX_HISTORY,
    Admission,
    Assessment,
    admit,
    assess_job,
    preempt,
    queue_policy,
)
from videoqueue.scheduling.worker_pod import build_worker_pod

PROPERTIES = settings(max_examples=200, deadline=None)
# Each attempt takes at least two events (admit, end), so 40 events make at most 20 attempts:
# status.attempts (MAX_HISTORY) then holds the whole history. Longer lives are the subject
# of `test_a_failing_job_gets_exactly_max_attempts_whatever_the_disruptions`.
MAX_EVENTS = 40
KEY = "media/clip"


def work_queue() -> MakeQueue:
    """Queue `work`: 8Gi budget (and max), 1Gi default request, 3 attempts, 10s x2 backoff."""
    queue = MakeQueue("work", "media").uid("queue-uid").default_request("1Gi")
    return queue.retry(3, initial_seconds=10, factor=2, max_seconds=600).template(WORKER)


def clip() -> MakeJob:
    """Job `clip` of queue `work`, created at T0, never assessed (no status)."""
    job = MakeJob("clip", "media", queue="work").uid("uid-clip").generation(1).created(T0)
    return job.type("probe")


def _pod_status(pod: MakePod) -> dict[str, Any]:
    status: dict[str, Any] = pod.obj().get("status") or {}
    return status


def pod_started(pod: MakePod) -> bool:
    """The worker container has run (it runs, or it ran and terminated)."""
    statuses: list[dict[str, Any]] = _pod_status(pod).get("containerStatuses") or []
    return any(s["state"].get("running") or s["state"].get("terminated") for s in statuses)


def pod_finished(pod: MakePod) -> bool:
    return _pod_status(pod).get("phase") in ("Succeeded", "Failed")


def pod_deleted(pod: MakePod) -> bool:
    return "deletionTimestamp" in pod.obj()["metadata"]


PodEnd = Literal["succeed", "fail", "invalid", "oom", "evicted", "refused", "pod-deadline"]


@dataclass(frozen=True)
class Admit:
    """The queue decides (`decide_admissions` on a snapshot of this job alone)."""


@dataclass(frozen=True)
class Start:
    which: int  # 0: the newest pod, 1: the one before, ...


@dataclass(frozen=True)
class End:
    which: int
    how: PodEnd


@dataclass(frozen=True)
class Vanish:
    """The pod object is gone: its deletion completed, or its node went away."""

    which: int


@dataclass(frozen=True)
class Wait:
    seconds: int


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Suspend:
    suspend: bool


@dataclass(frozen=True)
class Retry:
    """The user sets a new value on the videoqueue.dev/retry annotation."""


@dataclass(frozen=True)
class SetMax:
    memory: str


@dataclass(frozen=True)
class Preempt:
    """A more urgent job takes the place of this one while it is admitted or running."""


Event = Admit | Start | End | Vanish | Wait | Cancel | Suspend | Retry | SetMax | Preempt


@dataclass
class JobWorld:
    job: MakeJob
    queue: MakeQueue
    max_attempts: int
    now: datetime.datetime = field(default_factory=lambda: at(0))
    pods: dict[str, MakePod] = field(default_factory=dict)  # the index: the pods that exist
    created: list[str] = field(default_factory=list)  # every worker pod ever created
    ended: dict[int, str] = field(default_factory=dict)  # attempt -> reason it ended with
    retry_after: int = 0  # attempts up to this one were before the last effective retry
    retry_requests: int = 0
    assessment: Assessment | None = None

    @property
    def status(self) -> VideoJobStatus:
        return self.job.model().status

    @property
    def phase(self) -> JobPhase | None:
        return self.status.phase

    def pod(self, which: int) -> MakePod | None:
        """The `which`-th newest pod that exists, cycling; None if there is none."""
        names = sorted(self.pods, key=lambda name: int(name.rsplit("-a", 1)[1]))
        return self.pods[names[-1 - which % len(names)]] if names else None

    # -- the controller's part ------------------------------------------------------------

    def reconcile(self) -> Assessment:
        """Assess the job as `Controller._assess` does and store what it decided."""
        outcomes = [pod.outcome() for pod in self.pods.values()]
        job, queue = self.job.model(), self.queue.model()
        assessment = assess_job(job, outcomes, queue, self.now)
        if assessment.unconfirmed_pod is not None:
            # The index is the truth here: a pod not in it is gone.
            gone = frozenset({assessment.unconfirmed_pod})
            assessment = assess_job(job, outcomes, queue, self.now, confirmed_missing=gone)
        self.apply(assessment)
        return assessment

    def apply(self, assessment: Assessment) -> None:
        self.job.status(assessment.status.to_dict())
        for name in assessment.stop_pods:
            if name in self.pods:
                self.pods[name].deleted(self.now)
        self.assessment = assessment
        for record in assessment.status.attempts:
            if record.finish_time is not None and record.reason is not None:
                self.ended.setdefault(record.attempt, record.reason)

    def try_admit(self) -> None:
        """Admit the job if the queue would, as `Controller.reconcile_queue` and `_admit`."""
        assessment = self.reconcile()
        view = assessment.view
        if view is None or view.state is not JobState.PENDING:
            return
        queue = self.queue.model()
        snapshot = Snapshot(queue_policy(queue), (view,), stopping=assessment.stopping)
        if KEY not in decide_admissions(snapshot, self.now.timestamp()).admit:
            return
        attempt = assessment.status.attempt + 1
        pod = build_worker_pod(
            self.job.obj(),
            self.queue.obj(),
            attempt=attempt,
            memory_bytes=view.memory,
            now_iso=self.now.isoformat(),
        )
        name = pod["metadata"]["name"]
        assert name not in self.created, f"attempt {attempt} started twice: {self.created}"
        assert view.memory <= queue.spec.memory.max_bytes, "admitted over memory.max"
        self.created.append(name)
        self.pods[name] = MakePod.of(pod)
        status = admit(
            assessment.status,
            pod_name=name,
            admission=Admission(attempt=attempt, memory=view.memory),
            now=self.now,
            generation=1,
        )
        self.apply(Assessment(status=status, view=None))
        self.reconcile()  # the controller assesses again from the pod before deciding

    # -- the world's part -------------------------------------------------------------------

    def happen(self, event: Event) -> None:
        match event:
            case Admit():
                self.try_admit()
                return
            case Start(which):
                pod = self.pod(which)
                if pod is not None and not pod_finished(pod) and not pod_started(pod):
                    pod.running(self.now)
            case End(which, how):
                pod = self.pod(which)
                if pod is not None and not pod_finished(pod):
                    self.end(pod, how)
            case Vanish(which):
                pod = self.pod(which)
                if pod is not None:
                    del self.pods[pod.name]
            case Wait(seconds):
                self.now += datetime.timedelta(seconds=seconds)
            case Cancel():
                self.job.cancel()
            case Suspend(suspend):
                self.job.suspend(suspend)
            case Retry():
                self.retry_requests += 1
                self.job.retry_requested(str(self.retry_requests))
            case SetMax(memory):
                self.queue.max(memory)
            case Preempt():
                self.preempt()
                return
        self.reconcile()

    def end(self, pod: MakePod, how: PodEnd) -> None:
        finished = self.now
        match how:
            case "succeed":
                pod.terminated(0, "Completed", finished=finished)
            case "fail":
                pod.terminated(1, "Error", message="ffmpeg failed", finished=finished)
            case "invalid":
                pod.terminated(2, "Error", message="bad params", finished=finished)
            case "oom":
                pod.terminated(137, "OOMKilled", finished=finished)
            case "evicted":
                pod.evicted(finished=finished)
            case "refused":
                if not pod_started(pod):
                    pod.refused_by_node()
            case "pod-deadline":
                pod.past_its_deadline(finished)

    def preempt(self) -> None:
        """As `Controller._preempt`, for a job the admission decision chose as a victim."""
        assessment = self.reconcile()
        view = assessment.view
        if view is None or view.state is JobState.PENDING:
            return
        pod = f"clip-a{assessment.status.attempt}"
        queue = self.queue.model()
        self.apply(preempt(self.job.model(), assessment, pod, "media/urgent", self.now, queue))


# --- Invariants ------------------------------------------------------------------------------


def check_step(world: JobWorld, event: Event, before: VideoJobStatus) -> None:
    status = world.status
    queue = world.queue.model()
    memory_max = queue.spec.memory.max_bytes

    # Every attempt number is used once, in order, and the status knows every pod.
    assert world.created == [f"clip-a{n}" for n in range(1, len(world.created) + 1)]
    assert status.attempt == len(world.created), (status.attempt, world.created)

    # A finished job stays finished; only a retry brings a Failed one back.
    if before.phase is not None and before.phase.is_terminal:
        if isinstance(event, Retry) and before.phase == JobPhase.FAILED:
            assert status.manual_retry is not None
            assert status.manual_retry.after_attempt == before.attempt
            world.retry_after = before.attempt
        else:
            assert status.phase == before.phase, f"{before.phase} -> {status.phase} on {event}"

    # Memory never grows past memory.max, and a job that waits for admission fits it.
    grown_from = parse_quantity(before.effective_memory) if before.effective_memory else None
    now_memory = parse_quantity(status.effective_memory) if status.effective_memory else None
    if grown_from is not None and now_memory is not None and now_memory > grown_from:
        assert now_memory <= memory_max, (before.effective_memory, status.effective_memory)
    view = world.assessment.view if world.assessment is not None else None
    if view is not None and view.state is JobState.PENDING:
        assert view.memory <= memory_max

    # Attempts that are the job's fault never exceed maxAttempts; disruptions come on top.
    since_retry = {n: r for n, r in world.ended.items() if n > world.retry_after}
    used = sum(1 for reason in since_retry.values() if consumes_attempt(reason))
    disruptions = len(since_retry) - used
    assert used <= world.max_attempts, world.ended
    assert len(world.created) - world.retry_after <= world.max_attempts + disruptions
    # ... and a job fails for want of attempts only once it has used them all.
    if status.phase == JobPhase.FAILED and before.phase != JobPhase.FAILED:
        failed = find_condition(status.conditions, "Failed")
        assert failed is not None
        assert failed.reason == "InvalidJob" or used == world.max_attempts, (failed, world.ended)

    # One worker at a time: a job admitted or running has its pod; no other pod still works.
    working = [
        name for name, pod in world.pods.items() if not pod_finished(pod) and not pod_deleted(pod)
    ]
    assert len(working) <= 1, working
    if status.phase in (JobPhase.ADMITTED, JobPhase.RUNNING):
        assert working == [f"clip-a{status.attempt}"], (status.phase, working)

    # The status stays small and is one the API server accepts.
    assert len(status.attempts) <= MAX_HISTORY
    VideoJobStatus.model_validate(status.to_dict())


def live(world: JobWorld, events: list[Event]) -> JobWorld:
    world.reconcile()
    for event in events:
        before = world.status
        world.happen(event)
        check_step(world, event, before)
    return world


# --- Strategies ------------------------------------------------------------------------------

which = st.sampled_from([0, 0, 0, 1])
ends = st.sampled_from(["succeed", "fail", "fail", "invalid", "oom", "oom", "oom", "evicted"]) | (
    st.sampled_from(["refused", "pod-deadline"])
)
# What keeps a job's life going (admissions, workers, time) often; what ends it early rarely.
common: st.SearchStrategy[Event] = st.one_of(
    st.just(Admit()),
    st.builds(Start, which),
    st.builds(Start, which),
    st.builds(End, which, ends),
    st.builds(Wait, st.sampled_from([1, 10, 30, 100, 1000])),
)
rare: st.SearchStrategy[Event] = st.one_of(
    st.builds(Vanish, which),
    st.just(Cancel()),
    st.builds(Suspend, st.booleans()),
    st.just(Retry()),
    st.builds(SetMax, st.sampled_from(["1Gi", "2Gi", "3Gi", "4Gi", "8Gi"])),
    st.just(Preempt()),
)
events = st.integers(0, 11).flatmap(lambda n: rare if n == 0 else common)


@st.composite
def worlds(draw: st.DrawFn) -> JobWorld:
    max_attempts = draw(st.sampled_from([1, 2, 3, 5]))
    queue = (
        work_queue()
        .default_request("512Mi")
        .max_attempts(max_attempts)
        .oom_multiplier(draw(st.sampled_from([1.5, 2.0, 4.0])))
    )
    if draw(st.booleans()):
        queue.deadline(300)
    if draw(st.booleans()):
        queue.max(draw(st.sampled_from(["1Gi", "4Gi"])))
    if draw(st.booleans()):
        queue.sidecar("1Gi")
    job = clip().memory(draw(st.sampled_from(["512Mi", "1Gi", "1Gi", "3Gi"])))
    return JobWorld(job, queue, max_attempts)


@PROPERTIES
@given(worlds(), st.lists(events, min_size=10, max_size=MAX_EVENTS))
def test_job_state_machine_keeps_its_invariants(world: JobWorld, happenings: list[Event]) -> None:
    live(world, happenings)


# --- Long lives: more attempts than status.attempts keeps -----------------------------------


def run_attempts(world: JobWorld, ends: list[PodEnd]) -> None:
    """Admit the job, start its worker and end it as `ends` says, attempt after attempt
    (waiting out the backoff), while it is not finished; check every step."""
    world.reconcile()
    for how in ends:
        if world.phase is not None and world.phase.is_terminal:
            return
        for event in (Admit(), Start(0), End(0, how), Wait(1000)):
            before = world.status
            world.happen(event)
            check_step(world, event, before)


@PROPERTIES
@given(
    st.integers(1, 30),
    st.lists(st.sampled_from(["fail", "fail", "evicted"]), max_size=60),
)
@example(max_attempts=21, ends=["fail"] * 21)
@example(max_attempts=2, ends=["fail", *["evicted"] * 19, "fail", "fail"])
def test_a_failing_job_gets_exactly_max_attempts_whatever_the_disruptions(
    max_attempts: int, ends: list[PodEnd]
) -> None:
    world = JobWorld(clip(), work_queue().max_attempts(max_attempts), max_attempts)

    run_attempts(world, ends)

    failures = ends.count("fail")
    if failures >= max_attempts:
        assert world.phase == JobPhase.FAILED
        assert sum(1 for r in world.ended.values() if r == "Error") == max_attempts
