"""MakePod: a worker pod built by the operator's own `build_worker_pod`, given the status a
kubelet (or KWOK) would write."""

from __future__ import annotations

import copy
from typing import Any, Self

from videoqueue.api import parse_quantity
from videoqueue.envtest.builders.jobs import MakeJob
from videoqueue.envtest.builders.objects import (
    EVICTION_MESSAGE,
    POD_FINISHED,
    POD_STARTED,
    GiB,
    Made,
    Time,
    iso,
)
from videoqueue.envtest.builders.queues import MakeQueue
from videoqueue.scheduling.pod_outcome import PodOutcome, read_pod_outcome
from videoqueue.scheduling.worker_pod import ANNOTATION_WORKER_CONTAINER, build_worker_pod


class MakePod(Made):
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
    def _worker(self) -> dict[str, Any]:
        name = self._obj["metadata"]["annotations"][ANNOTATION_WORKER_CONTAINER]
        containers: list[dict[str, Any]] = self._obj["spec"]["containers"]
        return next(c for c in containers if c["name"] == name)

    def node(self, name: str) -> Self:
        return self.set("spec.nodeName", name)

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

    def outcome(self) -> PodOutcome:
        """What the operator reads of the pod."""
        return read_pod_outcome(self._obj)


def _scheduled(at: str) -> list[dict[str, Any]]:
    return [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
        {"type": "Initialized", "status": "True", "lastTransitionTime": at},
    ]
