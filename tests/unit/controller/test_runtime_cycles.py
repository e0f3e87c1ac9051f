"""The scheduler loop's cost follows what changed, not the size of the queue (issue 8):
a cycle assesses only changed jobs, writes only statuses that may differ, and leaves idle
jobs in their compact form. Runs `Controller.reconcile_queue` on an index fed by hand, with
a fake API client that records writes (the behaviour against a real API server is covered
by tests/integration)."""

from __future__ import annotations

import asyncio
import copy
import datetime
from collections import Counter
from typing import Any, cast

import pytest

from videoqueue.api import VideoQueue
from videoqueue.controller import loop as scheduler_loop
from videoqueue.controller.entries import JobEntry, QueueEntry
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.kube_helpers import Resource
from videoqueue.controller.loop import PACE_MAX_SECONDS, Controller, pace_after
from videoqueue.envtest.builders import MakeJob, MakeQueue, container
from videoqueue.envtest.recording_kube import RecordingKube
from videoqueue.scheduling.cycle import QueueView

NS = "media"
NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)


def queue_body(state: str) -> dict[str, Any]:
    """A queue as the index holds it: read from the API server, with its finalizer."""
    queue = MakeQueue("work", NS).as_indexed().state(state).concurrency(2)
    queue.budget("100Gi").default_request("1Gi").template(container("worker", image="w:1"))
    return queue.obj()


def job_body(name: str) -> dict[str, Any]:
    job = MakeJob(name, NS).uid(f"uid-{name}").generation(1).resource_version("10")
    return job.created("2026-11-23T11:00:00Z").input("file:///a.mp4").obj()


@pytest.fixture
async def setup() -> tuple[Controller, QueueEntry, RecordingKube]:
    objects = {f"{NS}/job-{i:03d}": job_body(f"job-{i:03d}") for i in range(200)}
    kube = RecordingKube(objects)
    controller = Controller(cast(KubeClient, kube), clock=NOW.timestamp)
    body = queue_body("Paused")  # nothing is admitted: every job waits
    entry = QueueEntry(f"{NS}/work", body=body, queue=VideoQueue.model_validate(body))
    controller.queues[entry.key] = entry
    for key, job in objects.items():
        controller.jobs[key] = JobEntry(copy.deepcopy(job))
        entry.jobs.add(key)
    return controller, entry, kube


async def drain_writes(entry: QueueEntry) -> None:
    while entry.writers:
        await asyncio.gather(*entry.writers)


async def test_an_unchanged_queue_costs_no_assessment_and_no_write(
    setup: tuple[Controller, QueueEntry, RecordingKube],
) -> None:
    controller, entry, kube = setup
    assessed: Counter[str] = Counter()
    view_of = controller.view_of

    def counting(entry: QueueEntry, now: float, *, limit: int) -> QueueView:
        view = view_of(entry, now, limit=limit)
        assessed.update(facts.key for facts in view.changed)
        return view

    controller.view_of = counting  # type: ignore[method-assign]

    # First cycle: every job is new, so each is assessed once and its Pending status written.
    await controller.reconcile_queue(entry)
    await drain_writes(entry)
    assert len(assessed) == 200
    assert set(assessed.values()) == {1}
    assert kube.calls["patch videojobs/status"] == 200
    assert not entry.unsaved

    # Nothing changed: the next cycle assesses nothing and writes nothing.
    assessed.clear()
    kube.calls.clear()
    await controller.reconcile_queue(entry)
    await drain_writes(entry)
    assert not assessed
    assert kube.calls["patch videojobs/status"] == 0

    # One job changes: only it is assessed; its status is unchanged, so nothing is written.
    entry.assess_again(f"{NS}/job-007")
    await controller.reconcile_queue(entry)
    await drain_writes(entry)
    assert assessed == Counter({f"{NS}/job-007": 1})
    assert kube.calls["patch videojobs/status"] == 0


async def test_idle_jobs_are_kept_compact_and_parse_again_on_demand(
    setup: tuple[Controller, QueueEntry, RecordingKube],
) -> None:
    controller, entry, kube = setup
    await controller.reconcile_queue(entry)
    await drain_writes(entry)
    job_entry = controller.jobs[f"{NS}/job-042"]
    assert job_entry._body is None  # compact: only the JSON is kept
    assert job_entry.stored_phase is not None  # what the cycles read stays a plain field
    job = job_entry.job
    assert job is not None
    assert job.metadata.name == "job-042"
    assert job.status.phase == job_entry.stored_phase
    assert kube.objects[f"{NS}/job-042"]["status"]["phase"] == "Pending"


async def test_write_failures_are_retried_by_a_later_cycle(
    setup: tuple[Controller, QueueEntry, RecordingKube],
) -> None:
    controller, entry, kube = setup
    failing = {f"{NS}/job-001"}
    patch = kube.patch

    async def flaky(resource: Resource, namespace: str, name: str, *args: Any, **kw: Any) -> Any:
        if f"{namespace}/{name}" in failing:
            failing.clear()
            raise RuntimeError("connection reset")
        return await patch(resource, namespace, name, *args, **kw)

    kube.patch = flaky  # type: ignore[method-assign]
    await controller.reconcile_queue(entry)
    await drain_writes(entry)
    assert entry.unsaved == {f"{NS}/job-001"}
    assert "status" not in kube.objects[f"{NS}/job-001"]

    # The retry waits WRITE_RETRY_SECONDS; a cycle after that writes it.
    later = NOW.timestamp() + 5
    controller.clock = lambda: later
    wake_at = await controller.reconcile_queue(entry)
    await drain_writes(entry)
    assert not entry.unsaved
    assert kube.objects[f"{NS}/job-001"]["status"]["phase"] == "Pending"
    assert wake_at is None or wake_at > later


def iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_status(pod: dict[str, Any], phase: str, started: float | None) -> dict[str, Any]:
    """The pod as KWOK (or a kubelet) reports it: Pending, Running since `started`, or
    Succeeded one second after `started`."""
    pod = copy.deepcopy(pod)
    version = int(pod["metadata"]["resourceVersion"]) + 1
    pod["metadata"]["resourceVersion"] = str(version)
    if started is None:
        pod["status"] = {"phase": "Pending"}
        return pod
    state: dict[str, Any] = {"running": {"startedAt": iso(started)}}
    if phase == "Succeeded":
        times = {"startedAt": iso(started), "finishedAt": iso(started + 1)}
        state = {"terminated": {"exitCode": 0, "reason": "Completed", **times}}
    pod["status"] = {
        "phase": phase,
        "startTime": iso(started),
        "containerStatuses": [{"name": "worker", "ready": phase == "Running", "state": state}],
    }
    return pod


class OneJob:
    """A queue (Active unless said) with one job, cycled by hand at chosen moments; the job
    was created an hour before NOW unless `created` says when."""

    def __init__(self, state: str = "Active", created: datetime.datetime | None = None) -> None:
        body = job_body("short")
        if created is not None:
            body["metadata"]["creationTimestamp"] = iso(created.timestamp())
        objects = {f"{NS}/short": body}
        self.kube = RecordingKube(objects)
        self.now = NOW.timestamp()
        self.controller = Controller(cast(KubeClient, self.kube), clock=lambda: self.now)
        body = queue_body(state)
        self.entry = QueueEntry(f"{NS}/work", body=body, queue=VideoQueue.model_validate(body))
        self.controller.queues[self.entry.key] = self.entry
        self.controller.jobs[f"{NS}/short"] = JobEntry(copy.deepcopy(objects[f"{NS}/short"]))
        self.entry.jobs.add(f"{NS}/short")

    async def cycle_at(self, moment: float, pod: dict[str, Any] | None = None) -> str | None:
        """The job's phase as stored after a cycle at `moment` (after `pod` is observed)."""
        self.now = moment
        if pod is not None:
            self.controller.observe_pod(pod, deleted=False)
        await self.controller.reconcile_queue(self.entry)
        await drain_writes(self.entry)
        return cast(str | None, self.kube.objects[f"{NS}/short"].get("status", {}).get("phase"))

    def pod(self) -> dict[str, Any]:
        (created,) = self.controller.jobs[f"{NS}/short"].pods.values()
        return created


async def test_a_short_job_whose_pod_starts_late_costs_one_status_write_and_no_event() -> None:
    """Admitted waits while the pod starts (up to 30 s after the admission) and Running 5 s
    after the start, outcomes go at once: a 1 s job whose pod starts 20 s after its admission
    (a busy cluster) writes only Succeeded, and a first attempt's success posts no Event."""
    one = OneJob()
    admitted_at = one.now
    assert await one.cycle_at(admitted_at) is None  # admitted: the pod is created, status held
    assert one.kube.calls["create pods"] == 1
    pending = with_status(one.pod(), "Pending", None)
    assert await one.cycle_at(admitted_at + 1, pending) is None
    assert await one.cycle_at(admitted_at + 6, pending) is None  # its pod is still starting
    started = admitted_at + 20
    running = with_status(pending, "Running", started)
    assert await one.cycle_at(started + 1, running) is None  # Running waits 5 s from start
    done = with_status(running, "Succeeded", started)
    assert await one.cycle_at(started + 2, done) == "Succeeded"
    assert one.kube.calls["patch videojobs/status"] == 1
    assert one.kube.calls["event"] == 0  # the status says it; the first admission has none


async def test_a_new_jobs_first_status_waits_5_s_and_is_skipped_when_admitted_by_then() -> None:
    """A new job's Pending status waits 5 s after its creation: one that waits longer is
    written Pending then; one admitted and done meanwhile is written once, with its outcome."""
    waiting = OneJob("Paused", created=NOW)
    assert await waiting.cycle_at(NOW.timestamp()) is None
    assert await waiting.cycle_at(NOW.timestamp() + 4) is None
    assert await waiting.cycle_at(NOW.timestamp() + 6) == "Pending"

    quick = OneJob(created=NOW)
    assert await quick.cycle_at(NOW.timestamp() + 1) is None  # admitted, nothing written
    running = with_status(quick.pod(), "Running", NOW.timestamp() + 2)
    assert await quick.cycle_at(NOW.timestamp() + 2, running) is None
    done = with_status(running, "Succeeded", NOW.timestamp() + 2)
    assert await quick.cycle_at(NOW.timestamp() + 3, done) == "Succeeded"
    assert quick.kube.calls["patch videojobs/status"] == 1


async def test_an_admitted_status_is_written_once_its_pod_is_unschedulable_or_slow() -> None:
    """The hold ends at once when the scheduler finds no node for the pod, and after 30 s
    for a pod that is still not running; its Running status then waits 30 s from the start."""
    one = OneJob()
    admitted_at = one.now
    assert await one.cycle_at(admitted_at) is None
    unschedulable = with_status(one.pod(), "Pending", None)
    unschedulable["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    ]
    assert await one.cycle_at(admitted_at + 2, unschedulable) is None  # (5 s as ever)
    assert await one.cycle_at(admitted_at + 6) == "Admitted"

    slow = OneJob()
    assert await slow.cycle_at(admitted_at) is None
    pending = with_status(slow.pod(), "Pending", None)
    assert await slow.cycle_at(admitted_at + 29, pending) is None
    assert await slow.cycle_at(admitted_at + 31) == "Admitted"
    assert slow.kube.calls["patch videojobs/status"] == 1

    # One in-between write per attempt: Running then waits 30 s after the start, not 5.
    started = admitted_at + 40
    running = with_status(pending, "Running", started)
    assert await slow.cycle_at(started + 6, running) == "Admitted"
    assert await slow.cycle_at(started + 29) == "Admitted"
    assert await slow.cycle_at(started + 31) == "Running"
    assert slow.kube.calls["patch videojobs/status"] == 2


async def test_a_cycle_that_fails_gives_its_jobs_back_for_the_retry(
    setup: tuple[Controller, QueueEntry, RecordingKube],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in deciding must not lose the changed jobs the cycle took from the index."""
    controller, entry, kube = setup

    def broken(view: QueueView, now: float) -> None:
        raise RuntimeError("a bug in deciding")

    monkeypatch.setattr(scheduler_loop, "plan_cycle", broken)
    with pytest.raises(RuntimeError):
        await controller.reconcile_queue(entry)
    assert len(entry.changed) == 200  # the first slice's jobs are back with the rest
    assert kube.calls["patch videojobs/status"] == 0

    monkeypatch.undo()
    await controller.reconcile_queue(entry)
    await drain_writes(entry)
    assert kube.calls["patch videojobs/status"] == 200


def test_only_costly_cycles_are_paced_and_never_for_long() -> None:
    assert pace_after(0.001) == 0.0  # a small queue's cycle: the next one may follow at once
    assert pace_after(0.02) == pytest.approx(0.02)  # planning at most half of the time
    assert pace_after(3.0) == PACE_MAX_SECONDS
