"""Fluent builders for the job state machine's inputs: queues, jobs and worker pods as the API
server returns them, in the manner of Kueue's `MakeWorkload("a").Priority(3).Obj()`.

    queue = MakeQueue().max_memory("4Gi").max_attempts(2)
    job = MakeJob().memory("1Gi").running(attempt=1)
    pod = MakePod(job, queue, attempt=1).running().oom_killed()

Pods are built by the operator's own `build_worker_pod` and then given a status as a
kubelet would report it, so what `read_pod_outcome` sees is what it sees in a cluster.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any, Self

from videoqueue.api import RETRY_ANNOTATION, VideoJob, VideoQueue, parse_quantity
from videoqueue.scheduling.pod_outcome import PodOutcome, read_pod_outcome
from videoqueue.scheduling.worker_pod import build_worker_pod

T0 = datetime.datetime(2026, 1, 1, 10, 0, 0, tzinfo=datetime.UTC)
NAMESPACE = "media"
Mi = 1024**2
Gi = 1024**3


def at(seconds: float) -> datetime.datetime:
    """`seconds` after T0, when every job is created."""
    return T0 + datetime.timedelta(seconds=seconds)


def iso(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def condition(type_: str, status: str, reason: str) -> dict[str, Any]:
    """A condition as stored in a status, set at T0."""
    return {"type": type_, "status": status, "reason": reason, "lastTransitionTime": iso(T0)}


class MakeQueue:
    """Queue `work`: 8Gi budget (and max), 1Gi default request, 3 attempts, 10s x2 backoff."""

    def __init__(self) -> None:
        self._obj: dict[str, Any] = {
            "apiVersion": "videoqueue.dev/v1alpha1",
            "kind": "VideoQueue",
            "metadata": {"name": "work", "namespace": NAMESPACE, "uid": "queue-uid"},
            "spec": {
                "memory": {"budget": "8Gi", "defaultRequest": "1Gi"},
                "retry": {
                    "maxAttempts": 3,
                    "backoff": {"initialSeconds": 10, "factor": 2, "maxSeconds": 600},
                },
                "template": {"spec": {"containers": [{"name": "worker", "image": "w:1"}]}},
            },
        }

    @property
    def _memory(self) -> dict[str, Any]:
        memory: dict[str, Any] = self._obj["spec"]["memory"]
        return memory

    def budget(self, budget: str) -> Self:
        self._memory["budget"] = budget
        return self

    def max_memory(self, limit: str) -> Self:
        self._memory["max"] = limit
        return self

    def default_request(self, memory: str) -> Self:
        self._memory["defaultRequest"] = memory
        return self

    def oom_multiplier(self, multiplier: float) -> Self:
        self._memory["oomRetryMultiplier"] = multiplier
        return self

    def max_attempts(self, attempts: int) -> Self:
        self._obj["spec"]["retry"]["maxAttempts"] = attempts
        return self

    def deadline(self, seconds: int) -> Self:
        """activeDeadlineSeconds of every attempt."""
        self._obj["spec"]["activeDeadlineSeconds"] = seconds
        return self

    def progress_deadline(self, seconds: int) -> Self:
        self._obj["spec"]["progressDeadlineSeconds"] = seconds
        return self

    def sidecar(self, memory: str) -> Self:
        containers: list[dict[str, Any]] = self._obj["spec"]["template"]["spec"]["containers"]
        containers.append(
            {"name": "proxy", "image": "proxy:1", "resources": {"limits": {"memory": memory}}}
        )
        return self

    def draining(self) -> Self:
        self._obj["spec"]["state"] = "Draining"
        return self

    def deleting(self) -> Self:
        self._obj["metadata"]["deletionTimestamp"] = iso(T0)
        return self

    @property
    def max_bytes(self) -> int:
        return self.model().spec.memory.max_bytes

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)

    def model(self) -> VideoQueue:
        return VideoQueue.model_validate(self._obj)


class MakeJob:
    """Job `clip` of queue `work`, created at T0, never assessed (no status)."""

    def __init__(self, name: str = "clip") -> None:
        self._obj: dict[str, Any] = {
            "apiVersion": "videoqueue.dev/v1alpha1",
            "kind": "VideoJob",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": f"uid-{name}",
                "generation": 1,
                "creationTimestamp": iso(T0),
                "annotations": {},
            },
            "spec": {"queueName": "work", "type": "probe", "input": {"url": "/media/in.mp4"}},
        }

    @property
    def name(self) -> str:
        name: str = self._obj["metadata"]["name"]
        return name

    @property
    def _spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self._obj["spec"]
        return spec

    def memory(self, memory: str) -> Self:
        self._spec["resources"] = {"memory": memory}
        return self

    def max_attempts(self, attempts: int) -> Self:
        self._spec["maxAttempts"] = attempts
        return self

    def backoff(self, **override: int | float) -> Self:
        """spec.backoff in its camelCase keys, e.g. `initialSeconds=60`."""
        self._spec["backoff"] = override
        return self

    def deadline(self, seconds: int) -> Self:
        self._spec["activeDeadlineSeconds"] = seconds
        return self

    def start_after(self, moment: datetime.datetime) -> Self:
        self._spec["startAfter"] = iso(moment)
        return self

    def depends_on(self, *names: str) -> Self:
        self._spec["dependsOn"] = list(names)
        return self

    def cancel(self, cancel: bool = True) -> Self:
        self._spec["cancel"] = cancel
        return self

    def suspend(self, suspend: bool = True) -> Self:
        self._spec["suspend"] = suspend
        return self

    def retry_requested(self, request: str = "1") -> Self:
        """The user asked for a retry (the videoqueue.dev/retry annotation)."""
        self._obj["metadata"]["annotations"][RETRY_ANNOTATION] = request
        return self

    def status(self, **status: Any) -> Self:
        """The stored status, in its camelCase keys, replacing the whole of it."""
        self._obj["status"] = status
        return self

    def with_status(self, status: dict[str, Any]) -> Self:
        self._obj["status"] = copy.deepcopy(status)
        return self

    def pending(self, *, attempts: list[dict[str, Any]] | None = None, **status: Any) -> Self:
        """Assessed once and waiting; `attempts`: the history of its earlier attempts."""
        history = attempts or []
        fields: dict[str, Any] = {
            "phase": "Pending",
            "attempt": max((a["attempt"] for a in history), default=0),
            "attempts": history,
            "queuedTime": iso(T0),
        }
        return self.status(**{**fields, **status})

    def admitted(
        self, attempt: int = 1, memory: str = "1Gi", *, earlier: str = "Error", **status: Any
    ) -> Self:
        """Its pod for `attempt` was created (as recorded in status); the earlier attempts
        ended with reason `earlier`."""
        history = [
            {"attempt": n, "pod": f"{self.name}-a{n}", "reason": earlier, "finishTime": iso(T0)}
            for n in range(1, attempt)
        ]
        fields: dict[str, Any] = {
            "phase": "Admitted",
            "attempt": attempt,
            "attempts": [
                *history,
                {"attempt": attempt, "pod": f"{self.name}-a{attempt}", "memory": memory},
            ],
            "effectiveMemory": memory,
            "admittedTime": iso(T0),
            "queuedTime": iso(T0),
        }
        return self.status(**{**fields, **status})

    def running(
        self, attempt: int = 1, memory: str = "1Gi", *, earlier: str = "Error", **status: Any
    ) -> Self:
        """Admitted, and its worker was seen running since T0."""
        self.admitted(
            attempt, memory, earlier=earlier, phase="Running", startTime=iso(T0), **status
        )
        self._obj["status"]["attempts"][-1]["startTime"] = iso(T0)
        return self

    def finished(self, phase: str, attempt: int = 1, reason: str = "Error") -> Self:
        """Ended in `phase` (terminal) after `attempt` attempts that ended with `reason`."""
        history = [
            {"attempt": n, "pod": f"{self.name}-a{n}", "reason": reason, "finishTime": iso(T0)}
            for n in range(1, attempt + 1)
        ]
        return self.status(
            phase=phase,
            attempt=attempt,
            attempts=history,
            completionTime=iso(T0),
            queuedTime=iso(T0),
        )

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)

    def model(self) -> VideoJob:
        return VideoJob.model_validate(self._obj)


class MakePod:
    """The worker pod of `attempt`, built as the operator builds it (admitted at T0), still
    Pending (not scheduled) until given a status."""

    def __init__(
        self, job: MakeJob, queue: MakeQueue, *, attempt: int = 1, memory: str = "1Gi"
    ) -> None:
        self._obj = build_worker_pod(
            job.obj(),
            queue.obj(),
            attempt=attempt,
            memory_bytes=parse_quantity(memory),
            now_iso=iso(T0),
        )
        self._obj["metadata"]["uid"] = f"uid-{self.name}"
        self._obj["status"] = {"phase": "Pending"}

    @classmethod
    def of(cls, pod: dict[str, Any]) -> MakePod:
        """Wraps a pod built elsewhere (by `build_worker_pod`), to give it a status."""
        made = cls.__new__(cls)
        made._obj = pod
        made._obj.setdefault("status", {"phase": "Pending"})
        return made

    @property
    def name(self) -> str:
        name: str = self._obj["metadata"]["name"]
        return name

    @property
    def _status(self) -> dict[str, Any]:
        status: dict[str, Any] = self._obj["status"]
        return status

    def running(self, since: datetime.datetime = T0) -> Self:
        self._obj["spec"]["nodeName"] = "node-1"
        self._status.update(
            phase="Running",
            startTime=iso(since),
            containerStatuses=[{"name": "worker", "state": {"running": {"startedAt": iso(since)}}}],
        )
        return self

    def terminated(
        self,
        exit_code: int,
        reason: str = "Error",
        *,
        message: str | None = None,
        finished: datetime.datetime | None = None,
    ) -> Self:
        """The worker container ended with `exit_code`; the pod Succeeded or Failed."""
        started = self._status.get("startTime") or iso(T0)
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": iso(finished or at(60)),
        }
        if message is not None:
            terminated["message"] = message
        self._status.update(
            phase="Succeeded" if exit_code == 0 else "Failed",
            startTime=started,
            containerStatuses=[{"name": "worker", "state": {"terminated": terminated}}],
        )
        return self

    def succeeded(self, result: str = '{"type":"probe"}') -> Self:
        return self.terminated(0, "Completed", message=result)

    def failed(self, exit_code: int = 1, message: str = "ffmpeg failed") -> Self:
        return self.terminated(exit_code, "Error", message=message)

    def oom_killed(self) -> Self:
        return self.terminated(137, "OOMKilled")

    def evicted(self, finished: datetime.datetime | None = None) -> Self:
        """Evicted through the eviction API (a drain, node pressure): a DisruptionTarget
        condition, and the worker killed."""
        self._status["conditions"] = [
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting",
            }
        ]
        return self.terminated(137, "Error", finished=finished)

    def past_its_deadline(self, finished: datetime.datetime | None = None) -> Self:
        """Killed by the kubelet at the pod's own activeDeadlineSeconds."""
        self.terminated(137, "Error", finished=finished)
        self._status.update(reason="DeadlineExceeded", message="Pod was active too long")
        return self

    def refused_by_node(self) -> Self:
        """Turned away by its node's kubelet before the worker ran (e.g. OutOfmemory)."""
        self._status.update(phase="Failed", reason="OutOfmemory", message="node out of memory")
        return self

    def deleting(self) -> Self:
        """Being deleted (a deletionTimestamp), its containers still in their grace period."""
        self._obj["metadata"]["deletionTimestamp"] = iso(T0)
        return self

    @property
    def deleted(self) -> bool:
        return "deletionTimestamp" in self._obj["metadata"]

    @property
    def started(self) -> bool:
        """The worker container has run (it runs, or it ran and terminated)."""
        statuses: list[dict[str, Any]] = self._status.get("containerStatuses") or []
        return any(s["state"].get("running") or s["state"].get("terminated") for s in statuses)

    @property
    def finished(self) -> bool:
        return bool(self._status.get("phase") in ("Succeeded", "Failed"))

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)

    def outcome(self) -> PodOutcome:
        return read_pod_outcome(self._obj)
