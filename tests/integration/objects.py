"""Building and watching videoqueue objects in integration tests."""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any

from kubernetes import watch
from urllib3.exceptions import ProtocolError

from videoqueue.api import parse_quantity
from videoqueue.envtest import pod_script, wait_for_object

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
