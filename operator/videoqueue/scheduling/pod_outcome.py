"""What a worker pod says about its attempt, read from the pod as the API server returns it
(`read_pod_outcome`), and the slim form the controller keeps of each pod (`pod_essentials`).
Pure functions on plain dicts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast, get_args

from videoqueue.api import AttemptReason
from videoqueue.scheduling.pod_requests import pod_requests, requested_resources
from videoqueue.scheduling.retry import consumes_attempt
from videoqueue.scheduling.worker_pod import (
    ANNOTATION_ADMITTED_AT,
    ANNOTATION_JOB_NAME,
    ANNOTATION_WORKER_CONTAINER,
    LABEL_ATTEMPT,
    MAX_MESSAGE_LENGTH,
    PEAK_MEMORY_FIELD,
    PEAK_MEMORY_UNIT,
    limit_of,
    overhead_of,
    worker_container,
)

PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
_PHASES: Final[frozenset[str]] = frozenset(get_args(PodPhase))


@dataclass(frozen=True)
class PodOutcome:
    """What a worker pod says about its attempt.

    `reason` is how the attempt ended or is ending, as an `AttemptReason` value, and None
    while it is still under way: Completed, OOMKilled, DeadlineExceeded, Evicted (evicted or
    preempted: a `DisruptionTarget` condition or pod reason Evicted), Disrupted (deleted
    before it finished, or turned away by its node before the worker ran) or Error.
    """

    name: str
    attempt: int | None
    """From the attempt label; None if the pod has none."""
    memory: int
    """The worker container's memory limit in bytes (what admission reserved); 0 if unset."""
    phase: PodPhase
    running: bool
    """The worker container has started and is running."""
    finished: bool
    """The pod reached Succeeded or Failed, or the worker container has terminated."""
    reason: str | None
    exit_code: int | None
    """The worker container's exit code, once it terminated."""
    message: str | None
    """The termination message (or pod status message), cut to 1024 characters."""
    result: dict[str, Any] | None
    """The termination message as a JSON object when the worker succeeded, else None."""
    node: str | None
    start_time: str | None
    """When the worker container started (the pod's startTime if unknown), as found."""
    finish_time: str | None
    """When the worker container terminated, as found."""
    deleted: bool
    """The pod has a deletionTimestamp."""
    admitted_at: str | None = None
    """When the operator admitted this attempt (the admitted-at annotation), as found."""
    pod_memory: int = 0
    """The memory of the whole pod as Kubernetes counts it (`videoqueue.scheduling.memory`):
    the worker's limit plus the other containers' and init containers' (a container without
    a limit counts 0); what the attempt holds of its queue's budget."""
    peak_memory: int | None = None
    """The most memory the worker container used, in bytes: what the worker reported with its
    result (`PEAK_MEMORY_FIELD`) rounded up to a whole MiB but never above the limit, the
    limit when it was OOM-killed, else None."""
    requests: Mapping[str, int] = field(default_factory=dict)
    """What the pod requests of each resource other than memory (CPU in millicores, others in
    whole units), as Kubernetes counts a pod's request (`videoqueue.scheduling.pod_requests`):
    what the attempt holds of its queue's spec.budgets."""

    @property
    def disruption(self) -> bool:
        """The attempt ended for a reason that is not the job's fault (no attempt used)."""
        return self.reason is not None and not consumes_attempt(self.reason)


def _truncate(text: str | None) -> str | None:
    if not text:
        return None
    if len(text) <= MAX_MESSAGE_LENGTH:
        return text
    return text[: MAX_MESSAGE_LENGTH - 3] + "..."


def _worker_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses: list[dict[str, Any]] = pod.get("status", {}).get("containerStatuses") or []
    if not statuses:
        return {}
    containers: list[dict[str, Any]] = pod.get("spec", {}).get("containers") or []
    annotations = pod.get("metadata", {}).get("annotations") or {}
    name = annotations.get(ANNOTATION_WORKER_CONTAINER)
    if name is None and containers:
        name = worker_container(containers).get("name")
    return next((s for s in statuses if s.get("name") == name), statuses[0])


def _disruption_condition(status: dict[str, Any]) -> dict[str, Any] | None:
    # Set by whoever kills the pod for reasons of their own: scheduler preemption, the
    # eviction API (drain), taint-based eviction, kubelet node-pressure eviction, pod GC.
    conditions: list[dict[str, Any]] = status.get("conditions") or []
    return next(
        (
            c
            for c in conditions
            if c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        ),
        None,
    )


def _parse_result(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _reported_peak(result: dict[str, Any] | None) -> int | None:
    value = (result or {}).get(PEAK_MEMORY_FIELD)
    # bool is an int to Python; a worker never means True bytes.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return -(-value // PEAK_MEMORY_UNIT) * PEAK_MEMORY_UNIT
    return None


def _attempt_label(pod: dict[str, Any]) -> int | None:
    value = (pod.get("metadata", {}).get("labels") or {}).get(LABEL_ATTEMPT)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _memory_limit(pod: dict[str, Any]) -> int:
    containers: list[dict[str, Any]] = pod.get("spec", {}).get("containers") or []
    if not containers:
        return 0
    wanted = (pod.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_WORKER_CONTAINER)
    worker = next((c for c in containers if c.get("name") == wanted), None) or worker_container(
        containers
    )
    return limit_of(worker, "", strict=False)


def _pod_memory(pod: dict[str, Any], worker_memory: int) -> int:
    spec: dict[str, Any] = pod.get("spec") or {}
    if not spec.get("containers"):
        return 0
    wanted = (pod.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_WORKER_CONTAINER)
    overhead = overhead_of(spec, wanted, strict=False, path="spec")
    return overhead.pod_memory(worker_memory)


_KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
)
_KEPT_ANNOTATIONS = (ANNOTATION_JOB_NAME, ANNOTATION_WORKER_CONTAINER, ANNOTATION_ADMITTED_AT)
_KEPT_STATUS = ("phase", "reason", "message", "startTime", "conditions")


def pod_essentials(pod: dict[str, Any]) -> dict[str, Any]:
    """The parts of a worker pod that the controller reads (`read_pod_outcome`,
    `pod_unschedulable`, its node, its deletion), in the same shape. The index keeps a pod
    per attempt of every job, finished ones too, and the rest of a pod (template, environment,
    volumes, security context, annotations) is most of its size."""
    metadata: dict[str, Any] = pod.get("metadata") or {}
    spec: dict[str, Any] = pod.get("spec") or {}
    status: dict[str, Any] = pod.get("status") or {}
    kept: dict[str, Any] = {k: metadata[k] for k in _KEPT_METADATA if k in metadata}
    annotations = metadata.get("annotations") or {}
    if ours := {k: annotations[k] for k in _KEPT_ANNOTATIONS if k in annotations}:
        kept["annotations"] = ours
    containers = [
        {k: c[k] for k in ("name", "resources") if k in c} for c in spec.get("containers") or []
    ]
    essentials: dict[str, Any] = {"metadata": kept, "spec": {"containers": containers}}
    if init := spec.get("initContainers"):  # their memory counts (`PodOutcome.pod_memory`)
        essentials["spec"]["initContainers"] = [
            {k: c[k] for k in ("name", "resources", "restartPolicy") if k in c} for c in init
        ]
    if "nodeName" in spec:
        essentials["spec"]["nodeName"] = spec["nodeName"]
    if status:
        essentials["status"] = {k: status[k] for k in _KEPT_STATUS if k in status}
        if "containerStatuses" in status:  # each reduced to its name and state
            essentials["status"]["containerStatuses"] = [
                {k: c[k] for k in ("name", "state") if k in c} for c in status["containerStatuses"]
            ]
    return essentials


def read_pod_outcome(pod: dict[str, Any]) -> PodOutcome:
    """Read a worker pod (as the API server returns it) into a `PodOutcome`.

    The reason, first match wins:
    1. the worker container exited 0 (or the pod Succeeded): Completed, and its termination
       message parsed as the result (a sidecar may keep the pod Running after the worker is
       done; the work is still done);
    2. pod reason DeadlineExceeded: DeadlineExceeded;
    3. pod reason Evicted: Evicted;
    4. worker container terminated with reason OOMKilled: OOMKilled (exit code 137 alone is
       any SIGKILL, so the reason decides);
    5. a DisruptionTarget condition: Evicted;
    6. a pod Failed with a pod-level reason before the worker ever ran (kubelet admission
       rejections such as OutOfmemory or NodeAffinity): Disrupted;
    7. anything else finished: Error.
    A pod that is not finished has no reason, unless it is being deleted: then Evicted when a
    DisruptionTarget condition says so, else Disrupted (whether the controller itself deleted
    it, to preempt, cancel or stop a stalled worker, is for the controller to know).

    The peak memory is the result's `peakMemoryBytes` (rounded up to a whole MiB, at most the
    limit) for Completed, the worker's memory limit for OOMKilled, and unknown for the rest.
    """
    metadata: dict[str, Any] = pod.get("metadata", {})
    status: dict[str, Any] = pod.get("status") or {}
    raw_phase = status.get("phase") or "Pending"  # no status yet: just created
    phase = cast(PodPhase, raw_phase if raw_phase in _PHASES else "Unknown")
    deleted = metadata.get("deletionTimestamp") is not None

    worker = _worker_status(pod)
    state: dict[str, Any] = worker.get("state") or {}
    running_state: dict[str, Any] | None = state.get("running")
    terminated: dict[str, Any] | None = state.get("terminated")
    running = running_state is not None and terminated is None
    finished = phase in ("Succeeded", "Failed") or terminated is not None
    exit_code: int | None = terminated.get("exitCode") if terminated else None

    started_at = (terminated or running_state or {}).get("startedAt")
    container_message: str | None = terminated.get("message") if terminated else None
    pod_reason = status.get("reason")
    disruption_condition = _disruption_condition(status)
    fallback_message = status.get("message") or (disruption_condition or {}).get("message")

    reason: str | None = None
    result: dict[str, Any] | None = None
    message = container_message or fallback_message
    if finished:
        if exit_code == 0 or (phase == "Succeeded" and exit_code is None):
            reason = AttemptReason.COMPLETED
            result = _parse_result(container_message)
            if result is not None:
                message = None  # the result says it all; keeps status small
        elif pod_reason == "DeadlineExceeded":
            reason = AttemptReason.DEADLINE_EXCEEDED
            message = fallback_message or container_message
        elif pod_reason == "Evicted":
            reason = AttemptReason.EVICTED
            message = fallback_message or container_message
        elif terminated and terminated.get("reason") == "OOMKilled":
            reason = AttemptReason.OOM_KILLED
        elif disruption_condition is not None:
            reason = AttemptReason.EVICTED
            message = fallback_message or container_message
        elif pod_reason and started_at is None:
            reason = AttemptReason.DISRUPTED
        else:
            reason = AttemptReason.ERROR
    elif deleted:
        evicted = disruption_condition is not None
        reason = AttemptReason.EVICTED if evicted else AttemptReason.DISRUPTED

    memory = _memory_limit(pod)
    peak = _reported_peak(result)
    if peak and memory:
        peak = min(peak, memory)  # rounding up must not make it look over the limit
    if reason == AttemptReason.OOM_KILLED:
        # The cgroup hit its limit; whatever the worker could still say, that is the peak.
        peak = memory or None
    return PodOutcome(
        name=metadata.get("name", ""),
        attempt=_attempt_label(pod),
        memory=memory,
        phase=phase,
        running=running,
        finished=finished,
        reason=None if reason is None else str(reason),
        exit_code=exit_code,
        message=_truncate(message),
        result=result,
        node=pod.get("spec", {}).get("nodeName"),
        start_time=started_at or status.get("startTime"),
        finish_time=terminated.get("finishedAt") if terminated else None,
        deleted=deleted,
        admitted_at=(metadata.get("annotations") or {}).get(ANNOTATION_ADMITTED_AT),
        pod_memory=_pod_memory(pod, memory),
        requests=pod_requests(pod, requested_resources(pod)),
        peak_memory=peak,
    )


def pod_unschedulable(pod: dict[str, Any]) -> bool:
    """The scheduler found no node for the pod (PodScheduled False, reason Unschedulable)."""
    conditions: list[dict[str, Any]] = (pod.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") == "PodScheduled"
        and c.get("status") == "False"
        and c.get("reason") == "Unschedulable"
        for c in conditions
    )


def disruption(pod: dict[str, Any]) -> bool:
    """Whether the pod's attempt ended, or is ending, for a reason that is not the job's fault,
    so it does not use up an attempt and the job is re-queued at its place.

    True for a pod being deleted before it finished (by someone else, a node going away, or
    the controller itself: preemption), for one evicted or preempted (pod reason Evicted, or
    a DisruptionTarget condition, before the worker could finish on its own), and for one its
    node turned away before the worker ran. False for a pod that is still running normally or
    that finished on its own (success, OOMKilled, deadline, error), deleted afterwards or not.
    """
    return read_pod_outcome(pod).disruption
