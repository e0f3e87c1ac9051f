"""A worker pod whose attempt is over keeps its slot and memory until it is gone: a deleted
pod runs on through its grace period (preStop hooks, the worker finishing a write), so the
next job must not start beside it. Runs `Controller.reconcile_queue` on an index fed by hand
(the same on a real kubelet: tests/e2e/test_real_node_budget.py)."""

from __future__ import annotations

import copy
from typing import Any, cast

from tests.unit.controller.test_runtime_cycles import (
    NOW,
    NS,
    drain_writes,
    job_body,
    queue_body,
    with_status,
)
from videoqueue.api import VideoQueue
from videoqueue.controller.entries import JobEntry, QueueEntry
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.kube_helpers import Resource
from videoqueue.controller.loop import Controller
from videoqueue.envtest.recording_kube import RecordingKube


class DeletingKube(RecordingKube):
    """Records pod deletions; the test decides when a deleted pod is really gone."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        super().__init__(objects)
        self.deleted: list[str] = []
        self.created: dict[str, int] = {}  # worker pods created, by job name

    async def create(self, resource: Resource, namespace: str, body: Any) -> tuple[Any, bool]:
        job = body["metadata"]["name"].rsplit("-a", 1)[0]
        self.created[job] = self.created.get(job, 0) + 1
        return await super().create(resource, namespace, body)

    async def delete(self, resource: Resource, namespace: str, name: str, **_: Any) -> None:
        self.deleted.append(name)


class OneSlotQueue:
    """A queue of one slot with jobs `first` and `second` (created in that order)."""

    def __init__(self) -> None:
        self.objects = {f"{NS}/{name}": job_body(name) for name in ("first", "second")}
        self.objects[f"{NS}/second"]["metadata"]["creationTimestamp"] = "2026-11-23T11:00:01Z"
        self.kube = DeletingKube(self.objects)
        self.now = NOW.timestamp()
        self.controller = Controller(cast(KubeClient, self.kube), clock=lambda: self.now)
        body = queue_body("Active")
        body["spec"]["concurrency"] = 1
        self.entry = QueueEntry(f"{NS}/work", body=body, queue=VideoQueue.model_validate(body))
        self.controller.queues[self.entry.key] = self.entry
        for key, job in self.objects.items():
            self.controller.jobs[key] = JobEntry(copy.deepcopy(job))
            self.entry.jobs.add(key)

    async def cycle(self, seconds: float = 1) -> None:
        self.now += seconds
        await self.controller.reconcile_queue(self.entry)
        await drain_writes(self.entry)

    def pods(self, job: str) -> dict[str, dict[str, Any]]:
        return self.controller.jobs[f"{NS}/{job}"].pods

    def admitted(self) -> list[str]:
        """The jobs that have had a worker pod created."""
        return sorted(name for name in ("first", "second") if self.kube.created.get(name))

    def waiting_because(self, job: str) -> tuple[str, str]:
        conditions = self.kube.objects[f"{NS}/{job}"]["status"]["conditions"]
        admitted = next(c for c in conditions if c["type"] == "Admitted")
        return admitted["reason"], admitted["message"]

    async def start_first(self) -> dict[str, Any]:
        await self.cycle()
        assert self.admitted() == ["first"]
        (pod,) = self.pods("first").values()
        running = with_status(pod, "Running", self.now)
        self.controller.observe_pod(running, deleted=False)
        await self.cycle()
        return running

    async def cancel_first(self) -> None:
        cancelled = copy.deepcopy(self.objects[f"{NS}/first"])
        cancelled["spec"]["cancel"] = True
        cancelled["metadata"]["resourceVersion"] = "5000"
        self.controller.observe_job(cancelled, deleted=False)
        await self.cycle()


def terminating(pod: dict[str, Any], phase: str = "Running") -> dict[str, Any]:
    """The pod after its deletion: a deletionTimestamp, still `phase` until it has stopped."""
    pod = copy.deepcopy(pod)
    pod["metadata"]["deletionTimestamp"] = "2026-11-23T12:00:30Z"
    pod["metadata"]["resourceVersion"] = str(int(pod["metadata"]["resourceVersion"]) + 1)
    pod["status"]["phase"] = phase
    return pod


async def test_the_next_job_waits_for_a_cancelled_jobs_pod_to_stop() -> None:
    queue = OneSlotQueue()
    running = await queue.start_first()
    await queue.cancel_first()
    assert queue.kube.deleted == [running["metadata"]["name"]]

    # The pod runs on through its grace period: the slot is still taken.
    queue.controller.observe_pod(terminating(running), deleted=False)
    for _ in range(5):
        await queue.cycle(5)
    assert queue.admitted() == ["first"]
    assert queue.waiting_because("second")[0] == "WaitingForSlot"

    # Terminated (phase Failed) is enough: its containers no longer hold memory.
    queue.controller.observe_pod(terminating(running, "Failed"), deleted=False)
    await queue.cycle()
    assert queue.admitted() == ["first", "second"]


async def test_a_deleted_jobs_pods_hold_their_slot_until_they_are_gone() -> None:
    # `kubectl delete vj` of a running job: the garbage collector deletes its pod, which
    # stops over its grace period after the job itself is gone.
    queue = OneSlotQueue()
    running = await queue.start_first()

    queue.controller.observe_job(queue.objects[f"{NS}/first"], deleted=True)
    queue.controller.observe_pod(terminating(running), deleted=False)
    for _ in range(5):
        await queue.cycle(5)
    assert queue.admitted() == ["first"]

    queue.controller.observe_pod(terminating(running), deleted=True)
    await queue.cycle()
    assert queue.admitted() == ["first", "second"]
