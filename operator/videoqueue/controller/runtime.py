"""The operator's running state: an index of queues, jobs and worker pods fed by watches,
and one scheduler loop per queue that decides on it and writes the results.

Watch events only update the index and wake the queue's loop; a loop cycle then
  1. assesses the jobs that changed (`videoqueue.scheduling.jobs.assess_job`),
  2. decides admissions on a snapshot of the queue (`scheduling.decide_admissions`),
  3. creates the admitted jobs' worker pods (pod first: the pod is the record of admission),
  4. writes the job statuses that differ from what is stored, in parallel,
  5. posts Events for transitions and sleeps until woken or until `wake_at`.
Events arriving during a cycle are coalesced into the next one, so the number of cycles
adapts to the load instead of growing with it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import heapq
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from videoqueue.api import (
    GROUP,
    VERSION,
    AttemptReason,
    JobConditionType,
    JobPhase,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
    find_condition,
    format_bytes,
    put_condition,
)
from videoqueue.api.progress import ProgressEvent
from videoqueue.controller import metrics
from videoqueue.controller.kube import (
    PODS,
    VIDEOJOBS,
    VIDEOQUEUES,
    EventType,
    KubeApiError,
    KubeClient,
    KubeError,
)
from videoqueue.controller.notifications import Notification, Notifier, notification_for
from videoqueue.controller.patching import status_patch
from videoqueue.controller.progress import ProgressChannel, ProgressSettings
from videoqueue.scheduling import JobState, JobView, Snapshot, StoppingPod, decide_admissions
from videoqueue.scheduling.dependencies import find_cycle
from videoqueue.scheduling.jobs import (
    Admission,
    Assessment,
    admit,
    assess_job,
    preempt,
    queue_policy,
    reject,
    stopping_pods,
)
from videoqueue.scheduling.pod_outcome import pod_essentials, pod_unschedulable, read_pod_outcome
from videoqueue.scheduling.pressure import (
    PressurePolicy,
    PressureSignals,
    PressureState,
    next_pressure_state,
)
from videoqueue.scheduling.queue_status import FinishedJob, QueueFacts, summarize_queue
from videoqueue.scheduling.worker_pod import (
    ANNOTATION_JOB_NAME,
    JobNotDeliverable,
    build_worker_pod,
)

logger = logging.getLogger(__name__)

# Parallel API writes per queue cycle: enough to keep the API server busy, bounded so
# one huge queue does not starve the others of connections.
WRITE_PARALLELISM = 32
# How long the status of a fresh admission stays unwritten while it only says Admitted or
# Running, and a Running status while its worker has run less than that: the pod records
# the admission and the start meanwhile, and a job done by then costs one status write
# (its outcome, with admission and start from the pod), or two when its pod was slow to
# start (Admitted, then the outcome), instead of three. Outcomes and anything else are
# written at once.
ADMISSION_WRITE_DELAY = 5.0
# How soon a failed status write is tried again, doubling with each failure in a row up to
# the cap (a write the API server refuses for good must not be retried every second).
WRITE_RETRY_SECONDS = 1.0
WRITE_RETRY_MAX_SECONDS = 300.0
# A worker pod that cannot be built or that the API server refuses (a template Pod Security
# forbids, an invalid pod, a quota) is tried again after this long, doubling with each
# refusal in a row up to the cap: per job, and per queue (its next pod would most likely be
# refused the same way). A change of the queue's spec tries again at once.
POD_REFUSED_INITIAL_SECONDS = 10.0
POD_REFUSED_MAX_SECONDS = 300.0
# A queue's status is rewritten at most this often, however busy the queue.
QUEUE_STATUS_INTERVAL = 2.0
# A cycle that assesses thousands of jobs (a burst of new ones, a restart) lets the watch
# streams be read at least this often: the API server closes a watch whose reader falls a
# few dozen events behind, and kopf then lists every object again.
CYCLE_SLICE_SECONDS = 0.05
# Set on every queue the operator manages: its deletion waits until running jobs finished.
QUEUE_FINALIZER = "videoqueue.dev/running-jobs"
BATCH_LABEL = "videoqueue.dev/batch"
# How often at most a queue is woken only because finished jobs leave the statistics window.
STATISTICS_REFRESH = 10.0
_WAITING_PHASES = frozenset({JobPhase.PENDING, JobPhase.WAITING, JobPhase.BACKOFF})
_BUSY_PHASES = frozenset({JobPhase.ADMITTED, JobPhase.RUNNING})


class JobEntry:
    """A job in the index. Its object is kept as compact JSON, parsed (`body`, `job`) on
    demand and dropped again by `compact` while the job is idle (waiting or finished): a
    parsed VideoJob with its body is ~16 KiB, the JSON ~1 KiB, and a queue may hold tens of
    thousands of idle jobs. What every cycle reads is kept as plain fields."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.assessment: Assessment | None = None
        self.due_at: float | None = None  # when it is next re-assessed although nothing changed
        self.write_after = 0.0  # no status write before this time (a failed write's retry)
        self.write_failures = 0  # status writes failed in a row
        # While the status is only Admitted or Running, its write waits until then
        # (ADMISSION_WRITE_DELAY).
        self.admitted_hold = 0.0
        # The status decided but not yet written (a deferred admission): what the next
        # assessment starts from, since part of it (e.g. a disrupted attempt) is nowhere else.
        self.unwritten: VideoJobStatus | None = None
        self.deleting = False  # its TTL ran out and the deletion was sent
        self.refusals = 0  # worker pods refused in a row (POD_REFUSED_*)
        self.refusal: tuple[str, str] | None = None  # the last refusal's reason and message
        self.update(body)

    def update(self, body: dict[str, Any]) -> None:
        """Take a newer version of the object (slimmed: see `slim`)."""
        meta = body["metadata"]
        spec = body.get("spec") or {}
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str | None = meta.get("uid")
        self.resource_version: str | None = meta.get("resourceVersion")
        self.created: str = meta.get("creationTimestamp") or ""
        self.generation: int | None = meta.get("generation")
        self.queue_key = f"{self.namespace}/{spec.get('queueName', '')}"
        self.type: str = spec.get("type", "")
        self.depends_on: tuple[str, ...] = tuple(spec.get("dependsOn") or ())
        self.batch: str | None = (meta.get("labels") or {}).get(BATCH_LABEL)
        phase = (body.get("status") or {}).get("phase")
        self.stored_phase = JobPhase(phase) if phase in _PHASE_VALUES else None
        self._raw = json.dumps(body, separators=(",", ":")).encode()
        # Not kept: a queue's jobs arrive by the thousand (a listing, a burst of status
        # echoes) and are assessed one at a time; parsing again costs less than the peak.
        self._body: dict[str, Any] | None = None
        self._job: VideoJob | _Unset | None = _UNSET

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ref(self) -> dict[str, Any]:
        """Enough of the object to post an Event about it."""
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VideoJob",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "resourceVersion": self.resource_version,
            },
        }

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = json.loads(self._raw)
        return self._body

    @property
    def job(self) -> VideoJob | None:
        """The parsed object; None when it does not parse (the CRD schema prevents it)."""
        if isinstance(self._job, _Unset):
            try:
                self._job = VideoJob.model_validate(self.body)
            except ValidationError:
                logger.exception("cannot read VideoJob %s", self.key)
                self._job = None
        return self._job

    def compact(self) -> None:
        """Drop the parsed forms; the next use parses the JSON again."""
        self._body = None
        if self._job is not None:
            self._job = _UNSET


class _Unset:
    pass


_UNSET = _Unset()
_PHASE_VALUES = frozenset(phase.value for phase in JobPhase)


@dataclass
class QueueEntry:
    """A queue and the bookkeeping that keeps its cycles proportional to what changed, not
    to the number of its jobs: a cycle touches the jobs in `changed`, `unsaved` and the
    heaps' due entries, and reads `views` for the decision; finished jobs sit idle."""

    key: str
    body: dict[str, Any] | None = None
    queue: VideoQueue | None = None
    jobs: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    all_changed: bool = True  # re-assess every job (the queue's spec changed)
    changed: set[str] = field(default_factory=set)  # jobs to re-assess
    # Jobs whose assessment may differ from their stored status: written in step 4.
    unsaved: set[str] = field(default_factory=set)
    # The jobs that take part in the decision (waiting, admitted, running), with their view,
    # and which of them wait: no job waiting, no decision to make.
    views: dict[str, JobView] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)
    # (time, job key) min-heaps: re-assessment moments (deadlines, backoff ends) and TTL
    # expiries. Entries go stale rather than being removed; a stale one costs a re-check.
    due: list[tuple[float, str]] = field(default_factory=list)
    expiries: list[tuple[float, str]] = field(default_factory=list)
    oom_kills: dict[str, tuple[float, ...]] = field(default_factory=dict)  # by job key
    # Jobs whose worker pod was refused, and until when they sit out of the decision (they
    # hold no slot and no memory meanwhile); and the queue's own pause after refusals.
    held: dict[str, float] = field(default_factory=dict)
    refused_until: float = 0.0
    # Worker pods still terminating although their attempt is over, which hold a slot and
    # their memory until they are gone: by job key, and by pod key for deleted jobs.
    stopping: dict[str, tuple[StoppingPod, ...]] = field(default_factory=dict)
    orphans: dict[str, StoppingPod] = field(default_factory=dict)
    # Status writes queued or on the wire (job keys), and the tasks writing them.
    write_queue: collections.deque[str] = field(default_factory=collections.deque)
    writing: set[str] = field(default_factory=set)
    writers: set[asyncio.Task[None]] = field(default_factory=set)
    status_changed: bool = True  # the queue's status may need a write
    status_written_at: float = 0.0
    pressure: PressureState | None = None
    # Jobs that finished within the statistics window, by uid (kept after TTL deletion).
    finished: dict[str, FinishedJob] = field(default_factory=dict)
    finished_leave_at: float | None = None  # when the oldest record leaves the window

    def assess_again(self, key: str) -> None:
        self.changed.add(key)
        self.wake.set()

    def stopping_pods(self) -> tuple[StoppingPod, ...]:
        return (*(pod for pods in self.stopping.values() for pod in pods), *self.orphans.values())


class Controller:
    def __init__(
        self,
        kube: KubeClient,
        *,
        clock: Callable[[], float] = time.time,
        progress: ProgressSettings | None = None,
        start_loops: bool = True,
    ) -> None:
        """`start_loops=False`: no queue is scheduled until `start_loops()` (while the index
        is being primed)."""
        self.kube = kube
        self._loops_started = start_loops
        self.clock = clock
        self.queues: dict[str, QueueEntry] = {}
        self.jobs: dict[str, JobEntry] = {}
        # Worker pods seen before their job (kopf's streams are independent), by job key:
        # a pod may be the only record of an admission, so it waits here for its job.
        self._early_pods: dict[str, dict[str, dict[str, Any]]] = {}
        # Pods of deleted jobs still terminating ("namespace/pod" -> queue key): their queue
        # counts them (QueueEntry.orphans) until they are gone.
        self._orphans: dict[str, str] = {}
        self._stopping = False
        # Jobs waiting for others (spec.dependsOn), by the key of the job they wait for.
        self._dependents: dict[str, set[str]] = {}
        # Nodes that report MemoryPressure.
        self.pressured_nodes: set[str] = set()
        self.notifier = Notifier(on_given_up=self._notification_given_up)
        # Workers' progress and heartbeats from Redis (None: not configured). Its releases
        # re-assess the job, so progress is written by the same one patch per cycle.
        self.progress: ProgressChannel | None = None
        if progress is not None:
            self.progress = ProgressChannel(
                progress, clock=clock, on_release=self.refresh_jobs, accepts=self.wants_progress
            )
            self.progress.start()
        self._stall_warned: set[str] = set()  # queues told their stall detection is off

    # -- watch events ---------------------------------------------------------------------

    def observe_queue(self, body: dict[str, Any], *, deleted: bool) -> None:
        meta = body["metadata"]
        entry = self._queue(f"{meta['namespace']}/{meta['name']}")
        if deleted:
            entry.body, entry.queue = None, None
        elif _newer(body, entry.body):
            spec_changed = (
                entry.body is None
                or _generation(body) != _generation(entry.body)
                or _deleting(body) != _deleting(entry.body)
            )
            entry.body = body
            try:
                entry.queue = VideoQueue.model_validate(body)
            except ValidationError:
                logger.exception("cannot read VideoQueue %s", entry.key)
                entry.queue = None
            if not spec_changed:
                return  # our own status write coming back: nothing to re-decide
            # A new template may cure refused worker pods: try again now.
            entry.held.clear()
            entry.refused_until = 0.0
        entry.all_changed = True
        entry.status_changed = True
        entry.wake.set()

    def observe_job(self, body: dict[str, Any], *, deleted: bool) -> None:
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        queue_key = f"{meta['namespace']}/{body.get('spec', {}).get('queueName', '')}"
        queue = self._queue(queue_key)
        if deleted:
            if (gone := self.jobs.pop(key, None)) is not None:
                self._orphan_pods(queue, gone)
            self._early_pods.pop(key, None)
            queue.jobs.discard(key)
            queue.changed.discard(key)
            queue.unsaved.discard(key)
            queue.views.pop(key, None)
            queue.waiting.discard(key)
            queue.held.pop(key, None)
            queue.oom_kills.pop(key, None)
            queue.status_changed = True
        else:
            entry = self.jobs.get(key)
            if entry is None:
                entry = self.jobs[key] = JobEntry(body)
                entry.pods.update(self._early_pods.pop(key, {}))
            elif not _advances(meta.get("resourceVersion"), entry.resource_version):
                return  # nothing new (our own write's response may have brought it already)
            else:
                entry.update(body)
            queue.changed.add(key)
            queue.jobs.add(key)
            for name in body.get("spec", {}).get("dependsOn") or ():
                self._dependents.setdefault(f"{meta['namespace']}/{name}", set()).add(key)
        queue.wake.set()
        if deleted:
            self._wake_dependents(key)

    def observe_pod(self, body: dict[str, Any], *, deleted: bool) -> None:
        body = pod_essentials(body)
        meta = body["metadata"]
        # The label holds a shortened name when the job's name is long; the annotation is exact.
        job_name = (meta.get("annotations") or {}).get(ANNOTATION_JOB_NAME)
        key = f"{meta['namespace']}/{job_name}"
        entry = self.jobs.get(key)
        pod_key = f"{meta['namespace']}/{meta['name']}"
        if entry is None and pod_key in self._orphans:
            phase = (body.get("status") or {}).get("phase")
            if deleted or phase in ("Succeeded", "Failed"):
                orphaned_in = self._queue(self._orphans.pop(pod_key))
                orphaned_in.orphans.pop(pod_key, None)
                orphaned_in.status_changed = True
                orphaned_in.wake.set()
            return
        if entry is None:
            # The job's own event will come; keep the pod for it until then.
            early = self._early_pods.setdefault(key, {})
            if deleted:
                early.pop(meta["name"], None)
            elif _newer(body, early.get(meta["name"])):
                early[meta["name"]] = body
            if not early:
                del self._early_pods[key]
            return
        if deleted:
            entry.pods.pop(meta["name"], None)
        elif _newer(body, entry.pods.get(meta["name"])):
            entry.pods[meta["name"]] = body
        self._queue_of(entry).assess_again(key)

    def observe_node(self, body: dict[str, Any], *, deleted: bool) -> None:
        name = body["metadata"]["name"]
        conditions = (body.get("status") or {}).get("conditions") or []
        pressured = not deleted and any(
            c.get("type") == "MemoryPressure" and c.get("status") == "True" for c in conditions
        )
        if pressured == (name in self.pressured_nodes):
            return
        if pressured:
            self.pressured_nodes.add(name)
        else:
            self.pressured_nodes.discard(name)
        for queue in self.queues.values():
            queue.wake.set()

    def _orphan_pods(self, queue: QueueEntry, job: JobEntry) -> None:
        """The job is deleted; its pods that still run (the garbage collector deletes them)
        keep holding their queue's slots and memory until they are gone."""
        queue.stopping.pop(job.key, None)
        pods = [read_pod_outcome(pod) for pod in job.pods.values()]
        for pod in stopping_pods(VideoJobStatus(), pods, queue.queue):
            pod_key = f"{job.namespace}/{pod.name}"
            queue.orphans[pod_key] = pod
            self._orphans[pod_key] = queue.key

    def _wake_dependents(self, key: str) -> None:
        """Re-assess the jobs that wait for job `key` (its phase changed or it is gone)."""
        self.refresh_jobs(self._dependents.get(key, ()))

    def _warn_stall_detection_off(self, entry: QueueEntry) -> None:
        """Say once (per queue and activation) that progressDeadlineSeconds is not enforced
        when there is no progress channel to hear heartbeats on."""
        queue = entry.queue
        if self.progress is not None or queue is None or entry.body is None:
            return
        if queue.spec.progress_deadline_seconds is None or entry.key in self._stall_warned:
            return
        self._stall_warned.add(entry.key)
        message = (
            "spec.progressDeadlineSeconds is set but the operator runs without a Redis "
            "progress channel (--redis-url): stalled workers are not detected"
        )
        logger.warning("queue %s: %s", entry.key, message)
        self._spawn(
            self.kube.post_event(
                entry.body, type_="Warning", reason="StallDetectionOff", message=message
            )
        )

    def wants_progress(self, event: ProgressEvent) -> bool:
        """Whether a worker's event is about a job in the index (same uid) not yet finished."""
        entry = self.jobs.get(f"{event.namespace}/{event.job}")
        if entry is None or entry.uid != event.uid:
            return False
        return entry.assessment is None or not entry.assessment.terminal

    def refresh_jobs(self, keys: Iterable[str]) -> None:
        """Re-assess these jobs ("namespace/name") on their queues' next cycles."""
        for key in keys:
            entry = self.jobs.get(key)
            if entry is not None:
                self._queue_of(entry).assess_again(key)

    def _queue_of(self, entry: JobEntry) -> QueueEntry:
        return self._queue(entry.queue_key)

    def _queue(self, key: str) -> QueueEntry:
        entry = self.queues.get(key)
        if entry is None:
            entry = self.queues[key] = QueueEntry(key)
        if entry.task is None and self._loops_started and not self._stopping:
            entry.task = asyncio.create_task(self._loop(entry), name=f"queue {key}")
        return entry

    def start_loops(self) -> None:
        self._loops_started = True
        for key in self.queues:
            self._queue(key)

    async def stop(self) -> None:
        self._stopping = True
        tasks = [q.task for q in self.queues.values() if q.task is not None]
        tasks += [writer for q in self.queues.values() for writer in q.writers]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.progress is not None:
            await self.progress.stop()
        await self.notifier.stop()

    # -- the per-queue loop ----------------------------------------------------------------

    async def _loop(self, entry: QueueEntry) -> None:
        wake_at: float | None = None
        failures = 0  # cycles failed in a row: the retry backs off like a status write's
        while True:
            timeout = None if wake_at is None else max(0.0, wake_at - self.clock())
            if failures and timeout is not None:
                await asyncio.sleep(timeout)  # after a failed cycle, whatever wakes the queue
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(entry.wake.wait(), timeout)
            entry.wake.clear()
            try:
                started = time.monotonic()
                wake_at = await self.reconcile_queue(entry)
                metrics.record_cycle(entry.key, time.monotonic() - started)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                delay = _doubling(failures, WRITE_RETRY_SECONDS, WRITE_RETRY_MAX_SECONDS)
                logger.exception("queue %s: cycle failed; retrying in %.0fs", entry.key, delay)
                wake_at = self.clock() + delay

    async def reconcile_queue(self, entry: QueueEntry) -> float | None:
        now_ts = self.clock()
        now = datetime.datetime.fromtimestamp(now_ts, datetime.UTC)
        self._warn_stall_detection_off(entry)
        # 1. assess the jobs that changed, and those whose moment has come
        changed, entry.changed = entry.changed, set()
        if entry.all_changed:
            entry.all_changed = False
            changed |= entry.jobs
        while entry.due and entry.due[0][0] <= now_ts:
            changed.add(heapq.heappop(entry.due)[1])
        new_jobs = False
        slice_ends = time.monotonic() + CYCLE_SLICE_SECONDS
        for key in changed:
            if time.monotonic() >= slice_ends:
                await asyncio.sleep(0)  # events that arrive meanwhile wait for the next cycle
                slice_ends = time.monotonic() + CYCLE_SLICE_SECONDS
            job_entry = self.jobs.get(key)
            if job_entry is None or job_entry.job is None or key not in entry.jobs:
                continue
            before = job_entry.assessment.status.phase if job_entry.assessment else None
            new_jobs = new_jobs or (job_entry.unwritten is None and job_entry.stored_phase is None)
            assessment = await self._assess(job_entry, entry.queue, now)
            if key in entry.held and job_entry.refusal is not None:
                assessment = _explain_refusal(assessment, job_entry, job_entry.refusal, now)
            self._set_assessment(entry, key, job_entry, assessment, now_ts)
            if not _busy(job_entry):
                job_entry.compact()  # a queue may (re-)assess thousands of idle jobs at once
            if assessment.status.phase != before:
                self._wake_dependents(key)
        if entry.queue is not None and new_jobs:
            self._limit_pending(entry, entry.queue, now)
        expiry = self._collect_finished(entry, now_ts)

        # 2. decide
        admissions: list[Any] = []
        wake_at: float | None = None
        queue = entry.queue
        admitted: tuple[str, ...] = ()
        if queue is not None:
            wake_at = _earliest(self._update_pressure(entry, queue, now_ts), expiry)
        for key, until in list(entry.held.items()):
            if until <= now_ts:
                del entry.held[key]
        wake_at = _earliest(wake_at, min(entry.held.values(), default=None))
        if entry.refused_until > now_ts:
            wake_at = _earliest(wake_at, entry.refused_until)  # pods were refused: pause
        elif queue is not None and any(key not in entry.held for key in entry.waiting):
            policy = queue_policy(
                queue,
                concurrency=entry.pressure.effective if entry.pressure is not None else None,
            )
            views = tuple(view for key, view in entry.views.items() if key not in entry.held)
            snapshot = Snapshot(
                policy, views, self._recent_starts(entry, now_ts), entry.stopping_pods()
            )
            decision = decide_admissions(snapshot, now_ts)
            wake_at = _earliest(decision.wake_at, wake_at)
            for key, blocked in decision.blocked_reasons.items():
                self._explain_wait(entry, key, blocked.reason.value, blocked.message, now)
            if decision.preempt and decision.preempt_for is not None:
                self._preempt(entry, decision.preempt, decision.preempt_for, now)
                entry.wake.set()  # admit the preemptor once the victims count as pending
            # 3. admit: create the pods, then record the admissions
            admitted = decision.admit
            admissions += [self._admit(self.jobs[key], entry, now) for key in admitted]

        # 4. write the statuses that may differ from what is stored: in the background, so
        #    that the next cycle (new jobs) need not wait for them; one write per job at a time
        for key in list(entry.unsaved):
            job_entry = self.jobs.get(key)
            if job_entry is None or job_entry.assessment is None:
                entry.unsaved.discard(key)
            elif (
                key not in admitted
                and key not in entry.writing
                and _write_hold(job_entry) <= now_ts
            ):
                entry.writing.add(key)
                entry.write_queue.append(key)
        self._start_writers(entry)
        await _gather_bounded(admissions)
        for key in changed.union(admitted):  # idle again: keep only the compact form
            job_entry = self.jobs.get(key)
            if job_entry is not None and key not in entry.writing and not _busy(job_entry):
                job_entry.compact()
        for key in entry.unsaved:  # held admissions and writes to retry
            if key not in entry.writing and (job_entry := self.jobs.get(key)) is not None:
                wake_at = _earliest(wake_at, _write_hold(job_entry))
        wake_at = _earliest(wake_at, entry.due[0][0] if entry.due else None)
        if queue is None:
            wake_at = _earliest(wake_at, expiry)
        # 5. the queue's own status, at a bounded rate, and its finalizer
        status_due = await self._write_queue_status(entry, now_ts, now)
        await self._manage_finalizer(entry)
        return _earliest(wake_at, status_due)

    def _set_assessment(
        self, entry: QueueEntry, key: str, job_entry: JobEntry, assessment: Assessment, now: float
    ) -> None:
        """Make `assessment` the job's and keep the queue's bookkeeping in step with it."""
        job_entry.assessment = assessment
        entry.unsaved.add(key)
        entry.status_changed = True
        if assessment.view is not None:
            entry.views[key] = assessment.view
        else:
            entry.views.pop(key, None)
        if assessment.stopping:
            entry.stopping[key] = assessment.stopping
        else:
            entry.stopping.pop(key, None)
        if assessment.view is not None and assessment.view.state is JobState.PENDING:
            entry.waiting.add(key)
        else:
            entry.waiting.discard(key)
        due = _due_at(assessment)
        if due is not None and due != job_entry.due_at:
            heapq.heappush(entry.due, (due, key))
        job_entry.due_at = due
        kills = tuple(
            record.finish_time.timestamp()
            for record in assessment.status.attempts
            if record.reason == AttemptReason.OOM_KILLED and record.finish_time is not None
        )
        if kills:
            entry.oom_kills[key] = kills
        else:
            entry.oom_kills.pop(key, None)
        if assessment.terminal:
            self._record_finished(entry, key, job_entry, assessment, now)

    def _start_writers(self, entry: QueueEntry) -> None:
        """Enough writer tasks for the queued status writes, at most WRITE_PARALLELISM."""
        wanted = min(WRITE_PARALLELISM, len(entry.write_queue))
        while len(entry.writers) < wanted:
            task = asyncio.create_task(self._write_queued(entry))
            entry.writers.add(task)
            task.add_done_callback(entry.writers.discard)

    async def _write_queued(self, entry: QueueEntry) -> None:
        while entry.write_queue:
            key = entry.write_queue.popleft()
            try:
                if (job_entry := self.jobs.get(key)) is not None:
                    await self._save(entry, key, job_entry)
            finally:
                entry.writing.discard(key)

    async def _save(self, entry: QueueEntry, key: str, job_entry: JobEntry) -> None:
        """Write the job's latest assessment; on failure keep it unsaved and retry in a
        second. The queue's loop is woken when there is more to write for the job."""
        entry.unsaved.discard(key)  # a new assessment meanwhile puts it back
        assessment = job_entry.assessment
        if assessment is None or job_entry.job is None:
            return
        try:
            await self._write_status(job_entry, assessment)
            job_entry.write_failures = 0
        except Exception as error:
            job_entry.write_failures += 1
            delay = _doubling(
                job_entry.write_failures, WRITE_RETRY_SECONDS, WRITE_RETRY_MAX_SECONDS
            )
            if job_entry.write_failures == 1:
                logger.exception("status write of %s failed; retrying in %.0fs", key, delay)
                if isinstance(error, KubeApiError) and 400 <= error.status < 500:
                    # The status itself was refused: say so where the user looks.
                    self._notify(
                        job_entry,
                        "Warning",
                        "StatusWriteRefused",
                        f"the API server refused the job's status ({error.status} "
                        f"{error.reason}): {error.message}; retrying with backoff",
                    )
            else:
                logger.warning(
                    "status write of %s failed %d times in a row (%s); retrying in %.0fs",
                    key,
                    job_entry.write_failures,
                    error,
                    delay,
                )
            job_entry.write_after = self.clock() + delay
            entry.unsaved.add(key)
        if key in entry.unsaved or _deleting(entry.body):
            entry.wake.set()  # more to write, or the finalizer waits for stored phases
            if key in entry.unsaved:
                return
        # Its watch event brings nothing new, so it is not re-assessed: a terminal status
        # now on record starts its TTL here.
        if (expires := self._expires_at(entry, job_entry)) is not None:
            heapq.heappush(entry.expiries, (expires, key))
            entry.wake.set()
        if not _busy(job_entry):
            job_entry.compact()

    # -- queue rules around admission ---------------------------------------------------

    def _assessed_jobs(self, entry: QueueEntry) -> Iterator[tuple[JobEntry, Assessment]]:
        """The queue's jobs that have been assessed, with their assessment."""
        for key in entry.jobs:
            job_entry = self.jobs.get(key)
            if job_entry is not None and job_entry.assessment is not None:
                yield job_entry, job_entry.assessment

    def _dependency_phases(self, job: VideoJob) -> dict[str, JobPhase | None]:
        """The phase of each job `job` depends on (None: no such job), as last assessed."""
        phases: dict[str, JobPhase | None] = {}
        for name in job.spec.depends_on:
            other = self.jobs.get(f"{job.metadata.namespace}/{name}")
            if other is None:
                phases[name] = None
            elif other.assessment is not None:
                phases[name] = other.assessment.status.phase
            else:
                phases[name] = other.stored_phase
        return phases

    def _dependency_cycle(
        self, entry: JobEntry, dependencies: dict[str, JobPhase | None]
    ) -> tuple[str, ...] | None:
        """A cycle of spec.dependsOn through the job, while it still waits for dependencies:
        found when the job that closes the cycle arrives, and then for each job on it."""
        if all(phase is JobPhase.SUCCEEDED for phase in dependencies.values()):
            return None

        def depends_on(name: str) -> tuple[str, ...]:
            other = self.jobs.get(f"{entry.namespace}/{name}")
            return other.depends_on if other is not None else ()

        return find_cycle(entry.name, depends_on)

    def _limit_pending(self, entry: QueueEntry, queue: VideoQueue, now: datetime.datetime) -> None:
        """spec.maxPending: new jobs beyond it are Rejected (QueueFull), oldest accepted first.
        Jobs already accepted (their waiting status is stored) always keep their place."""
        limit = queue.spec.max_pending
        if limit is None:
            return
        accepted = 0
        new: list[JobEntry] = []
        for job_entry, assessment in self._assessed_jobs(entry):
            if assessment.status.phase not in _WAITING_PHASES:
                continue
            stored = job_entry.unwritten.phase if job_entry.unwritten else job_entry.stored_phase
            if stored is None:
                new.append(job_entry)
            else:
                accepted += 1
        room = max(0, limit - accepted)
        if len(new) <= room:
            return
        new.sort(key=lambda e: (e.created, e.name))
        message = (
            f"queue {queue.metadata.name} is full: {limit} jobs already wait for admission "
            "(spec.maxPending); submit again later, or raise the queue's maxPending"
        )
        for job_entry in new[room:]:
            assert job_entry.job is not None
            rejected = reject(job_entry.job, job_entry.job.status, "QueueFull", message, now)
            self._set_assessment(entry, job_entry.key, job_entry, rejected, now.timestamp())

    def _record_finished(
        self, entry: QueueEntry, key: str, job_entry: JobEntry, assessment: Assessment, now: float
    ) -> None:
        """Record a finished job for the statistics and schedule its deletion by TTL (once
        its terminal status is on record)."""
        status = assessment.status
        if status.completion_time is None:
            return
        queue = entry.queue
        done = status.completion_time.timestamp()
        window = queue.spec.statistics.window_seconds if queue is not None else 900
        record_key = f"{job_entry.uid}/{done}"
        if (
            status.phase in (JobPhase.SUCCEEDED, JobPhase.FAILED)
            and done > now - window
            and record_key not in entry.finished
        ):
            entry.finished[record_key] = FinishedJob(
                finished_at=done,
                type=job_entry.type,
                succeeded=status.phase == JobPhase.SUCCEEDED,
                wait_seconds=status.wait_seconds,
                run_seconds=status.run_seconds,
            )
            entry.finished_leave_at = _earliest(entry.finished_leave_at, done + window)
        if (expires := self._expires_at(entry, job_entry)) is not None:
            heapq.heappush(entry.expiries, (expires, key))

    def _expires_at(self, entry: QueueEntry, job_entry: JobEntry) -> float | None:
        """When a finished job's TTL runs out; None without a TTL, while its terminal status
        is not on record yet, or once its deletion was sent."""
        assessment, stored = job_entry.assessment, job_entry.stored_phase
        if assessment is None or job_entry.deleting or not assessment.terminal:
            return None
        completion = assessment.status.completion_time
        if completion is None or stored is None or not stored.is_terminal:
            return None
        if (job := job_entry.job) is None:
            return None
        ttl = _ttl_seconds(job, entry.queue, assessment.status.phase)
        return None if ttl is None else completion.timestamp() + ttl

    def _collect_finished(self, entry: QueueEntry, now: float) -> float | None:
        """Delete the finished jobs whose TTL ran out and drop statistics records that left
        the window; return when the next TTL runs out or the next record leaves."""
        while entry.expiries and entry.expiries[0][0] <= now:
            _, key = heapq.heappop(entry.expiries)
            job_entry = self.jobs.get(key)
            if job_entry is None or key not in entry.jobs:
                continue
            expires = self._expires_at(entry, job_entry)
            if expires is None or expires > now:
                continue  # stale: re-assessed since, and scheduled again if it has a TTL
            job_entry.deleting = True
            self._spawn(
                self.kube.delete(VIDEOJOBS, job_entry.namespace, job_entry.name, uid=job_entry.uid)
            )
        next_at = entry.expiries[0][0] if entry.expiries else None
        if entry.finished_leave_at is not None and entry.finished_leave_at <= now:
            window = entry.queue.spec.statistics.window_seconds if entry.queue else 900
            entry.finished = {
                k: r for k, r in entry.finished.items() if r.finished_at > now - window
            }
            entry.finished_leave_at = min(
                (r.finished_at + window for r in entry.finished.values()), default=None
            )
            entry.status_changed = True
        if entry.finished_leave_at is not None:
            # Refresh the statistics as records leave the window, but not for every one.
            next_at = _earliest(next_at, max(entry.finished_leave_at, now + STATISTICS_REFRESH))
        return next_at

    def _update_pressure(self, entry: QueueEntry, queue: VideoQueue, now: float) -> float | None:
        """Move the queue's effective concurrency (see videoqueue.scheduling.pressure)."""
        settings = queue.spec.memory_pressure
        if not settings.enabled:
            entry.pressure = None
            return None
        kills = [
            finished
            for times in entry.oom_kills.values()
            for finished in times
            if finished > now - settings.window_seconds
        ]
        nodes: set[str] = set()
        if self.pressured_nodes:  # rare: walking every job's pods is fine then
            for job_entry, _ in self._assessed_jobs(entry):
                for pod in job_entry.pods.values():
                    node = pod.get("spec", {}).get("nodeName")
                    phase = (pod.get("status") or {}).get("phase")
                    if node in self.pressured_nodes and phase not in ("Succeeded", "Failed"):
                        nodes.add(node)
        before = entry.pressure
        state, due = next_pressure_state(
            before,
            concurrency=queue.spec.concurrency,
            signals=PressureSignals(sorted(kills), sorted(nodes)),
            policy=PressurePolicy(
                oom_kills=settings.oom_kills,
                window_seconds=float(settings.window_seconds),
                recovery_seconds=float(settings.recovery_seconds),
            ),
            now=now,
        )
        if state != before:
            entry.status_changed = True
        entry.pressure = state
        if before is not None and state.effective != before.effective and entry.body is not None:
            lowered = state.effective < before.effective
            message = (
                f"effective concurrency {before.effective} -> {state.effective} of "
                f"{queue.spec.concurrency}: {state.message or 'calm again'}"
            )
            logger.info("queue %s: %s", entry.key, message)
            self._spawn(
                self.kube.post_event(
                    entry.body,
                    type_="Warning" if lowered else "Normal",
                    reason="MemoryPressure" if lowered else "PressureEased",
                    message=message,
                )
            )
        return due

    def _recent_starts(self, entry: QueueEntry, now: float) -> tuple[float, ...]:
        """Admissions of the last minute, for the rate limit (from the jobs' statuses, so a
        restarted operator knows them too)."""
        if entry.queue is None or entry.queue.spec.rate_limit is None:
            return ()
        starts: list[float] = []
        for _, assessment in self._assessed_jobs(entry):
            admitted = assessment.status.admitted_time
            if admitted is not None and admitted.timestamp() > now - 60.0:
                starts.append(admitted.timestamp())
        return tuple(starts)

    def _preempt(
        self, entry: QueueEntry, victims: Iterable[str], preemptor: str, now: datetime.datetime
    ) -> None:
        for key in victims:
            job_entry = self.jobs.get(key)
            if job_entry is None or job_entry.job is None or job_entry.assessment is None:
                continue
            status = job_entry.assessment.status
            record = next(
                (r for r in reversed(status.attempts) if r.attempt == status.attempt), None
            )
            pod_name = record.pod if record is not None and record.pod else None
            if pod_name is None:
                continue
            assessment = preempt(
                job_entry.job, job_entry.assessment, pod_name, preemptor.split("/", 1)[-1], now
            )
            self._set_assessment(entry, key, job_entry, assessment, now.timestamp())
            # The next assessment starts from this (the pod may linger while it stops).
            job_entry.unwritten = assessment.status
            job_entry.admitted_hold = 0.0
            metrics.record_preemption(job_entry.job)
            logger.info("preempted %s (worker %s) for %s", key, pod_name, preemptor)

    def _queue_facts(self, entry: QueueEntry) -> QueueFacts:
        batches: list[tuple[str, VideoJobStatus]] = []
        unschedulable = 0
        for job_entry, assessment in self._assessed_jobs(entry):
            status = assessment.status
            if job_entry.batch is not None:
                batches.append((job_entry.batch, status))
            if status.phase == JobPhase.ADMITTED and any(
                pod_unschedulable(pod) for pod in job_entry.pods.values()
            ):
                unschedulable += 1
        return QueueFacts(
            finished=tuple(entry.finished.values()),
            batches=tuple(batches),
            unschedulable=unschedulable,
            pressure=entry.pressure,
            stopping_memory=sum(pod.memory for pod in entry.stopping_pods()),
        )

    async def _manage_finalizer(self, entry: QueueEntry) -> None:
        """Keep QUEUE_FINALIZER on the queue; on deletion remove it once no job of the queue
        is admitted or running and every pending one is recorded as cancelled."""
        body = entry.body
        if body is None:
            return
        meta = body["metadata"]
        finalizers: list[str] = list(meta.get("finalizers") or [])
        if not _deleting(body):
            if QUEUE_FINALIZER in finalizers:
                return
            finalizers.append(QUEUE_FINALIZER)
        else:
            if QUEUE_FINALIZER not in finalizers:
                return
            for key in entry.jobs:
                job_entry = self.jobs.get(key)
                if job_entry is None:
                    continue
                stored = job_entry.stored_phase
                if stored is None or not stored.is_terminal:
                    return  # still running, or its cancellation is not on record yet
            finalizers.remove(QUEUE_FINALIZER)
            logger.info("queue %s: no job left running; letting the deletion proceed", entry.key)
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
        try:
            updated = await self.kube.patch(VIDEOQUEUES, meta["namespace"], meta["name"], patch)
        except KubeError as e:
            # A conflict: the queue changed meanwhile; its watch event brings the next try.
            logger.debug("queue %s: finalizer update deferred: %s", entry.key, e)
            return
        if updated is not None and _newer(updated, entry.body):
            entry.body = updated

    def _send_notification(self, before: VideoJob, written: VideoJobStatus) -> None:
        """Queue the webhook of a job whose terminal status was just written."""
        if before.status.phase is not None and before.status.phase.is_terminal:
            return
        queue = self.queues.get(f"{before.metadata.namespace}/{before.spec.queue_name}")
        settings = queue.queue.spec.notifications if queue and queue.queue else None
        notification = notification_for(settings, before, written)
        if notification is not None:
            self.notifier.submit(notification)

    def _notification_given_up(self, notification: Notification, problem: str) -> None:
        body = notification.body
        queue = self.queues.get(f"{body['namespace']}/{body['queue']}")
        if queue is None or queue.body is None:
            return
        self._spawn(
            self.kube.post_event(
                queue.body,
                type_="Warning",
                reason="NotificationFailed",
                message=(
                    f"gave up sending the {body['outcome']} notification of job {body['job']} "
                    f"to {notification.url} after {notification.max_attempts} tries: {problem}"
                )[:1024],
            )
        )

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _write_queue_status(
        self, entry: QueueEntry, now_ts: float, now: datetime.datetime
    ) -> float | None:
        """Write the queue's status if it changed and the last write is old enough; else
        return when to try again."""
        if entry.queue is None or entry.body is None or not entry.status_changed:
            return None
        due = entry.status_written_at + QUEUE_STATUS_INTERVAL
        if now_ts < due:
            return due
        entry.status_changed = False
        statuses = [
            e.assessment.status
            for key in entry.jobs
            if (e := self.jobs.get(key)) is not None and e.assessment is not None
        ]
        desired = summarize_queue(entry.queue, statuses, now, facts=self._queue_facts(entry))
        patch = status_patch(entry.body.get("status") or {}, desired)
        if patch is None:
            return None
        entry.status_written_at = now_ts
        meta = entry.body["metadata"]
        try:
            updated = await self.kube.patch(
                VIDEOQUEUES,
                meta["namespace"],
                meta["name"],
                {"status": patch},
                subresource="status",
            )
        except BaseException:
            entry.status_changed = True  # the loop's retry writes it
            raise
        if updated is not None and _newer(updated, entry.body):
            entry.body = updated
            entry.queue = VideoQueue.model_validate(updated)
        return None

    def _explain_wait(
        self, queue: QueueEntry, key: str, reason: str, message: str, now: datetime.datetime
    ) -> None:
        """Say in the job's status why it waits. Only a change of reason is written: the
        numbers in the message (free memory, slots) change all the time and would cost a
        status write per job on every admission in the queue."""
        entry = self.jobs[key]
        assessment = entry.assessment
        if assessment is None:
            return
        current = find_condition(assessment.status.conditions, JobConditionType.ADMITTED)
        if current is not None and current.reason == reason:
            return
        explained = _waiting_because(assessment, entry, reason, message, now)
        self._set_assessment(queue, key, entry, explained, now.timestamp())

    async def _assess(
        self, entry: JobEntry, queue: VideoQueue | None, now: datetime.datetime
    ) -> Assessment:
        assert entry.job is not None
        job = entry.job
        if entry.unwritten is not None:
            job = job.model_copy(update={"status": entry.unwritten})
        outcomes = [read_pod_outcome(pod) for pod in entry.pods.values()]
        dependencies = self._dependency_phases(entry.job)
        cycle = self._dependency_cycle(entry, dependencies)
        heard_at = None
        if self.progress is not None:
            # For stalled-worker detection: the worker of the newest attempt, which may be
            # newer than status says (a pod created just before a restart).
            attempt = max([job.status.attempt, *(o.attempt or 0 for o in outcomes)])
            heard_at = self.progress.heard_at(job, attempt)
        assessment = assess_job(
            job, outcomes, queue, now, dependencies=dependencies, heard_at=heard_at, cycle=cycle
        )
        if missing := assessment.unconfirmed_pod:
            # The index may lag behind (e.g. right after a restart): ask the API server.
            namespace = entry.job.metadata.namespace or ""
            pod = (
                await self.kube.get(PODS, namespace, assessment.unconfirmed_pod)
                if assessment.unconfirmed_pod
                else None
            )
            if pod is not None:
                entry.pods[pod["metadata"]["name"]] = pod_essentials(pod)
                outcomes = [read_pod_outcome(p) for p in entry.pods.values()]
                assessment = assess_job(
                    job,
                    outcomes,
                    queue,
                    now,
                    dependencies=dependencies,
                    heard_at=heard_at,
                    cycle=cycle,
                )
            else:
                assessment = assess_job(
                    job,
                    outcomes,
                    queue,
                    now,
                    confirmed_missing=frozenset({missing}),
                    dependencies=dependencies,
                    heard_at=heard_at,
                    cycle=cycle,
                )
        if self.progress is not None and not assessment.terminal:
            # The worker's latest released stage/progress/message, for its current attempt.
            with_progress = self.progress.apply(job, assessment.status)
            if with_progress is not assessment.status:
                assessment = dataclasses.replace(assessment, status=with_progress)
        return assessment

    async def _admit(self, entry: JobEntry, queue: QueueEntry, now: datetime.datetime) -> None:
        job, assessment = entry.job, entry.assessment
        assert job is not None
        assert assessment is not None
        assert assessment.view is not None
        assert queue.body is not None
        attempt = assessment.status.attempt + 1
        memory = assessment.view.memory
        key = entry.key
        try:
            pod = build_worker_pod(
                entry.body,
                queue.body,
                attempt=attempt,
                memory_bytes=memory,
                now_iso=now.isoformat().replace("+00:00", "Z"),
                env=self.progress.worker_env if self.progress is not None else (),
            )
        except JobNotDeliverable as e:
            # The job itself can never be handed to a worker: turn it away for good.
            rejected = reject(job, assessment.status, "NotDeliverable", str(e), now)
            self._set_assessment(queue, key, entry, rejected, now.timestamp())
            return
        except ValueError as e:
            self._pod_refused(queue, entry, "WorkerPodInvalid", str(e), now)
            return
        namespace = job.metadata.namespace or ""
        pod_name = pod["metadata"]["name"]
        try:
            created, _ = await self.kube.create(PODS, namespace, pod)
        except KubeApiError as e:
            self._pod_refused(
                queue,
                entry,
                "WorkerPodRefused",
                f"the API server refused worker pod {pod_name} ({e.status} {e.reason}): "
                f"{e.message}",
                now,
            )
            return
        except KubeError as e:
            self._pod_refused(
                queue, entry, "WorkerPodNotCreated", f"creating worker pod {pod_name}: {e}", now
            )
            return
        entry.refusals, entry.refusal = 0, None
        entry.pods[created["metadata"]["name"]] = pod_essentials(created)
        status = admit(
            assessment.status,
            pod_name=pod["metadata"]["name"],
            admission=Admission(attempt=attempt, memory=memory),
            now=now,
            generation=job.metadata.generation,
        )
        waited = (status.wait_seconds or 0.0) - (assessment.status.wait_seconds or 0.0)
        metrics.record_admission(job, wait_seconds=waited)
        self._set_assessment(
            queue, key, entry, Assessment(status=status, view=None), now.timestamp()
        )
        queue.changed.add(key)  # re-assess from the pod before the next decision
        # Most workers start within a moment: wait that long, and write Running (which
        # records the admission too, from the pod) instead of Admitted and then Running.
        entry.admitted_hold = self.clock() + ADMISSION_WRITE_DELAY
        entry.unwritten = status
        if attempt > 1:
            # A first admission is in the job's status (attempts) and its pod's events; one
            # Event per job, its outcome, is a tenth of the API server's writes at scale. A
            # retry's says what changed (memory after an OOM kill).
            self._notify(
                entry,
                "Normal",
                "Admitted",
                f"admitted as attempt {attempt} with {format_bytes(memory)} of memory; "
                f"worker pod {pod['metadata']['name']}",
            )

    def _pod_refused(
        self,
        queue: QueueEntry,
        entry: JobEntry,
        reason: str,
        message: str,
        now: datetime.datetime,
    ) -> None:
        """A worker pod that could not be built or created: no pod, so no slot and no memory
        held. The job waits out of the decision, says why in its Admitted condition and an
        Event, and is tried again after a delay that doubles with each refusal in a row; the
        queue pauses its admissions likewise, since its next pod would most likely be
        refused the same way."""
        assessment = entry.assessment
        assert assessment is not None
        clock = self.clock()
        entry.refusals += 1
        delay = _doubling(entry.refusals, POD_REFUSED_INITIAL_SECONDS, POD_REFUSED_MAX_SECONDS)
        queue.held[entry.key] = clock + delay
        queue.refused_until = max(queue.refused_until, clock + delay)
        text = f"{message}; trying again in {delay:.0f}s, or at once when the queue's spec changes"
        logger.warning("queue %s: job %s: %s", queue.key, entry.name, text)
        entry.refusal = (reason, text)
        explained = _explain_refusal(assessment, entry, entry.refusal, now)
        self._set_assessment(queue, entry.key, entry, explained, clock)
        self._notify(entry, "Warning", reason, text)

    async def _write_status(self, entry: JobEntry, assessment: Assessment) -> None:
        # A failed write is tried again with the same assessment: post its Events with the
        # first try only.
        if assessment.notices:
            for notice in assessment.notices:
                self._notify(entry, notice.type, notice.reason, notice.message)
            if entry.assessment is assessment:
                entry.assessment = dataclasses.replace(assessment, notices=())
        # Assessments made while this write is on the wire start from what it writes, not
        # from the stored status (they would decide the same transition again, at a new
        # time). Once it is stored, that is on record, unless something newer (an
        # admission) was decided meanwhile.
        unwritten = entry.unwritten = assessment.status
        patch = status_patch(entry.body.get("status") or {}, assessment.status)
        if patch is None:
            if entry.unwritten is unwritten:
                entry.unwritten = None
            await self._stop_pods(entry, assessment)
            return
        meta = entry.body["metadata"]
        logger.debug("writing status of %s: %s", entry.key, patch)
        previous = entry.job  # before the write: its watch event may replace entry.job
        updated = await self.kube.patch(
            VIDEOJOBS, meta["namespace"], meta["name"], {"status": patch}, subresource="status"
        )
        if entry.unwritten is unwritten:
            entry.unwritten = None
        if updated is not None and previous is not None:
            metrics.record_status_written(previous, assessment.status)
            self._send_notification(previous, assessment.status)
        if updated is not None and _advances(
            updated["metadata"].get("resourceVersion"), entry.resource_version
        ):
            entry.update(slim(updated))
        await self._stop_pods(entry, assessment)

    async def _stop_pods(self, entry: JobEntry, assessment: Assessment) -> None:
        """Delete the workers of a cancelled or suspended job, once its status says so."""
        namespace = entry.namespace
        for name in assessment.stop_pods:
            pod = entry.pods.get(name)
            uid = pod["metadata"].get("uid") if pod else None
            await self.kube.delete(PODS, namespace, name, uid=uid, grace_period_seconds=30)

    def _notify(self, entry: JobEntry, type_: EventType, reason: str, message: str) -> None:
        task = asyncio.create_task(
            self.kube.post_event(entry.ref, type_=type_, reason=reason, message=message)
        )
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set[asyncio.Task[Any]] = set()


def slim(raw: Any) -> dict[str, Any]:
    """The object without metadata.managedFields, which nothing here reads: the index keeps
    every job's body (and its pods'), from watch events and write responses, and the field
    owners are most of a small object's size (about 6 of 10 KiB for a pending VideoJob)."""
    body: dict[str, Any] = dict(raw)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        body["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    return body


def _newer(body: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """Whether `body` is at least as new as `than`. resourceVersions are opaque by contract
    but etcd revisions in practice; comparing them keeps a late watch event from rolling
    back what a write response already told us."""
    if than is None:
        return True
    try:
        return int(body["metadata"]["resourceVersion"]) >= int(than["metadata"]["resourceVersion"])
    except (KeyError, ValueError, TypeError):
        return True


def _advances(version: str | None, than: str | None) -> bool:
    """Whether resourceVersion `version` is newer than `than` (see `_newer`)."""
    try:
        return int(version) > int(than)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return True


def _generation(body: dict[str, Any]) -> int | None:
    generation: int | None = body.get("metadata", {}).get("generation")
    return generation


def _busy(entry: JobEntry) -> bool:
    """Admitted or running: its pod's events re-assess it often, so its parsed form is kept."""
    return entry.assessment is not None and entry.assessment.status.phase in _BUSY_PHASES


def _write_hold(entry: JobEntry) -> float:
    """Until when the job's status write waits: a retry's delay, a fresh admission's hold
    while it is admitted or running, and a fresh start's while it is running (see
    ADMISSION_WRITE_DELAY)."""
    assessment = entry.assessment
    if assessment is None or assessment.status.phase not in _BUSY_PHASES:
        return entry.write_after
    hold = max(entry.write_after, entry.admitted_hold)
    attempts = assessment.status.attempts
    if assessment.status.phase is JobPhase.RUNNING and attempts and attempts[-1].start_time:
        hold = max(hold, attempts[-1].start_time.timestamp() + ADMISSION_WRITE_DELAY)
    return hold


def _due_at(assessment: Assessment) -> float | None:
    """When to assess the job again although nothing changed: a deadline or stall check,
    or the end of a backoff or delayed start."""
    view = assessment.view
    return _earliest(
        assessment.recheck_at.timestamp() if assessment.recheck_at is not None else None,
        view.eligible_at if view is not None else None,
    )


def _ttl_seconds(job: VideoJob, queue: VideoQueue | None, phase: JobPhase | None) -> int | None:
    """ttlSecondsAfterFinished for the job's outcome: the job's own, else the queue's."""
    outcome = "succeeded" if phase == JobPhase.SUCCEEDED else "failed"
    sources = (
        job.spec.ttl_seconds_after_finished,
        queue.spec.ttl_seconds_after_finished if queue else None,
    )
    for source in sources:
        if source is not None and (seconds := getattr(source, outcome)) is not None:
            return int(seconds)
    return None


def _deleting(body: dict[str, Any] | None) -> bool:
    return body is not None and body.get("metadata", {}).get("deletionTimestamp") is not None


def _explain_refusal(
    assessment: Assessment,
    entry: JobEntry,
    refusal: tuple[str, str],
    now: datetime.datetime,
) -> Assessment:
    """A waiting job's assessment with its worker pod's refusal as the Admitted condition."""
    if assessment.view is None or assessment.view.state is not JobState.PENDING:
        return assessment
    reason, message = refusal
    return _waiting_because(assessment, entry, reason, message, now)


def _waiting_because(
    assessment: Assessment, entry: JobEntry, reason: str, message: str, now: datetime.datetime
) -> Assessment:
    """The assessment with why the job waits: its message (cut to what status.message holds)
    and the Admitted=False condition."""
    status = assessment.status.model_copy(deep=True)
    status.message = message[:1024]
    status.conditions = put_condition(
        status.conditions,
        JobConditionType.ADMITTED,
        False,
        reason,
        message,
        now=now,
        generation=entry.generation,
    )
    return dataclasses.replace(assessment, status=status)


def _doubling(failures: int, initial: float, cap: float) -> float:
    """The delay after `failures` failures in a row: `initial`, doubled each time, at most
    `cap`."""
    delay: float = initial * 2.0 ** min(failures - 1, 16)
    return min(delay, cap)


def _earliest(*times: float | None) -> float | None:
    return min((t for t in times if t is not None), default=None)


async def _gather_bounded(coroutines: Iterable[Any]) -> None:
    semaphore = asyncio.Semaphore(WRITE_PARALLELISM)

    async def run(coroutine: Any) -> None:
        async with semaphore:
            try:
                await coroutine
            except Exception:
                logger.exception("write failed; the next cycle retries it")

    await asyncio.gather(*(run(c) for c in coroutines))
