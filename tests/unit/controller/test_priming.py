"""Priming a controller and its watch streams (`videoqueue.controller.handlers`) against a
scripted loopback API server: the streams start at their listings' versions, and a stream
whose version expired replaces the controller with a freshly primed one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.unit.controller.test_watch import serve_get, until
from videoqueue.controller import handlers
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.kube_helpers import PODS as POD_RESOURCE
from videoqueue.controller.kube_helpers import VIDEOJOBS, VIDEOQUEUES
from videoqueue.envtest.builders import MakeJob

JOBS = VIDEOJOBS.path(None)
QUEUES = VIDEOQUEUES.path(None)
PODS = POD_RESOURCE.path(None)


def job(name: str, version: str) -> dict[str, Any]:
    return MakeJob(name, "ns", queue="q").resource_version(version).obj()


@dataclass
class ApiServer:
    """Lists what `listed` holds; job watches play `job_watches` in order, then hang."""

    listed: dict[str, tuple[list[dict[str, Any]], str]]
    job_watches: list[list[dict[str, Any]]]
    lists: list[str] = field(default_factory=list)
    watches: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "1":
            self.lists.append(request.path)
            items, version = self.listed[request.path]
            return web.json_response({"items": items, "metadata": {"resourceVersion": version}})
        self.watches.append((request.path, dict(request.query)))
        if request.path != JOBS or not self.job_watches:
            await self.closing.wait()  # a quiet stream, until the test ends
        response = web.StreamResponse()
        await response.prepare(request)
        for event in self.job_watches.pop(0):
            await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
        return response


@pytest.fixture
async def api() -> AsyncIterator[Callable[[ApiServer], Any]]:
    runners: list[web.AppRunner] = []
    servers: list[ApiServer] = []
    saved = handlers._state
    handlers._state = handlers._State()

    async def start(server: ApiServer) -> None:
        servers.append(server)
        url = await serve_get(server.handle, runners)
        handlers._state.kube = KubeClient(url, aiohttp.ClientSession())

    yield start
    for task in handlers._state.streams:
        task.cancel()
    if handlers._state.controller is not None:
        await handlers._state.controller.stop()
    if handlers._state.activation is not None:
        handlers._state.activation.cancel()
    if handlers._state.kube is not None:
        await handlers._state.kube.close()
    handlers._state = saved
    for server in servers:
        server.closing.set()
    for runner in runners:
        await runner.cleanup()


async def test_streams_start_at_their_listings_versions_and_feed_the_controller(
    api: Callable[[ApiServer], Any],
) -> None:
    server = ApiServer(
        listed={QUEUES: ([], "5"), JOBS: ([job("a", "6")], "6"), PODS: ([], "7")},
        job_watches=[[{"type": "ADDED", "object": job("b", "8")}]],
    )
    await api(server)
    handlers._state.buffer = []
    await handlers._activate(settle=0.0)
    controller = handlers.controller()
    await until(lambda: "ns/b" in controller.jobs)
    assert "ns/a" in controller.jobs
    watched = {path: query for path, query in server.watches}
    assert watched[JOBS]["resourceVersion"] == "6"
    assert watched[PODS]["resourceVersion"] == "7"
    assert watched[PODS]["labelSelector"] == "videoqueue.dev/job"
    assert QUEUES not in watched  # kopf watches queues
    assert len(handlers._state.streams) == 2


async def test_an_expired_stream_primes_a_fresh_controller(
    api: Callable[[ApiServer], Any],
) -> None:
    expired = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    server = ApiServer(
        listed={QUEUES: ([], "5"), JOBS: ([job("a", "6")], "6"), PODS: ([], "7")},
        job_watches=[[{"type": "ADDED", "object": job("b", "8")}, expired]],
    )
    await api(server)
    handlers._state.buffer = []
    await handlers._activate(settle=0.0)
    first = handlers.controller()
    first_streams = list(handlers._state.streams)
    await until(lambda: handlers._state.controller not in (None, first))
    second = handlers.controller()
    assert server.lists == [QUEUES, JOBS, PODS] * 2  # everything listed again
    assert all(task.cancelled() or task.done() for task in first_streams)
    assert len(handlers._state.streams) == 2
    assert not set(first_streams) & set(handlers._state.streams)
    assert "ns/a" in second.jobs
