"""MakeJob: a fluent builder of VideoJobs, with the statuses of their usual phases."""

from __future__ import annotations

import copy
from typing import Any, Self

from videoqueue.api import RETRY_ANNOTATION, VideoJob, VideoJobStatus
from videoqueue.envtest.builders.objects import T0, MakeObject, Time, backoff_fields, iso
from videoqueue.scheduling.worker_pod import worker_pod_name


class MakeJob(MakeObject):
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

    def from_job(self, name: str, output_index: int | None = None) -> Self:
        """Input from job `name`'s output (spec.input.fromJob), `name` added to dependsOn."""
        source: dict[str, Any] = {"fromJob": name}
        if output_index is not None:
            source["outputIndex"] = output_index
        depends_on = list(self._spec.get("dependsOn") or [])
        return self.spec(input=source, dependsOn=[*depends_on, name])

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
        return self.spec(backoff=backoff_fields(initial_seconds, factor, max_seconds))

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
        started: bool = False,
        **fields: Any,
    ) -> Self:
        """Its worker pod for `attempt` was created at `at`, as recorded in status (`started`:
        and seen running since `at`). `earlier`: the reason each earlier attempt ended with
        (at `at`), or no records of them. `fields` (camelCase) add to the status."""
        history = [] if earlier is None else self._ended(range(1, attempt), earlier, at)
        record: dict[str, Any] = {"attempt": attempt, "pod": worker_pod_name(self.name, attempt)}
        record["memory"] = memory
        status: dict[str, Any] = {
            "phase": "Admitted",
            "attempt": attempt,
            "attempts": [*history, record],
            "effectiveMemory": memory,
            "admittedTime": iso(at),
            "queuedTime": iso(at),
        }
        if started:
            status |= {"phase": "Running", "startTime": iso(at)}
            record["startTime"] = iso(at)
        return self.status(status, **fields)

    def running(self, attempt: int = 1, memory: str = "1Gi", at: Time = T0, **kw: Any) -> Self:
        """Admitted (as `admitted`), and its worker seen running since `at`."""
        return self.admitted(attempt, memory, at, started=True, **kw)

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
