"""Budgets beyond memory against the real control plane (issue 19): a queue caps the CPU and
an extended resource its worker pods request, counted from the pods as Kubernetes counts
them, never exceeded at any moment a watch of the pods observes; jobs that do not fit wait
with WaitingForCPU or WaitingForResource and all finish. The CEL rules refuse what cannot be
a budget at `kubectl apply` time."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.integration.objects import (
    GROUP,
    RESULT,
    VERSION,
    WatchRecorder,
    condition,
    create,
    wait_admitted_reason,
    wait_job,
)
from videoqueue.api import resource_units
from videoqueue.envtest import ClusterBase, NodeSpec, pod_script, wait_for_object
from videoqueue.envtest.builders import MakeJob, MakeQueue
from videoqueue.scheduling.pod_requests import pod_requests
from videoqueue.scheduling.worker_pod import LABEL_QUEUE

pytestmark = pytest.mark.integration

GPU = "example.com/gpu"


def budget_queue(name: str, budgets: dict[str, str | int], pool: str) -> dict[str, Any]:
    """A queue whose workers request 500m CPU and (by their limit only, which the API server
    copies into the request) one GPU, run 4 s on a GPU node of `pool` and succeed."""
    worker = {
        "name": "worker",
        "image": "videoqueue/worker:test",
        "resources": {"requests": {"cpu": "500m"}, "limits": {GPU: "1"}},
    }
    return (
        MakeQueue(name)
        .concurrency(10)
        .budget("16Gi")
        .default_request("1Gi")
        .budgets(budgets)
        .template(
            worker,
            annotations=pod_script("4s", message=json.dumps(RESULT)),
            nodeSelector={"pool": pool},
        )
        .obj()
    )


class RequestRecorder(WatchRecorder):
    """Watches the namespace's worker pods and keeps, per queue, the most CPU and GPU that
    pods not yet finished requested at once (as Kubernetes counts a pod's request, from the
    pod as the API server stored it). Events come in the API server's order, so the active
    set is exact at every step."""

    def __init__(self, core: Any, namespace: str) -> None:
        super().__init__(core.list_namespaced_pod, namespace)
        self.active: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
        self.most: dict[str, dict[str, int]] = defaultdict(lambda: {"cpu": 0, GPU: 0})
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def record(self, type_: str, pod: dict[str, Any]) -> None:
        queue = pod["metadata"].get("labels", {}).get(LABEL_QUEUE, "")
        name = pod["metadata"]["name"]
        with self._lock:
            self.seen.add(name)
            if type_ == "DELETED" or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                self.active[queue].pop(name, None)
            else:
                self.active[queue][name] = pod_requests(pod, ["cpu", GPU])
            for resource in ("cpu", GPU):
                total = sum(r[resource] for r in self.active[queue].values())
                self.most[queue][resource] = max(self.most[queue][resource], total)


class ReasonRecorder(WatchRecorder):
    """Watches the namespace's VideoJobs and keeps every (reason, message) their Admitted
    condition had: a wait is seen however briefly it lasted, whatever the test's timing."""

    def __init__(self, custom: Any, namespace: str) -> None:
        super().__init__(
            custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "videojobs"
        )
        self.reasons: dict[str, dict[str, str]] = defaultdict(dict)

    def record(self, type_: str, job: dict[str, Any]) -> None:
        if (found := condition(job, "Admitted")) is not None:
            name = job["metadata"]["name"]
            self.reasons[name].setdefault(found["reason"], found.get("message", ""))


@pytest.fixture
def gpu_pool(cluster: ClusterBase, namespace: str) -> Iterator[str]:
    """A KWOK node of its own pool that advertises 8 example.com/gpu."""
    pool = f"gpu-{namespace[-5:]}"
    node = NodeSpec(f"{pool}-a", labels={"pool": pool}, extended={GPU: "8"})
    cluster.create_nodes([node])
    try:
        yield pool
    finally:
        cluster.delete_nodes([node.name])


def test_cpu_and_gpu_budgets_are_never_exceeded_and_every_job_finishes(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str, gpu_pool: str
) -> None:
    # Two queues with both budgets: in one CPU is the tighter (2 workers of 500m in 1),
    # in the other the GPU (2 in 2).
    queues: dict[str, dict[str, str | int]] = {
        "cpu-bound": {"cpu": "1", GPU: "4"},
        "gpu-bound": {"cpu": "4", GPU: 2},
    }
    jobs = {queue: [f"{queue}-{i}" for i in range(5)] for queue in queues}
    with RequestRecorder(core, namespace) as recorder, ReasonRecorder(custom, namespace) as seen:
        for queue, budgets in queues.items():
            create(custom, namespace, "videoqueues", budget_queue(queue, budgets, gpu_pool))
            for i, name in enumerate(jobs[queue]):
                # The last job has the lowest priority: it waits the longest.
                job = MakeJob(name, queue=queue).priority(1 if i == 4 else 5).obj()
                create(custom, namespace, "videojobs", job)

        reserved = wait_for_object(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "videoqueues",
            name="cpu-bound",
            predicate=lambda q: (
                {"resource": "cpu", "reserved": "1", "budget": "1"}
                in (q.get("status", {}).get("budgets") or [])
            ),
            timeout=60,
            what="queue cpu-bound's status.budgets to show its CPU all reserved",
        )
        done = {
            name: wait_job(custom, namespace, name, "Complete", timeout=180)
            for names in jobs.values()
            for name in names
        }

    for queue, budgets in queues.items():
        most = recorder.most[queue]
        assert most["cpu"] <= resource_units("cpu", budgets["cpu"]), (queue, most)
        assert most[GPU] <= resource_units(GPU, budgets[GPU]), (queue, most)
        # Both queues fit 2 workers at once, which they reach (the budget is really used).
        assert most == {"cpu": 1000, GPU: 2}, (queue, most)
    # The lowest-priority job of each queue waits for the others, for the queue's tighter
    # resource (the CPU budget of one, the GPU budget of the other).
    message = seen.reasons["cpu-bound-4"].get("WaitingForCPU", "")
    assert message.startswith("waiting for cpu: needs 500m, 0 free of 1"), seen.reasons
    message = seen.reasons["gpu-bound-4"].get("WaitingForResource", "")
    assert message.startswith(f"waiting for {GPU}: needs 1, 0 free of 2"), seen.reasons
    assert "WaitingForResource" not in seen.reasons["cpu-bound-4"], seen.reasons
    assert all(job["status"]["phase"] == "Succeeded" for job in done.values())
    assert len(recorder.seen) == 10, sorted(recorder.seen)  # one pod per job: no retries
    budgets = reserved["status"]["budgets"]
    assert budgets[1] == {"resource": GPU, "reserved": "2", "budget": "4"}, budgets


def test_budget_bigger_than_its_whole_pod_waits_with_a_message(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, gpu_pool: str
) -> None:
    create(custom, namespace, "videoqueues", budget_queue("small", {"cpu": "250m"}, gpu_pool))
    create(custom, namespace, "videojobs", MakeJob("wide", queue="small").obj())

    job = wait_admitted_reason(custom, namespace, "wide", "ExceedsResourceBudget")

    message = condition(job, "Admitted")["message"]  # type: ignore[index]
    assert "requests 500m cpu" in message, message
    assert "whole budget of 250m (spec.budgets)" in message, message
    assert job["status"]["phase"] == "Pending"


def refusal(custom: Any, namespace: str, budgets: dict[str, Any]) -> str | None:
    """The API server's refusal of a queue with `budgets`, or None when it accepts it."""
    name = f"q-{uuid.uuid4().hex[:6]}"
    body = MakeQueue(name).budget("4Gi").budgets(budgets).template({"name": "worker"}).obj()
    try:
        create(custom, namespace, "videoqueues", body)
    except ApiException as e:
        return f"{e.status}: {json.loads(e.body)['message']}"
    return None


@pytest.mark.parametrize(
    ("budgets", "expected"),
    [
        pytest.param({"memory": "8Gi"}, "spec.memory.budget", id="memory"),
        pytest.param({GPU: "1.5"}, "whole number", id="fractional-gpu"),
        pytest.param({GPU: "500m"}, "whole number", id="milli-gpu"),
        pytest.param({"pods": "3"}, "cannot be budgeted", id="pods"),
        pytest.param({"ephemeral-storage": "1Gi"}, "cannot be budgeted", id="ephemeral-storage"),
        pytest.param({"cpu": "0"}, "positive", id="zero-cpu"),
        pytest.param({f"example.com/r{i}": 1 for i in range(9)}, "8", id="nine-entries"),
    ],
)
def test_the_api_server_refuses_what_cannot_be_a_budget(
    crds: None, custom: Any, namespace: str, budgets: dict[str, Any], expected: str
) -> None:
    message = refusal(custom, namespace, budgets)

    assert message is not None
    assert message.startswith("422: "), message
    assert expected in message, message


def test_the_api_server_accepts_cpu_and_extended_budgets(
    crds: None, custom: Any, namespace: str
) -> None:
    allowed = {"cpu": "1500m", GPU: 2, **{f"example.com/r{i}": "3" for i in range(6)}}

    assert refusal(custom, namespace, allowed) is None
