"""Completion notifications as the job's status records them (`status.notification`), pure.

A notification is owed when a job reaches a terminal phase and its queue's
spec.notifications covers that outcome: the same status write that records the outcome
records `{key, state: Owed}`, so the debt survives a restart or a failover. The controller
sends what its jobs' stored statuses say is owed and reports each result back as
`NotificationNews`, which the job's next assessment records (Delivered, GaveUp, or a
problem while it keeps trying). While a notification is owed the job's TTL waits.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from typing import Protocol

from videoqueue.api import (
    JobConditionType,
    JobPhase,
    NotificationEvent,
    Notifications,
    NotificationState,
    NotificationStatus,
    VideoJobStatus,
    VideoQueue,
    find_condition,
    put_condition,
)
from videoqueue.scheduling.jobs import Assessment, Notice

__all__ = [
    "NotificationNews",
    "covers",
    "holds_ttl",
    "notification_key",
    "owe_notification",
    "settle_notification",
]


@dataclass(frozen=True)
class NotificationNews:
    """What the sender found out about the notification `key`: Delivered, GaveUp, or still
    Owed with a problem (`reason`, `message`) it keeps trying to get past."""

    key: str
    state: NotificationState
    at: datetime.datetime
    tries: int
    reason: str = ""
    message: str = ""


class _Recorded(Protocol):
    """What is known of the job before this assessment (the index's entry)."""

    @property
    def uid(self) -> str | None: ...
    @property
    def stored_phase(self) -> JobPhase | None: ...
    @property
    def unwritten(self) -> VideoJobStatus | None: ...


def notification_key(uid: str | None, status: VideoJobStatus) -> str:
    """The idempotency key of the status's outcome: "<job uid>/<attempt>/<phase>"."""
    phase = status.phase.value if status.phase is not None else ""
    return f"{uid or ''}/{status.attempt}/{phase}"


def _phase_of(key: str) -> JobPhase | None:
    phase = key.rsplit("/", 1)[-1]
    return JobPhase(phase) if phase in JobPhase.__members__.values() else None


def covers(settings: Notifications | None, phase: JobPhase | None) -> bool:
    """Whether the queue's spec.notifications sends one for this terminal phase (Failed
    covers Rejected and Cancelled too)."""
    if settings is None or phase is None or not phase.is_terminal:
        return False
    wanted = (
        NotificationEvent.SUCCEEDED if phase is JobPhase.SUCCEEDED else NotificationEvent.FAILED
    )
    return wanted in settings.on


def holds_ttl(status: VideoJobStatus, queue: VideoQueue | None) -> bool:
    """Whether the job's TTL deletion waits for its notification: while it is owed and its
    queue still sends notifications (without the queue nothing would ever send it)."""
    notification = status.notification
    return (
        notification is not None
        and notification.state is NotificationState.OWED
        and queue is not None
        and queue.spec.notifications is not None
    )


def owe_notification(
    assessment: Assessment,
    before: Assessment | None,
    job: _Recorded | None,
    queue: VideoQueue | None,
    now: datetime.datetime,
) -> Assessment:
    """The assessment with its notification recorded as owed when it ends the job (the
    job was not terminal before: its last assessment, else its unwritten or stored
    status) and the queue covers the outcome. A re-assessment of the same outcome keeps the
    notification its previous assessment recorded."""
    status = assessment.status
    if status.phase is None or not status.phase.is_terminal or job is None:
        return assessment
    key = notification_key(job.uid, status)
    if status.notification is not None and status.notification.key == key:
        return assessment
    prior = before.status.notification if before is not None else None
    if prior is not None and prior.key == key:
        return _with(assessment, prior)
    if before is not None:
        phase_before = before.status.phase
    else:
        phase_before = job.unwritten.phase if job.unwritten is not None else job.stored_phase
    settings = queue.spec.notifications if queue is not None else None
    if (phase_before is not None and phase_before.is_terminal) or not covers(
        settings, status.phase
    ):
        return assessment
    owed = NotificationStatus(
        key=key, state=NotificationState.OWED, owed_time=status.completion_time or now
    )
    updated = _with(assessment, owed)
    if find_condition(status.conditions, JobConditionType.NOTIFICATION_FAILED) is not None:
        # An earlier outcome's notification failed; this one has not yet.
        _condition(updated.status, False, "Owed", "the notification of this outcome is owed", now)
    return updated


def settle_notification(
    assessment: Assessment,
    news: NotificationNews | None,
    queue: VideoQueue | None,
    now: datetime.datetime,
) -> Assessment:
    """Record what became of the owed notification: the sender's `news` about it, or, when
    the queue (present) no longer sends notifications for that outcome, that it is given up."""
    notification = assessment.status.notification
    if notification is None or notification.state is not NotificationState.OWED:
        return assessment
    if news is not None and news.key == notification.key:
        return _record_news(assessment, notification, news)
    settings = queue.spec.notifications if queue is not None else None
    if queue is not None and not covers(settings, _phase_of(notification.key)):
        message = (
            f"not sent: the spec.notifications of queue {queue.metadata.name} no longer "
            "covers this outcome"
        )
        news = NotificationNews(
            notification.key, NotificationState.GAVE_UP, now, notification.tries or 0,
            "NotificationsRemoved", message,
        )  # fmt: skip
        return _record_news(assessment, notification, news)
    return assessment


def _record_news(
    assessment: Assessment, notification: NotificationStatus, news: NotificationNews
) -> Assessment:
    status = assessment.status
    failing = find_condition(status.conditions, JobConditionType.NOTIFICATION_FAILED)
    was_failing = failing is not None and failing.status == "True"
    notices: list[Notice] = []
    if news.state is NotificationState.DELIVERED:
        updated = notification.model_copy(
            update={
                "state": NotificationState.DELIVERED,
                "delivered_time": news.at,
                "tries": news.tries,
                "message": None,
            }
        )
        result = _with(assessment, updated)
        if was_failing:
            text = f"delivered after {news.tries} tries"
            _condition(result.status, False, "Delivered", text, news.at)
            notices.append(Notice("Normal", "NotificationDelivered", f"notification {text}"))
    elif news.state is NotificationState.GAVE_UP:
        updated = notification.model_copy(
            update={
                "state": NotificationState.GAVE_UP,
                "tries": news.tries,
                "last_try_time": news.at,
                "message": news.message[:1024],
            }
        )
        result = _with(assessment, updated)
        text = f"gave up the notification {notification.key}: {news.message}"[:1024]
        _condition(result.status, True, news.reason or "GaveUp", text, news.at)
        notices.append(Notice("Warning", "NotificationFailed", text))
    else:  # still owed, with a problem the sender keeps trying to get past
        if notification.message == news.message[:1024] and was_failing:
            return assessment  # recorded already
        updated = notification.model_copy(
            update={"tries": news.tries, "last_try_time": news.at, "message": news.message[:1024]}
        )
        result = _with(assessment, updated)
        _condition(result.status, True, news.reason, news.message[:1024], news.at)
        notices.append(Notice("Warning", news.reason, news.message[:1024]))
    return dataclasses.replace(result, notices=(*result.notices, *notices))


def _with(assessment: Assessment, notification: NotificationStatus) -> Assessment:
    status = assessment.status.model_copy(update={"notification": notification})
    return dataclasses.replace(assessment, status=status)


def _condition(
    status: VideoJobStatus, value: bool, reason: str, message: str, now: datetime.datetime
) -> None:
    status.conditions = put_condition(
        status.conditions,
        JobConditionType.NOTIFICATION_FAILED,
        value,
        reason,
        message,
        now=now,
        generation=status.observed_generation,
    )
