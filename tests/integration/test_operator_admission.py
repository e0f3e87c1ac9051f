"""The operator against the real control plane: admission, worker pods, outcomes, status."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from typing import Any

import pytest
from kubernetes import client, watch
from urllib3.exceptions import ProtocolError

from videoqueue.api import parse_quantity
from videoqueue.envtest import ClusterBase, pod_script, poll, wait_for_object

pytestmark = pytest.mark.integration

GROUP, VERSION = "videoqueue.dev", "v1alpha1"
RESULT = {"output": "file:///media/out.mp4", "duration": 12.5}


def make_queue(
    name: str = "work",
    *,
    concurrency: int = 2,
    budget: str = "4Gi",
    max_: str | None = None,
    run_for: str = "1s",
    **spec: Any,
) -> dict[str, Any]:
    memory: dict[str, Any] = {"budget": budget, "defaultRequest": "1Gi"}
    if max_:
        memory["max"] = max_
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VideoQueue",
        "metadata": {"name": name},
        "spec": {
            "concurrency": concurrency,
            "memory": memory,
            "retry": {
                "maxAttempts": 3,
                "backoff": {"initialSeconds": 1, "factor": 2, "maxSeconds": 5},
            },
            "template": {
                "metadata": {"annotations": pod_script(run_for, message=json.dumps(RESULT))},
                "spec": {"containers": [{"name": "worker", "image": "videoqueue/worker:test"}]},
            },
            **spec,
        },
    }


def make_job(
    name: str, *, queue: str = "work", priority: int = 5, memory: str | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "queueName": queue,
        "priority": priority,
        "type": "transcode",
        "input": {"url": "file:///media/in.mp4"},
    }
    if memory:
        spec["resources"] = {"memory": memory}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VideoJob",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture
def custom(api: Any) -> Any:
    return client.CustomObjectsApi(api)


def create(custom: Any, namespace: str, plural: str, body: dict[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def get_job(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "videojobs", name
    )
    return result


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next(
        (c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None
    )


def is_true(obj: dict[str, Any], type_: str) -> bool:
    found = condition(obj, type_)
    return found is not None and found["status"] == "True"


def wait_job(
    custom: Any, namespace: str, name: str, type_: str, timeout: float = 90
) -> dict[str, Any]:
    found: dict[str, Any] = wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videojobs",
        name=name,
        predicate=lambda o: is_true(o, type_),
        timeout=timeout,
        what=f"VideoJob {name} condition {type_}=True",
    )
    return found


class PodSampler:
    """Watches the namespace's worker pods and records the most that were active at once,
    in count and in memory: the limits must hold at every instant, not only at the end."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.core, self.namespace = core, namespace
        self.active: dict[str, int] = {}
        self.max_count = 0
        self.max_memory = 0
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PodSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._watch.stop()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with contextlib.suppress(ProtocolError):  # the stream ends when the test stops it
            self._sample()

    def _sample(self) -> None:
        for event in self._watch.stream(
            self.core.list_namespaced_pod, self.namespace, timeout_seconds=600
        ):
            pod = event["object"]
            name = pod.metadata.name
            done = event["type"] == "DELETED" or pod.status.phase in ("Succeeded", "Failed")
            if done:
                self.active.pop(name, None)
            else:
                limit = pod.spec.containers[0].resources.limits["memory"]
                self.active[name] = parse_quantity(limit)
            self.max_count = max(self.max_count, len(self.active))
            self.max_memory = max(self.max_memory, sum(self.active.values()))


def test_jobs_run_in_priority_order_within_concurrency_and_memory(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(concurrency=2, budget="3Gi", run_for="1s"))
    jobs = [("low-a", 1), ("low-b", 1), ("high-a", 9), ("mid-a", 5), ("high-b", 9), ("mid-b", 5)]
    with PodSampler(core, namespace) as sampler:
        for name, priority in jobs:
            create(custom, namespace, "videojobs", make_job(name, priority=priority))
        done = {
            name: wait_job(custom, namespace, name, "Complete", timeout=120) for name, _ in jobs
        }

    assert sampler.max_count <= 2
    assert sampler.max_memory <= 3 * 2**30
    for name, job in done.items():
        status = job["status"]
        assert status["phase"] == "Succeeded", name
        assert status["result"] == RESULT
        assert status["attempt"] == 1
        assert status["attempts"][0]["reason"] == "Completed"
        assert status["effectiveMemory"] == "1Gi"
    # Jobs created within a moment of each other: the first two may start before the rest
    # exist, but from then on admission follows priority.
    admitted = sorted(done, key=lambda n: done[n]["status"]["admittedTime"])
    later = [n for n in admitted[2:]]
    priorities = [dict(jobs)[n] for n in later]
    assert priorities == sorted(priorities, reverse=True), admitted


def test_job_over_memory_max_is_rejected_with_condition_and_event(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str, cluster: ClusterBase
) -> None:
    create(custom, namespace, "videoqueues", make_queue(budget="4Gi", max_="2Gi"))
    create(custom, namespace, "videojobs", make_job("huge", memory="3Gi"))

    job = wait_job(custom, namespace, "huge", "Rejected")

    assert job["status"]["phase"] == "Rejected"
    assert is_true(job, "Failed")
    message = condition(job, "Rejected")["message"]  # type: ignore[index]
    assert "memory.max" in message
    assert "2Gi" in message
    events = poll(
        lambda: [
            e
            for e in core.list_namespaced_event(namespace).items
            if e.involved_object.name == "huge" and e.reason == "Rejected"
        ],
        timeout=30,
        what="a Rejected event for the job",
    )
    assert "memory.max" in events[0].message
    assert not core.list_namespaced_pod(namespace).items


def test_job_waits_for_a_missing_queue_and_runs_once_it_exists(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    create(custom, namespace, "videojobs", make_job("early", queue="later"))

    job = wait_job(custom, namespace, "early", "QueueMissing")
    assert "later" in condition(job, "QueueMissing")["message"]  # type: ignore[index]

    create(custom, namespace, "videoqueues", make_queue("later"))
    done = wait_job(custom, namespace, "early", "Complete")
    assert condition(done, "QueueMissing")["status"] == "False"  # type: ignore[index]


def test_kubectl_wait_for_complete(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, cluster: ClusterBase
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    create(custom, namespace, "videojobs", make_job("waited"))

    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Complete", "vj/waited", "--timeout=90s"
    )

    listed = cluster.kubectl("get", "vj", "-n", namespace)
    assert "Succeeded" in listed.stdout
