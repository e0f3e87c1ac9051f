"""Worker pods that cannot be built or that the API server refuses (issue 14): the job says
why, holds no slot, and the next try waits for a backoff however often the queue's loop is
woken. Cycles run on a simulated clock with a fake API client; the real API server's
refusals are tests/integration/test_pod_refusals.py."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from typing import Any, cast

import pytest

from tests.unit.controller.test_runtime_cycles import (
    NOW,
    NS,
    drain_writes,
    job_body,
    queue_body,
)
from videoqueue.api import VideoQueue
from videoqueue.controller import loop as scheduler_loop
from videoqueue.controller.apply import POD_REFUSED_MAX_SECONDS
from videoqueue.controller.entries import JobEntry, QueueEntry
from videoqueue.controller.kube import KubeApiError, KubeClient
from videoqueue.controller.kube_helpers import Resource
from videoqueue.controller.loop import Controller
from videoqueue.envtest.recording_kube import RecordingKube

FORBIDDEN = 'pods "a-a1" is forbidden: violates PodSecurity "restricted:latest": privileged'


class RefusingKube(RecordingKube):
    """Refuses every pod creation with 403, as Pod Security admission does."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        super().__init__(objects)
        self.refuse = True

    async def create(self, resource: Resource, namespace: str, body: Any) -> tuple[Any, bool]:
        if self.refuse and resource.plural == "pods":
            self.calls["refused pods"] += 1
            raise KubeApiError(403, "Forbidden", FORBIDDEN, {})
        return await super().create(resource, namespace, body)


def active_queue(controller: Controller, names: list[str], **spec: Any) -> QueueEntry:
    body = queue_body("Active")
    body["spec"].update(spec)
    entry = QueueEntry(f"{NS}/work", body=body, queue=VideoQueue.model_validate(body))
    controller.queues[entry.key] = entry
    for name in names:
        controller.jobs[f"{NS}/{name}"] = JobEntry(copy.deepcopy(job_body(name)))
        entry.jobs.add(f"{NS}/{name}")
    return entry


async def test_a_refused_pod_is_retried_with_backoff_however_often_the_loop_wakes() -> None:
    kube = RefusingKube({f"{NS}/a": job_body("a"), f"{NS}/b": job_body("b")})
    now = [NOW.timestamp()]
    controller = Controller(cast(KubeClient, kube), clock=lambda: now[0])
    entry = active_queue(controller, ["a", "b"])

    # A cycle every 250 ms for ten minutes (watch events, other jobs): a hot loop would
    # try thousands of times.
    wake_ats: list[float] = []
    for step in range(2400):
        now[0] = NOW.timestamp() + step * 0.25
        entry.assess_again(f"{NS}/a")
        if (wake_at := await controller.reconcile_queue(entry)) is not None:
            wake_ats.append(wake_at)
        await drain_writes(entry)

    # 10, 20, 40, 80, 160, then 300 s apart: 6 rounds in 600 s, each admitting both jobs.
    assert 10 <= kube.calls["refused pods"] <= 14
    assert POD_REFUSED_MAX_SECONDS == 300
    status = kube.objects[f"{NS}/a"]["status"]
    admitted = next(c for c in status["conditions"] if c["type"] == "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", "WorkerPodRefused")
    assert FORBIDDEN in admitted["message"]
    assert "403 Forbidden" in admitted["message"]
    assert status["phase"] == "Pending"  # no attempt was used
    assert status.get("attempt", 0) == 0
    assert kube.calls["event"] >= 1
    assert any(w > now[0] for w in wake_ats)  # the loop sleeps until the next try


async def test_a_new_queue_spec_tries_again_at_once() -> None:
    kube = RefusingKube({f"{NS}/a": job_body("a")})
    now = [NOW.timestamp()]
    controller = Controller(cast(KubeClient, kube), clock=lambda: now[0])
    entry = active_queue(controller, ["a"])
    await controller.reconcile_queue(entry)
    await drain_writes(entry)
    assert kube.calls["refused pods"] == 1

    now[0] += 1  # well within the backoff
    await controller.reconcile_queue(entry)
    assert kube.calls["refused pods"] == 1  # held

    fixed = copy.deepcopy(entry.body)
    assert fixed is not None
    fixed["metadata"]["generation"] = 2
    fixed["metadata"]["resourceVersion"] = "2"
    kube.refuse = False
    controller.observe_queue(fixed, deleted=False)
    await controller.reconcile_queue(entry)
    await drain_writes(entry)
    assert kube.calls["create pods"] == 1
    assert controller.jobs[f"{NS}/a"].pods  # admitted with a pod


async def test_a_template_the_operator_cannot_build_holds_the_job_and_says_why() -> None:
    kube = RecordingKube({f"{NS}/a": job_body("a")})
    now = [NOW.timestamp()]
    controller = Controller(cast(KubeClient, kube), clock=lambda: now[0])
    entry = active_queue(controller, ["a"], template={"spec": {"containers": []}})

    for step in range(100):
        now[0] = NOW.timestamp() + step * 0.1
        entry.assess_again(f"{NS}/a")
        await controller.reconcile_queue(entry)
        await drain_writes(entry)

    assert kube.calls["create pods"] == 0
    status = kube.objects[f"{NS}/a"]["status"]
    admitted = next(c for c in status["conditions"] if c["type"] == "Admitted")
    assert admitted["reason"] == "WorkerPodInvalid"
    assert "spec.template.spec.containers is empty" in admitted["message"]
    assert entry.views[f"{NS}/a"].state.value == "Pending"  # waiting, holding nothing


class StatusRefusingKube(RecordingKube):
    """Refuses every status write with 422, as a status the schema does not allow."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        super().__init__(objects)
        self.events: list[str] = []

    async def patch(
        self, resource: Resource, namespace: str, name: str, patch: Any, subresource: str = ""
    ) -> dict[str, Any] | None:
        if resource.plural != "videojobs":
            return await super().patch(resource, namespace, name, patch, subresource)
        self.calls[f"patch {resource.plural}/{subresource}"] += 1
        raise KubeApiError(422, "Invalid", "status.message: Too long", {})

    async def post_event(self, involved: Any, **fields: Any) -> None:
        self.calls["event"] += 1
        self.events.append(fields["reason"])


async def test_a_refused_status_write_backs_off_and_is_reported_once() -> None:
    kube = StatusRefusingKube({f"{NS}/a": job_body("a")})
    now = [NOW.timestamp()]
    controller = Controller(cast(KubeClient, kube), clock=lambda: now[0])
    body = queue_body("Paused")  # the job only waits: its one write is the Pending status
    entry = QueueEntry(f"{NS}/work", body=body, queue=VideoQueue.model_validate(body))
    controller.queues[entry.key] = entry
    controller.jobs[f"{NS}/a"] = JobEntry(copy.deepcopy(job_body("a")))
    entry.jobs.add(f"{NS}/a")

    for step in range(2400):  # a cycle every 250 ms for ten minutes
        now[0] = NOW.timestamp() + step * 0.25
        await controller.reconcile_queue(entry)
        await drain_writes(entry)

    # 1, 2, 4, ... 256 s apart: 10 tries in 600 s, where a fixed 1 s retry makes 600.
    assert 8 <= kube.calls["patch videojobs/status"] <= 11
    assert kube.events == ["StatusWriteRefused"]


async def test_a_failing_cycle_backs_off_however_often_the_queue_is_woken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduler_loop, "WRITE_RETRY_SECONDS", 0.01)  # the same doubling, faster
    controller = Controller(cast(KubeClient, RecordingKube({})))
    entry = QueueEntry(f"{NS}/work")
    cycles = 0

    async def failing(entry: QueueEntry) -> float | None:
        nonlocal cycles
        cycles += 1
        raise KubeApiError(422, "Invalid", "status.health: Unsupported value", {})

    controller.reconcile_queue = failing  # type: ignore[method-assign]
    loop = asyncio.create_task(controller._loop(entry))
    deadline = asyncio.get_running_loop().time() + 0.6
    wakes = 0
    while asyncio.get_running_loop().time() < deadline:  # watch events, 1,000 a second
        entry.wake.set()
        wakes += 1
        await asyncio.sleep(0.001)
    loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop
    # Tries at 0, 0.01, 0.03, 0.07, 0.15, 0.31 s (and 0.63): not one per wake.
    assert wakes > 100
    assert 4 <= cycles <= 8


async def test_a_job_too_large_to_hand_over_is_rejected_and_holds_nothing() -> None:
    """The CRD keeps such jobs out (tests/unit/api/test_payload_bounds.py); one that gets
    in anyway (an older CRD, a schema change) must not hold a slot with no pod."""
    big = job_body("big")
    big["spec"]["params"] = {"blob": "x" * 40_000}
    kube = RecordingKube({f"{NS}/big": big, f"{NS}/next": job_body("next")})
    controller = Controller(cast(KubeClient, kube), clock=NOW.timestamp)
    entry = active_queue(controller, [], concurrency=1)
    for name, body in (("big", big), ("next", job_body("next"))):
        controller.jobs[f"{NS}/{name}"] = JobEntry(copy.deepcopy(body))
        entry.jobs.add(f"{NS}/{name}")

    for _ in range(3):
        await controller.reconcile_queue(entry)
        await drain_writes(entry)

    status = kube.objects[f"{NS}/big"]["status"]
    assert status["phase"] == "Rejected"
    rejected = next(c for c in status["conditions"] if c["type"] == "Rejected")
    assert rejected["reason"] == "NotDeliverable"
    assert "32768" in rejected["message"]
    # Its slot went to the next job, which got a pod.
    assert kube.calls["create pods"] == 1
    assert controller.jobs[f"{NS}/next"].pods
