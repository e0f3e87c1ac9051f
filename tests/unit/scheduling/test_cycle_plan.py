"""`plan_cycle`: a queue's whole cycle decided from plain objects, no API client, no clock.
Each test builds a `QueueView` as the controller's index would and reads the `CyclePlan`."""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field
from typing import Any

import pytest

from videoqueue.api import JobConditionType, JobPhase, VideoJob, VideoJobStatus, find_condition
from videoqueue.envtest.builders import WORKER, MakeJob, MakePod, MakeQueue, iso
from videoqueue.scheduling import cycle
from videoqueue.scheduling.cycle import CyclePlan, JobFacts, QueueView, plan_cycle
from videoqueue.scheduling.cycle_rules import QUEUE_FINALIZER
from videoqueue.scheduling.jobs import Assessment, assess_job
from videoqueue.scheduling.jobs.model import parse_time
from videoqueue.scheduling.sizing import sizing_key

NS = "media"
T0 = datetime.datetime(2026, 1, 1, 10, 0, tzinfo=datetime.UTC)
NOW = T0 + datetime.timedelta(minutes=5)


@dataclass
class Job:
    """A job as the index holds it (satisfies `IndexedJob`)."""

    body: dict[str, Any]
    assessment: Assessment | None = None
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    unwritten: VideoJobStatus | None = None
    deleting: bool = False
    batch: str | None = None

    @property
    def job(self) -> VideoJob:
        return VideoJob.model_validate(self.body)

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def key(self) -> str:
        return f"{NS}/{self.name}"

    @property
    def uid(self) -> str | None:
        uid: str | None = self.body["metadata"].get("uid")
        return uid

    @property
    def type(self) -> str:
        return str(self.body["spec"]["type"])

    @property
    def sizing_key(self) -> str:
        return sizing_key(self.type, self.body["spec"].get("params"))

    @property
    def generation(self) -> int | None:
        generation: int | None = self.body["metadata"].get("generation")
        return generation

    @property
    def created(self) -> str:
        return str(self.body["metadata"].get("creationTimestamp", ""))

    @property
    def stored_phase(self) -> JobPhase | None:
        phase = (self.body.get("status") or {}).get("phase")
        return JobPhase(phase) if phase else None

    @property
    def stored_completion(self) -> datetime.datetime | None:
        return parse_time((self.body.get("status") or {}).get("completionTime"))


def job(name: str, minute: int = 0) -> MakeJob:
    made = MakeJob(name, NS).uid(f"uid-{name}").generation(1)
    return made.created(T0 + datetime.timedelta(minutes=minute))


def queue(concurrency: int = 1) -> MakeQueue:
    made = MakeQueue("work", NS).uid("q").generation(1).resource_version("7")
    return made.finalizers(QUEUE_FINALIZER).concurrency(concurrency).template(WORKER)


def assessed(entry: Job, queue_: MakeQueue) -> Job:
    """The job as a previous cycle left it: assessed, that status stored."""
    entry.assessment = assess_job(entry.job, [], queue_.model(), NOW)
    entry.body["status"] = entry.assessment.status.to_dict()
    return entry


def running_job(queue_: MakeQueue, name: str = "first") -> Job:
    """A job whose worker runs, as a previous cycle assessed it: it holds the slot."""
    running = Job(job(name).running().obj())
    pod = MakePod(job(name).running(), queue_).running().outcome()
    running.assessment = assess_job(running.job, [pod], queue_.model(), NOW)
    return running


def facts(entry: Job, **fields: Any) -> JobFacts:
    return JobFacts(key=entry.key, job=entry.job, new=entry.stored_phase is None, **fields)


def view(queue_: MakeQueue, jobs: list[Job], changed: list[JobFacts], **fields: Any) -> QueueView:
    """The queue as the index has it: competing jobs are those with a view."""
    competing = {j.key: j.assessment.view for j in jobs if j.assessment and j.assessment.view}
    fields.setdefault("status_changed", True)
    return QueueView(
        key=f"{NS}/work",
        queue=queue_.model(),
        body=queue_.obj(),
        jobs={j.key: j for j in jobs},
        changed=tuple(changed),
        competing=competing,
        **fields,
    )


def decided(plan: CyclePlan, key: str) -> Assessment:
    return [a for k, a in plan.assessments if k == key][-1]


def test_a_new_job_is_assessed_admitted_and_its_pod_built_in_one_plan() -> None:
    work = queue()
    clip = Job(job("clip").obj())
    plan = plan_cycle(view(work, [clip], [facts(clip)]), NOW.timestamp())

    assert decided(plan, clip.key).status.phase == JobPhase.PENDING
    [pod] = plan.create
    assert pod.key == clip.key
    assert pod.pod["metadata"]["name"] == "clip-a1"
    assert pod.admitted.status.phase == JobPhase.ADMITTED
    assert pod.admitted.status.attempts[-1].pod == "clip-a1"
    # The queue's status counts the admission it plans (the pod is created before it is
    # written), and the finalizer is already on the queue.
    assert plan.queue_status is not None
    assert plan.queue_status["admitted"] == 1
    assert plan.queue_status["memory"]["reserved"] == "1Gi"
    assert plan.finalizers is None


def test_a_job_without_a_slot_is_told_why_and_gets_no_pod() -> None:
    work = queue(concurrency=1)
    running = running_job(work)
    second = Job(job("second", minute=1).obj())
    plan = plan_cycle(view(work, [running, second], [facts(second)]), NOW.timestamp())

    assert plan.create == ()
    admitted = find_condition(
        decided(plan, second.key).status.conditions, JobConditionType.ADMITTED
    )
    assert admitted is not None
    assert (admitted.status, admitted.reason) == ("False", "WaitingForSlot")


def test_no_decision_is_made_on_half_a_queue() -> None:
    """While a burst is assessed in slices (`backlog`), a slice assesses and decides nothing
    else: the jobs of later slices might come first."""
    work = queue()
    clip = Job(job("clip").obj())
    partial = plan_cycle(view(work, [clip], [facts(clip)], backlog=True), NOW.timestamp())
    assert [k for k, _ in partial.assessments] == [clip.key]
    assert partial.create == ()
    assert partial.partial
    assert not partial.pending_checked
    assert partial.queue_status is None
    assert not partial.status_checked
    assert partial.wake_at == NOW.timestamp()  # the next slice at once

    whole = plan_cycle(view(work, [clip], [facts(clip)]), NOW.timestamp())
    assert [p.key for p in whole.create] == [clip.key]  # the same view, last slice: admitted


def test_a_pod_the_index_has_not_seen_is_confirmed_before_anything_is_decided() -> None:
    """Status says attempt 1 has pod clip-a1, the index has no such pod (it may lag behind
    after a restart): the plan asks the API server and admits nobody meanwhile, since the
    job's slot would look free."""
    work = queue(concurrency=1)
    clip = Job(job("clip").admitted().obj())
    other = Job(job("other", minute=1).obj())
    plan = plan_cycle(view(work, [clip, other], [facts(clip), facts(other)]), NOW.timestamp())
    assert plan.confirm_pods == ((clip.key, "clip-a1"),)
    assert clip.key not in dict(plan.assessments)
    assert plan.create == ()

    # The API server says it is gone: assessed with that (the attempt was lost, retried).
    gone = facts(clip, confirmed_missing=frozenset({"clip-a1"}))
    plan = plan_cycle(view(work, [clip, other], [gone]), NOW.timestamp())
    assert plan.confirm_pods == ()
    assert decided(plan, clip.key).status.phase != JobPhase.ADMITTED


def test_new_jobs_beyond_max_pending_are_turned_away_oldest_first() -> None:
    work = queue(concurrency=1).state("Paused").max_pending(2)
    jobs = [Job(job(f"j{i}", minute=i).obj()) for i in range(3)]
    plan = plan_cycle(view(work, jobs, [facts(j) for j in jobs]), NOW.timestamp())
    phases = {key: decided(plan, key).status.phase for key, _ in plan.assessments}
    assert phases == {
        f"{NS}/j0": JobPhase.PENDING,
        f"{NS}/j1": JobPhase.PENDING,
        f"{NS}/j2": JobPhase.REJECTED,
    }
    assert plan.pending_checked


def test_a_finished_job_past_its_ttl_is_deleted_once_its_outcome_is_stored_and_counted() -> None:
    work = queue().ttl(succeeded=60)
    done = Job(job("done").finished("Succeeded", reason="Completed", at=T0).obj())
    done.assessment = assess_job(done.job, [], work.model(), NOW)
    assert done.assessment.terminal
    plan = plan_cycle(view(work, [done], [], expired=(done.key,)), NOW.timestamp())
    # The queue's stored statistics do not count it yet: deleting it would lose its count.
    assert (plan.delete_jobs, plan.delete_once_counted) == ((), (done.key,))

    work.status({"statistics": {"windowSeconds": 900, "countedThrough": iso(T0)}})
    plan = plan_cycle(view(work, [done], [], expired=(done.key,)), NOW.timestamp())
    assert (plan.delete_jobs, plan.delete_once_counted) == ((done.key,), ())

    done.deleting = True  # sent already
    assert (
        plan_cycle(view(work, [done], [], expired=(done.key,)), NOW.timestamp()).delete_jobs == ()
    )


def test_a_deleted_queue_lets_go_of_its_finalizer_once_every_outcome_is_stored() -> None:
    work = queue().deleted(NOW)
    running = Job(job("running").running().obj())
    plan = plan_cycle(view(work, [running], []), NOW.timestamp())
    assert plan.finalizers is None  # a job still runs

    running.body["status"]["phase"] = "Succeeded"
    plan = plan_cycle(view(work, [running], []), NOW.timestamp())
    assert plan.finalizers == []


def test_the_queue_status_is_written_at_most_every_two_seconds() -> None:
    work = queue()
    clip = assessed(Job(job("clip").obj()), work.state("Paused"))
    recent = view(work, [clip], [], status_written_at=NOW.timestamp() - 0.5)
    plan = plan_cycle(recent, NOW.timestamp())
    assert not plan.status_checked
    assert plan.wake_at is not None
    assert plan.wake_at <= NOW.timestamp() + 1.5


def test_planning_changes_nothing_it_reads_and_is_repeatable() -> None:
    work = queue(concurrency=2)
    jobs = [Job(job(f"j{i}", minute=i).obj()) for i in range(4)]
    the_view = view(work, jobs, [facts(j) for j in jobs])
    before = copy.deepcopy([j.body for j in jobs]), copy.deepcopy(work.obj())
    first = plan_cycle(the_view, NOW.timestamp())
    assert (copy.deepcopy([j.body for j in jobs]), work.obj()) == before
    second = plan_cycle(the_view, NOW.timestamp())
    assert first == second
    assert [p.key for p in first.create] == [f"{NS}/j0", f"{NS}/j1"]


def test_a_preempted_job_keeps_its_pod_counted_until_the_pod_is_gone() -> None:
    """The victim's pod runs on through its grace period: the plan that preempts it counts
    the pod as stopping, so the next cycle does not admit the preemptor into its slot yet."""
    work = queue(concurrency=1).preemption("LowerPriority")
    low = Job(job("low").priority(1).running().obj())
    low.assessment = assess_job(
        low.job, [MakePod(job("low").running(), work).running().outcome()], work.model(), NOW
    )
    urgent = Job(job("urgent", minute=1).priority(9).obj())
    first = plan_cycle(view(work, [low, urgent], [facts(urgent)]), NOW.timestamp())
    assert first.preempted == (low.key,)
    assert first.create == ()
    preempted = decided(first, low.key)
    assert [pod.name for pod in preempted.stopping] == ["low-a1"]

    # The next cycle, as the index has it after recording the first plan.
    low.assessment = preempted
    urgent.assessment = decided(first, urgent.key)
    after = view(work, [low, urgent], [], stopping={low.key: preempted.stopping})
    second = plan_cycle(after, NOW.timestamp() + 1)
    assert second.create == ()  # low-a1 still holds the slot
    gone = view(work, [low, urgent], [])  # the kubelet reported low-a1 gone
    assert [p.key for p in plan_cycle(gone, NOW.timestamp() + 2).create] == [urgent.key]


def test_a_new_wait_reason_for_the_whole_queue_is_told_in_queue_order_a_share_a_cycle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A paused queue made Active changes every waiting job's reason; each cycle tells at
    most EXPLAINED_PER_CYCLE of them (first in line first) and comes back for the rest."""
    monkeypatch.setattr(cycle, "EXPLAINED_PER_CYCLE", 3)
    paused = queue(concurrency=1).state("Paused")
    work = queue(concurrency=1)
    running = running_job(work)
    waiting = [Job(job(f"w{i}", minute=i + 1).obj()) for i in range(5)]
    for entry in waiting:
        assessed(entry, paused)
    known = dict.fromkeys((w.key for w in waiting), "QueueNotAdmitting")

    first = plan_cycle(view(work, [running, *waiting], [], explained=known), NOW.timestamp())
    assert [key for key, _ in first.assessments] == [w.key for w in waiting[:3]]
    assert first.wake_at == NOW.timestamp()  # back at once for the other two

    for key, assessment in first.assessments:
        next(w for w in waiting if w.key == key).assessment = assessment
    known |= dict(first.explained)
    second = plan_cycle(view(work, [running, *waiting], [], explained=known), NOW.timestamp())
    assert [key for key, _ in second.assessments] == [w.key for w in waiting[3:]]
    told = [*first.assessments, *second.assessments]
    reasons = {
        getattr(find_condition(a.status.conditions, JobConditionType.ADMITTED), "reason", None)
        for _, a in told
    }
    assert reasons == {"WaitingForSlot"}


def test_a_waiting_job_whose_reason_is_unchanged_is_not_looked_at_again() -> None:
    """The wait reasons the index remembers (`explained`) spare the cycle a look at every
    waiting job's status; a job whose reason changes is explained again."""
    work = queue(concurrency=1)
    running = running_job(work)
    waiting = [Job(job(f"w{i}", minute=i + 1).obj()) for i in range(3)]
    for entry in waiting:
        assessed(entry, work)
    first = plan_cycle(view(work, [running, *waiting], []), NOW.timestamp())
    assert {key for key, _ in first.assessments} == {w.key for w in waiting}
    assert dict(first.explained) == dict.fromkeys((w.key for w in waiting), "WaitingForSlot")

    for key, assessment in first.assessments:
        next(w for w in waiting if w.key == key).assessment = assessment
    known = dict(first.explained)
    again = plan_cycle(view(work, [running, *waiting], [], explained=known), NOW.timestamp())
    assert again.assessments == ()
    assert again.explained == ()

    # The queue is paused: every waiting job is told the new reason.
    paused = queue(concurrency=1).state("Paused")
    moved = plan_cycle(view(paused, [running, *waiting], [], explained=known), NOW.timestamp())
    assert {key for key, _ in moved.assessments} == {w.key for w in waiting}
    assert set(dict(moved.explained).values()) == {"QueueNotAdmitting"}
