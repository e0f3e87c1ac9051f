"""The operator's own watch streams against a scripted loopback API server: events split
anywhere, bookmarks, resuming from the last version, expiry, failures backed off."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from videoqueue.controller.kube import KubeClient
from videoqueue.controller.kube_helpers import PODS, VIDEOJOBS
from videoqueue.controller.watch import WatchStream
from videoqueue.envtest.builders import MakeJob

Answer = tuple[int, Sequence[bytes]]  # status, the body's chunks as sent


def event(kind: str, name: str, version: str, **extra: Any) -> dict[str, Any]:
    job = MakeJob(name, "ns", queue="q").resource_version(version).obj()
    job["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    job.update(extra)
    return {"type": kind, "object": job}


def line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode() + b"\n"


@dataclass
class Server:
    """Hands out one answer per watch request, in order; then holds requests open."""

    answers: list[Answer]
    queries: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        if not self.answers:
            await asyncio.sleep(3600)
        status, chunks = self.answers.pop(0)
        response = web.StreamResponse(status=status)
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(0)  # separate reads: a line may arrive in pieces
        await response.write_eof()
        return response


async def serve_get(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], runners: list[web.AppRunner]
) -> str:
    """Answer every GET with `handler` on a loopback port; returns the server's URL. The
    caller cleans up `runners`."""
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    runners.append(runner)
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def kube() -> AsyncIterator[Callable[[Server], Any]]:
    runners: list[web.AppRunner] = []
    clients: list[KubeClient] = []

    async def start(server: Server) -> KubeClient:
        client = KubeClient(await serve_get(server.handle, runners), aiohttp.ClientSession())
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()


@dataclass
class Seen:
    events: list[tuple[str, str, bool]] = field(default_factory=list)  # name, version, deleted
    expired: int = 0

    def on_event(self, body: dict[str, Any], deleted: bool) -> None:
        meta = body["metadata"]
        assert "managedFields" not in meta  # slimmed before the index sees it
        self.events.append((meta["name"], meta["resourceVersion"], deleted))

    def on_expired(self) -> None:
        self.expired += 1


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll `condition` until it holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def stream(client: KubeClient, seen: Seen, version: str = "10", **kwargs: Any) -> WatchStream:
    return WatchStream(
        client, VIDEOJOBS, version, on_event=seen.on_event, on_expired=seen.on_expired, **kwargs
    )


async def test_events_split_anywhere_are_delivered_and_the_stream_resumes_from_the_last(
    kube: Callable[[Server], Any],
) -> None:
    big = event("MODIFIED", "b", "12", padding="x" * 300_000)  # over aiohttp's line limit
    first = line(event("ADDED", "a", "11")) + line(big) + line(event("DELETED", "a", "13"))
    bookmark = line({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}})
    server = Server(
        [
            (200, [first[:7], first[7:150_000], first[150_000:]]),
            (200, [bookmark]),
            (200, [line(event("ADDED", "c", "21"))]),
        ]
    )
    seen = Seen()
    task = asyncio.create_task(stream(await kube(server), seen).run())
    await until(lambda: len(seen.events) == 4)
    task.cancel()
    assert seen.events == [
        ("a", "11", False),
        ("b", "12", False),
        ("a", "13", True),
        ("c", "21", False),
    ]
    versions = [q["resourceVersion"] for q in server.queries[:3]]
    assert versions == ["10", "13", "20"]  # each reopened at the last version seen
    assert all(q["allowWatchBookmarks"] == "true" and q["watch"] == "1" for q in server.queries)
    assert seen.expired == 0


@pytest.mark.parametrize(
    "answer",
    [
        (200, [line({"type": "ERROR", "object": {"kind": "Status", "code": 410}})]),
        (410, [json.dumps({"kind": "Status", "code": 410, "reason": "Expired"}).encode()]),
    ],
    ids=["error-event", "http-410"],
)
async def test_an_expired_version_is_reported_once_and_ends_the_stream(
    kube: Callable[[Server], Any], answer: Answer
) -> None:
    server = Server([(200, [line(event("ADDED", "a", "11"))]), answer])
    seen = Seen()
    await asyncio.wait_for(stream(await kube(server), seen).run(), timeout=10)
    assert seen.expired == 1
    assert seen.events == [("a", "11", False)]
    assert len(server.queries) == 2


async def test_failures_are_retried_with_backoff_and_a_bad_event_does_not_stop_it(
    kube: Callable[[Server], Any],
) -> None:
    server = Server(
        [
            (500, [b'{"kind":"Status","code":500}']),
            (200, [b"not json\n"]),
            (200, [line(event("ADDED", "boom", "11")), line(event("ADDED", "ok", "12"))]),
        ]
    )
    seen = Seen()

    def picky(body: dict[str, Any], deleted: bool) -> None:
        if body["metadata"]["name"] == "boom":
            raise RuntimeError("a defect in handling one object")
        seen.on_event(body, deleted)

    watch = WatchStream(await kube(server), PODS, "10", on_event=picky, on_expired=seen.on_expired)
    started = time.monotonic()
    task = asyncio.create_task(watch.run())
    await until(lambda: bool(seen.events))
    task.cancel()
    assert seen.events == [("ok", "12", False)]
    # Two failures before the third request: at least 0.25 s + 0.5 s of backoff (half fixed).
    assert time.monotonic() - started >= 0.75
    assert [q["resourceVersion"] for q in server.queries[:3]] == ["10", "10", "10"]


async def test_a_stream_that_keeps_ending_at_once_backs_off(
    kube: Callable[[Server], Any],
) -> None:
    server = Server([(200, [])] * 1000)
    seen = Seen()
    task = asyncio.create_task(stream(await kube(server), seen).run())
    await until(lambda: len(server.queries) >= 2)  # it does reopen
    await asyncio.sleep(1.5)  # watching that nothing runs hot: the count is the assertion
    task.cancel()
    # Without backoff this would be hundreds; with it 0.25-0.5, 0.5-1, 1-2 s apart.
    assert 2 <= len(server.queries) <= 5
