"""Worker pods: how one is built from a queue's template, and how its outcome is read back.

Pure functions on plain dicts (the objects as the API server returns them): no I/O, no clock
reads, no kopf, no Kubernetes client. The controller creates what `build_worker_pod` returns
(create-if-absent: the name is deterministic, so a second create is a harmless conflict) and
turns what `read_pod_outcome` returns into job status.

Attempt numbers. `attempt` here is the pod's serial number for its job (1, 2, ...). It must
grow with every pod, disruptions included (see `videoqueue.scheduling.retry`), or a re-queued
attempt would collide with the name of the pod it replaces.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast, get_args

from videoqueue.api import (
    API_VERSION,
    AttemptReason,
    VideoJob,
    VideoQueue,
    format_bytes,
    parse_quantity,
)
from videoqueue.api.job import JOB_KIND
from videoqueue.api.worker import (
    ENV_ALLOWED_HOSTS,
    ENV_DOWNLOAD_TIMEOUT_SECONDS,
    ENV_FILE_ROOTS,
    OWN_ANNOTATION_DOMAIN,
    WorkerSettings,
)
from videoqueue.scheduling import PodOverhead, consumes_attempt

# --- What cannot be built, and whose to fix --------------------------------------------------


class TemplateError(ValueError):
    """The queue's spec.template cannot make a worker pod: the queue's owner must fix it, and
    no job of the queue can be admitted until then (the jobs are not at fault)."""


class JobNotDeliverable(ValueError):  # noqa: N818 - reads as the condition it is
    """This job cannot be handed to a worker (its spec is too large): the job must change;
    the queue and its other jobs are fine."""


# --- Labels and annotations: the one place that names them --------------------------------

LABEL_QUEUE: Final = "videoqueue.dev/queue"
LABEL_JOB: Final = "videoqueue.dev/job"
LABEL_ATTEMPT: Final = "videoqueue.dev/attempt"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_APP_NAME: Final = "app.kubernetes.io/name"
MANAGED_BY: Final = "videoqueue-operator"
APP_NAME: Final = "videoqueue-worker"

# Labels hold at most 63 characters, so a long name may appear there truncated and hashed;
# annotations keep the exact values.
ANNOTATION_JOB_NAME: Final = "videoqueue.dev/job-name"
ANNOTATION_JOB_UID: Final = "videoqueue.dev/job-uid"
ANNOTATION_WORKER_CONTAINER: Final = "videoqueue.dev/worker-container"
ANNOTATION_ADMITTED_AT: Final = "videoqueue.dev/admitted-at"

# --- The worker contract ---------------------------------------------------------------------

WORKER_CONTAINER: Final = "worker"
ENV_JOB: Final = "VIDEOQUEUE_JOB"
ENV_ATTEMPT: Final = "VIDEOQUEUE_ATTEMPT"
TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
# Env vars count against the node's ARG_MAX together with everything else; a job this big is
# a misuse of params (large inputs belong behind input.url).
MAX_JOB_PAYLOAD_BYTES: Final = 32 * 1024
# The worker's result field with its container's peak memory in bytes (cgroup's count).
PEAK_MEMORY_FIELD: Final = "peakMemoryBytes"
# Status shows peaks in whole MiB, rounded up, as memory is written (the kernel's count of
# pages reads as 43520k or 122424Ki otherwise); the exact count stays in the result.
PEAK_MEMORY_UNIT: Final = 2**20
# status.attempts[].message allows 1024 characters.
MAX_MESSAGE_LENGTH: Final = 1024

# --- Names -----------------------------------------------------------------------------------

# 63 rather than the 253 a pod name may have: the pod name is also the pod's hostname.
MAX_POD_NAME_LENGTH: Final = 63
MAX_LABEL_VALUE_LENGTH: Final = 63
_HASH_LENGTH: Final = 8

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_NOT_LABEL_CHARS = re.compile(r"[^-A-Za-z0-9_.]")


def _short_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:_HASH_LENGTH]


def label_value(value: str) -> str:
    """`value` if it is a valid label value, else a valid stand-in: its first characters
    (invalid ones replaced by '-') plus a hash of the whole, so distinct values stay distinct.

    Use it for selectors too, so they match what `build_worker_pod` wrote.
    """
    if len(value) <= MAX_LABEL_VALUE_LENGTH and _LABEL_VALUE.fullmatch(value):
        return value
    head = _NOT_LABEL_CHARS.sub("-", value)[: MAX_LABEL_VALUE_LENGTH - _HASH_LENGTH - 1]
    head = head.strip("-_.")
    digest = _short_hash(value)
    return f"{head}-{digest}" if head else digest


def worker_pod_name(job_name: str, attempt: int) -> str:
    """The name of the job's worker pod number `attempt`: `<job>-a<attempt>`.

    Deterministic, a DNS-1123 subdomain of at most 63 characters. When `<job>` would make it
    longer, the job name is cut and an 8-character hash of the whole name inserted
    (`<job prefix>-<hash>-a<attempt>`), so long names sharing a prefix get distinct pods.
    """
    if not _DNS1123_SUBDOMAIN.fullmatch(job_name) or len(job_name) > 253:
        raise ValueError(f"job name {job_name!r} is not a valid Kubernetes object name")
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    suffix = f"-a{attempt}"
    if len(job_name) + len(suffix) <= MAX_POD_NAME_LENGTH:
        return job_name + suffix
    room = MAX_POD_NAME_LENGTH - len(suffix) - _HASH_LENGTH - 1
    if room < 1:
        raise ValueError(f"attempt {attempt} is too large for a pod name")
    # A prefix of a valid subdomain is valid once trailing '-' and '.' are gone.
    head = job_name[:room].rstrip("-.")
    return f"{head}-{_short_hash(job_name)}{suffix}"


def worker_labels(*, queue_name: str, job_name: str, attempt: int) -> dict[str, str]:
    """The labels every worker pod carries (the controller selects its pods by them)."""
    return {
        LABEL_APP_NAME: APP_NAME,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_QUEUE: label_value(queue_name),
        LABEL_JOB: label_value(job_name),
        LABEL_ATTEMPT: str(attempt),
    }


# --- Building the pod ------------------------------------------------------------------------


def _job_payload(job: VideoJob, *, namespace: str, uid: str, attempt: int) -> str:
    payload = {
        "apiVersion": job.api_version,
        "kind": job.kind,
        "namespace": namespace,
        "name": job.metadata.name,
        "uid": uid,
        "attempt": attempt,
        # The validated spec, defaults filled in: the worker reads exactly what we checked.
        "spec": job.spec.to_dict(),
    }
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    size = len(text.encode())
    if size > MAX_JOB_PAYLOAD_BYTES:
        raise JobNotDeliverable(
            f"VideoJob {namespace}/{job.metadata.name}: its spec is {size} bytes as JSON, more "
            f"than the {MAX_JOB_PAYLOAD_BYTES} a worker pod can be handed; keep spec.params small "
            "(put large inputs behind spec.input.url)"
        )
    return text


def _worker_container(containers: list[dict[str, Any]]) -> dict[str, Any]:
    return next((c for c in containers if c.get("name") == WORKER_CONTAINER), containers[0])


def _set_env(container: dict[str, Any], entries: Sequence[Mapping[str, Any]]) -> None:
    # Ours replace same-named entries of the template rather than duplicating them (a
    # duplicate env name is resolved last-wins by the kubelet but warned about by the API).
    ours = {entry["name"] for entry in entries}
    env = [e for e in container.get("env") or [] if e.get("name") not in ours]
    env.extend(copy.deepcopy(dict(entry)) for entry in entries)
    container["env"] = env


def _sandbox_env(settings: WorkerSettings) -> list[dict[str, str]]:
    """The queue's spec.worker, as the worker reads it (`videoqueue.api.worker`)."""
    return [
        {"name": ENV_FILE_ROOTS, "value": json.dumps(list(settings.file_roots))},
        {"name": ENV_ALLOWED_HOSTS, "value": json.dumps(list(settings.allowed_hosts))},
        {"name": ENV_DOWNLOAD_TIMEOUT_SECONDS, "value": str(settings.download_timeout_seconds)},
    ]


# Set by the operator on every worker pod; a job's annotation of the same key never travels.
_OWN_ANNOTATIONS: Final = frozenset(
    {ANNOTATION_JOB_NAME, ANNOTATION_JOB_UID, ANNOTATION_WORKER_CONTAINER, ANNOTATION_ADMITTED_AT}
)


def _domain(key: str) -> str:
    return key.partition("/")[0] if "/" in key else ""


def _is_system_annotation(key: str) -> bool:
    return _domain(key).endswith(("kubernetes.io", "k8s.io"))


def annotation_travels(key: str, copy_annotations: Sequence[str]) -> bool:
    """Whether a job's annotation `key` is copied to its worker pods.

    Keys in the videoqueue.dev domain and its subdomains (`kwok.videoqueue.dev/...`) always
    are, except those the operator sets itself. Others only when `copy_annotations` (the
    queue's spec.worker.copyAnnotations) names them: an exact key, or a prefix ending in `*`
    (`example.com/*`). A prefix never matches Kubernetes' own keys (*.kubernetes.io,
    *.k8s.io, such as kubectl's last-applied-configuration); an exact key does.
    """
    if key in _OWN_ANNOTATIONS:
        return False
    domain = _domain(key)
    if domain == OWN_ANNOTATION_DOMAIN or domain.endswith("." + OWN_ANNOTATION_DOMAIN):
        return True
    for pattern in copy_annotations:
        if pattern == key:
            return True
        if (
            pattern.endswith("*")
            and key.startswith(pattern[:-1])
            and not _is_system_annotation(key)
        ):
            return True
    return False


# --- Memory: what a worker pod holds beside its worker ---------------------------------------


def _limit_of(container: Mapping[str, Any], field: str, *, strict: bool) -> int:
    name = container.get("name", "")
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if limit is None:
        if not strict:
            return 0
        raise TemplateError(
            f"container {name!r} has no memory limit ({field}.resources.limits.memory): every "
            "container beside the worker, and every init container, needs one, so that the "
            "queue counts what its worker pods can use against spec.memory.budget; set "
            f"{field}.resources.limits.memory to the most that container may use"
        )
    try:
        return parse_quantity(limit)
    except (TypeError, ValueError) as e:
        if not strict:
            return 0
        raise TemplateError(
            f"container {name!r}: {field}.resources.limits.memory is not a quantity ({e})"
        ) from None


def _overhead_of(
    spec: Mapping[str, Any], worker_name: str | None, *, strict: bool, path: str
) -> PodOverhead:
    containers: list[dict[str, Any]] = list(spec.get("containers") or [])
    worker = None
    if containers:
        worker = next((c for c in containers if c.get("name") == worker_name), None)
        worker = worker or _worker_container(containers)
    sidecars = 0
    for index, container in enumerate(containers):
        if container is not worker:
            sidecars += _limit_of(container, f"{path}.containers[{index}]", strict=strict)
    init_peak = 0
    started = 0  # sidecar init containers started so far; they keep running
    for index, container in enumerate(spec.get("initContainers") or []):
        memory = _limit_of(container, f"{path}.initContainers[{index}]", strict=strict)
        if container.get("restartPolicy") == "Always":
            started += memory
        else:
            init_peak = max(init_peak, started + memory)
    return PodOverhead(sidecars=sidecars + started, init_peak=init_peak)


def pod_memory_overhead(template: Mapping[str, Any], *, strict: bool = True) -> PodOverhead:
    """What the worker pods built from `template` (a queue's spec.template) hold beside their
    worker container, from the other containers' and init containers' memory limits; the
    memory a job counts against its queue's budget is `.pod_memory(worker memory)` (see
    `videoqueue.scheduling.memory`).

    Raises TemplateError when a container other than the worker, or an init container, has
    no memory limit (or one that is not a quantity): its pods could use any amount, which no
    budget can count. `strict=False` counts such a container as 0 instead (for a figure
    while the template is broken; no pod is built from it).
    """
    spec: Mapping[str, Any] = template.get("spec") or {}
    return _overhead_of(spec, WORKER_CONTAINER, strict=strict, path="spec.template.spec")


def build_worker_pod(
    job: dict[str, Any],
    queue: dict[str, Any],
    *,
    attempt: int,
    memory_bytes: int,
    now_iso: str | None = None,
    env: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The worker pod for attempt `attempt` of `job`, built from `queue`'s `spec.template`.

    `job` and `queue` are the VideoJob and VideoQueue as the API server returns them; neither
    is modified (the template is deep-copied). The choices:

    - name `worker_pod_name(job, attempt)`, the job's namespace;
    - labels: the template's, plus `worker_labels(...)` (ours win on a clash); annotations:
      the template's (the queue owner's, all kept), then the job's own that
      `annotation_travels` lets through (the videoqueue.dev domain and its subdomains, and
      what spec.worker.copyAnnotations names; never, say, a sidecar injector's), which win
      over the template's of the same key as before, then ours:
      the exact job name and uid, the worker container's name and, when `now_iso` is given,
      the admission time (pass the time recorded in status, so that rebuilding the pod after
      a restart gives the same object);
    - owned by the VideoJob (`controller` and `blockOwnerDeletion` true): deleting the job
      deletes its pods;
    - the worker container is the one named `worker`, else the first; its memory request and
      limit are both `memory_bytes` (the job's memory, and a Guaranteed-memory container);
      its other requests and limits (CPU, ...) are the template's. Every other container and
      init container must have a memory limit (see `pod_memory_overhead`): admission counts
      the whole pod, `pod_memory_overhead(template).pod_memory(memory_bytes)`, against the
      budget;
    - `restartPolicy: Never`: retries are the operator's, with backoff and memory growth;
    - `activeDeadlineSeconds`: the job's, else the queue's, else the template's own, else
      none;
    - the job as compact JSON in env `VIDEOQUEUE_JOB` ({apiVersion, kind, namespace, name,
      uid, attempt, spec}; at most 32 KiB) and the attempt in `VIDEOQUEUE_ATTEMPT`;
    - the queue's sandbox (spec.worker) in `VIDEOQUEUE_FILE_ROOTS` and
      `VIDEOQUEUE_ALLOWED_HOSTS` (JSON lists) and `VIDEOQUEUE_DOWNLOAD_TIMEOUT_SECONDS`;
      these and the two above replace same-named env entries of the template;
    - `env`, whole env entries (`value` or `valueFrom`) the operator adds to every worker:
      the progress channel's `VIDEOQUEUE_REDIS_URL`, `VIDEOQUEUE_PROGRESS_STREAM` and
      `VIDEOQUEUE_REDIS_PASSWORD` (from a Secret), see `videoqueue.controller.progress`;
    - `terminationMessagePath: /dev/termination-log` (the worker writes its JSON result
      there) and `terminationMessagePolicy: FallbackToLogsOnError` (a crash without a message
      still leaves the last log lines to explain it);
    - pod and container `securityContext` kept exactly as the template has them;
    - `enableServiceLinks: false` and `automountServiceAccountToken: false` unless the
      template sets them: a worker needs neither service env vars nor API credentials.

    Raises TemplateError (a ValueError) when the queue's template cannot make a pod: no
    container, or a container beside the worker or an init container without a memory
    limit; the message names the field and what to do. Raises JobNotDeliverable (a
    ValueError) when the job's spec is too large to hand over (more than 32 KiB as JSON).
    Raises ValueError when the job has no uid or namespace, or `attempt` or `memory_bytes` is
    not positive (the caller's mistakes).
    """
    video_job = VideoJob.model_validate(job)
    video_queue = VideoQueue.model_validate(queue)
    job_name = video_job.metadata.name
    namespace = video_job.metadata.namespace
    uid = video_job.metadata.uid
    if not namespace or not uid:
        raise ValueError(f"VideoJob {job_name!r} has no metadata.namespace or metadata.uid")
    if memory_bytes <= 0:
        raise ValueError(f"memory_bytes must be positive, got {memory_bytes}")
    name = worker_pod_name(job_name, attempt)  # checks the attempt number too

    template = copy.deepcopy(video_queue.spec.template)
    template_meta: dict[str, Any] = template.get("metadata") or {}
    spec: dict[str, Any] = template.get("spec") or {}
    containers: list[dict[str, Any]] = spec.get("containers") or []
    queue_ref = f"VideoQueue {namespace}/{video_queue.metadata.name}"
    if not containers:
        raise TemplateError(
            f"{queue_ref}: spec.template.spec.containers is empty; the worker pod template "
            f"needs at least one container (the worker, preferably named {WORKER_CONTAINER!r})"
        )
    try:
        pod_memory_overhead(template)
    except TemplateError as e:
        raise TemplateError(f"{queue_ref}: {e}") from None
    worker = _worker_container(containers)

    memory = format_bytes(memory_bytes)
    resources = dict(worker.get("resources") or {})
    resources["requests"] = {**(resources.get("requests") or {}), "memory": memory}
    resources["limits"] = {**(resources.get("limits") or {}), "memory": memory}
    worker["resources"] = resources
    _set_env(
        worker,
        [
            *env,
            *_sandbox_env(video_queue.spec.worker),
            {
                "name": ENV_JOB,
                "value": _job_payload(video_job, namespace=namespace, uid=uid, attempt=attempt),
            },
            {"name": ENV_ATTEMPT, "value": str(attempt)},
        ],
    )
    worker["terminationMessagePath"] = TERMINATION_MESSAGE_PATH
    worker["terminationMessagePolicy"] = "FallbackToLogsOnError"

    spec["containers"] = containers
    spec["restartPolicy"] = "Never"
    deadline = video_job.spec.active_deadline_seconds
    if deadline is None:
        deadline = video_queue.spec.active_deadline_seconds
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    spec.setdefault("enableServiceLinks", False)
    spec.setdefault("automountServiceAccountToken", False)

    labels = dict(template_meta.get("labels") or {})
    labels.update(
        worker_labels(queue_name=video_job.spec.queue_name, job_name=job_name, attempt=attempt)
    )
    # Of the job's annotations only an allow list travels: others could trigger controllers
    # that act on pods (sidecar and secret injectors) on behalf of whoever may create jobs.
    # The owner allow-listed them, so they may override the template's (KWOK scripts in
    # tests set a default in the template and a job's own outcome on the job).
    copied = video_queue.spec.worker.copy_annotations
    annotations = dict(template_meta.get("annotations") or {})
    annotations.update(
        (key, value)
        for key, value in video_job.metadata.annotations.items()
        if annotation_travels(key, copied)
    )
    annotations[ANNOTATION_JOB_NAME] = job_name
    annotations[ANNOTATION_JOB_UID] = uid
    annotations[ANNOTATION_WORKER_CONTAINER] = str(worker.get("name", ""))
    if now_iso is not None:
        annotations[ANNOTATION_ADMITTED_AT] = now_iso

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": JOB_KIND,
                    "name": job_name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


# --- Reading the outcome ---------------------------------------------------------------------

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
        name = _worker_container(containers).get("name")
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
    worker = next((c for c in containers if c.get("name") == wanted), None) or _worker_container(
        containers
    )
    return _limit_of(worker, "", strict=False)


def _pod_memory(pod: dict[str, Any], worker_memory: int) -> int:
    spec: dict[str, Any] = pod.get("spec") or {}
    if not spec.get("containers"):
        return 0
    wanted = (pod.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_WORKER_CONTAINER)
    overhead = _overhead_of(spec, wanted, strict=False, path="spec")
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
