"""Stalled workers (progressDeadlineSeconds) in `assess_job`: when the clock starts, what
resets it, what happens when it runs out, and that it is off without a progress channel."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from videoqueue.api import AttemptReason, JobPhase, VideoJob, VideoQueue
from videoqueue.scheduling.jobs import Assessment, assess_job
from videoqueue.scheduling.pod_outcome import PodOutcome

T0 = datetime.datetime(2026, 1, 1, 10, 0, 0, tzinfo=datetime.UTC)
POD = "clip-a1"


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def queue(progress_deadline: int | None = 30, max_attempts: int = 3) -> VideoQueue:
    spec: dict[str, Any] = {
        "memory": {"budget": "8Gi"},
        "retry": {"maxAttempts": max_attempts, "backoff": {"initialSeconds": 10}},
        "template": {"spec": {"containers": [{"name": "worker", "image": "w"}]}},
    }
    if progress_deadline is not None:
        spec["progressDeadlineSeconds"] = progress_deadline
    return VideoQueue.model_validate(
        {"metadata": {"name": "work", "namespace": "media", "uid": "q"}, "spec": spec}
    )


def running_job(progress_deadline: int | None = None, attempts_before: int = 0) -> VideoJob:
    spec: dict[str, Any] = {
        "queueName": "work",
        "type": "probe",
        "input": {"url": "file:///media/in.mp4"},
    }
    if progress_deadline is not None:
        spec["progressDeadlineSeconds"] = progress_deadline
    earlier = [
        {"attempt": n, "pod": f"clip-a{n}", "reason": "Error", "finishTime": at(-100).isoformat()}
        for n in range(1, attempts_before + 1)
    ]
    attempt = attempts_before + 1
    return VideoJob.model_validate(
        {
            "metadata": {"name": "clip", "namespace": "media", "uid": "u1", "generation": 1},
            "spec": spec,
            "status": {
                "phase": "Running",
                "attempt": attempt,
                "attempts": [
                    *earlier,
                    {"attempt": attempt, "pod": f"clip-a{attempt}", "startTime": T0.isoformat()},
                ],
                "startTime": T0.isoformat(),
                "admittedTime": at(-1).isoformat(),
                "queuedTime": at(-2).isoformat(),
            },
        }
    )


def worker(attempt: int = 1) -> PodOutcome:
    return PodOutcome(
        name=f"clip-a{attempt}",
        attempt=attempt,
        memory=2**30,
        phase="Running",
        running=True,
        finished=False,
        reason=None,
        exit_code=None,
        message=None,
        result=None,
        node="node-1",
        start_time=T0.isoformat(),
        finish_time=None,
        deleted=False,
    )


def assess(
    now: float,
    heard: float | None,
    *,
    job: VideoJob | None = None,
    q: VideoQueue | None = None,
    attempt: int = 1,
) -> Assessment:
    return assess_job(
        job or running_job(),
        [worker(attempt)],
        q or queue(),
        at(now),
        heard_at=None if heard is None else at(heard),
    )


def test_a_worker_heard_from_lately_runs_on_and_is_rechecked_at_its_deadline() -> None:
    result = assess(now=40, heard=25)
    assert result.status.phase == JobPhase.RUNNING
    assert result.stop_pods == ()
    assert result.recheck_at == at(55)


def test_a_silent_worker_is_stalled_its_pod_stopped_and_the_job_retried() -> None:
    result = assess(now=56, heard=25)
    assert result.stop_pods == (POD,)
    record = result.status.attempts[-1]
    assert record.reason == AttemptReason.STALLED
    assert record.message is not None
    assert "no heartbeat" in record.message
    assert "progressDeadlineSeconds" in record.message
    assert result.status.phase == JobPhase.BACKOFF  # retry rules: backoff, then attempt 2
    assert not result.terminal
    assert any(n.reason == "Retrying" for n in result.notices)


def test_the_clock_starts_when_the_worker_runs() -> None:
    # The channel was connected long before the worker started: silence counts from the start.
    assert assess(now=29, heard=-600).stop_pods == ()
    assert assess(now=31, heard=-600).stop_pods == (POD,)


def test_no_channel_or_a_channel_that_is_down_never_stalls() -> None:
    result = assess(now=10_000, heard=None)
    assert result.stop_pods == ()
    assert result.status.phase == JobPhase.RUNNING


def test_a_job_overrides_the_queue_and_no_setting_means_no_detection() -> None:
    assert assess(now=20, heard=0, job=running_job(progress_deadline=10)).stop_pods == (POD,)
    unset = assess(now=10_000, heard=0, q=queue(progress_deadline=None))
    assert unset.stop_pods == ()
    assert unset.recheck_at is None


@pytest.mark.parametrize(
    ("max_attempts", "phase"),
    [
        pytest.param(2, JobPhase.FAILED, id="last-attempt-fails-the-job"),
        pytest.param(3, JobPhase.BACKOFF, id="attempts-left-retries"),
    ],
)
def test_a_stall_uses_an_attempt(max_attempts: int, phase: JobPhase) -> None:
    job = running_job(attempts_before=1)
    result = assess(now=100, heard=0, job=job, q=queue(max_attempts=max_attempts), attempt=2)
    assert result.status.attempts[-1].reason == AttemptReason.STALLED
    assert result.status.phase == phase
    assert result.stop_pods == ("clip-a2",)
