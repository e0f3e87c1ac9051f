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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from videoqueue.api import (
    JobPhase,
    VideoQueue,
)
from videoqueue.api.patching import status_patch
from videoqueue.controller import metrics
from videoqueue.controller.entries import (
    ADMISSION_WRITE_DELAY,
    BUSY_PHASES,
    POD_START_WRITE_DELAY,
    JobEntry,
    QueueEntry,
    advances,
    is_busy,
    is_deleting,
    is_newer,
    slim,
)
from videoqueue.controller.kube import KubeApiError, KubeClient, KubeError
from videoqueue.controller.kube_helpers import PODS, VIDEOJOBS, VIDEOQUEUES, EventType
from videoqueue.controller.notifications import Notifier
from videoqueue.controller.owed import OwedNotifications
from videoqueue.scheduling.cycle import CyclePlan, PodToCreate
from videoqueue.scheduling.cycle_rules import earliest
from videoqueue.scheduling.jobs import Assessment, explain_refusal
from videoqueue.scheduling.jobs.model import parse_time
from videoqueue.scheduling.pod_outcome import pod_essentials, pod_unschedulable

if TYPE_CHECKING:
    # Imported where the channel is made (loop.py), only when Redis is configured.
    from videoqueue.controller.progress import ProgressChannel

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
# Fire-and-forget writes (Events, TTL deletions) in flight: kept referenced until done.
_background: set[asyncio.Task[Any]] = set()


class Writes(OwedNotifications):
    """The index plus what writes to the API server (`kube`), Events and notifications."""

    kube: KubeClient
    notifier: Notifier
    progress: ProgressChannel | None
    # Raises FencedError when this replica may not write (controller/fencing.py).
    fence_check: Callable[[], None] | None = None

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
        # A writer that has just finished stays in the set until its done-callback runs.
        running = sum(1 for writer in entry.writers if not writer.done())
        for _ in range(wanted - running):
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
                if key in entry.unsaved:
                    entry.fresh.add(key)  # assessed again while on the wire, or to retry

    def _queue_writes(self, entry: QueueEntry, now: float) -> None:
        """Queue the status writes that may go now, and keep the held ones for when they may
        (`write_hold`): only jobs assessed since, or whose hold has ended, are looked at."""
        candidates, entry.fresh = entry.fresh, set()
        while entry.write_due and entry.write_due[0][0] <= now:
            candidates.add(heapq.heappop(entry.write_due)[1])
        for key in candidates:
            job_entry = self.jobs.get(key)
            if key not in entry.unsaved or key in entry.writing:
                continue  # written meanwhile, or on the wire (looked at again when done)
            if job_entry is None or job_entry.assessment is None:
                entry.unsaved.discard(key)
            elif (hold := write_hold(job_entry)) <= now:
                entry.writing.add(key)
                entry.write_queue.append(key)
            else:
                heapq.heappush(entry.write_due, (hold, key))
        self._start_writers(entry)

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
            entry.mark_unsaved(key)
        if key in entry.unsaved or is_deleting(entry.body):
            entry.wake.set()  # more to write, or the finalizer waits for stored phases
            if key in entry.unsaved:
                return
        # Its watch event brings nothing new, so it is not re-assessed: a terminal status
        # now on record starts its TTL here, and the queue's statistics can count it.
        if (expires := self._expires_at(entry, job_entry)) is not None:
            heapq.heappush(entry.expiries, (expires, key))
            entry.wake.set()
        if assessment.terminal:
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
            self._submit_owed(entry)  # e.g. found Owed after a restart or a takeover
            await self._stop_pods(entry, assessment)
            return
        body = entry.body
        meta = body["metadata"]
        logger.debug("writing status of %s: %s", entry.key, patch)
        # The status replaced (its watch event may replace entry.body meanwhile).
        previous: dict[str, Any] = body.get("status") or {}
        updated = await self.kube.patch(
            VIDEOJOBS, meta["namespace"], meta["name"], {"status": patch}, subresource="status"
        )
        if entry.unwritten is unwritten:
            entry.unwritten = None
        if updated is not None:
            labels = (entry.namespace, entry.queue_key.partition("/")[2], entry.type)
            metrics.record_status_written(labels, previous, assessment.status)
        if updated is not None and advances(
            updated["metadata"].get("resourceVersion"), entry.resource_version
        ):
            entry.update(slim(updated))
        if updated is not None:
            self._submit_owed(entry)  # the status now on record may owe a notification
        await self._stop_pods(entry, assessment)

    async def _stop_pods(self, entry: JobEntry, assessment: Assessment) -> None:
        """Delete the workers of a cancelled or suspended job, once its status says so."""
        namespace = entry.namespace
        for name in assessment.stop_pods:
            pod = entry.pods.get(name)
            uid = pod["metadata"].get("uid") if pod else None
            await self.kube.delete(PODS, namespace, name, uid=uid, grace_period_seconds=30)

    async def apply_plan(self, entry: QueueEntry, plan: CyclePlan, now: float) -> float | None:
        """Carry out a cycle's plan: record its decisions in the index, create the worker
        pods, queue the status writes, post Events, delete expired jobs, ask about pods the
        index has not seen, write the queue's status and finalizer. Returns when the queue's
        loop should look again."""
        if self.fence_check is not None:
            self.fence_check()  # fenced: not one step of the plan (each write checks too)
        at = datetime.datetime.fromtimestamp(now, datetime.UTC)
        # Recorded in the index first (no I/O): what the writes below and the next cycle read.
        for key, assessment in plan.assessments:
            if (job_entry := self.jobs.get(key)) is not None and key in entry.jobs:
                self._set_assessment(entry, key, job_entry, assessment, now)
        for key in plan.preempted:
            self._preempted(key)
        for key in plan.phase_changed:
            self._wake_dependents(key)
        for key in plan.released:
            entry.held.pop(key, None)
        if plan.pressure != entry.pressure and not plan.status_checked:
            entry.status_changed = True  # the queue's status shows it
        entry.pressure = plan.pressure
        entry.stall_warned = plan.stall_warned
        entry.explained.update(plan.explained)  # after the assessments: they forget it
        if plan.pending_checked:
            entry.new_jobs = False
        if plan.status_checked:
            entry.status_changed = False
        for key, reason, message in plan.refused:
            if (job_entry := self.jobs.get(key)) is not None:
                self._pod_refused(entry, job_entry, reason, message, at)

        # 1. worker pods: created before their admission is recorded (the pod is the record)
        await gather_bounded(self._create_pod(entry, pod, at) for pod in plan.create)
        # 2. the statuses that may differ from what is stored: written in the background, so
        #    that the next cycle (new jobs) need not wait for them; one write per job at a time
        if not plan.partial:
            self._queue_writes(entry, now)
        # 3. Events, expired jobs, pods to confirm
        for notice in plan.queue_events:
            logger.info("queue %s: %s", entry.key, notice.message)
            self._post_queue_event(entry, notice.type, notice.reason, notice.message)
        for key in plan.delete_jobs:
            if (job_entry := self.jobs.get(key)) is not None:
                self._delete_job(job_entry)
        for key in plan.delete_once_counted:  # released by `statistics_stored`
            job_entry = self.jobs.get(key)
            done = job_entry.stored_completion if job_entry is not None else None
            if done is not None:
                heapq.heappush(entry.delete_once_counted, (done, key))
        self.statistics_stored(entry, again=bool(plan.delete_once_counted))
        await gather_bounded(self._confirm_pod(entry, key, pod) for key, pod in plan.confirm_pods)

        wake_at = plan.wake_at
        touched = {key for key, _ in plan.assessments} | {pod.key for pod in plan.create}
        for key in touched:  # idle again: keep only the compact form
            job_entry = self.jobs.get(key)
            if job_entry is not None and key not in entry.writing and not is_busy(job_entry):
                job_entry.compact()
        wake_at = earliest(
            wake_at,
            entry.write_due[0][0] if entry.write_due else None,  # held admissions, retries
            entry.due[0][0] if entry.due else None,
        )
        # 4. the queue's own status and its finalizer
        if plan.queue_status is not None:
            await self._write_queue_status(entry, plan.queue_status, now)
        if plan.finalizers is not None:
            await self._write_finalizers(entry, plan.finalizers)
        return wake_at

    def _preempted(self, key: str) -> None:
        job_entry = self.jobs.get(key)
        if job_entry is None or job_entry.assessment is None or job_entry.job is None:
            return
        # The next assessment starts from this (the pod may linger while it stops).
        job_entry.unwritten = job_entry.assessment.status
        job_entry.admitted_at = 0.0
        metrics.record_preemption(job_entry.job)
        logger.info("preempted %s (%s)", key, job_entry.assessment.status.message)

    async def _write_queue_status(
        self, entry: QueueEntry, patch: dict[str, Any], now: float
    ) -> None:
        entry.status_written_at = now
        meta = entry.body["metadata"] if entry.body is not None else None
        if meta is None:
            return
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
            before, entry.queue = entry.queue, VideoQueue.model_validate(updated)
            self.queue_read(entry, before)

    async def _write_finalizers(self, entry: QueueEntry, finalizers: list[str]) -> None:
        """Keep QUEUE_FINALIZER on the queue, or remove it from a deleted queue whose jobs
        are all finished (`videoqueue.scheduling.cycle_rules.finalizers_after`)."""
        if entry.body is None:
            return
        meta = entry.body["metadata"]
        if is_deleting(entry.body):
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

    async def _create_pod(
        self, queue: QueueEntry, planned: PodToCreate, now: datetime.datetime
    ) -> None:
        """Create an admitted job's worker pod; once it exists, record the admission."""
        entry = self.jobs.get(planned.key)
        if entry is None or entry.job is None:
            return
        job = entry.job
        pod_name = planned.pod["metadata"]["name"]
        try:
            created, _ = await self.kube.create(PODS, entry.namespace, planned.pod)
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
        metrics.record_admission(job, wait_seconds=planned.waited_seconds)
        admitted = planned.admitted
        self._set_assessment(queue, entry.key, entry, admitted, now.timestamp(), counted=True)
        queue.changed.add(entry.key)  # re-assess from the pod before the next decision
        # Most workers start within a moment: wait that long, and write Running (which
        # records the admission too, from the pod) instead of Admitted and then Running.
        entry.admitted_at = self.clock()
        entry.unwritten = admitted.status
        if planned.notice is not None:
            notice = planned.notice
            self._notify(entry, notice.type, notice.reason, notice.message)

    async def _confirm_pod(self, queue: QueueEntry, key: str, name: str) -> None:
        """Ask the API server about a pod of the job's current attempt the index has not
        seen (it may lag behind, e.g. right after a restart); the next cycle assesses the
        job with the answer."""
        entry = self.jobs.get(key)
        if entry is None:
            return
        pod = await self._read_pod(entry.namespace, name)
        if pod is not None:
            entry.pods[pod["metadata"]["name"]] = pod_essentials(pod)
        else:
            entry.confirmed_missing = entry.confirmed_missing | {name}
        queue.assess_again(key)

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
        explained = explain_refusal(assessment, entry.refusal, now, entry.generation)
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


def doubling(failures: int, initial: float, cap: float) -> float:
    """The delay after `failures` failures in a row: `initial`, doubled each time, at most
    `cap`."""
    delay: float = initial * 2.0 ** min(failures - 1, 16)
    return min(delay, cap)


def write_hold(entry: JobEntry) -> float:
    """Until when the job's status write waits: a retry's delay, a new job's first Pending
    status, a fresh admission's hold while it is admitted (POD_START_WRITE_DELAY,
    ADMISSION_WRITE_DELAY once its pod is unschedulable) or running, and a fresh start's
    while it is running (ADMISSION_WRITE_DELAY; POD_START_WRITE_DELAY after a written
    Admitted)."""
    assessment = entry.assessment
    if assessment is None:
        return entry.write_after
    if assessment.status.phase is JobPhase.PENDING and entry.stored_phase is None:
        created = parse_time(entry.created)  # a new job: its first status waits too
        new_hold = created.timestamp() + ADMISSION_WRITE_DELAY if created is not None else 0.0
        return max(entry.write_after, new_hold)
    if assessment.status.phase not in BUSY_PHASES:
        return entry.write_after
    hold = max(entry.write_after, entry.admitted_at + ADMISSION_WRITE_DELAY)
    status = assessment.status
    starting = status.phase is JobPhase.ADMITTED and entry.admitted_at
    if starting and not any(pod_unschedulable(pod) for pod in entry.pods.values()):
        hold = max(hold, entry.admitted_at + POD_START_WRITE_DELAY)
    if status.phase is JobPhase.RUNNING and status.attempts and status.attempts[-1].start_time:
        # One in-between write per attempt: after a stored Admitted, Running waits as long as
        # a pod's start may (progress from the worker is written as before).
        after_admitted = entry.stored_phase is JobPhase.ADMITTED and status.progress is None
        delay = POD_START_WRITE_DELAY if after_admitted else ADMISSION_WRITE_DELAY
        hold = max(hold, status.attempts[-1].start_time.timestamp() + delay)
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
