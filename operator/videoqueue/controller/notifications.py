"""Webhook notifications when jobs finish (`spec.notifications` of a VideoQueue).

A notification is queued when the operator has written a job's terminal status, and sent by
a background task: admission never waits for a webhook. Each one is POSTed as JSON and
retried with exponential backoff (1 s, 2 s, 4 s ... capped at 60 s) up to the queue's
`maxAttempts`; a 2xx answer ends it, anything else (an error status, a timeout, a refused
connection) is retried. At most `MAX_IN_FLIGHT` are sent at once and at most `MAX_QUEUED`
wait; beyond that new ones are dropped with a log line, so a dead endpoint cannot grow the
operator's memory. Notifications live in memory only: the ones still queued when the
operator stops are not sent (delivery is at most once per transition; receivers that need
every outcome should also read job status).

The body:
    {"queue", "namespace", "job", "uid", "type", "outcome" (Succeeded | Failed | Cancelled |
     Rejected), "reason", "message", "attempts", "waitSeconds", "runSeconds",
     "completionTime", "result" (the worker's result, or null)}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from videoqueue.api import (
    JobConditionType,
    JobPhase,
    NotificationEvent,
    Notifications,
    VideoJob,
    VideoJobStatus,
    find_condition,
)

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 8
MAX_QUEUED = 10_000
MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class Notification:
    url: str
    body: dict[str, Any]
    max_attempts: int
    timeout_seconds: float


def notification_for(
    settings: Notifications | None, job: VideoJob, status: VideoJobStatus
) -> Notification | None:
    """The notification a job that reached `status` (terminal) should send, if any."""
    if settings is None or status.phase is None or not status.phase.is_terminal:
        return None
    event = (
        NotificationEvent.SUCCEEDED
        if status.phase == JobPhase.SUCCEEDED
        else NotificationEvent.FAILED
    )
    if event not in settings.on:
        return None
    failed = next(
        (
            c
            for t in (
                JobConditionType.FAILED,
                JobConditionType.CANCELLED,
                JobConditionType.REJECTED,
            )
            if (c := find_condition(status.conditions, t)) is not None and c.status == "True"
        ),
        None,
    )
    body = {
        "queue": job.spec.queue_name,
        "namespace": job.metadata.namespace,
        "job": job.metadata.name,
        "uid": job.metadata.uid,
        "type": job.spec.type,
        "outcome": status.phase.value,
        "reason": failed.reason if failed is not None else "Completed",
        "message": status.message,
        "attempts": status.attempt,
        "waitSeconds": status.wait_seconds,
        "runSeconds": status.run_seconds,
        "completionTime": (
            status.completion_time.isoformat().replace("+00:00", "Z")
            if status.completion_time
            else None
        ),
        "result": status.result,
    }
    return Notification(
        url=settings.url,
        body=body,
        max_attempts=settings.max_attempts,
        timeout_seconds=float(settings.timeout_seconds),
    )


class Notifier:
    """Sends notifications in the background; `submit` never blocks."""

    def __init__(
        self,
        *,
        on_given_up: Callable[[Notification, str], None] | None = None,
        backoff_base: float = 1.0,
    ) -> None:
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=MAX_QUEUED)
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._on_given_up = on_given_up
        self._backoff_base = backoff_base
        self.sent = 0
        self.dropped = 0

    def submit(self, notification: Notification) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"notifier {i}")
                for i in range(MAX_IN_FLIGHT)
            ]
        try:
            self._queue.put_nowait(notification)
        except asyncio.QueueFull:
            self.dropped += 1
            logger.warning(
                "notification queue full; dropped the notification for %s",
                notification.body.get("job"),
            )

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _work(self) -> None:
        while True:
            notification = await self._queue.get()
            try:
                await self._deliver(notification)
            finally:
                self._queue.task_done()

    async def _deliver(self, notification: Notification) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        problem = ""
        for attempt in range(1, notification.max_attempts + 1):
            try:
                async with self._session.post(
                    notification.url,
                    json=notification.body,
                    timeout=aiohttp.ClientTimeout(total=notification.timeout_seconds),
                ) as response:
                    if 200 <= response.status < 300:
                        self.sent += 1
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as e:
                problem = f"{type(e).__name__}: {e}"
            if attempt < notification.max_attempts:
                delay = min(MAX_BACKOFF_SECONDS, self._backoff_base * 2 ** (attempt - 1))
                await asyncio.sleep(delay)
        logger.warning(
            "giving up on the notification for %s to %s after %d tries: %s",
            notification.body.get("job"),
            notification.url,
            notification.max_attempts,
            problem,
        )
        if self._on_given_up is not None:
            self._on_given_up(notification, problem)
