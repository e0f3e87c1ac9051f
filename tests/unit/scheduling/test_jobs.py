"""`assess_job` against careless and hostile input: a worker that finds the job invalid (exit
code 2), dependency cycles, and memory counted for the whole worker pod (sidecars, init
containers) rather than the worker alone."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Self

import pytest

from videoqueue.api import (
    JobConditionType,
    JobPhase,
    VideoJob,
    VideoQueue,
    find_condition,
    format_bytes,
)
from videoqueue.api.worker import EXIT_INVALID_JOB
from videoqueue.scheduling import JobState, StoppingPod, find_cycle
from videoqueue.scheduling.jobs import Assessment, assess_job, queue_overhead, stopping_pods
from videoqueue.scheduling.pod_outcome import PodOutcome, read_pod_outcome
from videoqueue.scheduling.worker_pod import build_worker_pod

T0 = datetime.datetime(2026, 1, 1, 10, 0, 0, tzinfo=datetime.UTC)
NOW = T0 + datetime.timedelta(minutes=5)
Gi = 1024**3
Mi = 1024**2
WORKER = {"name": "worker", "image": "videoqueue/worker:1"}


def sidecar(name: str, memory: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": name, "resources": {"limits": {"memory": memory}}, **fields}


# --- Builders, in the manner of Kueue's MakeWorkload("a", "ns").Priority(3).Obj() ---------


class MakeQueue:
    def __init__(self) -> None:
        self._obj: dict[str, Any] = {
            "apiVersion": "videoqueue.dev/v1alpha1",
            "kind": "VideoQueue",
            "metadata": {"name": "work", "namespace": "media", "uid": "q"},
            "spec": {
                "memory": {"budget": "8Gi"},
                "retry": {"maxAttempts": 3, "backoff": {"initialSeconds": 10}},
                "template": {"spec": {"containers": [WORKER]}},
            },
        }

    def budget(self, budget: str, *, oom_multiplier: float | None = None) -> Self:
        self._obj["spec"]["memory"]["budget"] = budget
        if oom_multiplier is not None:
            self._obj["spec"]["memory"]["oomRetryMultiplier"] = oom_multiplier
        return self

    def template(self, *containers: dict[str, Any], **spec: Any) -> Self:
        self._obj["spec"]["template"] = {"spec": {"containers": list(containers), **spec}}
        return self

    def obj(self) -> dict[str, Any]:
        return self._obj

    def model(self) -> VideoQueue:
        return VideoQueue.model_validate(self._obj)


class MakeJob:
    def __init__(self, name: str = "clip") -> None:
        self._obj: dict[str, Any] = {
            "apiVersion": "videoqueue.dev/v1alpha1",
            "kind": "VideoJob",
            "metadata": {
                "name": name,
                "namespace": "media",
                "uid": f"uid-{name}",
                "generation": 1,
                "creationTimestamp": T0.isoformat(),
            },
            "spec": {"queueName": "work", "type": "probe", "input": {"url": "https://a/b.mp4"}},
        }

    def memory(self, memory: str) -> Self:
        self._obj["spec"]["resources"] = {"memory": memory}
        return self

    def depends_on(self, *names: str) -> Self:
        self._obj["spec"]["dependsOn"] = list(names)
        return self

    def status(self, **status: Any) -> Self:
        self._obj["status"] = status
        return self

    def admitted(self, attempt: int = 1, memory: str = "1Gi") -> Self:
        """Its worker pod for `attempt` was created (as recorded in status)."""
        return self.status(
            phase="Admitted",
            attempt=attempt,
            attempts=[{"attempt": attempt, "pod": f"{self.name}-a{attempt}", "memory": memory}],
            effectiveMemory=memory,
            admittedTime=T0.isoformat(),
            queuedTime=T0.isoformat(),
        )

    @property
    def name(self) -> str:
        name: str = self._obj["metadata"]["name"]
        return name

    def obj(self) -> dict[str, Any]:
        return self._obj

    def model(self) -> VideoJob:
        return VideoJob.model_validate(self._obj)


def worker_pod(
    job: MakeJob,
    queue: MakeQueue,
    *,
    memory: int = Gi,
    exit_code: int | None = None,
    reason: str = "Error",
    message: str | None = None,
) -> PodOutcome:
    """The outcome of the job's pod for attempt 1, built as the operator builds it: running,
    or terminated with `exit_code` and the termination `message`."""
    pod = build_worker_pod(job.obj(), queue.obj(), attempt=1, memory_bytes=memory)
    state: dict[str, Any] = {"running": {"startedAt": T0.isoformat()}}
    if exit_code is not None:
        terminated = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": T0.isoformat(),
            "finishedAt": NOW.isoformat(),
        }
        if message is not None:
            terminated["message"] = message
        state = {"terminated": terminated}
    pod["status"] = {
        "phase": "Running" if exit_code is None else "Failed",
        "startTime": T0.isoformat(),
        "containerStatuses": [{"name": "worker", "state": state}],
    }
    return read_pod_outcome(pod)


def failed_condition(assessment: Assessment) -> tuple[str, str]:
    failed = find_condition(assessment.status.conditions, JobConditionType.FAILED)
    assert failed is not None, assessment.status.conditions
    assert failed.status == "True"
    return failed.reason, failed.message


# --- A worker that finds the job invalid -------------------------------------------------

INVALID = "spec.params.crf: must be an integer from 0 to 51, got 'best'"


def test_invalid_job_fails_at_once_with_the_workers_message() -> None:
    job, queue = MakeJob().admitted(), MakeQueue()
    pod = worker_pod(job, queue, exit_code=EXIT_INVALID_JOB, message=INVALID)

    assessment = assess_job(job.model(), [pod], queue.model(), NOW)

    status = assessment.status
    assert (status.phase, assessment.terminal, assessment.view) == (JobPhase.FAILED, True, None)
    assert status.next_attempt_time is None
    reason, message = failed_condition(assessment)
    assert reason == "InvalidJob"
    assert INVALID in message
    assert status.message is not None
    assert INVALID in status.message
    assert [(r.attempt, r.reason, r.exit_code, r.message) for r in status.attempts] == [
        (1, "Error", EXIT_INVALID_JOB, INVALID)
    ]
    assert [(n.type, n.reason) for n in assessment.notices] == [("Warning", "Failed")]
    assert INVALID in assessment.notices[0].message
    stalled = find_condition(status.conditions, JobConditionType.STALLED)
    assert stalled is not None
    assert (stalled.status, stalled.reason) == ("True", "InvalidJob")


def test_invalid_job_without_a_message_names_the_exit_code() -> None:
    job, queue = MakeJob().admitted(), MakeQueue()
    pod = worker_pod(job, queue, exit_code=EXIT_INVALID_JOB)

    assessment = assess_job(job.model(), [pod], queue.model(), NOW)

    assert assessment.status.phase == JobPhase.FAILED
    assert f"exit code {EXIT_INVALID_JOB}" in failed_condition(assessment)[1]


@pytest.mark.parametrize(
    ("exit_code", "reason"),
    [
        pytest.param(1, "Error", id="work-failed"),
        pytest.param(3, "Error", id="other-code"),
        pytest.param(137, "OOMKilled", id="oom-killed"),
    ],
)
def test_other_failures_are_retried(exit_code: int, reason: str) -> None:
    job, queue = MakeJob().admitted(), MakeQueue()
    pod = worker_pod(job, queue, exit_code=exit_code, reason=reason, message="ffmpeg failed")

    assessment = assess_job(job.model(), [pod], queue.model(), NOW)

    assert assessment.status.phase == JobPhase.BACKOFF
    assert not assessment.terminal
    assert [n.reason for n in assessment.notices] == ["Retrying"]


# --- Peak memory of each attempt -----------------------------------------------------------


@pytest.mark.parametrize(
    ("exit_code", "reason", "message", "peak"),
    [
        pytest.param(
            0,
            "Completed",
            '{"type":"probe","peakMemoryBytes":120934400}',
            "116Mi",  # 115.3Mi, rounded up
            id="completed-reports-its-peak",
        ),
        pytest.param(0, "Completed", '{"type":"probe"}', None, id="completed-without-a-peak"),
        pytest.param(1, "OOMKilled", "ffmpeg failed", "256Mi", id="oom-killed-peaks-at-its-limit"),
        pytest.param(1, "Error", "ffmpeg failed", None, id="failed-peak-unknown"),
    ],
)
def test_attempt_records_its_peak_memory(
    exit_code: int, reason: str, message: str, peak: str | None
) -> None:
    job, queue = MakeJob().admitted(memory="256Mi"), MakeQueue()
    pod = worker_pod(
        job, queue, memory=256 * Mi, exit_code=exit_code, reason=reason, message=message
    )

    status = assess_job(job.model(), [pod], queue.model(), NOW).status

    assert [(r.attempt, r.reason, r.memory, r.peak_memory) for r in status.attempts] == [
        (1, reason, "256Mi", peak)
    ]


# --- Dependency cycles ---------------------------------------------------------------------


def test_jobs_depending_on_each_other_both_fail_naming_the_cycle() -> None:
    specs = {"a": ["b"], "b": ["a"]}
    queue = MakeQueue().model()

    for name, other in (("a", "b"), ("b", "a")):
        job = MakeJob(name).depends_on(other).model()
        cycle = find_cycle(name, lambda n: specs.get(n, ()))

        assessment = assess_job(
            job, [], queue, NOW, dependencies={other: JobPhase.WAITING}, cycle=cycle
        )

        assert (assessment.status.phase, assessment.terminal) == (JobPhase.FAILED, True)
        reason, message = failed_condition(assessment)
        assert reason == "DependencyCycle"
        assert f"{name} -> {other} -> {name}" in message
        assert [(n.type, n.reason) for n in assessment.notices] == [("Warning", "DependencyCycle")]
        met = find_condition(assessment.status.conditions, JobConditionType.DEPENDENCIES_MET)
        assert met is not None
        assert (met.status, met.reason) == ("False", "DependencyCycle")


def test_without_a_cycle_the_job_waits_for_its_dependency() -> None:
    job = MakeJob("a").depends_on("b").model()

    assessment = assess_job(
        job, [], MakeQueue().model(), NOW, dependencies={"b": JobPhase.RUNNING}, cycle=None
    )

    assert assessment.status.phase == JobPhase.WAITING
    assert find_condition(assessment.status.conditions, JobConditionType.FAILED) is None


def test_long_cycle_is_named_in_full_up_to_a_point() -> None:
    cycle = tuple(f"j{i}" for i in range(20))
    job = MakeJob("j0").depends_on("j1").model()

    assessment = assess_job(
        job, [], MakeQueue().model(), NOW, dependencies={"j1": None}, cycle=cycle
    )

    message = failed_condition(assessment)[1]
    assert message.startswith("dependency cycle j0 -> j1 -> ")
    assert "(12 more) -> j0" in message
    assert len(message) < 400


# --- Memory: the whole pod counts --------------------------------------------------------


def test_pending_job_counts_its_pods_sidecars() -> None:
    queue = MakeQueue().budget("40Gi").template(WORKER, sidecar("proxy", "30Gi"))
    job = MakeJob().memory("1Gi")

    assessment = assess_job(job.model(), [], queue.model(), NOW)

    view = assessment.view
    assert view is not None
    assert (view.memory, view.overhead, view.pod_memory) == (Gi, 30 * Gi, 31 * Gi)
    assert assessment.status.effective_memory == "1Gi"  # what the job asked for


def test_job_whose_pod_can_never_fit_the_budget_is_rejected() -> None:
    # The report: a 30Gi sidecar in a 4Gi queue, each 1Gi job's pod holding 31Gi.
    queue = MakeQueue().budget("4Gi").template(WORKER, sidecar("proxy", "30Gi"))
    job = MakeJob().memory("1Gi")

    assessment = assess_job(job.model(), [], queue.model(), NOW)

    assert (assessment.status.phase, assessment.view) == (JobPhase.REJECTED, None)
    reason, message = failed_condition(assessment)
    assert reason == "PodExceedsBudget"
    assert "31Gi" in message
    assert "30Gi" in message
    assert "4Gi" in message
    assert "sidecar" in message
    assert "spec.resources.memory" in message


def test_job_whose_pod_fits_the_budget_exactly_is_not_rejected() -> None:
    queue = MakeQueue().budget("4Gi").template(WORKER, sidecar("proxy", "3Gi"))

    assessment = assess_job(MakeJob().memory("1Gi").model(), [], queue.model(), NOW)

    assert assessment.status.phase == JobPhase.PENDING
    assert assessment.view is not None
    assert assessment.view.pod_memory == 4 * Gi


def test_init_container_bigger_than_the_budget_rejects_the_job() -> None:
    queue = MakeQueue().budget("4Gi").template(WORKER, initContainers=[sidecar("fetch", "5Gi")])

    assessment = assess_job(MakeJob().memory("1Gi").model(), [], queue.model(), NOW)

    assert assessment.status.phase == JobPhase.REJECTED
    assert "5Gi" in failed_condition(assessment)[1]


def test_running_job_counts_the_pod_it_has_not_the_template_now() -> None:
    old = MakeQueue().template(WORKER, sidecar("proxy", "2Gi"))
    job = MakeJob().admitted()
    pod = worker_pod(job, old)
    new = MakeQueue()  # the sidecar was removed from the template meanwhile

    assessment = assess_job(job.model(), [pod], new.model(), NOW)

    view = assessment.view
    assert view is not None
    assert view.state is JobState.RUNNING
    assert (view.memory, view.overhead) == (Gi, 2 * Gi)


def test_broken_template_counts_what_it_can_and_leaves_refusing_to_the_pod_builder() -> None:
    queue = MakeQueue().template(WORKER, {"name": "unlimited", "image": "u"})

    assessment = assess_job(MakeJob().memory("1Gi").model(), [], queue.model(), NOW)

    assert assessment.status.phase == JobPhase.PENDING
    assert assessment.view is not None
    assert assessment.view.overhead == 0


def test_memory_after_an_oom_kill_grows_only_as_far_as_the_pod_still_fits() -> None:
    queue = MakeQueue().budget("8Gi", oom_multiplier=2.0).template(WORKER, sidecar("p", "2Gi"))
    job = MakeJob().memory("5Gi").admitted(memory="5Gi")
    pod = worker_pod(job, queue, memory=5 * Gi, exit_code=137, reason="OOMKilled")

    assessment = assess_job(job.model(), [pod], queue.model(), NOW)

    assert assessment.status.phase == JobPhase.BACKOFF
    assert assessment.status.effective_memory == format_bytes(6 * Gi)  # not 8Gi: 8 + 2 > 8
    assert queue_overhead(queue.model()).pod_memory(6 * Gi) == 8 * Gi


# --- Worker pods still stopping ------------------------------------------------------------


def with_phase(pod: PodOutcome, phase: str, *, attempt: int | None = None) -> PodOutcome:
    changes: dict[str, Any] = {"phase": phase}
    if attempt is not None:
        changes["attempt"] = attempt
        changes["name"] = f"clip-a{attempt}"
    return dataclasses.replace(pod, **changes)


def test_pod_of_a_cancelled_job_counts_until_it_has_terminated() -> None:
    queue = MakeQueue().template(WORKER, sidecar("proxy", "256Mi"))
    job = MakeJob().status(phase="Cancelled", attempt=1, completionTime=NOW.isoformat())
    pod = worker_pod(job, queue)  # deleted, still running through its grace period

    stopping = assess_job(job.model(), [pod], queue.model(), NOW).stopping

    assert stopping == (StoppingPod("clip-a1", Gi + 256 * Mi),)
    done = with_phase(pod, "Failed")
    assert assess_job(job.model(), [done], queue.model(), NOW).stopping == ()


def test_running_job_counts_only_the_pods_of_earlier_attempts() -> None:
    queue = MakeQueue()
    job = MakeJob().admitted(attempt=2)
    earlier = with_phase(worker_pod(job, queue), "Running", attempt=1)
    current = with_phase(worker_pod(job, queue), "Running", attempt=2)

    assessment = assess_job(job.model(), [earlier, current], queue.model(), NOW)

    assert assessment.view is not None
    assert assessment.view.state is JobState.RUNNING
    assert assessment.stopping == (StoppingPod("clip-a1", Gi),)
    assert (
        stopping_pods(assessment.status, [with_phase(earlier, "Succeeded"), current], queue.model())
        == ()
    )
