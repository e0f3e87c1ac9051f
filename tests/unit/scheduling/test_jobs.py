"""`assess_job` against careless and hostile input: a worker that finds the job invalid (exit
code 2), dependency cycles, and memory counted for the whole worker pod (sidecars, init
containers) rather than the worker alone."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest

from videoqueue.api import (
    JobConditionType,
    JobPhase,
    find_condition,
    format_bytes,
)
from videoqueue.api.worker import EXIT_INVALID_JOB
from videoqueue.envtest.builders import WORKER, MakeJob, MakePod, MakeQueue, container
from videoqueue.scheduling import JobState, StoppingPod, find_cycle
from videoqueue.scheduling.jobs import Assessment, assess_job, queue_overhead, stopping_pods
from videoqueue.scheduling.pod_outcome import PodOutcome

T0 = datetime.datetime(2026, 1, 1, 10, 0, 0, tzinfo=datetime.UTC)
NOW = T0 + datetime.timedelta(minutes=5)
Gi = 1024**3
Mi = 1024**2


def work_queue() -> MakeQueue:
    """Three attempts, the first retry 10 s after a failure; the worker alone in its pod."""
    return MakeQueue("work", "media").uid("q").retry(3, initial_seconds=10).template(WORKER)


def clip(name: str = "clip") -> MakeJob:
    """A job as read from the API server (uid, generation, creation time)."""
    job = MakeJob(name, "media").uid(f"uid-{name}").generation(1).created(T0)
    return job.type("probe").input("https://a/b.mp4")


def failed_condition(assessment: Assessment) -> tuple[str, str]:
    failed = find_condition(assessment.status.conditions, JobConditionType.FAILED)
    assert failed is not None, assessment.status.conditions
    assert failed.status == "True"
    return failed.reason, failed.message


# --- A worker that finds the job invalid -------------------------------------------------

INVALID = "spec.params.crf: must be an integer from 0 to 51, got 'best'"


def test_invalid_job_fails_at_once_with_the_workers_message() -> None:
    job, queue = clip().admitted(), work_queue()
    pod = MakePod(job, queue).terminated(EXIT_INVALID_JOB, message=INVALID, finished=NOW).outcome()

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
    job, queue = clip().admitted(), work_queue()
    pod = MakePod(job, queue).terminated(EXIT_INVALID_JOB, finished=NOW).outcome()

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
    job, queue = clip().admitted(), work_queue()
    pod = MakePod(job, queue).terminated(exit_code, reason, "ffmpeg failed", finished=NOW).outcome()

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
    job, queue = clip().admitted(memory="256Mi"), work_queue()
    pod = MakePod(job, queue, memory=256 * Mi).terminated(exit_code, reason, message, finished=NOW)

    status = assess_job(job.model(), [pod.outcome()], queue.model(), NOW).status

    assert [(r.attempt, r.reason, r.memory, r.peak_memory) for r in status.attempts] == [
        (1, reason, "256Mi", peak)
    ]


# --- Dependency cycles ---------------------------------------------------------------------


def test_jobs_depending_on_each_other_both_fail_naming_the_cycle() -> None:
    specs = {"a": ["b"], "b": ["a"]}
    queue = work_queue().model()

    for name, other in (("a", "b"), ("b", "a")):
        job = clip(name).depends_on(other).model()
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
    job = clip("a").depends_on("b").model()

    assessment = assess_job(
        job, [], work_queue().model(), NOW, dependencies={"b": JobPhase.RUNNING}, cycle=None
    )

    assert assessment.status.phase == JobPhase.WAITING
    assert find_condition(assessment.status.conditions, JobConditionType.FAILED) is None


def test_long_cycle_is_named_in_full_up_to_a_point() -> None:
    cycle = tuple(f"j{i}" for i in range(20))
    job = clip("j0").depends_on("j1").model()

    assessment = assess_job(
        job, [], work_queue().model(), NOW, dependencies={"j1": None}, cycle=cycle
    )

    message = failed_condition(assessment)[1]
    assert message.startswith("dependency cycle j0 -> j1 -> ")
    assert "(12 more) -> j0" in message
    assert len(message) < 400


# --- Memory: the whole pod counts --------------------------------------------------------


def test_pending_job_counts_its_pods_sidecars() -> None:
    queue = work_queue().budget("40Gi").template(WORKER, container("proxy", "30Gi"))
    job = clip().memory("1Gi")

    assessment = assess_job(job.model(), [], queue.model(), NOW)

    view = assessment.view
    assert view is not None
    assert (view.memory, view.overhead, view.pod_memory) == (Gi, 30 * Gi, 31 * Gi)
    assert assessment.status.effective_memory == "1Gi"  # what the job asked for


def test_job_whose_pod_can_never_fit_the_budget_is_rejected() -> None:
    # The report: a 30Gi sidecar in a 4Gi queue, each 1Gi job's pod holding 31Gi.
    queue = work_queue().budget("4Gi").template(WORKER, container("proxy", "30Gi"))
    job = clip().memory("1Gi")

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
    queue = work_queue().budget("4Gi").template(WORKER, container("proxy", "3Gi"))

    assessment = assess_job(clip().memory("1Gi").model(), [], queue.model(), NOW)

    assert assessment.status.phase == JobPhase.PENDING
    assert assessment.view is not None
    assert assessment.view.pod_memory == 4 * Gi


def test_init_container_bigger_than_the_budget_rejects_the_job() -> None:
    queue = work_queue().budget("4Gi").template(WORKER, initContainers=[container("fetch", "5Gi")])

    assessment = assess_job(clip().memory("1Gi").model(), [], queue.model(), NOW)

    assert assessment.status.phase == JobPhase.REJECTED
    assert "5Gi" in failed_condition(assessment)[1]


def test_running_job_counts_the_pod_it_has_not_the_template_now() -> None:
    old = work_queue().template(WORKER, container("proxy", "2Gi"))
    job = clip().admitted()
    pod = MakePod(job, old).running().outcome()
    new = work_queue()  # the sidecar was removed from the template meanwhile

    assessment = assess_job(job.model(), [pod], new.model(), NOW)

    view = assessment.view
    assert view is not None
    assert view.state is JobState.RUNNING
    assert (view.memory, view.overhead) == (Gi, 2 * Gi)


def test_broken_template_counts_what_it_can_and_leaves_refusing_to_the_pod_builder() -> None:
    queue = work_queue().template(WORKER, {"name": "unlimited", "image": "u"})

    assessment = assess_job(clip().memory("1Gi").model(), [], queue.model(), NOW)

    assert assessment.status.phase == JobPhase.PENDING
    assert assessment.view is not None
    assert assessment.view.overhead == 0


def test_memory_after_an_oom_kill_grows_only_as_far_as_the_pod_still_fits() -> None:
    queue = work_queue().budget("8Gi").oom_multiplier(2.0).template(WORKER, container("p", "2Gi"))
    job = clip().memory("5Gi").admitted(memory="5Gi")
    pod = MakePod(job, queue, memory=5 * Gi).terminated(137, "OOMKilled", finished=NOW).outcome()

    assessment = assess_job(job.model(), [pod], queue.model(), NOW)

    assert assessment.status.phase == JobPhase.BACKOFF
    assert assessment.status.effective_memory == format_bytes(6 * Gi)  # not 8Gi: 8 + 2 > 8
    assert queue_overhead(queue.model(), "clip").pod_memory(6 * Gi) == 8 * Gi


# --- Worker pods still stopping ------------------------------------------------------------


def with_phase(pod: PodOutcome, phase: str, *, attempt: int | None = None) -> PodOutcome:
    changes: dict[str, Any] = {"phase": phase}
    if attempt is not None:
        changes["attempt"] = attempt
        changes["name"] = f"clip-a{attempt}"
    return dataclasses.replace(pod, **changes)


def test_pod_of_a_cancelled_job_counts_until_it_has_terminated() -> None:
    queue = work_queue().template(WORKER, container("proxy", "256Mi"))
    job = clip().status(phase="Cancelled", attempt=1, completionTime=NOW.isoformat())
    # Deleted, still running through its grace period.
    pod = MakePod(job, queue).running().outcome()

    stopping = assess_job(job.model(), [pod], queue.model(), NOW).stopping

    assert stopping == (StoppingPod("clip-a1", Gi + 256 * Mi),)
    done = with_phase(pod, "Failed")
    assert assess_job(job.model(), [done], queue.model(), NOW).stopping == ()


def test_running_job_counts_only_the_pods_of_earlier_attempts() -> None:
    queue = work_queue()
    job = clip().admitted(attempt=2)
    earlier = with_phase(MakePod(job, queue).running().outcome(), "Running", attempt=1)
    current = with_phase(MakePod(job, queue).running().outcome(), "Running", attempt=2)

    assessment = assess_job(job.model(), [earlier, current], queue.model(), NOW)

    assert assessment.view is not None
    assert assessment.view.state is JobState.RUNNING
    assert assessment.stopping == (StoppingPod("clip-a1", Gi),)
    assert (
        stopping_pods(
            assessment.status, [with_phase(earlier, "Succeeded"), current], queue.model(), "clip"
        )
        == ()
    )
