"""Budgets beyond memory through a whole cycle (`plan_cycle`) and the job state machine: a
job's requests come from the queue's template, a running job's from its pod, and the
queue's status says what is reserved of each budget."""

from __future__ import annotations

from typing import Any

from tests.unit.scheduling.test_cycle_plan import NOW, Job, decided, facts, job, view
from videoqueue.api import JobConditionType, JobPhase, find_condition
from videoqueue.envtest.builders import MakePod, MakeQueue
from videoqueue.scheduling.cycle import plan_cycle
from videoqueue.scheduling.cycle_rules import QUEUE_FINALIZER
from videoqueue.scheduling.jobs import assess_job, stopping_pods

GPU = "example.com/gpu"


def gpu_queue(budgets: dict[str, Any], cpu: str = "500m") -> MakeQueue:
    """A queue whose workers request `cpu` and (by their limit) one GPU."""
    worker = {
        "name": "worker",
        "image": "videoqueue/worker:test",
        "resources": {"requests": {"cpu": cpu}, "limits": {GPU: "1"}},
    }
    made = MakeQueue("work", "media").uid("q").generation(1).resource_version("7")
    return made.finalizers(QUEUE_FINALIZER).concurrency(10).budgets(budgets).template(worker)


def admitted_reason(plan: Any, key: str) -> tuple[str, str]:
    condition = find_condition(decided(plan, key).status.conditions, JobConditionType.ADMITTED)
    assert condition is not None
    return condition.reason, condition.message


def test_jobs_beyond_the_cpu_budget_wait_for_cpu_and_the_status_counts_it() -> None:
    work = gpu_queue({"cpu": "1", GPU: 4})
    jobs = [Job(job(f"j{i}", minute=i).obj()) for i in range(3)]

    plan = plan_cycle(view(work, jobs, [facts(j) for j in jobs]), NOW.timestamp())

    assert [pod.key for pod in plan.create] == ["media/j0", "media/j1"]
    assert admitted_reason(plan, "media/j2") == (
        "WaitingForCPU",
        "waiting for cpu: needs 500m, 0 free of 1",
    )
    assert plan.queue_status is not None
    assert plan.queue_status["budgets"] == [
        {"resource": "cpu", "reserved": "1", "budget": "1"},
        {"resource": GPU, "reserved": "2", "budget": "4"},
    ]


def test_a_running_job_holds_what_its_pod_requests_not_what_the_template_says_now() -> None:
    # The template asked for 2 GPUs when the pod was built; it asks for 1 now.
    then = gpu_queue({GPU: 2})
    then.template(
        {"name": "worker", "image": "w", "resources": {"limits": {GPU: "2"}}},
    )
    pod = MakePod(job("first").running(), then).running().outcome()
    now = gpu_queue({GPU: 2})
    running = Job(job("first").running().obj())
    running.assessment = assess_job(running.job, [pod], now.model(), NOW)
    waiting = Job(job("second", minute=1).obj())

    plan = plan_cycle(view(now, [running, waiting], [facts(waiting)]), NOW.timestamp())

    assert running.assessment.view is not None
    assert running.assessment.view.requests == {GPU: 2}
    assert plan.create == ()
    assert admitted_reason(plan, "media/second") == (
        "WaitingForResource",
        f"waiting for {GPU}: needs 1, 0 free of 2",
    )


def test_a_pod_still_stopping_keeps_its_requests() -> None:
    work = gpu_queue({GPU: 2})
    pod = MakePod(job("gone").running(), work).running().outcome()

    gone = job("gone").model()
    [stopping] = stopping_pods(gone.status, [pod], work.model(), gone.spec.type)

    assert stopping.requests == {"cpu": 500, GPU: 1}


def test_a_job_whose_pod_requests_more_than_a_whole_budget_waits_not_rejected() -> None:
    work = gpu_queue({"cpu": "250m"})
    clip = Job(job("clip").obj())

    plan = plan_cycle(view(work, [clip], [facts(clip)]), NOW.timestamp())

    assert plan.create == ()
    assert decided(plan, clip.key).status.phase == JobPhase.PENDING
    reason, message = admitted_reason(plan, clip.key)
    assert reason == "ExceedsResourceBudget"
    assert "requests 500m cpu, more than the queue's whole budget of 250m" in message
