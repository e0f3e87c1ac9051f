"""Fluent builders for VideoQueues, VideoJobs and worker pods, for the unit and integration
tests and the benchmarks, in the manner of Kueue's `MakeWorkload("a", "ns").Priority(3).Obj()`:

    queue = MakeQueue("work", "media").concurrency(2).budget("4Gi").template(WORKER)
    job = MakeJob("clip", queue="work").priority(7).memory("2Gi").admitted()
    pod = MakePod(job, queue).running().oom_killed()
    assess_job(job.model(), [pod.outcome()], queue.model(), now)

Defaults are the least the CRDs accept, so `obj()` can be applied to a real API server and
the server's defaults fill in the rest. Methods take the API's units (quantity strings,
seconds) and set one field each; `spec(...)` and `set(...)` reach any field, valid or not.
Methods change the builder and return it, so calls chain or stand as statements; `obj()`
returns a fresh copy, so a builder can be reused and its objects changed freely.

It imports only the API models and the pure scheduling core (whose `build_worker_pod` makes
MakePod's pods), never the tests, the controller or a client: an import-linter contract in
pyproject.toml keeps it so, and the benchmarks, which may not import the tests, use it too.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any, Self

from videoqueue.api import (
    API_VERSION,
    RETRY_ANNOTATION,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
    VideoQueueStatus,
    parse_quantity,
)
from videoqueue.scheduling.pod_outcome import PodOutcome, read_pod_outcome
from videoqueue.scheduling.worker_pod import (
    ANNOTATION_WORKER_CONTAINER,
    build_worker_pod,
    worker_pod_name,
)

GiB = 1024**3

# When unit tests' objects were created and their pods ran, unless a test says otherwise.
T0 = datetime.datetime(2026, 1, 1, 10, 0, tzinfo=datetime.UTC)
POD_STARTED = "2026-01-01T10:00:00Z"
POD_FINISHED = "2026-01-01T10:02:30Z"

WORKER: dict[str, Any] = {"name": "worker", "image": "videoqueue/worker:test"}
EVICTION_MESSAGE = "The node was low on resource: memory. Threshold quantity: 100Mi."

Time = datetime.datetime | str


def iso(at: Time) -> str:
    return at if isinstance(at, str) else at.isoformat()


def at(seconds: float) -> datetime.datetime:
    """`seconds` after T0."""
    return T0 + datetime.timedelta(seconds=seconds)


def condition(type_: str, status: str, reason: str, at: Time = T0) -> dict[str, Any]:
    """A condition as stored in a status."""
    return {"type": type_, "status": status, "reason": reason, "lastTransitionTime": iso(at)}


def container(name: str, memory: str | None = None, **fields: Any) -> dict[str, Any]:
    """A template container named and imaged `name`; `memory` is its limit (a sidecar needs
    one: the whole pod counts against the queue's budget)."""
    body: dict[str, Any] = {"name": name, "image": name}
    if memory is not None:
        body["resources"] = {"limits": {"memory": memory}}
    return body | fields


class _MakeObject:
    """What VideoQueue and VideoJob builders share: metadata, raw spec fields and status."""

    def __init__(self, kind: str, name: str, namespace: str | None) -> None:
        metadata: dict[str, Any] = {"name": name}
        if namespace is not None:
            metadata["namespace"] = namespace
        self._obj: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": metadata,
            "spec": {},
        }

    @property
    def name(self) -> str:
        name: str = self._obj["metadata"]["name"]
        return name

    @property
    def _spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self._obj["spec"]
        return spec

    def set(self, path: str, value: Any) -> Self:
        """Set the field at the dotted `path` (e.g. "spec.memory.max"), creating its parents:
        for fields without a method, and for values the API server should refuse."""
        *parents, leaf = path.split(".")
        node = self._obj
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
        return self

    def spec(self, **fields: Any) -> Self:
        """Raw spec fields, camelCase as in a manifest; each replaces the field it names."""
        self._spec.update(copy.deepcopy(fields))
        return self

    # Metadata the API server fills in: unit tests set it, integration tests leave it out.
    def uid(self, uid: str) -> Self:
        return self.set("metadata.uid", uid)

    def generation(self, generation: int) -> Self:
        return self.set("metadata.generation", generation)

    def resource_version(self, version: str) -> Self:
        return self.set("metadata.resourceVersion", version)

    def created(self, at: Time) -> Self:
        return self.set("metadata.creationTimestamp", iso(at))

    def labels(self, **labels: str) -> Self:
        return self.set("metadata.labels", labels)

    def annotations(self, **annotations: str) -> Self:
        return self.set("metadata.annotations", annotations)

    def finalizers(self, *names: str) -> Self:
        return self.set("metadata.finalizers", list(names))

    def deleted(self, at: Time = T0) -> Self:
        """Being deleted (a deletionTimestamp), held back by its finalizers."""
        return self.set("metadata.deletionTimestamp", iso(at))

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)


class MakeQueue(_MakeObject):
    """A VideoQueue with an 8Gi memory budget and nothing else set: no template, so one that
    runs pods needs `template(...)`."""

    def __init__(self, name: str = "work", namespace: str | None = None) -> None:
        super().__init__("VideoQueue", name, namespace)
        self._spec["memory"] = {"budget": "8Gi"}

    def state(self, state: str) -> Self:
        return self.spec(state=state)

    def concurrency(self, concurrency: int) -> Self:
        return self.spec(concurrency=concurrency)

    def budget(self, budget: str | int) -> Self:
        return self.set("spec.memory.budget", budget)

    def default_request(self, memory: str) -> Self:
        return self.set("spec.memory.defaultRequest", memory)

    def max(self, memory: str) -> Self:
        return self.set("spec.memory.max", memory)

    def oom_multiplier(self, multiplier: float) -> Self:
        return self.set("spec.memory.oomRetryMultiplier", multiplier)

    def backfill(self, seconds: int) -> Self:
        return self.set("spec.memory.backfillSeconds", seconds)

    def retry(
        self,
        max_attempts: int,
        *,
        initial_seconds: int | None = None,
        factor: float | None = None,
        max_seconds: int | None = None,
    ) -> Self:
        """`spec.retry`; backoff fields left out take the API's defaults."""
        backoff = {"initialSeconds": initial_seconds, "factor": factor, "maxSeconds": max_seconds}
        retry: dict[str, Any] = {"maxAttempts": max_attempts}
        if any(v is not None for v in backoff.values()):
            retry["backoff"] = {k: v for k, v in backoff.items() if v is not None}
        return self.spec(retry=retry)

    def max_attempts(self, attempts: int) -> Self:
        """`spec.retry.maxAttempts` alone, keeping the backoff."""
        return self.set("spec.retry.maxAttempts", attempts)

    def deadline(self, seconds: int) -> Self:
        """The default `activeDeadlineSeconds` of the queue's jobs."""
        return self.spec(activeDeadlineSeconds=seconds)

    def progress_deadline(self, seconds: int) -> Self:
        return self.spec(progressDeadlineSeconds=seconds)

    def max_pending(self, count: int) -> Self:
        return self.spec(maxPending=count)

    def preemption(self, policy: str) -> Self:
        return self.spec(preemption=policy)

    def aging(self, interval_seconds: int, max_boost: int | None = None) -> Self:
        aging: dict[str, Any] = {"intervalSeconds": interval_seconds}
        if max_boost is not None:
            aging["maxBoost"] = max_boost
        return self.spec(aging=aging)

    def rate_limit(self, starts_per_minute: int) -> Self:
        return self.spec(rateLimit={"startsPerMinute": starts_per_minute})

    def ttl(self, *, succeeded: int | None = None, failed: int | None = None) -> Self:
        ttl = {"succeeded": succeeded, "failed": failed}
        return self.spec(ttlSecondsAfterFinished={k: v for k, v in ttl.items() if v is not None})

    def memory_pressure(self, **fields: Any) -> Self:
        return self.spec(memoryPressure=fields)

    def notifications(self, url: str, **fields: Any) -> Self:
        return self.spec(notifications={"url": url, **fields})

    def health(self, **thresholds: Any) -> Self:
        return self.spec(health=thresholds)

    def worker(self, **settings: Any) -> Self:
        """`spec.worker`, the sandbox handed to the worker (fileRoots, allowedHosts, ...)."""
        return self.spec(worker=settings)

    def template(
        self,
        *containers: dict[str, Any],
        annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        **pod_spec: Any,
    ) -> Self:
        """The worker pod template: `containers` (the worker first, or named "worker"), pod
        `annotations`/`labels`, and other pod spec fields such as initContainers."""
        template: dict[str, Any] = {"spec": {"containers": list(containers), **pod_spec}}
        metadata = {"annotations": annotations, "labels": labels}
        if any(metadata.values()):
            template["metadata"] = {k: v for k, v in metadata.items() if v}
        return self.template_body(template)

    def sidecar(self, memory: str, name: str = "proxy") -> Self:
        """Adds a container with a `memory` limit to the template, after the worker."""
        containers: list[dict[str, Any]] = self._spec["template"]["spec"]["containers"]
        containers.append(container(name, memory))
        return self

    def template_body(self, template: dict[str, Any]) -> Self:
        """The whole `spec.template` as given, well-formed or not."""
        return self.spec(template=template)

    def status(self, status: VideoQueueStatus | dict[str, Any]) -> Self:
        body = status.to_dict() if isinstance(status, VideoQueueStatus) else status
        return self.set("status", copy.deepcopy(body))

    def model(self) -> VideoQueue:
        return VideoQueue.model_validate(self._obj)


class MakeJob(_MakeObject):
    """A VideoJob of type transcode reading file:///media/in.mp4, with the API's default
    priority (5) and memory (the queue's defaultRequest)."""

    def __init__(
        self, name: str = "job", namespace: str | None = None, *, queue: str = "work"
    ) -> None:
        super().__init__("VideoJob", name, namespace)
        self.spec(queueName=queue, type="transcode", input={"url": "file:///media/in.mp4"})

    def queue(self, name: str) -> Self:
        return self.spec(queueName=name)

    def priority(self, priority: int) -> Self:
        return self.spec(priority=priority)

    def type(self, type_: str) -> Self:
        return self.spec(type=type_)

    def input(self, url: str) -> Self:
        return self.spec(input={"url": url})

    def output(self, url: str) -> Self:
        return self.spec(output={"url": url})

    def params(self, **params: Any) -> Self:
        return self.spec(params=params)

    def memory(self, memory: str | int) -> Self:
        """`spec.resources.memory`: a quantity, or a byte count."""
        return self.spec(resources={"memory": memory})

    def max_attempts(self, attempts: int) -> Self:
        return self.spec(maxAttempts=attempts)

    def backoff(
        self,
        *,
        initial_seconds: int | None = None,
        factor: float | None = None,
        max_seconds: int | None = None,
    ) -> Self:
        """`spec.backoff`, overriding the queue's; fields left out take the queue's."""
        backoff = {"initialSeconds": initial_seconds, "factor": factor, "maxSeconds": max_seconds}
        return self.spec(backoff={k: v for k, v in backoff.items() if v is not None})

    def deadline(self, seconds: int) -> Self:
        return self.spec(activeDeadlineSeconds=seconds)

    def progress_deadline(self, seconds: int) -> Self:
        return self.spec(progressDeadlineSeconds=seconds)

    def start_after(self, at: Time) -> Self:
        return self.spec(startAfter=iso(at))

    def depends_on(self, *names: str) -> Self:
        return self.spec(dependsOn=list(names))

    def suspend(self, suspend: bool = True) -> Self:
        return self.spec(suspend=suspend)

    def cancel(self, cancel: bool = True) -> Self:
        return self.spec(cancel=cancel)

    def retry_requested(self, request: str = "1") -> Self:
        """The user asked for a retry: the videoqueue.dev/retry annotation set to `request`."""
        annotations = self._obj["metadata"].setdefault("annotations", {})
        annotations[RETRY_ANNOTATION] = request
        return self

    def status(
        self, status: VideoJobStatus | dict[str, Any] | None = None, /, **fields: Any
    ) -> Self:
        """The whole status: a model, a camelCase dict, or its fields as keywords."""
        body = status.to_dict() if isinstance(status, VideoJobStatus) else dict(status or {})
        return self.set("status", copy.deepcopy(body | fields))

    def _ended(self, attempts: range, reason: str, at: Time) -> list[dict[str, Any]]:
        """Records of `attempts` that ended with `reason` at `at`."""
        return [
            {
                "attempt": n,
                "pod": worker_pod_name(self.name, n),
                "reason": reason,
                "finishTime": iso(at),
            }
            for n in attempts
        ]

    def pending(self, *, attempts: list[dict[str, Any]] | None = None, **fields: Any) -> Self:
        """Assessed, queued at T0 and waiting; `attempts`: the records of its earlier attempts.
        `fields` (camelCase) add to the status or replace its fields."""
        history = attempts or []
        return self.status(
            {
                "phase": "Pending",
                "attempt": max((a["attempt"] for a in history), default=0),
                "attempts": history,
                "queuedTime": iso(T0),
            },
            **fields,
        )

    def admitted(
        self,
        attempt: int = 1,
        memory: str = "1Gi",
        at: Time = T0,
        *,
        earlier: str | None = None,
        **fields: Any,
    ) -> Self:
        """Its worker pod for `attempt` was created at `at`, as recorded in status. `earlier`:
        the reason each earlier attempt ended with (at `at`), or no records of them."""
        history = [] if earlier is None else self._ended(range(1, attempt), earlier, at)
        pod = worker_pod_name(self.name, attempt)
        return self.status(
            {
                "phase": "Admitted",
                "attempt": attempt,
                "attempts": [*history, {"attempt": attempt, "pod": pod, "memory": memory}],
                "effectiveMemory": memory,
                "admittedTime": iso(at),
                "queuedTime": iso(at),
            },
            **fields,
        )

    def running(
        self,
        attempt: int = 1,
        memory: str = "1Gi",
        at: Time = T0,
        *,
        earlier: str | None = None,
        **fields: Any,
    ) -> Self:
        """Admitted (as `admitted`), and its worker seen running since `at`."""
        self.admitted(attempt, memory, at, earlier=earlier, phase="Running", startTime=iso(at))
        self._obj["status"].update(copy.deepcopy(fields))
        self._obj["status"]["attempts"][-1]["startTime"] = iso(at)
        return self

    def finished(self, phase: str, attempt: int = 1, reason: str = "Error", at: Time = T0) -> Self:
        """Ended in `phase` (terminal) at `at`, after `attempt` attempts that each ended with
        `reason`."""
        return self.status(
            phase=phase,
            attempt=attempt,
            attempts=self._ended(range(1, attempt + 1), reason, at),
            completionTime=iso(at),
            queuedTime=iso(at),
        )

    def model(self) -> VideoJob:
        return VideoJob.model_validate(self._obj)


class MakePod:
    """The worker pod of a job's attempt, built by the operator's own `build_worker_pod`, then
    given the status a kubelet (or KWOK) would write. Without a status method it is just
    created (no status). The job needs a uid, as one read from the API server has; a job
    without one gets "uid-<name>"."""

    def __init__(
        self,
        job: MakeJob,
        queue: MakeQueue,
        *,
        attempt: int = 1,
        memory: int | str = GiB,
        admitted_at: Time | None = None,
    ) -> None:
        """`memory`: the worker's, in bytes or a quantity."""
        job_obj = job.obj()
        job_obj["metadata"].setdefault("uid", f"uid-{job.name}")
        self._obj = build_worker_pod(
            job_obj,
            queue.obj(),
            attempt=attempt,
            memory_bytes=parse_quantity(memory) if isinstance(memory, str) else memory,
            now_iso=None if admitted_at is None else iso(admitted_at),
        )

    @classmethod
    def of(cls, pod: dict[str, Any]) -> MakePod:
        """Wraps a pod built elsewhere (by `build_worker_pod`), to give it a status."""
        made = cls.__new__(cls)
        made._obj = pod
        return made

    @property
    def name(self) -> str:
        name: str = self._obj["metadata"]["name"]
        return name

    @property
    def _worker(self) -> dict[str, Any]:
        name = self._obj["metadata"]["annotations"][ANNOTATION_WORKER_CONTAINER]
        containers: list[dict[str, Any]] = self._obj["spec"]["containers"]
        return next(c for c in containers if c["name"] == name)

    def node(self, name: str) -> Self:
        self._obj["spec"]["nodeName"] = name
        return self

    def uid(self, uid: str) -> Self:
        self._obj["metadata"]["uid"] = uid
        return self

    def status(self, status: dict[str, Any]) -> Self:
        """A status as given, for shapes the methods below do not write."""
        self._obj["status"] = copy.deepcopy(status)
        return self

    def _container_status(self, state: dict[str, Any], *, running: bool) -> dict[str, Any]:
        return {
            "name": self._worker["name"],
            "image": self._worker["image"],
            "ready": running,
            "started": running,
            "restartCount": 0,
            "state": state,
        }

    def running(self, started: Time = POD_STARTED) -> Self:
        at = iso(started)
        return self.status(
            {
                "phase": "Running",
                "startTime": at,
                "conditions": [
                    *_scheduled(at),
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": at},
                    {"type": "Ready", "status": "True", "lastTransitionTime": at},
                ],
                "containerStatuses": [
                    self._container_status({"running": {"startedAt": at}}, running=True)
                ],
                "podIP": "10.0.0.7",
            }
        )

    def terminated(
        self,
        exit_code: int,
        reason: str | None = None,
        message: str | None = None,
        *,
        started: Time = POD_STARTED,
        finished: Time = POD_FINISHED,
    ) -> Self:
        """The worker exited with `exit_code`; `reason` defaults to the kubelet's Completed
        or Error, `message` is its termination message."""
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "startedAt": iso(started),
            "finishedAt": iso(finished),
        }
        if message is not None:
            terminated["message"] = message
        return self.status(
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "startTime": iso(started),
                "conditions": [
                    *_scheduled(iso(started)),
                    {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"},
                    {"type": "Ready", "status": "False", "reason": "PodCompleted"},
                ],
                "containerStatuses": [
                    self._container_status({"terminated": terminated}, running=False)
                ],
            }
        )

    def succeeded(self, result: str | None = None) -> Self:
        """The worker exited 0; `result` is its termination message."""
        return self.terminated(0, "Completed", result)

    def failed(self, exit_code: int = 1, message: str = "ffmpeg failed") -> Self:
        return self.terminated(exit_code, "Error", message)

    def oom_killed(self) -> Self:
        return self.terminated(137, "OOMKilled")

    def past_its_deadline(self, finished: Time = POD_FINISHED) -> Self:
        """Killed by its kubelet at the pod's own activeDeadlineSeconds."""
        self.terminated(137, finished=finished)
        return self.pod_reason("DeadlineExceeded", "Pod was active too long")

    def refused_by_node(
        self, reason: str = "OutOfmemory", message: str = "node out of memory"
    ) -> Self:
        """Turned away by its node's kubelet before the worker ran (admission: OutOfmemory)."""
        self._obj.setdefault("status", {})["phase"] = "Failed"
        return self.pod_reason(reason, message)

    def pod_reason(self, reason: str, message: str | None = None) -> Self:
        """The pod's own reason and message (DeadlineExceeded, Evicted), beside the status."""
        status = self._obj.setdefault("status", {})
        status["reason"] = reason
        if message is not None:
            status["message"] = message
        return self

    def disruption(self, reason: str, message: str, at: Time = POD_FINISHED) -> Self:
        """The DisruptionTarget condition (eviction, preemption) the pod was given."""
        condition = {"type": "DisruptionTarget", "status": "True", "lastTransitionTime": iso(at)}
        conditions = self._obj.setdefault("status", {}).setdefault("conditions", [])
        conditions.append(condition | {"reason": reason, "message": message})
        return self

    def evicted(self, message: str = EVICTION_MESSAGE, *, finished: Time = POD_FINISHED) -> Self:
        """Evicted by its kubelet under node memory pressure, as a kubelet reports it."""
        return (
            self.terminated(137, "ContainerStatusUnknown", finished=finished)
            .pod_reason("Evicted", message)
            .disruption("TerminationByKubelet", message, finished)
        )

    def deleted(self, at: Time = POD_FINISHED, grace_seconds: int = 30) -> Self:
        """Deleted, and still there through its grace period."""
        self._obj["metadata"]["deletionTimestamp"] = iso(at)
        self._obj["metadata"]["deletionGracePeriodSeconds"] = grace_seconds
        return self

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)

    def outcome(self) -> PodOutcome:
        """What the operator reads of the pod."""
        return read_pod_outcome(self._obj)


def _scheduled(at: str) -> list[dict[str, Any]]:
    return [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
        {"type": "Initialized", "status": "True", "lastTransitionTime": at},
    ]
