"""Worker pods: how one is built from a queue's template (its outcome is read back by
`videoqueue.scheduling.pod_outcome`).

Pure functions on plain dicts (the objects as the API server takes them): no I/O, no clock
reads, no kopf, no Kubernetes client. The controller creates what `build_worker_pod` returns
(create-if-absent: the name is deterministic, so a second create is a harmless conflict).

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
from typing import Any, Final

from videoqueue.api import (
    API_VERSION,
    VideoJob,
    VideoQueue,
    container_memory_limit,
    memory_quantity,
)
from videoqueue.api.job import JOB_KIND
from videoqueue.api.worker import (
    ENV_ALLOWED_HOSTS,
    ENV_DOWNLOAD_TIMEOUT_SECONDS,
    ENV_FILE_ROOTS,
    OWN_ANNOTATION_DOMAIN,
    WorkerSettings,
)
from videoqueue.scheduling import job_types
from videoqueue.scheduling.job_types import TemplateError as TemplateError
from videoqueue.scheduling.memory import PodOverhead
from videoqueue.scheduling.storage import mount_s3_credentials, s3_env

# --- What cannot be built, and whose to fix (and TemplateError, from job_types) --------------


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


def _job_payload(
    job: VideoJob, *, namespace: str, uid: str, attempt: int, input_url: str | None = None
) -> str:
    spec = job.spec.to_dict()
    if input_url is not None:
        # The worker reads a URL; where it came from (fromJob) is the operator's business.
        spec["input"] = {"url": input_url}
    payload = {
        "apiVersion": job.api_version,
        "kind": job.kind,
        "namespace": namespace,
        "name": job.metadata.name,
        "uid": uid,
        "attempt": attempt,
        # The validated spec, defaults filled in: the worker reads exactly what we checked.
        "spec": spec,
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


def worker_container(containers: list[dict[str, Any]]) -> dict[str, Any]:
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


def limit_of(container: Mapping[str, Any], field: str, *, strict: bool) -> int:
    name = container.get("name", "")
    try:
        limit = container_memory_limit(container)
    except (TypeError, ValueError) as e:
        if not strict:
            return 0
        raise TemplateError(
            f"container {name!r}: {field}.resources.limits.memory is not a quantity ({e})"
        ) from None
    if limit is None:
        if not strict:
            return 0
        raise TemplateError(
            f"container {name!r} has no memory limit ({field}.resources.limits.memory): every "
            "container beside the worker, and every init container, needs one, so that the "
            "queue counts what its worker pods can use against spec.memory.budget; set "
            f"{field}.resources.limits.memory to the most that container may use"
        )
    return limit


def overhead_of(
    spec: Mapping[str, Any], worker_name: str | None, *, strict: bool, path: str
) -> PodOverhead:
    containers: list[dict[str, Any]] = list(spec.get("containers") or [])
    worker = None
    if containers:
        worker = next((c for c in containers if c.get("name") == worker_name), None)
        worker = worker or worker_container(containers)
    sidecars = 0
    for index, container in enumerate(containers):
        if container is not worker:
            sidecars += limit_of(container, f"{path}.containers[{index}]", strict=strict)
    init_peak = 0
    started = 0  # sidecar init containers started so far; they keep running
    for index, container in enumerate(spec.get("initContainers") or []):
        memory = limit_of(container, f"{path}.initContainers[{index}]", strict=strict)
        if container.get("restartPolicy") == "Always":
            started += memory
        else:
            init_peak = max(init_peak, started + memory)
    return PodOverhead(sidecars=sidecars + started, init_peak=init_peak)


def pod_memory_overhead(
    template: Mapping[str, Any], *, strict: bool = True, path: str = "spec.template.spec"
) -> PodOverhead:
    """What the worker pods built from `template` (a queue's spec.template, or the template
    of a job type, `videoqueue.scheduling.job_types.worker_template`) hold beside their
    worker container, from the other containers' and init containers' memory limits; the
    memory a job counts against its queue's budget is `.pod_memory(worker memory)` (see
    `videoqueue.scheduling.memory`).

    Raises TemplateError when a container other than the worker, or an init container, has
    no memory limit (or one that is not a quantity): its pods could use any amount, which no
    budget can count. `strict=False` counts such a container as 0 instead (for a figure
    while the template is broken; no pod is built from it). `path` names the template's pod
    spec in messages.
    """
    spec: Mapping[str, Any] = template.get("spec") or {}
    return overhead_of(spec, WORKER_CONTAINER, strict=strict, path=path)


def build_worker_pod(
    job: dict[str, Any],
    queue: dict[str, Any],
    *,
    attempt: int,
    memory_bytes: int,
    now_iso: str | None = None,
    env: Sequence[Mapping[str, Any]] = (),
    input_url: str | None = None,
) -> dict[str, Any]:
    """The worker pod for attempt `attempt` of `job`, built from `queue`'s `spec.template`
    with the job type's `spec.types.<type>.template` merged over it, if any
    (`videoqueue.scheduling.job_types.worker_template`).

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
    - `activeDeadlineSeconds`: the job's, else its type's (spec.types), else the queue's,
      else the template's own, else none;
    - the job as compact JSON in env `VIDEOQUEUE_JOB` ({apiVersion, kind, namespace, name,
      uid, attempt, spec}; at most 32 KiB) and the attempt in `VIDEOQUEUE_ATTEMPT`; a job
      with spec.input.fromJob gets `input_url` (else its status.resolvedInput.url) as
      spec.input.url, the only input field the worker sees;
    - the queue's sandbox (spec.worker) in `VIDEOQUEUE_FILE_ROOTS` and
      `VIDEOQUEUE_ALLOWED_HOSTS` (JSON lists) and `VIDEOQUEUE_DOWNLOAD_TIMEOUT_SECONDS`;
      these and the two above replace same-named env entries of the template;
    - the queue's spec.storage.s3, when set, in `VIDEOQUEUE_S3_*` (endpoint, region,
      addressing style, credentials dir) and its Secret as a read-only volume mounted into
      the worker container only (`videoqueue.scheduling.storage`);
    - `env`, whole env entries (`value` or `valueFrom`) the operator adds to every worker:
      the progress channel's `VIDEOQUEUE_REDIS_URL`, `VIDEOQUEUE_PROGRESS_STREAM` and
      `VIDEOQUEUE_REDIS_PASSWORD` (from a Secret), see `videoqueue.controller.progress_settings`;
    - `terminationMessagePath: /dev/termination-log` (the worker writes its JSON result
      there) and `terminationMessagePolicy: FallbackToLogsOnError` (a crash without a message
      still leaves the last log lines to explain it);
    - pod and container `securityContext` kept exactly as the template has them;
    - `enableServiceLinks: false` and `automountServiceAccountToken: false` unless the
      template sets them: a worker needs neither service env vars nor API credentials.

    Raises TemplateError (a ValueError) when the queue's template, or the type's patch over
    it, cannot make a pod: no container, a container beside the worker or an init container
    without a memory limit, a patch whose containers cannot be merged; the message names the
    field (spec.template, or spec.types.<type>.template) and what to do. Raises JobNotDeliverable (a
    ValueError) when the job's spec is too large to hand over (more than 32 KiB as JSON).
    Raises ValueError when the job has no uid or namespace, `attempt` or `memory_bytes` is
    not positive, or its spec.input.fromJob is not resolved (the caller's mistakes).
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
    if video_job.spec.input.from_job is None:
        input_url = None
    elif input_url is None and (resolved := video_job.status.resolved_input) is not None:
        input_url = resolved.url
    elif input_url is None:
        raise ValueError(
            f"VideoJob {job_name!r} takes its input from {video_job.spec.input.from_job} "
            "(spec.input.fromJob) but it is not resolved yet (status.resolvedInput)"
        )

    queue_ref = f"VideoQueue {namespace}/{video_queue.metadata.name}"
    job_type = video_job.spec.type
    source = job_types.template_source(job_type, video_queue)
    typed = source != "spec.template"  # the type's patch is merged over spec.template
    try:
        template = job_types.worker_template(video_queue, job_type)
    except TemplateError as e:
        raise TemplateError(f"{queue_ref}: {e}") from None
    template_meta: dict[str, Any] = template.get("metadata") or {}
    spec: dict[str, Any] = template.get("spec") or {}
    containers: list[dict[str, Any]] = spec.get("containers") or []
    if not containers:
        raise TemplateError(
            f"{queue_ref}: spec.template.spec.containers is empty"
            + (f" ({source})" if typed else "")
            + "; the worker pod template needs at least one container (the worker, preferably "
            f"named {WORKER_CONTAINER!r})"
        )
    try:  # a merged template's container index is not the patch's: "spec.containers[i]"
        pod_memory_overhead(template, path="spec" if typed else "spec.template.spec")
    except TemplateError as e:
        if not typed:
            raise TemplateError(f"{queue_ref}: {e}") from None
        raise TemplateError(
            f"{queue_ref}: the worker pod template of type {job_type!r} ({source}): {e}; fix "
            f"it in spec.types.{job_type}.template or spec.template"
        ) from None
    worker = worker_container(containers)

    memory = memory_quantity(memory_bytes)
    resources = dict(worker.get("resources") or {})
    resources["requests"] = {**(resources.get("requests") or {}), "memory": memory}
    resources["limits"] = {**(resources.get("limits") or {}), "memory": memory}
    worker["resources"] = resources
    storage = video_queue.spec.storage
    s3 = storage.s3 if storage is not None else None
    if s3 is not None:
        mount_s3_credentials(spec, worker, s3)
    _set_env(
        worker,
        [
            *env,
            *_sandbox_env(video_queue.spec.worker),
            *(s3_env(s3) if s3 is not None else ()),
            {
                "name": ENV_JOB,
                "value": _job_payload(
                    video_job, namespace=namespace, uid=uid, attempt=attempt, input_url=input_url
                ),
            },
            {"name": ENV_ATTEMPT, "value": str(attempt)},
        ],
    )
    worker["terminationMessagePath"] = TERMINATION_MESSAGE_PATH
    worker["terminationMessagePolicy"] = "FallbackToLogsOnError"

    spec["containers"] = containers
    spec["restartPolicy"] = "Never"
    deadline = job_types.active_deadline_seconds(video_job, video_queue)
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
