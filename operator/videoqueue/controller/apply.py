"""The operator's writes: every call to the API server a scheduler cycle makes goes through
here (worker pods created and deleted, job and queue statuses, finalizers, Events, TTL
deletions, webhook notifications), each retried with a doubling delay, never in a hot loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import heapq
import logging
from collections.abc import Iterable
from typing import Any

from videoqueue.api import (
    JobConditionType,
    JobPhase,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
    format_bytes,
    put_condition,
)
from videoqueue.controller import metrics
from videoqueue.controller.entries import (
    ADMISSION_WRITE_DELAY,
    BUSY_PHASES,
    JobEntry,
    QueueEntry,
    advances,
    is_busy,
    is_deleting,
    is_newer,
    slim,
)
from videoqueue.controller.index import Index
from videoqueue.controller.kube import KubeApiError, KubeClient, KubeError
from videoqueue.controller.kube_helpers import PODS, VIDEOJOBS, VIDEOQUEUES, EventType
from videoqueue.controller.notifications import Notification, Notifier, notification_for
from videoqueue.controller.patching import status_patch
from videoqueue.controller.progress import ProgressChannel
from videoqueue.scheduling import JobState
from videoqueue.scheduling.jobs import (
    Admission,
    Assessment,
    admit,
    reject,
)
from videoqueue.scheduling.pod_outcome import pod_essentials
from videoqueue.scheduling.queue_status import summarize_queue
from videoqueue.scheduling.worker_pod import (
    JobNotDeliverable,
    build_worker_pod,
)

logger = logging.getLogger(__name__)

# Parallel API writes per queue cycle: enough to keep the API server busy, bounded so
# one huge queue does not starve the others of connections.
WRITE_PARALLELISM = 32
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
# Set on every queue the operator manages: its deletion waits until running jobs finished.
QUEUE_FINALIZER = "videoqueue.dev/running-jobs"
# Fire-and-forget writes (Events, TTL deletions) in flight: kept referenced until done.
_background: set[asyncio.Task[Any]] = set()


class Writes(Index):
    """The index plus what writes to the API server (`kube`), Events and notifications."""

    kube: KubeClient
    notifier: Notifier
    progress: ProgressChannel | None

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        _background.add(task)
        task.add_done_callback(_background.discard)

    def _notify(self, entry: JobEntry, type_: EventType, reason: str, message: str) -> None:
        task = asyncio.create_task(
            self.kube.post_event(entry.ref, type_=type_, reason=reason, message=message)
        )
        _background.add(task)
        task.add_done_callback(_background.discard)

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
            delay = doubling(job_entry.write_failures, WRITE_RETRY_SECONDS, WRITE_RETRY_MAX_SECONDS)
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
        if key in entry.unsaved or is_deleting(entry.body):
            entry.wake.set()  # more to write, or the finalizer waits for stored phases
            if key in entry.unsaved:
                return
        # Its watch event brings nothing new, so it is not re-assessed: a terminal status
        # now on record starts its TTL here.
        if (expires := self._expires_at(entry, job_entry)) is not None:
            heapq.heappush(entry.expiries, (expires, key))
            entry.wake.set()
        if not is_busy(job_entry):
            job_entry.compact()

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
        if updated is not None and advances(
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
        if updated is not None and is_newer(updated, entry.body):
            entry.body = updated
            entry.queue = VideoQueue.model_validate(updated)
        return None

    async def _manage_finalizer(self, entry: QueueEntry) -> None:
        """Keep QUEUE_FINALIZER on the queue; on deletion remove it once no job of the queue
        is admitted or running and every pending one is recorded as cancelled."""
        body = entry.body
        if body is None:
            return
        meta = body["metadata"]
        finalizers: list[str] = list(meta.get("finalizers") or [])
        if not is_deleting(body):
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
        if updated is not None and is_newer(updated, entry.body):
            entry.body = updated

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
        delay = doubling(entry.refusals, POD_REFUSED_INITIAL_SECONDS, POD_REFUSED_MAX_SECONDS)
        queue.held[entry.key] = clock + delay
        queue.refused_until = max(queue.refused_until, clock + delay)
        text = f"{message}; trying again in {delay:.0f}s, or at once when the queue's spec changes"
        logger.warning("queue %s: job %s: %s", queue.key, entry.name, text)
        entry.refusal = (reason, text)
        explained = explain_refusal(assessment, entry, entry.refusal, now)
        self._set_assessment(queue, entry.key, entry, explained, clock)
        self._notify(entry, "Warning", reason, text)

    def _post_queue_event(
        self, entry: QueueEntry, type_: EventType, reason: str, message: str
    ) -> None:
        """An Event about the queue, posted in the background."""
        if entry.body is not None:
            self._spawn(
                self.kube.post_event(entry.body, type_=type_, reason=reason, message=message)
            )

    def _delete_job(self, job_entry: JobEntry) -> None:
        """Delete a finished job whose TTL ran out, in the background."""
        job_entry.deleting = True
        self._spawn(
            self.kube.delete(VIDEOJOBS, job_entry.namespace, job_entry.name, uid=job_entry.uid)
        )

    async def _read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as the API server has it now (the index may lag behind), or None."""
        pod: dict[str, Any] | None = await self.kube.get(PODS, namespace, name)
        return pod


def explain_refusal(
    assessment: Assessment,
    entry: JobEntry,
    refusal: tuple[str, str],
    now: datetime.datetime,
) -> Assessment:
    """A waiting job's assessment with its worker pod's refusal as the Admitted condition."""
    if assessment.view is None or assessment.view.state is not JobState.PENDING:
        return assessment
    reason, message = refusal
    return waiting_because(assessment, entry, reason, message, now)


def waiting_because(
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


def doubling(failures: int, initial: float, cap: float) -> float:
    """The delay after `failures` failures in a row: `initial`, doubled each time, at most
    `cap`."""
    delay: float = initial * 2.0 ** min(failures - 1, 16)
    return min(delay, cap)


def write_hold(entry: JobEntry) -> float:
    """Until when the job's status write waits: a retry's delay, a fresh admission's hold
    while it is admitted or running, and a fresh start's while it is running (see
    ADMISSION_WRITE_DELAY)."""
    assessment = entry.assessment
    if assessment is None or assessment.status.phase not in BUSY_PHASES:
        return entry.write_after
    hold = max(entry.write_after, entry.admitted_hold)
    attempts = assessment.status.attempts
    if assessment.status.phase is JobPhase.RUNNING and attempts and attempts[-1].start_time:
        hold = max(hold, attempts[-1].start_time.timestamp() + ADMISSION_WRITE_DELAY)
    return hold


async def gather_bounded(coroutines: Iterable[Any]) -> None:
    semaphore = asyncio.Semaphore(WRITE_PARALLELISM)

    async def run(coroutine: Any) -> None:
        async with semaphore:
            try:
                await coroutine
            except Exception:
                logger.exception("write failed; the next cycle retries it")

    await asyncio.gather(*(run(c) for c in coroutines))
