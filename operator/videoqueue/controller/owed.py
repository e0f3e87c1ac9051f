"""Sending the notifications jobs' stored statuses say are owed, and recording what became
of them (`videoqueue.controller.notifications` sends; `videoqueue.scheduling.notifications`
decides what the status says).

A job is submitted to the Notifier once per process, when its stored status says Owed: right
after the write that recorded it, or when a (re)started operator or a replica taking over
first writes, or finds nothing to write for, the job. A full Notifier queue drops nothing:
the job waits here by key and is submitted when a place comes free. Each result is kept on
the job's entry and the job re-assessed, so the result is written like any status change
(with backoff on API errors), and forgotten once its status no longer says Owed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from videoqueue.api import NotificationState
from videoqueue.controller.entries import JobEntry
from videoqueue.controller.index import Index
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.kube_helpers import SECRETS
from videoqueue.controller.notifications import Notification, Notifier, notification_for
from videoqueue.scheduling.notifications import NotificationNews

logger = logging.getLogger(__name__)

# Queue Events about given-up notifications in flight: kept referenced until done.
_events: set[asyncio.Task[Any]] = set()


class OwedNotifications(Index):
    """The index's part in at-least-once notifications (mixed into the controller)."""

    kube: KubeClient
    notifier: Notifier

    def _owed_init(self) -> None:
        # Idempotency keys submitted by this process and not yet recorded as settled.
        self._submitted: set[str] = set()
        # Jobs found Owed while the Notifier's queue was full, in the order found.
        self._owed_later: dict[str, None] = {}

    def _make_notifier(self, **settings: Any) -> Notifier:
        """The Notifier wired to this index; `settings`: Notifier's backoff_base, max_queued."""
        return Notifier(
            on_result=self._notification_result,
            still_owed=self._still_owed,
            on_room=self._notifier_room,
            read_secret=self._read_secret,
            clock=self.clock,
            **settings,
        )

    def _submit_owed(self, entry: JobEntry) -> None:
        """Submit the job's notification if its stored status says it is owed and this
        process has not yet; forget what its status has settled."""
        key = entry.notification_key
        news = entry.notification_news
        if entry.notification_state != NotificationState.OWED.value:
            if news is not None:
                self._submitted.discard(news.key)
                entry.notification_news = None  # on record (or superseded)
            if key is not None:
                self._submitted.discard(key)
            return
        if news is not None and news.key != key:
            entry.notification_news = None  # about an outcome the job has moved on from
        if key in self._submitted:
            return
        job = entry.job
        queue = self.queues.get(entry.queue_key)
        if job is None or queue is None or queue.queue is None:
            return  # without its queue nothing can be sent; its next assessment looks again
        notification = notification_for(queue.queue.spec.notifications, job, job.status)
        if notification is None or notification.key != key:
            return  # the queue no longer covers it: its assessment gives it up
        if self.notifier.submit(notification):
            self._submitted.add(notification.key)
            self._owed_later.pop(entry.key, None)
        else:
            self._owed_later[entry.key] = None

    def _notifier_room(self) -> None:
        """A place in the Notifier's queue came free: submit the next job waiting for one."""
        while self._owed_later:
            key = next(iter(self._owed_later))
            del self._owed_later[key]
            if (entry := self.jobs.get(key)) is not None:
                self._submit_owed(entry)
                return

    def _still_owed(self, notification: Notification) -> bool:
        """Whether to keep trying: the job's status (stored or about to be) still owes this
        notification. A job deleted meanwhile keeps the try going (best effort: nothing
        durable remembers it)."""
        entry = self.jobs.get(notification.job)
        if entry is None:
            return True
        if entry.notification_key == notification.key:
            return entry.notification_state == NotificationState.OWED.value
        decided = entry.assessment.status.notification if entry.assessment else None
        return decided is not None and decided.key == notification.key

    def _notification_result(self, notification: Notification, news: NotificationNews) -> None:
        """Keep what the Notifier found for the job's next assessment, which records it."""
        entry = self.jobs.get(notification.job)
        if news.state is NotificationState.GAVE_UP:
            self._post_given_up(notification, news)
        if entry is None or not notification.key.startswith(f"{entry.uid}/"):
            if news.state is not NotificationState.OWED:
                self._submitted.discard(notification.key)  # the job is gone: nothing to record
            return
        entry.notification_news = news
        self.refresh_jobs([entry.key])

    def _post_given_up(self, notification: Notification, news: NotificationNews) -> None:
        body = notification.body
        queue = self.queues.get(f"{body['namespace']}/{body['queue']}")
        if queue is None or queue.body is None:
            return
        task = asyncio.create_task(
            self.kube.post_event(
                queue.body,
                type_="Warning",
                reason="NotificationFailed",
                message=(
                    f"gave up sending the {body['outcome']} notification of job {body['job']}: "
                    f"{news.message}"
                )[:1024],
            )
        )
        _events.add(task)
        task.add_done_callback(_events.discard)

    async def _read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        secret = await self.kube.get(SECRETS, namespace, name)
        if secret is None:
            return None
        data: dict[str, Any] = secret.get("data") or {}
        return data
