"""Every Prometheus metric of the operator; `metrics_server` serves them on /metrics.

Two kinds of metrics:
- State (jobs by phase, queue state and health, memory, API requests) is read at scrape time
  from the acting controller's index and the API client's counters (`StateCollector`): no
  hooks, and always exactly what the index holds.
- Events (admissions, finished jobs, attempt endings, retries, preemptions, wait and run
  times, scheduling cycles) are counted where they happen, through the `record_*` functions
  the controller calls. Counting on the status write that records a transition, not on the
  decision, counts each transition once even when a cycle is retried.

Per-job series are created at zero as soon as a job of a (namespace, queue, type) is seen, so
`increase()` and `rate()` see the first finished job too, and dashboards show 0, not "no data".

Naming follows Prometheus' rules: prefix `videoqueue_`, base units (seconds, bytes), `_total`
on counters, never a job name as a label; help texts name the values a label can take.
tests/unit/test_metrics_naming.py checks all of it.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from videoqueue.api import (
    AttemptReason,
    JobPhase,
    QueueHealth,
    QueueState,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
    budget_units,
)
from videoqueue.scheduling import StoppingPod
from videoqueue.scheduling.cycle_view import IndexedJob
from videoqueue.scheduling.queue_status import reserved_memory, reserved_requests

if TYPE_CHECKING:
    from videoqueue.controller.kube import KubeClient

# A `_created` series next to every counter and histogram doubles the series for a
# timestamp nobody charts (process-wide; the operator has no other prometheus_client user).
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
"""The operator's own registry (not prometheus_client's global one), served on /metrics."""

# -- allowed label values -------------------------------------------------------------------

PHASES: tuple[str, ...] = tuple(p.value for p in JobPhase)
OUTCOMES: tuple[str, ...] = tuple(p.value for p in JobPhase if p.is_terminal)
ATTEMPT_REASONS: tuple[str, ...] = tuple(r.value for r in AttemptReason)
# An attempt that ended for these reasons did not succeed and its job runs again; Cancelled
# and Suspended are a user's decision, not a retry.
RETRY_REASONS: tuple[str, ...] = tuple(
    r.value
    for r in AttemptReason
    if r not in (AttemptReason.COMPLETED, AttemptReason.CANCELLED, AttemptReason.SUSPENDED)
)
STATES: tuple[str, ...] = tuple(s.value for s in QueueState)
HEALTHS: tuple[str, ...] = tuple(h.value for h in QueueHealth)
API_VERBS: tuple[str, ...] = ("get", "list", "watch", "create", "patch", "delete")
API_CODES: tuple[str, ...] = ("2xx", "3xx", "4xx", "5xx", "error")
# The API server failed (5xx) or could not be reached (error): worth an alert. 4xx answers
# are mostly expected (404 for a pod already gone, 409 for a pod that exists).
API_ERROR_CODES: tuple[str, ...] = ("5xx", "error")

JOB_LABELS = ("namespace", "queue", "type")
QUEUE_LABELS = ("namespace", "queue")


def _one_of(values: Iterable[str]) -> str:
    return ", ".join(values)


_QUEUE = "namespace and queue name the VideoQueue"
_JOB = (
    f"{_QUEUE}; type is the job's spec.type "
    "(probe, transcode, thumbnail, audio, clip, hls or custom)"
)

# Video work takes seconds (a probe) to hours (a long transcode), and waits as long.
DURATION_BUCKETS = (
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
)
CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- event metrics (counted by the record_* hooks) ------------------------------------------

JOBS_ADMITTED = Counter(
    "videoqueue_jobs_admitted_total",
    f"Attempts admitted onto a worker pod (one per attempt). {_JOB}.",
    JOB_LABELS,
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "videoqueue_jobs_finished_total",
    f"Jobs that reached a final phase. {_JOB}; outcome is one of {_one_of(OUTCOMES)}.",
    (*JOB_LABELS, "outcome"),
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "videoqueue_attempts_total",
    f"Worker attempts that ended, by how they ended. {_JOB}; "
    f"reason is one of {_one_of(ATTEMPT_REASONS)}.",
    (*JOB_LABELS, "reason"),
    registry=REGISTRY,
)
RETRIES = Counter(
    "videoqueue_job_retries_total",
    f"Attempts that ended without success after which the job was queued again. {_JOB}; "
    f"reason is one of {_one_of(RETRY_REASONS)}.",
    (*JOB_LABELS, "reason"),
    registry=REGISTRY,
)
PREEMPTIONS = Counter(
    "videoqueue_preemptions_total",
    f"Running jobs stopped to make room for a job of higher priority. {_JOB} of the stopped job.",
    JOB_LABELS,
    registry=REGISTRY,
)
STATUS_WRITES = Counter(
    "videoqueue_job_status_writes_total",
    "VideoJob status writes the API server accepted, by the phase each wrote (progress "
    f"updates of a running job included); phase is one of {_one_of(PHASES)}.",
    ("phase",),
    registry=REGISTRY,
)
ADMISSION_WAIT = Histogram(
    "videoqueue_admission_wait_seconds",
    f"Seconds an attempt waited in the queue before it was admitted (from being queued, or "
    f"re-queued after a failed attempt, to its worker pod's creation). {_JOB}.",
    JOB_LABELS,
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
JOB_RUN = Histogram(
    "videoqueue_job_run_seconds",
    f"Seconds workers ran for a job that finished Succeeded or Failed, all attempts "
    f"together. {_JOB}.",
    JOB_LABELS,
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
SCHEDULING_CYCLE = Histogram(
    "videoqueue_scheduling_cycle_duration_seconds",
    f"Seconds one cycle of a queue's scheduler loop took (assess, decide, create pods, write "
    f"statuses). {_QUEUE}.",
    QUEUE_LABELS,
    buckets=CYCLE_BUCKETS,
    registry=REGISTRY,
)
BUILD_INFO = Info(
    "videoqueue_build",  # served as videoqueue_build_info
    "Always 1; the labels say what runs: version (of videoqueue), python_version, kopf_version.",
    registry=REGISTRY,
)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.info(
    {
        "version": _version("videoqueue"),
        "python_version": platform.python_version(),
        "kopf_version": _version("kopf"),
    }
)

for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    # process_* (CPU, resident memory, open files) and python_*: the usual runtime metrics.
    REGISTRY.register(_collector)

_seen: set[tuple[str, str, str]] = set()


def ensure_job_series(namespace: str, queue: str, job_type: str) -> None:
    """Create every per-job series of (namespace, queue, type) at zero, once."""
    key = (namespace, queue, job_type)
    if key in _seen:
        return
    _seen.add(key)
    JOBS_ADMITTED.labels(*key)
    PREEMPTIONS.labels(*key)
    ADMISSION_WAIT.labels(*key)
    JOB_RUN.labels(*key)
    for outcome in OUTCOMES:
        JOBS_FINISHED.labels(*key, outcome)
    for reason in ATTEMPT_REASONS:
        ATTEMPTS.labels(*key, reason)
    for reason in RETRY_REASONS:
        RETRIES.labels(*key, reason)


def _job_labels(job: VideoJob) -> tuple[str, str, str]:
    labels = (job.metadata.namespace or "", job.spec.queue_name, job.spec.type)
    ensure_job_series(*labels)
    return labels


def record_admission(job: VideoJob, *, wait_seconds: float) -> None:
    """An attempt of `job` was admitted (its worker pod created) after waiting this long."""
    labels = _job_labels(job)
    JOBS_ADMITTED.labels(*labels).inc()
    ADMISSION_WAIT.labels(*labels).observe(max(0.0, wait_seconds))


_FINAL_PHASES = frozenset(phase.value for phase in JobPhase if phase.is_terminal)


def record_status_written(
    labels: tuple[str, str, str], stored: Mapping[str, Any], written: VideoJobStatus
) -> None:
    """`written` replaced `stored` (the status as stored, its JSON) in the API: count the
    transitions between the two for the job's (namespace, queue, type). Read from the JSON
    the index keeps, so a status write costs no parse of the job.

    Attempts that gained an end reason are attempt endings (and retries when the job goes on);
    a first final phase is a finished job, with its run time.
    """
    ensure_job_series(*labels)
    if written.phase is not None:
        STATUS_WRITES.labels(written.phase.value).inc()
    ended_before = {
        r.get("attempt") for r in stored.get("attempts") or () if r.get("reason") is not None
    }
    was_final = stored.get("phase") in _FINAL_PHASES
    requeued = written.phase is not None and not written.phase.is_terminal
    for record in written.attempts:
        if record.reason is None or record.attempt in ended_before:
            continue
        ATTEMPTS.labels(*labels, record.reason.value).inc()
        if requeued and record.reason.value in RETRY_REASONS:
            RETRIES.labels(*labels, record.reason.value).inc()
    if written.phase is not None and written.phase.is_terminal and not was_final:
        JOBS_FINISHED.labels(*labels, written.phase.value).inc()
        if written.phase in (JobPhase.SUCCEEDED, JobPhase.FAILED):
            JOB_RUN.labels(*labels).observe(written.run_seconds or 0.0)


def record_preemption(job: VideoJob) -> None:
    """The running `job` is being stopped to make room for a job of higher priority."""
    PREEMPTIONS.labels(*_job_labels(job)).inc()


def record_cycle(queue_key: str, seconds: float) -> None:
    """One scheduler-loop cycle of the queue "namespace/name" took `seconds`."""
    namespace, _, name = queue_key.partition("/")
    SCHEDULING_CYCLE.labels(namespace, name).observe(seconds)


# -- state metrics (read at scrape time) ----------------------------------------------------

# What the gauges read of the acting controller's index. The controller records into this
# module, so it is described here rather than imported back (no import cycle).


class IndexedQueue(Protocol):
    """A queue in the index (`controller.entries.QueueEntry`): `queue` is None while only jobs
    name it. Its jobs are `videoqueue.scheduling.cycle_view.IndexedJob`s."""

    @property
    def queue(self) -> VideoQueue | None: ...

    @property
    def jobs(self) -> Collection[str]: ...

    def stopping_pods(self) -> Sequence[StoppingPod]: ...


class IndexView(Protocol):
    """The acting controller's index, keyed by namespace/name (`controller.loop.Controller`)."""

    @property
    def queues(self) -> Mapping[str, IndexedQueue]: ...

    @property
    def jobs(self) -> Mapping[str, IndexedJob]: ...


ActivityState = Literal["starting", "priming", "acting", "standing-by"]


@dataclass(frozen=True)
class Activity:
    """What this replica does now: `starting` (before kopf's startup), `priming` (listing
    everything before it acts), `acting` (with `controller`), `standing-by` (another replica
    acts). `kube` is the API client once started."""

    state: ActivityState
    controller: IndexView | None = None
    kube: KubeClient | None = None

    @property
    def ready(self) -> bool:
        # A standing-by replica is ready: it is what takes over, and a rollout must not wait
        # for it to act.
        return self.state in ("acting", "standing-by")


def _not_started() -> Activity:
    return Activity("starting")


class StateCollector(Collector):
    """Gauges of the acting controller's index and the API client's request counters."""

    def __init__(self) -> None:
        self.source: Callable[[], Activity] = _not_started

    def collect(self) -> Iterator[Metric]:
        activity = self.source()
        active = GaugeMetricFamily(
            "videoqueue_operator_active",
            "1 when this replica acts (schedules jobs), 0 while it starts, primes its index "
            "or stands by for another replica.",
            value=1.0 if activity.state == "acting" else 0.0,
        )
        yield active
        if activity.controller is not None:
            yield from _index_metrics(activity.controller)
        if activity.kube is not None:
            yield from _api_metrics(activity.kube)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families depend on the index; nothing to check at registration


def _one_hot(name: str, what: str, label: str, values: Sequence[str]) -> GaugeMetricFamily:
    """A gauge per queue and value of `label` (the queue's, or a count of its jobs)."""
    queue = f"{_QUEUE} (spec.queueName)" if label == "phase" else _QUEUE
    return GaugeMetricFamily(
        name,
        f"{what} {queue}; {label} is one of {_one_of(values)}.",
        labels=(*QUEUE_LABELS, label),
    )


def _index_metrics(controller: IndexView) -> Iterator[Metric]:
    jobs = _one_hot("videoqueue_jobs", "Jobs in the operator's index by phase.", "phase", PHASES)
    state = _one_hot(
        "videoqueue_queue_state", "1 for the queue's spec.state, 0 for the others.", "state", STATES
    )
    health = _one_hot(
        "videoqueue_queue_health", "1 for the queue's health, 0 for the others.", "health", HEALTHS
    )
    reserved = GaugeMetricFamily(
        "videoqueue_queue_memory_reserved_bytes",
        "Memory of the queue's admitted and running jobs' pods, and of worker pods still "
        f"terminating after their attempt ended. {_QUEUE}.",
        labels=QUEUE_LABELS,
    )
    budget = GaugeMetricFamily(
        "videoqueue_queue_memory_budget_bytes",
        f"The queue's spec.memory.budget. {_QUEUE}.",
        labels=QUEUE_LABELS,
    )
    concurrency = GaugeMetricFamily(
        "videoqueue_queue_concurrency",
        f"The queue's spec.concurrency: most jobs admitted or running at once. {_QUEUE}.",
        labels=QUEUE_LABELS,
    )
    resource_reserved = GaugeMetricFamily(
        "videoqueue_queue_resource_reserved",
        "What the queue's admitted and running jobs' pods, and worker pods still terminating, "
        "request of each resource in spec.budgets; resource is cpu (in cores) or an extended "
        f"resource's name (in units). {_QUEUE}.",
        labels=(*QUEUE_LABELS, "resource"),
    )
    resource_budget = GaugeMetricFamily(
        "videoqueue_queue_resource_budget",
        "The queue's spec.budgets; resource is cpu (in cores) or an extended resource's name "
        f"(in units). {_QUEUE}.",
        labels=(*QUEUE_LABELS, "resource"),
    )
    for key, entry in controller.queues.items():
        namespace, _sep, name = key.partition("/")
        statuses: list[tuple[str, VideoJobStatus]] = []  # with their types: memory per type
        for job_key in entry.jobs:
            job_entry = controller.jobs.get(job_key)
            if job_entry is None:
                continue
            ensure_job_series(namespace, name, job_entry.type)
            if (assessment := job_entry.assessment) is not None:
                statuses.append((job_entry.type, assessment.status))
            elif job_entry.job is not None:  # not assessed yet (just listed)
                statuses.append((job_entry.type, job_entry.job.status))
        counts = dict.fromkeys(PHASES, 0)
        for _, status in statuses:
            counts[(status.phase or JobPhase.PENDING).value] += 1
        for phase_name, count in counts.items():
            jobs.add_metric((namespace, name, phase_name), float(count))
        queue = entry.queue
        if queue is None:
            continue  # jobs naming a queue that does not exist (yet): counted above only
        for value in STATES:
            state.add_metric((namespace, name, value), float(queue.spec.state == value))
        # The health as the queue's status says it (written within seconds of a change; the
        # rating needs facts only the scheduler loop gathers). None before the first write.
        if (current := queue.status.health) is not None:
            for value in HEALTHS:
                health.add_metric((namespace, name, value), float(current == value))
        stopping = sum(pod.memory for pod in entry.stopping_pods())  # still terminating
        reserved.add_metric((namespace, name), float(reserved_memory(queue, statuses) + stopping))
        budget.add_metric((namespace, name), float(queue.spec.memory.budget_bytes))
        concurrency.add_metric((namespace, name), float(queue.spec.concurrency))
        if queue.spec.budgets:
            held = reserved_requests(queue, statuses, entry.stopping_pods())
            for resource, units in budget_units(queue.spec.budgets or {}).items():
                scale = 1000.0 if resource == "cpu" else 1.0  # millicores to cores
                labels = (namespace, name, resource)
                resource_reserved.add_metric(labels, held.get(resource, 0) / scale)
                resource_budget.add_metric(labels, units / scale)
    yield from (jobs, state, health, reserved, budget, concurrency)
    yield from (resource_reserved, resource_budget)


def _api_metrics(kube: KubeClient) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "videoqueue_api_requests_total",
        "HTTP requests to the Kubernetes API, each retry counted. verb is one of "
        f"{_one_of(API_VERBS)}; resource is the plural with any subresource (videojobs/status); "
        f"code is the status class: one of {_one_of(API_CODES)} (error: no response).",
        labels=("verb", "resource", "code"),
    )
    errors = CounterMetricFamily(
        "videoqueue_api_errors_total",
        "Kubernetes API requests that failed on the server or got no response, each retry "
        f"counted. verb is one of {_one_of(API_VERBS)}; resource is the plural with any "
        f"subresource; code is one of {_one_of(API_ERROR_CODES)} (error: no response).",
        labels=("verb", "resource", "code"),
    )
    counts = dict(kube.request_counts)
    for (verb, resource, code), count in sorted(counts.items()):
        requests.add_metric((verb, resource, code), float(count))
    # Every error series exists at zero for each (verb, resource) in use: no "no data".
    for verb, resource in sorted({(verb, resource) for verb, resource, _ in counts}):
        for code in API_ERROR_CODES:
            errors.add_metric((verb, resource, code), float(counts.get((verb, resource, code), 0)))
    yield requests
    yield errors


STATE = StateCollector()
REGISTRY.register(STATE)
