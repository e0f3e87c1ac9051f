"""MakeQueue: a fluent builder of VideoQueues."""

from __future__ import annotations

import copy
from typing import Any, Self

from videoqueue.api import VideoQueue, VideoQueueStatus
from videoqueue.envtest.builders.objects import (
    MakeObject,
    backoff_fields,
    container,
    present,
)


class MakeQueue(MakeObject):
    """A VideoQueue with an 8Gi memory budget and nothing else set: no template, so one that
    runs pods needs `template(...)`."""

    def __init__(self, name: str = "work", namespace: str | None = None) -> None:
        super().__init__("VideoQueue", name, namespace)
        self._spec["memory"] = {"budget": "8Gi"}

    def as_indexed(self) -> Self:
        """As the operator's index holds it (read from the API server, with its finalizer):
        a uid, generation 1, a resourceVersion and the running-jobs finalizer."""
        self.uid(f"{self.name}-uid").generation(1).resource_version("1")
        return self.finalizers("videoqueue.dev/running-jobs")

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

    def sizing(self, mode: str, **learned: Any) -> Self:
        """`spec.memory.sizing` (Static | Learned) and `spec.memory.learned` fields, e.g.
        `sizing("Learned", minObservations=3, headroom=1.5)`."""
        self.set("spec.memory.sizing", mode)
        return self.set("spec.memory.learned", learned) if learned else self

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
        retry: dict[str, Any] = {"maxAttempts": max_attempts}
        if backoff := backoff_fields(initial_seconds, factor, max_seconds):
            retry["backoff"] = backoff
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
        return self.spec(ttlSecondsAfterFinished=present(succeeded=succeeded, failed=failed))

    def memory_pressure(self, **fields: Any) -> Self:
        return self.spec(memoryPressure=fields)

    def notifications(self, url: str, **fields: Any) -> Self:
        return self.spec(notifications={"url": url, **fields})

    def health(self, **thresholds: Any) -> Self:
        return self.spec(health=thresholds)

    def worker(self, **settings: Any) -> Self:
        """`spec.worker`, the sandbox handed to the worker (fileRoots, allowedHosts, ...)."""
        return self.spec(worker=settings)

    def s3_storage(self, secret: str = "media-s3", **fields: Any) -> Self:
        """`spec.storage.s3` with credentials Secret `secret` and other fields as given
        (endpoint, region, addressingStyle)."""
        return self.spec(storage={"s3": {"secretRef": {"name": secret}, **fields}})

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

    def budgets(self, budgets: dict[str, str | int]) -> Self:
        """spec.budgets, e.g. {"cpu": "2", "nvidia.com/gpu": 1}."""
        return self.spec(budgets=dict(budgets))

    def template_body(self, template: dict[str, Any]) -> Self:
        """The whole `spec.template` as given, well-formed or not."""
        return self.spec(template=template)

    def job_type(
        self,
        name: str,
        *,
        template: dict[str, Any] | None = None,
        default_request: str | None = None,
        deadline: int | None = None,
        max_attempts: int | None = None,
    ) -> Self:
        """`spec.types.<name>`: a template patch over spec.template, the type's default
        memory, activeDeadlineSeconds and maxAttempts (those left out are not set)."""
        settings: dict[str, Any] = present(
            template=template, activeDeadlineSeconds=deadline, maxAttempts=max_attempts
        )
        if default_request is not None:
            settings["memory"] = {"defaultRequest": default_request}
        types = dict(self._spec.get("types") or {})
        types[name] = settings
        return self.spec(types=types)

    def status(self, status: VideoQueueStatus | dict[str, Any]) -> Self:
        body = status.to_dict() if isinstance(status, VideoQueueStatus) else status
        return self.set("status", copy.deepcopy(body))

    def model(self) -> VideoQueue:
        return VideoQueue.model_validate(self._obj)
