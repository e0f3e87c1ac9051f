"""Webhook notifications when jobs finish (`spec.notifications` of a VideoQueue), delivered
at least once.

The job's status is the record of what is owed: the write of a terminal status says
`notification: {key, state: Owed}` (`videoqueue.scheduling.notifications`), and the operator
submits every job whose stored status says Owed, once per process, to the `Notifier` here:
after its own write, and for every job it finds Owed when it starts or takes over. The
Notifier POSTs each in the background (admission never waits for a webhook) and reports the
result, which the job's next status write records: Delivered on a 2xx answer; GaveUp after
the queue's `maxAttempts` failed tries (an error status, a timeout, a refused connection),
retried with exponential backoff (1 s, 2 s, 4 s ... capped at 60 s). At most
`MAX_IN_FLIGHT` are sent at once and at most `MAX_QUEUED` wait in memory; beyond that a job
simply stays Owed and is submitted when there is room. A notification can be sent more than
once (a crash between the receiver's 2xx and the Delivered write): receivers deduplicate by
its idempotency key.

Each try is signed when the queue names a Secret (`spec.notifications.secretRef`):
HMAC-SHA256 over "<timestamp>.<raw body>", with the try's own unix time. While the Secret or
its key is missing nothing is sent (never unsigned): the job says so and the try is repeated
with the same backoff, without using up a try. The Secret's value is read per try (cached for
`SECRET_CACHE_SECONDS`) and never logged or written anywhere.

Headers: X-VideoQueue-Delivery (the key), X-VideoQueue-Timestamp, X-VideoQueue-Signature
("sha256=<hex>", signed queues only). The body:
    {"idempotencyKey", "queue", "namespace", "job", "uid", "type", "outcome" (Succeeded |
     Failed | Cancelled | Rejected), "reason", "message", "attempts", "waitSeconds",
     "runSeconds", "completionTime", "result" (the worker's result, or null)}
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from videoqueue.api import (
    JobConditionType,
    Notifications,
    NotificationState,
    VideoJob,
    VideoJobStatus,
    find_condition,
)
from videoqueue.scheduling.notifications import NotificationNews, covers, notification_key

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 8
MAX_QUEUED = 10_000
MAX_BACKOFF_SECONDS = 60.0
SECRET_CACHE_SECONDS = 10.0

HEADER_DELIVERY = "X-VideoQueue-Delivery"
HEADER_TIMESTAMP = "X-VideoQueue-Timestamp"
HEADER_SIGNATURE = "X-VideoQueue-Signature"


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str
    key: str


@dataclass(frozen=True)
class Notification:
    key: str  # the idempotency key: "<job uid>/<attempt>/<phase>"
    job: str  # "namespace/name"
    url: str
    body: dict[str, Any]
    max_attempts: int
    timeout_seconds: float
    secret: SecretRef | None = None


class SecretError(Exception):
    """The signing key cannot be had; `reason` is the job condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# Reads a Secret's data ({key: base64}) or returns None when the Secret does not exist.
SecretReader = Callable[[str, str], Awaitable[dict[str, Any] | None]]


def notification_for(
    settings: Notifications | None, job: VideoJob, status: VideoJobStatus
) -> Notification | None:
    """The notification a job that reached `status` (terminal) sends, if any."""
    if status.phase is None or not covers(settings, status.phase):
        return None
    assert settings is not None
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
    key = notification_key(job.metadata.uid, status)
    body = {
        "idempotencyKey": key,
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
    ref = settings.secret_ref
    namespace = job.metadata.namespace or ""
    return Notification(
        key=key,
        job=f"{namespace}/{job.metadata.name}",
        url=settings.url,
        body=body,
        max_attempts=settings.max_attempts,
        timeout_seconds=float(settings.timeout_seconds),
        secret=SecretRef(namespace, ref.name, ref.key) if ref is not None else None,
    )


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The X-VideoQueue-Signature of a try: HMAC-SHA256 over "<timestamp>.<body>"."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def encode_body(body: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed)."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


class Notifier:
    """Sends notifications in the background; `submit` never blocks.

    `on_result(notification, news)`: a try's outcome worth recording (Delivered, GaveUp, or a
    missing Secret). `still_owed(notification)`: asked before each try; False stops it (the
    job's status moved on). `on_room()`: a place in the queue came free."""

    def __init__(
        self,
        *,
        on_result: Callable[[Notification, NotificationNews], None] | None = None,
        still_owed: Callable[[Notification], bool] | None = None,
        on_room: Callable[[], None] | None = None,
        read_secret: SecretReader | None = None,
        backoff_base: float = 1.0,
        clock: Callable[[], float] = time.time,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=max_queued)
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._on_result = on_result
        self._still_owed = still_owed
        self._on_room = on_room
        self._read_secret = read_secret
        self._backoff_base = backoff_base
        self._clock = clock
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self.sent = 0

    def submit(self, notification: Notification) -> bool:
        """Queue it; False when the queue is full (the caller submits it again later)."""
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"notifier {i}")
                for i in range(MAX_IN_FLIGHT)
            ]
        try:
            self._queue.put_nowait(notification)
        except asyncio.QueueFull:
            return False
        return True

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
            if self._on_room is not None:
                self._on_room()
            try:
                await self._deliver(notification)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("sending the notification %s failed", notification.key)
            finally:
                self._queue.task_done()

    def _report(self, notification: Notification, news: NotificationNews) -> None:
        if self._on_result is not None:
            self._on_result(notification, news)

    def _now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)

    async def _deliver(self, notification: Notification) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = encode_body(notification.body)
        tries, waits, problem = 0, 0, ""
        while self._still_owed is None or self._still_owed(notification):
            try:
                headers = await self._headers(notification, body)
            except SecretError as e:
                logger.warning("notification %s not sent: %s", notification.key, e)
                news = NotificationNews(
                    notification.key, NotificationState.OWED, self._now(), tries, e.reason, str(e)
                )
                self._report(notification, news)
                waits += 1
                await asyncio.sleep(self._delay(waits))
                continue
            tries += 1
            problem = await self._post(notification, body, headers)
            if not problem:
                self.sent += 1
                news = NotificationNews(
                    notification.key, NotificationState.DELIVERED, self._now(), tries
                )
                self._report(notification, news)
                return
            if tries >= notification.max_attempts:
                break
            waits += 1
            await asyncio.sleep(self._delay(waits))
        else:
            return  # no longer owed
        # The URL without its query, which may carry a token.
        where = notification.url.split("?", 1)[0]
        logger.warning(
            "giving up on the notification %s to %s after %d tries: %s",
            notification.key,
            where,
            tries,
            problem,
        )
        message = f"{tries} tries to {where} failed; the last: {problem}"
        news = NotificationNews(
            notification.key, NotificationState.GAVE_UP, self._now(), tries, "GaveUp", message
        )
        self._report(notification, news)

    def _delay(self, waits: int) -> float:
        return float(min(MAX_BACKOFF_SECONDS, self._backoff_base * 2 ** min(waits - 1, 16)))

    async def _post(self, notification: Notification, body: bytes, headers: dict[str, str]) -> str:
        """One try: "" when the receiver answered 2xx, else what went wrong."""
        assert self._session is not None
        try:
            async with self._session.post(
                notification.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=notification.timeout_seconds),
            ) as response:
                if 200 <= response.status < 300:
                    return ""
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as e:
            return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__

    async def _headers(self, notification: Notification, body: bytes) -> dict[str, str]:
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            HEADER_DELIVERY: notification.key,
            HEADER_TIMESTAMP: str(timestamp),
        }
        if notification.secret is not None:
            secret = await self._secret(notification.secret)
            headers[HEADER_SIGNATURE] = signature(secret, timestamp, body)
        return headers

    async def _secret(self, ref: SecretRef) -> bytes:
        """The signing key; raises SecretError saying what is missing and what to do."""
        cached = self._secrets.get((ref.namespace, ref.name))
        if cached is not None and cached[0] > self._clock():
            data = cached[1]
        else:
            if self._read_secret is None:
                raise SecretError("NotificationSecretUnreadable", "no Secret reader configured")
            try:
                found = await self._read_secret(ref.namespace, ref.name)
            except Exception as e:  # forbidden, the API server unreachable: say so, try again
                raise SecretError(
                    "NotificationSecretUnreadable",
                    f"cannot read Secret {ref.namespace}/{ref.name} for signing the "
                    f"notification ({type(e).__name__}: {str(e)[:200]}); not sent, retrying "
                    "with backoff",
                ) from None
            if found is None:
                raise SecretError(
                    "NotificationSecretMissing",
                    f"Secret {ref.namespace}/{ref.name} (spec.notifications.secretRef of the "
                    f"queue) does not exist: create it with key {ref.key!r} holding the "
                    "signing key; the notification is not sent unsigned and goes out once it "
                    "exists (retrying with backoff)",
                )
            data = found
            self._secrets[(ref.namespace, ref.name)] = (self._clock() + SECRET_CACHE_SECONDS, data)
        value = data.get(ref.key)
        if not value:
            self._secrets.pop((ref.namespace, ref.name), None)
            raise SecretError(
                "NotificationSecretMissing",
                f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r} (named by the "
                "queue's spec.notifications.secretRef): add it, or point secretRef.key at the "
                "right one; the notification is not sent unsigned and goes out once it exists "
                "(retrying with backoff)",
            )
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise SecretError(
                "NotificationSecretUnreadable",
                f"the value of key {ref.key!r} of Secret {ref.namespace}/{ref.name} is not "
                "base64 (as Secret data must be)",
            ) from None
