"""Which notification a finished job sends (controller.notifications.notification_for)."""

from __future__ import annotations

import datetime

from videoqueue.api import (
    Condition,
    ConditionStatus,
    JobPhase,
    NotificationEvent,
    Notifications,
    VideoJob,
    VideoJobStatus,
)
from videoqueue.controller.notifications import notification_for

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
JOB = VideoJob.model_validate(
    {
        "metadata": {"name": "clip-1", "namespace": "media", "uid": "u1"},
        "spec": {"queueName": "q", "type": "clip", "input": {"url": "file:///in.mp4"}},
    }
)


def status(phase: JobPhase, reason: str | None = None) -> VideoJobStatus:
    conditions = []
    if reason:
        conditions.append(
            Condition(
                type="Failed", status=ConditionStatus.TRUE, reason=reason, last_transition_time=T0
            )
        )
    return VideoJobStatus(
        phase=phase,
        conditions=conditions,
        attempt=2,
        wait_seconds=1.5,
        run_seconds=30.0,
        completion_time=T0,
        result={"size": 10},
    )


def test_success_sends_the_job_outcome_durations_and_result() -> None:
    settings = Notifications(url="http://127.0.0.1:1/hook")
    sent = notification_for(settings, JOB, status(JobPhase.SUCCEEDED))
    assert sent is not None
    assert sent.body == {
        "queue": "q",
        "namespace": "media",
        "job": "clip-1",
        "uid": "u1",
        "type": "clip",
        "outcome": "Succeeded",
        "reason": "Completed",
        "message": None,
        "attempts": 2,
        "waitSeconds": 1.5,
        "runSeconds": 30.0,
        "completionTime": "2026-01-01T00:00:00Z",
        "result": {"size": 10},
    }


def test_failed_covers_rejected_and_names_the_reason() -> None:
    settings = Notifications(url="http://127.0.0.1:1/hook", on=[NotificationEvent.FAILED])
    sent = notification_for(settings, JOB, status(JobPhase.REJECTED, "QueueFull"))
    assert sent is not None
    assert (sent.body["outcome"], sent.body["reason"]) == ("Rejected", "QueueFull")
    assert notification_for(settings, JOB, status(JobPhase.SUCCEEDED)) is None


def test_nothing_without_settings_or_before_the_end() -> None:
    settings = Notifications(url="http://127.0.0.1:1/hook")
    assert notification_for(None, JOB, status(JobPhase.SUCCEEDED)) is None
    assert notification_for(settings, JOB, status(JobPhase.RUNNING)) is None
