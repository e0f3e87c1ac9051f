"""The operator's scheduler: one loop per queue that, on each cycle,
  1. assesses the jobs that changed (`videoqueue.scheduling.jobs.assess_job`),
  2. decides admissions on a snapshot of the queue (`scheduling.decide_admissions`),
  3. creates the admitted jobs' worker pods (pod first: the pod is the record of admission),
  4. writes the job statuses that differ from what is stored, in parallel,
  5. posts Events for transitions and sleeps until woken or until `wake_at`.
Events arriving during a cycle are coalesced into the next one, so the number of cycles
adapts to the load instead of growing with it. The index it reads is
`videoqueue.controller.index`; every write goes through `videoqueue.controller.apply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import heapq
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from videoqueue.api import (
    JobConditionType,
    JobPhase,
    VideoQueue,
    find_condition,
)
from videoqueue.controller import metrics
from videoqueue.controller.apply import (
    WRITE_RETRY_MAX_SECONDS,
    WRITE_RETRY_SECONDS,
    Writes,
    doubling,
    explain_refusal,
    gather_bounded,
    waiting_because,
    write_hold,
)
from videoqueue.controller.entries import (
    JobEntry,
    QueueEntry,
    earliest,
    is_busy,
)
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.notifications import Notifier
from videoqueue.controller.progress import ProgressChannel
from videoqueue.controller.progress_settings import ProgressSettings
from videoqueue.scheduling import Snapshot, decide_admissions
from videoqueue.scheduling.jobs import (
    Assessment,
    assess_job,
    preempt,
    queue_policy,
    reject,
)
from videoqueue.scheduling.pod_outcome import pod_essentials, read_pod_outcome
from videoqueue.scheduling.pressure import (
    PressurePolicy,
    PressureSignals,
    next_pressure_state,
)

logger = logging.getLogger(__name__)

# A cycle that assesses thousands of jobs (a burst of new ones, a restart) lets the watch
# streams be read at least this often: the API server closes a watch whose reader falls a
# few dozen events behind, and kopf then lists every object again.
CYCLE_SLICE_SECONDS = 0.05
# How often at most a queue is woken only because finished jobs leave the statistics window.
STATISTICS_REFRESH = 10.0
_WAITING_PHASES = frozenset({JobPhase.PENDING, JobPhase.WAITING, JobPhase.BACKOFF})


class Controller(Writes):
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
        super().__init__(clock=clock)
        self.kube = kube
        self._loops_started = start_loops
        self._stopping = False
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

    def _schedule(self, entry: QueueEntry) -> None:
        if entry.task is None and self._loops_started and not self._stopping:
            entry.task = asyncio.create_task(self._loop(entry), name=f"queue {entry.key}")

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
                delay = doubling(failures, WRITE_RETRY_SECONDS, WRITE_RETRY_MAX_SECONDS)
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
                assessment = explain_refusal(assessment, job_entry, job_entry.refusal, now)
            self._set_assessment(entry, key, job_entry, assessment, now_ts)
            if not is_busy(job_entry):
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
            wake_at = earliest(self._update_pressure(entry, queue, now_ts), expiry)
        for key, until in list(entry.held.items()):
            if until <= now_ts:
                del entry.held[key]
        wake_at = earliest(wake_at, min(entry.held.values(), default=None))
        if entry.refused_until > now_ts:
            wake_at = earliest(wake_at, entry.refused_until)  # pods were refused: pause
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
            wake_at = earliest(decision.wake_at, wake_at)
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
                key not in admitted and key not in entry.writing and write_hold(job_entry) <= now_ts
            ):
                entry.writing.add(key)
                entry.write_queue.append(key)
        self._start_writers(entry)
        await gather_bounded(admissions)
        for key in changed.union(admitted):  # idle again: keep only the compact form
            job_entry = self.jobs.get(key)
            if job_entry is not None and key not in entry.writing and not is_busy(job_entry):
                job_entry.compact()
        for key in entry.unsaved:  # held admissions and writes to retry
            if key not in entry.writing and (job_entry := self.jobs.get(key)) is not None:
                wake_at = earliest(wake_at, write_hold(job_entry))
        wake_at = earliest(wake_at, entry.due[0][0] if entry.due else None)
        if queue is None:
            wake_at = earliest(wake_at, expiry)
        # 5. the queue's own status, at a bounded rate, and its finalizer
        status_due = await self._write_queue_status(entry, now_ts, now)
        await self._manage_finalizer(entry)
        return earliest(wake_at, status_due)

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
                await self._read_pod(namespace, assessment.unconfirmed_pod)
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
            self._delete_job(job_entry)
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
            next_at = earliest(next_at, max(entry.finished_leave_at, now + STATISTICS_REFRESH))
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
            reason = "MemoryPressure" if lowered else "PressureEased"
            self._post_queue_event(entry, "Warning" if lowered else "Normal", reason, message)
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
        explained = waiting_because(assessment, entry, reason, message, now)
        self._set_assessment(queue, key, entry, explained, now.timestamp())

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
        self._post_queue_event(entry, "Warning", "StallDetectionOff", message)
