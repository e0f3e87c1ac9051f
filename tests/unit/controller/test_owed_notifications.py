"""The controller's side of at-least-once notifications (`controller.owed`): jobs whose stored
status says Owed, as a restarted operator finds them, are all sent even when they are more
than the Notifier holds, and each ends Delivered through an ordinary status write. Runs
`Controller.reconcile_queue` with a fake API client and a real HTTP receiver on loopback
(the behaviour against a real API server is covered by
tests/integration/test_operator_notifications.py)."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import Any, cast

from aiohttp import web

from videoqueue.api import VideoQueue
from videoqueue.controller.entries import JobEntry, QueueEntry
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.loop import Controller
from videoqueue.envtest.builders import MakeJob, MakeQueue, container
from videoqueue.envtest.recording_kube import RecordingKube

from .test_runtime_cycles import NOW, NS, drain_writes

JOBS = 12


def owed_job(name: str) -> dict[str, Any]:
    """A job that Succeeded with its notification owed, as the status write recorded it."""
    job = MakeJob(name, NS).uid(f"uid-{name}").generation(1).resource_version("10")
    job.created("2026-11-23T11:00:00Z").input("file:///a.mp4").finished("Succeeded", at=NOW)
    body = job.obj()
    body["status"]["notification"] = {"key": f"uid-{name}/1/Succeeded", "state": "Owed"}
    return body


async def test_more_owed_than_the_notifier_holds_are_all_sent_and_recorded() -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"

    objects = {f"{NS}/done-{i:02d}": owed_job(f"done-{i:02d}") for i in range(JOBS)}
    kube = RecordingKube(objects)
    controller = Controller(cast(KubeClient, kube), clock=time.time, start_loops=False)
    controller.notifier = controller._make_notifier(max_queued=2)
    queue = MakeQueue("work", NS).uid("queue-uid").generation(1).resource_version("1")
    queue.finalizers("videoqueue.dev/running-jobs").template(container("worker", image="w:1"))
    body = queue.notifications(url).obj()
    entry = QueueEntry(f"{NS}/work", body=body, queue=VideoQueue.model_validate(body))
    controller.queues[entry.key] = entry
    for key, job in objects.items():
        controller.jobs[key] = JobEntry(copy.deepcopy(job))
        entry.jobs.add(key)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await controller.reconcile_queue(entry)
            await drain_writes(entry)
            states = {o["status"]["notification"]["state"] for o in kube.objects.values()}
            if states == {"Delivered"}:
                break
            await asyncio.wait_for(entry.wake.wait(), 5)  # a result re-assesses its job
            entry.wake.clear()
    finally:
        await controller.stop()
        await runner.cleanup()

    # The Notifier held at most 2 (plus 8 in flight) at a time, yet none was dropped.
    assert sorted(r["job"] for r in received) == sorted(
        o["metadata"]["name"] for o in objects.values()
    )
    for stored in kube.objects.values():
        notification = stored["status"]["notification"]
        assert notification["state"] == "Delivered"
        assert notification["tries"] == 1
        assert notification["deliveredTime"]
