"""The queue's statistics count each finished job exactly once, across re-observed jobs,
restarts and TTL deletions (issue 18): controllers primed from the objects of a fake API
server that applies merge patches as the real one does, driven cycle by cycle with a clock
of the test's own. The same against a real control plane: tests/integration/
test_queue_statistics.py."""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any, cast

import pytest

from videoqueue.api import QueueHealth
from videoqueue.controller.entries import QueueEntry
from videoqueue.controller.kube import KubeApiError, KubeClient
from videoqueue.controller.kube_helpers import Resource
from videoqueue.controller.loop import Controller
from videoqueue.envtest.builders import MakeJob, MakePod, MakeQueue, container
from videoqueue.scheduling.cycle_rules import QUEUE_FINALIZER
from videoqueue.scheduling.jobs.model import parse_time

NS = "media"
QUEUE_KEY = f"{NS}/work"
START = datetime.datetime(2026, 1, 1, 10, 5, tzinfo=datetime.UTC).timestamp()


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies a merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class FakeApi:
    """Objects by kind and "namespace/name"; writes applied as the API server would."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"videoqueues": {}, "videojobs": {}}
        self.objects["pods"] = {}
        self.version = 100
        self.refuse_job_status = False
        self.log: list[str] = []

    def put(self, plural: str, body: dict[str, Any]) -> None:
        self.version += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self.version)
        meta = body["metadata"]
        self.objects[plural][f"{meta['namespace']}/{meta['name']}"] = body

    async def patch(
        self, resource: Resource, namespace: str, name: str, patch: Any, subresource: str = ""
    ) -> dict[str, Any] | None:
        if resource.plural == "videojobs" and subresource == "status" and self.refuse_job_status:
            raise KubeApiError(503, "ServiceUnavailable", "the API server is going away", "")
        found = self.objects[resource.plural].get(f"{namespace}/{name}")
        if found is None:
            return None
        patch = copy.deepcopy(patch)
        patch.get("metadata", {}).pop("resourceVersion", None)
        self.put(resource.plural, merge(copy.deepcopy(found), patch))
        self.log.append(f"patch {resource.plural}/{name}")
        return copy.deepcopy(self.objects[resource.plural][f"{namespace}/{name}"])

    async def create(self, resource: Resource, namespace: str, body: Any) -> tuple[Any, bool]:
        body = copy.deepcopy(body)
        body["metadata"].setdefault("namespace", namespace)
        body["metadata"]["uid"] = f"uid-{body['metadata']['name']}"
        self.put(resource.plural, body)
        return copy.deepcopy(body), True

    async def delete(self, resource: Resource, namespace: str, name: str, **_: Any) -> None:
        self.objects[resource.plural].pop(f"{namespace}/{name}", None)
        self.log.append(f"delete {resource.plural}/{name}")

    async def get(self, resource: Resource, namespace: str, name: str) -> Any:
        return copy.deepcopy(self.objects[resource.plural].get(f"{namespace}/{name}"))

    async def post_event(self, involved: Any, **_: Any) -> None:
        pass

    @property
    def queue(self) -> dict[str, Any]:
        return self.objects["videoqueues"][QUEUE_KEY]

    @property
    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.queue.get("status", {}).get("statistics", {})
        return stats


def work_queue(**ttl: int) -> MakeQueue:
    queue = MakeQueue("work", NS).uid("uid-work").generation(1).finalizers(QUEUE_FINALIZER)
    queue.concurrency(8).budget("100Gi").default_request("1Gi").health(minFinished=2)
    if ttl:
        queue.ttl(**ttl)
    return queue.template(container("worker", image="w:1"))


def add_finished_worker(api: FakeApi, name: str, *, ok: bool = True, type_: str = "clip") -> None:
    """A job whose status says Running and whose worker pod has just ended."""
    job = MakeJob(name, NS).uid(f"uid-{name}").generation(1).type(type_).max_attempts(1)
    job.input("file:///in.mp4").running()
    pod = MakePod(job, work_queue())
    pod = pod.succeeded() if ok else pod.failed()
    api.put("videojobs", job.obj())
    api.put("pods", pod.obj())


def add_stored_outcome(api: FakeApi, name: str, *, ok: bool, at: float) -> None:
    """A job whose outcome a predecessor stored (and maybe did not count)."""
    job = MakeJob(name, NS).uid(f"uid-{name}").generation(1).type("clip")
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    job.input("file:///in.mp4").finished("Succeeded" if ok else "Failed", at=moment)
    api.put("videojobs", job.obj())


class Operator:
    """One operator's run: a controller primed from the API's objects, as on activation."""

    def __init__(self, api: FakeApi, now: list[float]) -> None:
        self.api, self.now = api, now
        self.controller = Controller(cast(KubeClient, api), clock=lambda: now[0], start_loops=False)
        for plural, kind in (("videoqueues", "queue"), ("videojobs", "job"), ("pods", "pod")):
            for body in copy.deepcopy(list(api.objects[plural].values())):
                getattr(self.controller, f"observe_{kind}")(body, deleted=False)

    @property
    def entry(self) -> QueueEntry:
        return self.controller.queues[QUEUE_KEY]

    async def cycles(self, count: int = 1, step: float = 3.0) -> None:
        """`count` cycles, `step` seconds apart (more than the queue status interval)."""
        for _ in range(count):
            self.now[0] += step
            await self.controller.reconcile_queue(self.entry)
            while self.entry.writers:
                await asyncio.gather(*self.entry.writers)
            await asyncio.sleep(0)  # background deletions

    def relist(self) -> None:
        """Every job again, as after a watch that was re-established (newer versions)."""
        for key in list(self.api.objects["videojobs"]):
            self.api.put("videojobs", self.api.objects["videojobs"][key])
            self.controller.observe_job(
                copy.deepcopy(self.api.objects["videojobs"][key]), deleted=False
            )


def counts(api: FakeApi) -> tuple[int, int]:
    return api.statistics.get("succeeded", 0), api.statistics.get("failed", 0)


def outcomes(api: FakeApi) -> tuple[int, int]:
    phases = [j.get("status", {}).get("phase") for j in api.objects["videojobs"].values()]
    return phases.count("Succeeded"), phases.count("Failed")


@pytest.fixture
def now() -> list[float]:
    return [START]


async def test_each_finished_job_is_counted_once_however_often_it_is_seen(
    now: list[float],
) -> None:
    api = FakeApi()
    api.put("videoqueues", work_queue().obj())
    for n in range(3):
        add_finished_worker(api, f"ok-{n}")
    add_finished_worker(api, "bad", ok=False)

    first = Operator(api, now)
    await first.cycles(3)
    assert outcomes(api) == (3, 1)
    assert counts(api) == (3, 1)
    stored = copy.deepcopy(api.statistics)
    completions = [j["status"]["completionTime"] for j in api.objects["videojobs"].values()]
    assert api.statistics["countedThrough"] == max(completions)  # (written the same way)

    writes = api.log.count("patch videoqueues/work")
    first.relist()
    await first.cycles(3)
    assert api.statistics == stored
    assert api.log.count("patch videoqueues/work") == writes  # unchanged: no write

    again = Operator(api, now)  # a restart: everything is read back
    await again.cycles(3)
    assert api.statistics == stored
    assert not again.entry.uncounted  # nothing left to count, nothing held in memory


async def test_a_restart_between_an_outcome_and_its_count_counts_it_once(
    now: list[float],
) -> None:
    api = FakeApi()
    api.put("videoqueues", work_queue().obj())
    for n in range(4):
        add_finished_worker(api, f"j-{n}", ok=n != 0)

    crashed = Operator(api, now)
    await crashed.cycles(1)  # outcomes written; the queue's count waits for them to be stored
    assert outcomes(api) == (3, 1)
    assert counts(api) == (0, 0)

    Operator(api, now)  # killed before it counted; and a second one that dies at once
    restarted = Operator(api, now)
    await restarted.cycles(3)
    assert counts(api) == (3, 1)
    await Operator(api, now).cycles(2)
    assert counts(api) == (3, 1)


async def test_outcomes_not_stored_before_a_restart_are_counted_once_stored(
    now: list[float],
) -> None:
    api = FakeApi()
    api.put("videoqueues", work_queue().obj())
    add_stored_outcome(api, "earlier", ok=True, at=START - 30)
    for n in range(2):
        add_finished_worker(api, f"j-{n}")
    api.refuse_job_status = True  # the API server goes away before the outcomes land

    crashed = Operator(api, now)
    await crashed.cycles(3)
    assert outcomes(api) == (1, 0)
    assert counts(api) == (1, 0)  # the stored outcome only: the others are not on record
    earlier = api.objects["videojobs"][f"{NS}/earlier"]["status"]["completionTime"]
    assert parse_time(api.statistics["countedThrough"]) == parse_time(earlier)

    api.refuse_job_status = False
    restarted = Operator(api, now)
    await restarted.cycles(3)
    assert outcomes(api) == (3, 0)
    assert counts(api) == (3, 0)


async def test_ttl_deletion_waits_for_the_count_and_loses_nothing(now: list[float]) -> None:
    api = FakeApi()
    api.put("videoqueues", work_queue(succeeded=0, failed=0).obj())
    for n in range(3):
        add_finished_worker(api, f"ok-{n}")
    add_finished_worker(api, "bad", ok=False)
    add_finished_worker(api, "bad-2", ok=False)

    operator = Operator(api, now)
    await operator.cycles(4)
    assert api.objects["videojobs"] == {}  # every TTL ran out
    # Each job was deleted only after a queue status write that counted it.
    queue_writes = [i for i, call in enumerate(api.log) if call == "patch videoqueues/work"]
    deletions = [i for i, call in enumerate(api.log) if call.startswith("delete videojobs")]
    assert len(deletions) == 5
    assert queue_writes
    assert min(deletions) > min(queue_writes)
    assert counts(api) == (3, 2)

    restarted = Operator(api, now)  # none of the jobs is left
    await restarted.cycles(2)
    assert counts(api) == (3, 2)
    assert api.queue["status"]["health"] == QueueHealth.WARNING  # 2 of 5 failed: 40 %


async def test_a_job_deleted_after_it_finished_but_before_it_was_counted_still_counts(
    now: list[float],
) -> None:
    api = FakeApi()
    api.put("videoqueues", work_queue().obj())
    add_finished_worker(api, "quick")
    add_finished_worker(api, "deleted-at-once", ok=False)
    operator = Operator(api, now)
    await operator.cycles(1)
    assert counts(api) == (0, 0)  # outcomes stored, not counted yet

    gone = api.objects["videojobs"].pop(f"{NS}/deleted-at-once")  # a user deletes it
    operator.controller.observe_job(gone, deleted=True)
    await operator.cycles(2)
    assert counts(api) == (1, 1)
    assert not operator.entry.uncounted
