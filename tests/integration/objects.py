"""Building and watching videoqueue objects in integration tests."""

from __future__ import annotations

import contextlib
import datetime
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Self

from kubernetes import watch
from urllib3.exceptions import ProtocolError

from videoqueue.api import parse_quantity
from videoqueue.envtest import pod_script, poll, wait_for_object
from videoqueue.envtest.builders import WORKER, MakeJob, MakeQueue
from videoqueue.envtest.kwok import RUN_DURATION
from videoqueue.scheduling.worker_pod import (
    ANNOTATION_ADMITTED_AT,
    ANNOTATION_JOB_NAME,
    LABEL_ATTEMPT,
)

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
    """A queue whose KWOK worker pods succeed after `run_for` with RESULT, retried quickly;
    `spec` adds or replaces raw spec fields."""
    queue = MakeQueue(name).concurrency(concurrency).budget(budget).default_request("1Gi")
    if max_:
        queue.max(max_)
    queue.retry(3, initial_seconds=1, factor=2, max_seconds=5)
    queue.template(WORKER, annotations=pod_script(run_for, message=json.dumps(RESULT)))
    return queue.spec(**spec).obj()


def make_job(
    name: str,
    *,
    queue: str = "work",
    priority: int = 5,
    memory: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A VideoJob; `annotations` travel to its worker pods (e.g. KWOK scripts)."""
    job = MakeJob(name, queue=queue).priority(priority).annotations(**(annotations or {}))
    if memory:
        job.memory(memory)
    return job.obj()


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


def wait_admitted_reason(
    custom: Any, namespace: str, name: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    """The VideoJob `name` once its Admitted condition has `reason` (why it waits)."""
    found: dict[str, Any] = wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videojobs",
        name=name,
        predicate=lambda o: (condition(o, "Admitted") or {}).get("reason") == reason,
        timeout=timeout,
        what=f"VideoJob {name} to wait with reason {reason}",
    )
    return found


def wait_queue(
    custom: Any, namespace: str, predicate: Any, what: str, timeout: float = 60
) -> dict[str, Any]:
    """The VideoQueue `work` once `predicate` holds for it."""
    found: dict[str, Any] = wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videoqueues",
        name="work",
        predicate=predicate,
        timeout=timeout,
        what=what,
    )
    return found


class WatchRecorder:
    """A watch of one list call (`list_call(*args)`) on a thread of its own while the `with`
    block runs: each event's type and object, as a dict, go to `record`, in the API server's
    order. Subclasses say what they keep."""

    def __init__(self, list_call: Callable[..., Any], *args: Any) -> None:
        self._list, self._args = list_call, args
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._watch.stop()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with contextlib.suppress(ProtocolError):  # the stream ends when the test stops it
            for event in self._watch.stream(self._list, *self._args, timeout_seconds=900):
                found = event["object"]
                if not isinstance(found, dict):  # a typed client's model
                    client = self._list.__self__.api_client  # type: ignore[attr-defined]
                    found = client.sanitize_for_serialization(found)
                self.record(event["type"], found)

    def record(self, type_: str, found: dict[str, Any]) -> None:
        raise NotImplementedError


class PodRecorder:
    """Watches the namespace's worker pods: every pod ever created, when it was admitted
    (the admitting operator's own clock, from the pod's admitted-at annotation: exact even
    when this watch lags), and the most that were active at once, in count and in memory.
    Limits must hold at every instant, not only at the end: events come in the order of the
    API server's changes, so the active set is exact at every step, whatever the lag."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.core, self.namespace = core, namespace
        self.first_seen: dict[str, float] = {}
        self.admitted_at: dict[str, float] = {}
        self.job_of: dict[str, str] = {}
        self.attempt_of: dict[str, str | None] = {}
        self.done_at: dict[str, float] = {}
        self.active: dict[str, int] = {}
        self.max_count = 0
        self.max_memory = 0
        # (when, active pods, their memory) at every change: where a limit was crossed.
        self.timeline: list[tuple[float, int, int]] = []
        self._lock = threading.Lock()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PodRecorder:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._watch.stop()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with contextlib.suppress(ProtocolError):  # the stream ends when the test stops it
            for event in self._watch.stream(
                self.core.list_namespaced_pod, self.namespace, timeout_seconds=900
            ):
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self._record(event["type"], event["object"])

    def _record(self, type_: str, pod: Any) -> None:
        name = pod.metadata.name
        with self._lock:
            if name not in self.first_seen:
                self.first_seen[name] = time.time()
                admitted = (pod.metadata.annotations or {}).get(ANNOTATION_ADMITTED_AT)
                self.admitted_at[name] = timestamp(admitted).timestamp() if admitted else 0.0
                self.job_of[name] = (pod.metadata.annotations or {}).get(ANNOTATION_JOB_NAME, "")
                self.attempt_of[name] = (pod.metadata.labels or {}).get(LABEL_ATTEMPT)
            if type_ == "DELETED" or pod.status.phase in ("Succeeded", "Failed"):
                self.active.pop(name, None)
                self.done_at.setdefault(name, time.time())
            else:
                limit = pod.spec.containers[0].resources.limits["memory"]
                self.active[name] = parse_quantity(limit)
            count, memory = len(self.active), sum(self.active.values())
            if not self.timeline or self.timeline[-1][1:] != (count, memory):
                self.timeline.append((time.time(), count, memory))
            self.max_count = max(self.max_count, count)
            self.max_memory = max(self.max_memory, memory)

    def over(self, count: int, memory: int, since: float = 0.0) -> list[str]:
        """When more than `count` pods or `memory` bytes were active, relative to `since`,
        and which pods they were (seen from .. to)."""
        with self._lock:
            moments = [(t, n, m) for t, n, m in self.timeline if n > count or m > memory]
            if not moments:
                return []
            worst = max(moments, key=lambda sample: sample[1])[0]
            active = sorted(
                (seen, name)
                for name, seen in self.first_seen.items()
                if seen <= worst and self.done_at.get(name, worst + 1) > worst
            )
            return [
                *(f"{t - since:+.2f}s: {n} pods, {m / 2**30:.1f}Gi" for t, n, m in moments),
                f"active at {worst - since:+.2f}s:",
                *(
                    f"  {name} {seen - since:+.2f}s..{self.done_at.get(name, 0) - since:+.2f}s"
                    for seen, name in active
                ),
            ]

    def first_admitted_after(self, moment: float) -> float | None:
        with self._lock:
            return min((t for t in self.admitted_at.values() if t > moment), default=None)

    def wait_admitted_after(self, moment: float, *, timeout: float, what: str) -> float:
        """When the first pod admitted after `moment` was admitted."""
        return poll(lambda: self.first_admitted_after(moment), timeout=timeout, what=what)

    def pods_by_job(self) -> dict[str, dict[str, str | None]]:
        """Job name -> {pod name: attempt label} for every pod ever seen."""
        with self._lock:
            jobs: dict[str, dict[str, str | None]] = defaultdict(dict)
            for pod, job in self.job_of.items():
                jobs[job][pod] = self.attempt_of[pod]
            return dict(jobs)


def timestamp(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def long_job(name: str, **fields: Any) -> dict[str, Any]:
    """A job whose worker runs until something stops it (10 minutes)."""
    return make_job(name, annotations={RUN_DURATION: "600s"}, **fields)
