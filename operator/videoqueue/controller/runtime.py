"""The operator's running state: an index of queues, jobs and worker pods fed by watches,
and one scheduler loop per queue that decides on it and writes the results.

Watch events only update the index and wake the queue's loop; a loop cycle then
  1. assesses the jobs that changed (`lifecycle.assess_job`),
  2. decides admissions on a snapshot of the queue (`scheduling.decide_admissions`),
  3. creates the admitted jobs' worker pods (pod first: the pod is the record of admission),
  4. writes the job statuses that differ from what is stored, in parallel,
  5. posts Events for transitions and sleeps until woken or until `wake_at`.
Events arriving during a cycle are coalesced into the next one, so the number of cycles
adapts to the load instead of growing with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from videoqueue.api import (
    JobConditionType,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
    find_condition,
    format_bytes,
    put_condition,
)
from videoqueue.controller import metrics
from videoqueue.controller.kube import PODS, VIDEOJOBS, VIDEOQUEUES, EventType, KubeClient
from videoqueue.controller.lifecycle import Admission, Assessment, admit, assess_job
from videoqueue.controller.patching import status_patch
from videoqueue.controller.pods import ANNOTATION_JOB_NAME, build_worker_pod, read_pod_outcome
from videoqueue.controller.progress import ProgressChannel, ProgressSettings
from videoqueue.controller.queue_status import summarize_queue
from videoqueue.scheduling import QueuePolicy, Snapshot, decide_admissions

logger = logging.getLogger(__name__)

# Parallel API writes per queue cycle: enough to keep the API server busy, bounded so
# one huge queue does not starve the others of connections.
WRITE_PARALLELISM = 32
# How long the status write of a fresh admission waits for the worker to start.
ADMISSION_WRITE_DELAY = 1.0
# A queue's status is rewritten at most this often, however busy the queue.
QUEUE_STATUS_INTERVAL = 2.0


@dataclass
class JobEntry:
    body: dict[str, Any]
    job: VideoJob | None  # None when the object does not parse (the CRD schema prevents it)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    assessment: Assessment | None = None
    dirty: bool = True
    write_after: float = 0.0  # no status write before this time (see ADMISSION_WRITE_DELAY)
    # The status decided but not yet written (a deferred admission): what the next
    # assessment starts from, since part of it (e.g. a disrupted attempt) is nowhere else.
    unwritten: VideoJobStatus | None = None


@dataclass
class QueueEntry:
    key: str
    body: dict[str, Any] | None = None
    queue: VideoQueue | None = None
    jobs: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    all_dirty: bool = True
    status_written_at: float = 0.0


class Controller:
    def __init__(
        self,
        kube: KubeClient,
        *,
        clock: Callable[[], float] = time.time,
        progress: ProgressSettings | None = None,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.queues: dict[str, QueueEntry] = {}
        self.jobs: dict[str, JobEntry] = {}
        # Worker pods seen before their job (kopf's streams are independent), by job key:
        # a pod may be the only record of an admission, so it waits here for its job.
        self._early_pods: dict[str, dict[str, dict[str, Any]]] = {}
        self._stopping = False
        # Workers' progress and heartbeats from Redis (None: not configured). Its releases
        # re-assess the job, so progress is written by the same one patch per cycle.
        self.progress: ProgressChannel | None = None
        if progress is not None:
            self.progress = ProgressChannel(progress, clock=clock, on_release=self.refresh_jobs)
            self.progress.start()

    # -- watch events ---------------------------------------------------------------------

    def observe_queue(self, body: dict[str, Any], *, deleted: bool) -> None:
        meta = body["metadata"]
        entry = self._queue(f"{meta['namespace']}/{meta['name']}")
        if deleted:
            entry.body, entry.queue = None, None
        elif _newer(body, entry.body):
            spec_changed = entry.body is None or _generation(body) != _generation(entry.body)
            entry.body = body
            try:
                entry.queue = VideoQueue.model_validate(body)
            except ValidationError:
                logger.exception("cannot read VideoQueue %s", entry.key)
                entry.queue = None
            if not spec_changed:
                return  # our own status write coming back: nothing to re-decide
        entry.all_dirty = True
        entry.wake.set()

    def observe_job(self, body: dict[str, Any], *, deleted: bool) -> None:
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        queue_key = f"{meta['namespace']}/{body.get('spec', {}).get('queueName', '')}"
        queue = self._queue(queue_key)
        if deleted:
            self.jobs.pop(key, None)
            self._early_pods.pop(key, None)
            queue.jobs.discard(key)
        else:
            entry = self.jobs.get(key)
            if entry is None:
                entry = self.jobs[key] = JobEntry(body=body, job=None)
                entry.pods.update(self._early_pods.pop(key, {}))
            elif not _newer(body, entry.body):
                return
            entry.body = body
            try:
                entry.job = VideoJob.model_validate(body)
            except ValidationError:
                logger.exception("cannot read VideoJob %s", key)
                entry.job = None
            entry.dirty = True
            queue.jobs.add(key)
        queue.wake.set()

    def observe_pod(self, body: dict[str, Any], *, deleted: bool) -> None:
        meta = body["metadata"]
        # The label holds a shortened name when the job's name is long; the annotation is exact.
        job_name = (meta.get("annotations") or {}).get(ANNOTATION_JOB_NAME)
        key = f"{meta['namespace']}/{job_name}"
        entry = self.jobs.get(key)
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
        entry.dirty = True
        queue_key = f"{meta['namespace']}/{entry.body.get('spec', {}).get('queueName', '')}"
        self._queue(queue_key).wake.set()

    def refresh_jobs(self, keys: Iterable[str]) -> None:
        """Re-assess these jobs ("namespace/name") on their queues' next cycles."""
        for key in keys:
            entry = self.jobs.get(key)
            if entry is None:
                continue
            entry.dirty = True
            namespace = entry.body["metadata"]["namespace"]
            self._queue(f"{namespace}/{entry.body.get('spec', {}).get('queueName', '')}").wake.set()

    def _queue(self, key: str) -> QueueEntry:
        entry = self.queues.get(key)
        if entry is None:
            entry = self.queues[key] = QueueEntry(key)
        if entry.task is None and not self._stopping:
            entry.task = asyncio.create_task(self._loop(entry), name=f"queue {key}")
        return entry

    async def stop(self) -> None:
        self._stopping = True
        tasks = [q.task for q in self.queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.progress is not None:
            await self.progress.stop()

    # -- the per-queue loop ----------------------------------------------------------------

    async def _loop(self, entry: QueueEntry) -> None:
        wake_at: float | None = None
        while True:
            timeout = None if wake_at is None else max(0.0, wake_at - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry.wake.wait(), timeout)
            entry.wake.clear()
            try:
                started = time.monotonic()
                wake_at = await self.reconcile_queue(entry)
                metrics.record_cycle(entry.key, time.monotonic() - started)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("queue %s: cycle failed; retrying in 1s", entry.key)
                wake_at = self.clock() + 1.0

    async def reconcile_queue(self, entry: QueueEntry) -> float | None:
        now_ts = self.clock()
        now = datetime.datetime.fromtimestamp(now_ts, datetime.UTC)
        # 1. assess changed jobs (and time-dependent ones whose moment has come)
        for key in list(entry.jobs):
            job_entry = self.jobs.get(key)
            if job_entry is None or job_entry.job is None:
                continue
            due = job_entry.assessment is not None and _due(job_entry.assessment, now_ts)
            if job_entry.dirty or entry.all_dirty or due:
                job_entry.assessment = await self._assess(job_entry, entry.queue, now)
                job_entry.dirty = False
        entry.all_dirty = False

        # 2. decide
        writes: list[Any] = []
        wake_at: float | None = None
        queue = entry.queue
        if queue is not None:
            views = [
                e.assessment.view
                for key in entry.jobs
                if (e := self.jobs.get(key)) is not None
                and e.assessment is not None
                and e.assessment.view is not None
            ]
            memory = queue.spec.memory
            policy = QueuePolicy(
                concurrency=queue.spec.concurrency,
                memory_budget=memory.budget_bytes,
                memory_max=memory.max_bytes,
                backfill_seconds=float(memory.backfill_seconds),
                admitting=queue.spec.state == "Active",
            )
            decision = decide_admissions(Snapshot(policy, tuple(views)), now_ts)
            wake_at = decision.wake_at
            for key, blocked in decision.blocked_reasons.items():
                self._explain_wait(self.jobs[key], blocked.reason.value, blocked.message, now)
            # 3. admit: create the pods, then record the admissions
            writes += [self._admit(self.jobs[key], entry, now) for key in decision.admit]

        # 4. write statuses that differ
        for key in entry.jobs:
            job_entry = self.jobs.get(key)
            if job_entry is None or job_entry.assessment is None or job_entry.job is None:
                continue
            if key in (decision.admit if queue is not None else ()):
                continue
            if job_entry.write_after > now_ts:
                wake_at = (
                    job_entry.write_after
                    if wake_at is None
                    else min(wake_at, job_entry.write_after)
                )
                continue
            writes.append(self._write_status(job_entry, job_entry.assessment))
        await _gather_bounded(writes)
        # 5. the queue's own status, at a bounded rate
        status_due = await self._write_queue_status(entry, now_ts, now)
        if status_due is not None:
            wake_at = status_due if wake_at is None else min(wake_at, status_due)
        return wake_at

    async def _write_queue_status(
        self, entry: QueueEntry, now_ts: float, now: datetime.datetime
    ) -> float | None:
        """Write the queue's status if it changed and the last write is old enough; else
        return when to try again."""
        if entry.queue is None or entry.body is None:
            return None
        statuses = [
            e.assessment.status
            for key in entry.jobs
            if (e := self.jobs.get(key)) is not None and e.assessment is not None
        ]
        desired = summarize_queue(entry.queue, statuses, now)
        patch = status_patch(entry.body.get("status") or {}, desired)
        if patch is None:
            return None
        due = entry.status_written_at + QUEUE_STATUS_INTERVAL
        if now_ts < due:
            return due
        entry.status_written_at = now_ts
        meta = entry.body["metadata"]
        updated = await self.kube.patch(
            VIDEOQUEUES, meta["namespace"], meta["name"], {"status": patch}, subresource="status"
        )
        if updated is not None and _newer(updated, entry.body):
            entry.body = updated
            entry.queue = VideoQueue.model_validate(updated)
        return None

    def _explain_wait(
        self, entry: JobEntry, reason: str, message: str, now: datetime.datetime
    ) -> None:
        """Say in the job's status why it waits. Only a change of reason is written: the
        numbers in the message (free memory, slots) change all the time and would cost a
        status write per job on every admission in the queue."""
        assessment = entry.assessment
        if assessment is None or entry.job is None:
            return
        current = find_condition(assessment.status.conditions, JobConditionType.ADMITTED)
        if current is not None and current.reason == reason:
            return
        status = assessment.status.model_copy(deep=True)
        status.message = message
        status.conditions = put_condition(
            status.conditions,
            JobConditionType.ADMITTED,
            False,
            reason,
            message,
            now=now,
            generation=entry.job.metadata.generation,
        )
        entry.assessment = dataclasses.replace(assessment, status=status)

    async def _assess(
        self, entry: JobEntry, queue: VideoQueue | None, now: datetime.datetime
    ) -> Assessment:
        assert entry.job is not None
        job = entry.job
        if entry.unwritten is not None:
            job = job.model_copy(update={"status": entry.unwritten})
        outcomes = [read_pod_outcome(pod) for pod in entry.pods.values()]
        assessment = assess_job(job, outcomes, queue, now)
        if missing := assessment.unconfirmed_pod:
            # The index may lag behind (e.g. right after a restart): ask the API server.
            namespace = entry.job.metadata.namespace or ""
            pod = (
                await self.kube.get(PODS, namespace, assessment.unconfirmed_pod)
                if assessment.unconfirmed_pod
                else None
            )
            if pod is not None:
                entry.pods[pod["metadata"]["name"]] = pod
                outcomes = [read_pod_outcome(p) for p in entry.pods.values()]
                assessment = assess_job(job, outcomes, queue, now)
            else:
                assessment = assess_job(
                    job,
                    outcomes,
                    queue,
                    now,
                    confirmed_missing=frozenset({missing}),
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
        try:
            pod = build_worker_pod(
                entry.body,
                queue.body,
                attempt=attempt,
                memory_bytes=memory,
                now_iso=now.isoformat().replace("+00:00", "Z"),
                env=self.progress.worker_env if self.progress is not None else (),
            )
        except ValueError as e:
            logger.error(
                "queue %s: cannot build worker pod for %s: %s", queue.key, job.metadata.name, e
            )
            return
        namespace = job.metadata.namespace or ""
        created, _ = await self.kube.create(PODS, namespace, pod)
        entry.pods[created["metadata"]["name"]] = created
        status = admit(
            assessment.status,
            pod_name=pod["metadata"]["name"],
            admission=Admission(attempt=attempt, memory=memory),
            now=now,
            generation=job.metadata.generation,
        )
        waited = (status.wait_seconds or 0.0) - (assessment.status.wait_seconds or 0.0)
        metrics.record_admission(job, wait_seconds=waited)
        entry.assessment = Assessment(status=status, view=None)
        entry.dirty = True  # re-assess from the pod on the next cycle
        # Most workers start within a moment: wait that long, and write Running (which
        # records the admission too, from the pod) instead of Admitted and then Running.
        entry.write_after = self.clock() + ADMISSION_WRITE_DELAY
        entry.unwritten = status
        self._notify(
            entry,
            "Normal",
            "Admitted",
            f"admitted as attempt {attempt} with {format_bytes(memory)} of memory; "
            f"worker pod {pod['metadata']['name']}",
        )

    async def _write_status(self, entry: JobEntry, assessment: Assessment) -> None:
        # Step 4 writes every job's assessment on every cycle until the job is re-assessed:
        # post its Events with the first write only, or each cycle would post them again.
        if assessment.notices:
            for notice in assessment.notices:
                self._notify(entry, notice.type, notice.reason, notice.message)
            if entry.assessment is assessment:
                entry.assessment = dataclasses.replace(assessment, notices=())
        patch = status_patch(entry.body.get("status") or {}, assessment.status)
        if patch is None:
            entry.unwritten = None
            await self._stop_pods(entry, assessment)
            return
        meta = entry.body["metadata"]
        previous = entry.job  # before the write: its watch event may replace entry.job
        updated = await self.kube.patch(
            VIDEOJOBS, meta["namespace"], meta["name"], {"status": patch}, subresource="status"
        )
        entry.unwritten = None
        if updated is not None and previous is not None:
            metrics.record_status_written(previous, assessment.status)
        if updated is not None and _newer(updated, entry.body):
            entry.body = updated
            entry.job = VideoJob.model_validate(updated)
        await self._stop_pods(entry, assessment)

    async def _stop_pods(self, entry: JobEntry, assessment: Assessment) -> None:
        """Delete the workers of a cancelled or suspended job, once its status says so."""
        namespace = entry.body["metadata"]["namespace"]
        for name in assessment.stop_pods:
            pod = entry.pods.get(name)
            uid = pod["metadata"].get("uid") if pod else None
            await self.kube.delete(PODS, namespace, name, uid=uid, grace_period_seconds=30)

    def _notify(self, entry: JobEntry, type_: EventType, reason: str, message: str) -> None:
        task = asyncio.create_task(
            self.kube.post_event(entry.body, type_=type_, reason=reason, message=message)
        )
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set[asyncio.Task[Any]] = set()


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


def _generation(body: dict[str, Any]) -> int | None:
    generation: int | None = body.get("metadata", {}).get("generation")
    return generation


def _due(assessment: Assessment, now: float) -> bool:
    view = assessment.view
    return view is not None and view.eligible_at is not None and view.eligible_at <= now


async def _gather_bounded(coroutines: Iterable[Any]) -> None:
    semaphore = asyncio.Semaphore(WRITE_PARALLELISM)

    async def run(coroutine: Any) -> None:
        async with semaphore:
            try:
                await coroutine
            except Exception:
                logger.exception("write failed; the next cycle retries it")

    await asyncio.gather(*(run(c) for c in coroutines))
