"""Which notification a finished job sends (controller.notifications.notification_for), and
how the Notifier delivers, signs and reports it (against a real HTTP server on loopback)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from videoqueue.api import (
    Condition,
    ConditionStatus,
    JobPhase,
    NotificationEvent,
    Notifications,
    NotificationState,
    VideoJob,
    VideoJobStatus,
)
from videoqueue.controller.notifications import (
    Notification,
    Notifier,
    encode_body,
    notification_for,
    signature,
)
from videoqueue.scheduling.notifications import NotificationNews

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
    assert sent.key == "u1/2/Succeeded"
    assert sent.body == {
        "idempotencyKey": "u1/2/Succeeded",
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


# -- the Notifier, against a real receiver on loopback ---------------------------------------

SECRET = b"s3cret"


class Receiver:
    """An HTTP server on loopback answering with the next of `answers` (then 204)."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.answers = list(answers or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.reached = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        self.reached.set()
        return web.Response(status=self.answers.pop(0) if self.answers else 204)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class Results:
    def __init__(self) -> None:
        self.news: list[NotificationNews] = []
        self.done = asyncio.Event()

    def __call__(self, _: Notification, news: NotificationNews) -> None:
        self.news.append(news)
        if news.state is not NotificationState.OWED:
            self.done.set()


def signed(url: str, **settings: Any) -> Notification:
    notifications = Notifications(url=url, **settings)
    sent = notification_for(notifications, JOB, status(JobPhase.SUCCEEDED))
    assert sent is not None
    return sent


async def test_a_delivery_is_signed_over_the_timestamp_and_the_raw_body() -> None:
    secrets = {"hook": {"token": base64.b64encode(SECRET).decode()}}

    async def read_secret(namespace: str, name: str) -> dict[str, Any] | None:
        assert namespace == "media"
        return secrets.get(name)

    results = Results()
    async with Receiver([500]) as receiver:
        notifier = Notifier(on_result=results, read_secret=read_secret, backoff_base=0.01)
        notification = signed(receiver.url, secretRef={"name": "hook", "key": "token"})
        assert notifier.submit(notification)
        await asyncio.wait_for(results.done.wait(), 10)
        await notifier.stop()

    assert [(n.state, n.tries) for n in results.news] == [(NotificationState.DELIVERED, 2)]
    timestamps = set()
    for headers, body in receiver.requests:
        timestamp = headers["X-VideoQueue-Timestamp"]
        expected = hmac.new(SECRET, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert headers["X-VideoQueue-Signature"] == f"sha256={expected}"
        assert headers["X-VideoQueue-Delivery"] == "u1/2/Succeeded"
        assert json.loads(body)["idempotencyKey"] == "u1/2/Succeeded"
        assert abs(int(timestamp) - time.time()) < 60
        timestamps.add(timestamp)
    assert len(receiver.requests) == 2  # the 500 was tried again


async def test_a_receiver_that_always_fails_is_given_up_after_max_attempts() -> None:
    results = Results()
    async with Receiver([503] * 10) as receiver:
        notifier = Notifier(on_result=results, backoff_base=0.01)
        notifier.submit(signed(receiver.url, maxAttempts=3))
        await asyncio.wait_for(results.done.wait(), 10)
        await notifier.stop()
    [given_up] = results.news
    assert (given_up.state, given_up.tries, given_up.reason) == (
        NotificationState.GAVE_UP,
        3,
        "GaveUp",
    )
    assert "HTTP 503" in given_up.message
    assert len(receiver.requests) == 3
    assert "X-VideoQueue-Signature" not in receiver.requests[0][0]  # no secretRef: unsigned


async def test_a_missing_secret_sends_nothing_until_it_exists() -> None:
    secrets: dict[str, dict[str, str]] = {}
    reads = 0

    async def read_secret(namespace: str, name: str) -> dict[str, Any] | None:
        nonlocal reads
        reads += 1
        if reads == 3:  # created meanwhile (the key first missing, then there)
            secrets["hook"] = {"other": "eA=="}
        if reads == 5:
            secrets["hook"]["token"] = base64.b64encode(SECRET).decode()
        return secrets.get(name)

    results = Results()
    async with Receiver() as receiver:
        notifier = Notifier(on_result=results, read_secret=read_secret, backoff_base=0.01)
        ref = {"name": "hook", "key": "token"}
        notifier.submit(signed(receiver.url, maxAttempts=1, secretRef=ref))
        await asyncio.wait_for(results.done.wait(), 10)
        await notifier.stop()
    problems = [n for n in results.news if n.state is NotificationState.OWED]
    assert {n.reason for n in problems} == {"NotificationSecretMissing"}
    assert "media/hook" in problems[0].message
    assert "does not exist" in problems[0].message
    assert "no key 'token'" in problems[-1].message
    assert all("s3cret" not in n.message for n in results.news)
    # Not a single unsigned try, and the waits used none of maxAttempts (1).
    assert results.news[-1].state is NotificationState.DELIVERED
    assert len(receiver.requests) == 1
    assert "X-VideoQueue-Signature" in receiver.requests[0][0]


async def test_a_notification_no_longer_owed_is_not_tried_again() -> None:
    owed = True
    results = Results()
    async with Receiver([500] * 10) as receiver:

        def still_owed(_: Notification) -> bool:
            return owed

        notifier = Notifier(on_result=results, still_owed=still_owed, backoff_base=0.05)
        notifier.submit(signed(receiver.url, maxAttempts=10))
        await asyncio.wait_for(receiver.reached.wait(), 10)  # it was trying
        owed = False
        await asyncio.sleep(0.5)  # several backoffs' worth
        await notifier.stop()
    assert len(receiver.requests) <= 2
    assert results.news == []


async def test_a_full_queue_refuses_instead_of_dropping() -> None:
    notifier = Notifier(max_queued=1, still_owed=lambda _: False)
    try:
        first = signed("http://127.0.0.1:9/hook")
        # The workers start with the first submit; before they run, the queue holds one.
        assert notifier.submit(first)
        assert not notifier.submit(first)
    finally:
        await notifier.stop()


def test_the_receiver_example_in_the_docs_verifies_what_the_operator_signs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = (Path(__file__).parents[3] / "docs" / "notifications.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.S)
    assert example is not None
    code = example.group(1).replace(
        'ThreadingHTTPServer(("0.0.0.0", 8080), Hook).serve_forever()', ""
    )
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET.decode())
    receiver: dict[str, Any] = {}
    exec(code, receiver)  # the example as documented, without starting its server
    verified = receiver["verified"]

    body = encode_body(signed("http://127.0.0.1:9/hook").body)
    now = int(time.time())
    headers = {
        "X-VideoQueue-Timestamp": str(now),
        "X-VideoQueue-Signature": signature(SECRET, now, body),
    }
    assert verified(headers, body)
    assert not verified(headers, body.replace(b"Succeeded", b"Failed"))  # tampered
    stale = now - 3600
    old = {
        "X-VideoQueue-Timestamp": str(stale),
        "X-VideoQueue-Signature": signature(SECRET, stale, body),
    }
    assert not verified(old, body)  # a replay
