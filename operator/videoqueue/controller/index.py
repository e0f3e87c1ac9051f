"""The operator's index: the queues, jobs and worker pods its watches report, kept in the
compact form a scheduler cycle reads, and each queue's bookkeeping (which jobs changed, which
wait, their admission views, due times, stopping pods, finished jobs not yet counted).

`observe_*` only update the index and wake the queue's loop (`videoqueue.controller.loop`);
nothing here calls the API server.
"""

from __future__ import annotations

import dataclasses
import datetime
import heapq
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from videoqueue.api import (
    JobPhase,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
)
from videoqueue.api.progress import ProgressEvent
from videoqueue.controller.entries import (
    NONE_MISSING,
    JobEntry,
    QueueEntry,
    advances,
    generation_of,
    is_deleting,
    is_newer,
)
from videoqueue.scheduling import JobState
from videoqueue.scheduling.cycle import IndexedJob, JobFacts, QueueView
from videoqueue.scheduling.cycle_rules import due_at, earliest, expires_at, oom_kill_times
from videoqueue.scheduling.dependencies import find_cycle
from videoqueue.scheduling.inputs import SourceJob
from videoqueue.scheduling.jobs import Assessment, keep_status, stopping_pods
from videoqueue.scheduling.pod_outcome import pod_essentials, read_pod_outcome
from videoqueue.scheduling.pressure import pressure_from_status
from videoqueue.scheduling.progress_board import ProgressReport
from videoqueue.scheduling.sizing import sizes_changed
from videoqueue.scheduling.statistics import finished_record
from videoqueue.scheduling.worker_pod import ANNOTATION_JOB_NAME

logger = logging.getLogger(__name__)


class Index:
    """Every queue and job the operator watches, by "namespace/name"."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.queues: dict[str, QueueEntry] = {}
        self.jobs: dict[str, JobEntry] = {}
        # Worker pods seen before their job (kopf's streams are independent), by job key:
        # a pod may be the only record of an admission, so it waits here for its job.
        self._early_pods: dict[str, dict[str, dict[str, Any]]] = {}
        # Pods of deleted jobs still terminating ("namespace/pod" -> queue key): their queue
        # counts them (QueueEntry.orphans) until they are gone.
        self._orphans: dict[str, str] = {}
        # Jobs waiting for others (spec.dependsOn), by the key of the job they wait for.
        self._dependents: dict[str, set[str]] = {}
        # Nodes that report MemoryPressure.
        self.pressured_nodes: set[str] = set()

    def _schedule(self, entry: QueueEntry) -> None:
        """Give a queue that has just appeared its loop (`videoqueue.controller.loop`)."""

    def observe_queue(self, body: dict[str, Any], *, deleted: bool) -> None:
        meta = body["metadata"]
        entry = self._queue(f"{meta['namespace']}/{meta['name']}")
        if deleted:
            entry.body, entry.queue = None, None
        elif is_newer(body, entry.body):
            spec_changed = (
                entry.body is None
                or generation_of(body) != generation_of(entry.body)
                or is_deleting(body) != is_deleting(entry.body)
            )
            entry.body, before = body, entry.queue
            try:
                entry.queue = VideoQueue.model_validate(body)
            except ValidationError:
                logger.exception("cannot read VideoQueue %s", entry.key)
                entry.queue = None
            if entry.pressure is None and entry.queue is not None:
                entry.pressure = pressure_from_status(entry.queue)  # as a predecessor left it
            self.queue_read(entry, before)
            if not spec_changed:
                return  # our own status write coming back: nothing more to re-decide
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
            queue.explained.pop(key, None)
            queue.status_changed = True
        else:
            entry = self.jobs.get(key)
            if entry is None:
                entry = self.jobs[key] = JobEntry(body)
                entry.pods.update(self._early_pods.pop(key, {}))
            elif not advances(meta.get("resourceVersion"), entry.resource_version):
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
            elif is_newer(body, early.get(meta["name"])):
                early[meta["name"]] = body
            if not early:
                del self._early_pods[key]
            return
        if deleted:
            entry.pods.pop(meta["name"], None)
        elif is_newer(body, entry.pods.get(meta["name"])):
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
        for pod in stopping_pods(VideoJobStatus(), pods, queue.queue, job.type):
            pod_key = f"{job.namespace}/{pod.name}"
            queue.orphans[pod_key] = pod
            self._orphans[pod_key] = queue.key

    def _wake_dependents(self, key: str) -> None:
        """Re-assess the jobs that wait for job `key` (its phase changed or it is gone)."""
        self.refresh_jobs(self._dependents.get(key, ()))

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
        self._schedule(entry)
        return entry

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

    def _source_job(self, job: VideoJob) -> SourceJob | None:
        """The job named by spec.input.fromJob, as last assessed, while the input of `job`
        (its status as the next assessment starts from it) is not resolved yet."""
        name = job.spec.input.from_job
        if name is None or job.status.resolved_input is not None:
            return None
        other = self.jobs.get(f"{job.metadata.namespace}/{name}")
        if other is None:
            return SourceJob(name, found=False)
        if other.assessment is not None:
            status: VideoJobStatus | None = other.assessment.status
        else:
            status = parsed.status if (parsed := other.job) is not None else None
        return SourceJob(name, found=True, result=status.result if status is not None else None)

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

    def _set_assessment(
        self,
        entry: QueueEntry,
        key: str,
        job_entry: JobEntry,
        assessment: Assessment,
        now: float,
        *,
        counted: bool = False,
    ) -> None:
        """Make `assessment` the job's and keep the queue's bookkeeping in step with it.
        `counted`: the queue's status already counts it (an admission its plan foresaw)."""
        if (kept := keep_status(assessment.status)) is not assessment.status:
            assessment = dataclasses.replace(assessment, status=kept)
        job_entry.assessment = assessment
        entry.explained.pop(key, None)  # a new assessment may say otherwise
        entry.mark_unsaved(key)
        entry.status_changed = entry.status_changed or not counted
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
        due = due_at(assessment)
        if due is not None and due != job_entry.due_at:
            heapq.heappush(entry.due, (due, key))
        job_entry.due_at = due
        if kills := oom_kill_times(assessment.status):
            entry.oom_kills[key] = kills
        else:
            entry.oom_kills.pop(key, None)
        if assessment.terminal:
            self._record_finished(entry, key, job_entry, assessment)

    def _record_finished(
        self, entry: QueueEntry, key: str, job_entry: JobEntry, assessment: Assessment
    ) -> None:
        """Keep a finished job for the statistics until the queue's stored statistics count
        it, and schedule its deletion by TTL (once its terminal status is on record)."""
        found = finished_record(
            job_entry.uid,
            key,
            job_entry.type,
            assessment.status,
            sizing_key=job_entry.sizing_key,
        )
        if found is not None and (
            entry.counted_through is None or found.completed > entry.counted_through
        ):
            entry.uncounted[found.record_key] = found
        if (expires := self._expires_at(entry, job_entry)) is not None:
            heapq.heappush(entry.expiries, (expires, key))

    def queue_read(self, entry: QueueEntry, before: VideoQueue | None) -> None:
        """The queue's stored object was read (a watch event, a write's response) in place
        of `before`: release what its statistics count now, and size again the waiting jobs
        whose key's learned size moved (their memory is decided when they are assessed)."""
        self.statistics_stored(entry)
        if resized := sizes_changed(before, entry.queue):
            entry.resize(self.jobs, resized)

    def statistics_stored(self, entry: QueueEntry, *, again: bool = False) -> None:
        """The queue's status as stored was read (a watch event, a write's response): let go
        of the finished jobs its statistics count now, and delete those of them whose TTL
        ran out meanwhile. `again`: also when the watermark has not moved (jobs may have
        been put aside for it since it last moved)."""
        stored = entry.queue.status.statistics if entry.queue is not None else None
        watermark = stored.counted_through if stored is not None else None
        moved = watermark is not None and (
            entry.counted_through is None or watermark > entry.counted_through
        )
        if watermark is None or not (moved or again):
            return
        if moved:
            entry.counted_through = watermark
            entry.uncounted = {k: r for k, r in entry.uncounted.items() if r.completed > watermark}
        waiting = entry.delete_once_counted
        while waiting and waiting[0][0] <= watermark:
            heapq.heappush(entry.expiries, (self.clock(), heapq.heappop(waiting)[1]))
            entry.wake.set()

    def _expires_at(self, entry: QueueEntry, job_entry: JobEntry) -> float | None:
        """When a finished job's TTL runs out (`videoqueue.scheduling.cycle_rules.expires_at`)."""
        assessment = job_entry.assessment
        if assessment is None or job_entry.deleting or not assessment.terminal:
            return None  # (without parsing the job)
        return expires_at(
            job_entry.job,
            assessment,
            job_entry.stored_phase,
            entry.queue,
            deleting=job_entry.deleting,
        )

    # -- observing a queue for its cycle -------------------------------------------------

    def view_of(self, entry: QueueEntry, now: float, *, limit: int) -> QueueView:
        """The queue as its cycle at `now` decides on it, with at most `limit` of its changed
        jobs (the others wait for the next cycles: `QueueView.backlog`)."""
        if entry.all_changed:
            entry.all_changed = False
            entry.changed |= entry.jobs
        while entry.due and entry.due[0][0] <= now:
            entry.changed.add(heapq.heappop(entry.due)[1])
        facts: list[JobFacts] = []
        at = datetime.datetime.fromtimestamp(now, datetime.UTC)
        while entry.changed and len(facts) < limit:
            key = entry.changed.pop()
            job_entry = self.jobs.get(key)
            if job_entry is None or key not in entry.jobs:
                continue
            if (found := self._facts(entry, job_entry, at)) is not None:
                facts.append(found)
        entry.new_jobs = entry.new_jobs or any(f.new for f in facts)
        expired: list[str] = []
        while entry.expiries and entry.expiries[0][0] <= now:
            expired.append(heapq.heappop(entry.expiries)[1])
        return QueueView(
            key=entry.key,
            queue=entry.queue,
            body=entry.body,
            jobs=_QueueJobs(entry.jobs, self.jobs),
            changed=tuple(facts),
            backlog=bool(entry.changed),
            new_jobs=entry.new_jobs,
            competing=entry.views,
            waiting=entry.waiting,
            stopping=entry.stopping,
            orphans=tuple(entry.orphans.values()),
            held=dict(entry.held),
            refused_until=entry.refused_until,
            oom_kills=entry.oom_kills,
            pressure=entry.pressure,
            pressured_nodes=frozenset(self.pressured_nodes),
            expired=tuple(expired),
            uncounted=entry.uncounted,
            next_timer=self._next_timer(entry, now),
            status_changed=entry.status_changed,
            status_written_at=entry.status_written_at,
            stall_detection=self._hears_workers(),
            stall_warned=entry.stall_warned,
            explained=entry.explained,
            worker_env=self._worker_env(),
        )

    def give_back(self, entry: QueueEntry, view: QueueView, now: float) -> None:
        """What `view_of` took for a cycle that failed: its changed jobs and due TTLs."""
        for facts in view.changed:
            entry.changed.add(facts.key)
            if facts.confirmed_missing and (job_entry := self.jobs.get(facts.key)) is not None:
                job_entry.confirmed_missing |= facts.confirmed_missing
        for key in view.expired:
            heapq.heappush(entry.expiries, (now, key))

    def _facts(
        self, entry: QueueEntry, job_entry: JobEntry, now: datetime.datetime
    ) -> JobFacts | None:
        """What is known about a job to assess, from the index (and the workers' news)."""
        parsed = job_entry.job
        if parsed is None:
            return None
        job = parsed
        if job_entry.unwritten is not None:
            job = parsed.model_copy(update={"status": job_entry.unwritten})
        pods = tuple(read_pod_outcome(pod) for pod in job_entry.pods.values())
        dependencies = self._dependency_phases(parsed)
        # For stalled-worker detection: the worker of the newest attempt, which may be newer
        # than status says (a pod created just before a restart).
        attempt = max([job.status.attempt, *(pod.attempt or 0 for pod in pods)])
        heard_at, progress = self._worker_news(job, attempt)
        missing, job_entry.confirmed_missing = job_entry.confirmed_missing, NONE_MISSING
        return JobFacts(
            key=job_entry.key,
            job=job,
            pods=pods,
            dependencies=dependencies,
            cycle=self._dependency_cycle(job_entry, dependencies),
            source=self._source_job(job),
            heard_at=heard_at,
            progress=progress,
            confirmed_missing=missing,
            refusal=job_entry.refusal if job_entry.key in entry.held else None,
            new=job_entry.unwritten is None and job_entry.stored_phase is None,
            phase_before=job_entry.assessment.status.phase if job_entry.assessment else None,
            notification=job_entry.notification_news,
        )

    def _next_timer(self, entry: QueueEntry, now: float) -> float | None:
        """The index's next due time for the queue: a re-check or a TTL."""
        return earliest(
            entry.due[0][0] if entry.due else None,
            entry.expiries[0][0] if entry.expiries else None,
        )

    def _worker_news(
        self, job: VideoJob, attempt: int
    ) -> tuple[datetime.datetime | None, ProgressReport | None]:
        """When the job's worker was last heard from, and its progress to write (the
        controller's progress channel; none here)."""
        return None, None

    def _hears_workers(self) -> bool:
        return False

    def _worker_env(self) -> tuple[Mapping[str, Any], ...]:
        return ()


class _QueueJobs(Mapping[str, IndexedJob]):
    """A queue's jobs in the index, read-only, without copying them."""

    def __init__(self, keys: set[str], jobs: dict[str, JobEntry]) -> None:
        self._keys, self._jobs = keys, jobs

    def __getitem__(self, key: str) -> JobEntry:
        if key not in self._keys:
            raise KeyError(key)
        return self._jobs[key]

    def __iter__(self) -> Iterator[str]:
        return (key for key in self._keys if key in self._jobs)

    def __len__(self) -> int:
        return sum(1 for _ in self)
