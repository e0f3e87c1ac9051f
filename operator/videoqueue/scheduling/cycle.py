"""One cycle of a queue's scheduler, decided without I/O: `plan_cycle(view, now) -> CyclePlan`.

The controller observes (its index turns watch events into a `QueueView`: the queue, the jobs
that changed with everything known about them, read-only access to the others), asks
`plan_cycle` what to do, and applies the plan (`videoqueue.controller.apply`): worker pods
first (a pod is the record of an admission), then statuses, then Events. A cycle:

1. assesses the jobs that changed (`videoqueue.scheduling.jobs.assess_job`); new jobs beyond
   spec.maxPending are turned away;
2. finds the finished jobs whose TTL ran out (a Succeeded or Failed one once the queue's
   stored statistics count it), and moves the effective concurrency under memory pressure;
3. decides admissions on a snapshot of the queue (`decide_admissions`), says why the others
   wait, picks preemption victims and builds the admitted jobs' worker pods;
4. counts the finished jobs whose outcome is stored into the queue's statistics
   (`videoqueue.scheduling.statistics`), computes the queue's status patch (at most every
   QUEUE_STATUS_INTERVAL) and its finalizer change, and when to look again.

While the index still has changed jobs for later cycles (`QueueView.backlog`: a restart or a
burst is assessed in slices, so the watch streams keep being read) or a pod must be confirmed
with the API server first, the cycle only assesses: no decision is made on half a queue.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from videoqueue.api import (
    JobConditionType,
    JobPhase,
    VideoJobStatus,
    VideoQueue,
    VideoQueueStatus,
    find_condition,
    format_bytes,
)
from videoqueue.api.patching import status_patch
from videoqueue.scheduling.admission import decide_admissions
from videoqueue.scheduling.cycle_rules import (
    QUEUE_STATUS_INTERVAL,
    due_at,
    earliest,
    expires_at,
    finalizers_after,
    oom_kill_times,
    statistics_step,
)
from videoqueue.scheduling.cycle_view import (
    CyclePlan,
    IndexedJob,
    JobFacts,
    PodToCreate,
    QueueView,
)
from videoqueue.scheduling.jobs import (
    Admission,
    Assessment,
    Notice,
    admit,
    assess_job,
    explain_refusal,
    preempt,
    queue_policy,
    reject,
    waiting_because,
)
from videoqueue.scheduling.notifications import owe_notification, settle_notification
from videoqueue.scheduling.pod_outcome import pod_unschedulable
from videoqueue.scheduling.pressure import PressureSignals, PressureState, queue_pressure
from videoqueue.scheduling.progress_board import apply_progress
from videoqueue.scheduling.queue_status import QueueFacts, summarize_queue
from videoqueue.scheduling.snapshot import JobState, JobView, Snapshot, StoppingPod
from videoqueue.scheduling.statistics import FinishedJob, awaits_count

__all__ = ["CyclePlan", "IndexedJob", "JobFacts", "PodToCreate", "QueueView", "plan_cycle"]
from videoqueue.scheduling.worker_pod import JobNotDeliverable, build_worker_pod

_WAITING_PHASES = frozenset({JobPhase.PENDING, JobPhase.WAITING, JobPhase.BACKOFF})
# A decision can change the wait reason of every waiting job at once (a paused queue of
# 100,000 made Active): each is a new assessment and a status write. The jobs first in line
# are told first, this many a cycle, and the loop comes back for the rest at once, so the
# admissions decided meanwhile are not held up behind the whole queue's new statuses.
EXPLAINED_PER_CYCLE = 1_000


def plan_cycle(view: QueueView, now: float) -> CyclePlan:
    """What the queue's cycle at `now` (seconds since the epoch) does. Pure."""
    return _Cycle(view, now).plan()


class _Cycle:
    """The decisions of one cycle, each step reading what the earlier ones decided."""

    def __init__(self, view: QueueView, now: float) -> None:
        self.view = view
        self.now = now
        self.at = datetime.datetime.fromtimestamp(now, datetime.UTC)
        self.decided: dict[str, Assessment] = {}
        self.order: list[tuple[str, Assessment]] = []
        self.events: list[Notice] = []
        self.explained: list[tuple[str, str]] = []
        self.wake_at: float | None = view.next_timer
        self.status_changed = view.status_changed

    def current(self, key: str) -> Assessment | None:
        if (decided := self.decided.get(key)) is not None:
            return decided
        job = self.view.jobs.get(key)
        return job.assessment if job is not None else None

    def record(self, key: str, assessment: Assessment) -> None:
        job, queue = self.view.jobs.get(key), self.view.queue
        assessment = owe_notification(assessment, self.current(key), job, queue, self.at)
        self.decided[key] = assessment
        self.order.append((key, assessment))
        self.status_changed = True
        self.wake_at = earliest(self.wake_at, due_at(assessment))

    def plan(self) -> CyclePlan:
        view, queue = self.view, self.view.queue
        stall_warned = self._warn_stall_detection_off()
        phase_changed, confirm = self._assess_changed()
        only_assess = view.backlog or bool(confirm)
        if only_assess:
            self.wake_at = self.now
        elif queue is not None and (view.new_jobs or any(f.new for f in view.changed)):
            self._limit_pending(queue)
        delete_jobs, awaiting_count = self._expired()
        pressure = view.pressure
        if queue is not None:
            pressure = self._pressure(queue)
        released = tuple(key for key, until in view.held.items() if until <= self.now)
        held = {key: until for key, until in view.held.items() if until > self.now}
        self.wake_at = earliest(self.wake_at, min(held.values(), default=None))
        preempted: tuple[str, ...] = ()
        create: list[PodToCreate] = []
        refused: list[tuple[str, str, str]] = []
        if view.refused_until > self.now:
            self.wake_at = earliest(self.wake_at, view.refused_until)  # pods were refused: pause
        elif queue is not None and not only_assess:
            preempted, admitted = self._decide(queue, held, pressure)
            for key in admitted:
                self._admit(key, queue, create, refused)
        checked, queue_status = False, None
        if not only_assess:
            finished = self._finished()
            checked, queue_status = self._queue_status(queue, pressure, finished, create)
        return CyclePlan(
            assessments=tuple(self.order),
            phase_changed=phase_changed,
            preempted=preempted,
            create=tuple(create),
            refused=tuple(refused),
            released=released,
            confirm_pods=confirm,
            delete_jobs=delete_jobs,
            delete_once_counted=awaiting_count,
            queue_events=tuple(self.events),
            pressure=pressure,
            status_checked=checked,
            queue_status=queue_status,
            finalizers=finalizers_after(
                view.body, (job.stored_phase for job in view.jobs.values())
            ),
            stall_warned=stall_warned,
            explained=tuple(self.explained),
            pending_checked=not only_assess,
            partial=view.backlog,
            wake_at=self.wake_at,
        )

    # -- 1. assess -----------------------------------------------------------------------

    def _assess_changed(self) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        queue = self.view.queue
        phase_changed: list[str] = []
        confirm: list[tuple[str, str]] = []
        for facts in self.view.changed:
            assessment = assess_job(
                facts.job,
                facts.pods,
                queue,
                self.at,
                confirmed_missing=facts.confirmed_missing,
                dependencies=facts.dependencies,
                heard_at=facts.heard_at,
                cycle=facts.cycle,
                source=facts.source,
            )
            if assessment.unconfirmed_pod is not None:
                # The index may lag (after a restart): ask the API server, assess again.
                confirm.append((facts.key, assessment.unconfirmed_pod))
                continue
            if facts.progress is not None and not assessment.terminal:
                with_progress = apply_progress(facts.job, assessment.status, facts.progress)
                if with_progress is not assessment.status:
                    assessment = replace(assessment, status=with_progress)
            assessment = settle_notification(assessment, facts.notification, queue, self.at)
            if facts.refusal is not None:
                generation = facts.job.metadata.generation
                assessment = explain_refusal(assessment, facts.refusal, self.at, generation)
            self.record(facts.key, assessment)
            if assessment.status.phase != facts.phase_before:
                phase_changed.append(facts.key)
        return tuple(phase_changed), tuple(confirm)

    def _limit_pending(self, queue: VideoQueue) -> None:
        """spec.maxPending: new jobs beyond it are Rejected (QueueFull), oldest accepted first.
        Jobs already accepted (their waiting status is on record) always keep their place."""
        limit = queue.spec.max_pending
        if limit is None:
            return
        accepted = 0
        new: list[tuple[str, str, str]] = []
        for key, job in self.view.jobs.items():
            assessment = self.current(key)
            if assessment is None or assessment.status.phase not in _WAITING_PHASES:
                continue
            recorded = job.unwritten.phase if job.unwritten else job.stored_phase
            if recorded is None:
                new.append((job.created, job.name, key))
            else:
                accepted += 1
        room = max(0, limit - accepted)
        if len(new) <= room:
            return
        new.sort()
        message = (
            f"queue {queue.metadata.name} is full: {limit} jobs already wait for admission "
            "(spec.maxPending); submit again later, or raise the queue's maxPending"
        )
        for _, _, key in new[room:]:
            if (parsed := self.view.jobs[key].job) is not None:
                self.record(key, reject(parsed, parsed.status, "QueueFull", message, self.at))

    # -- 2. TTLs and memory pressure -----------------------------------------------------

    def _expired(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The jobs to delete now, and those whose TTL ran out but whose outcome the queue's
        stored statistics do not count yet (deleted once they do)."""
        queue = self.view.queue
        stored = queue.status.statistics if queue is not None else None
        expired: list[str] = []
        uncounted: list[str] = []  # (deleted once counted)
        for key in self.view.expired:
            job = self.view.jobs.get(key)
            if job is None:
                continue
            current = self.current(key)
            expires = expires_at(job.job, current, job.stored_phase, queue, deleting=job.deleting)
            if expires is None or expires > self.now or current is None:
                continue
            if queue is not None and awaits_count(current.status, stored):
                uncounted.append(key)
            else:
                expired.append(key)
        return tuple(expired), tuple(uncounted)

    def _pressure(self, queue: VideoQueue) -> PressureState | None:
        """Move the queue's effective concurrency (see videoqueue.scheduling.pressure)."""
        settings = queue.spec.memory_pressure
        if not settings.enabled:
            return None
        since = self.now - settings.window_seconds
        kills = [t for times in self._oom_kills() for t in times if t > since]
        nodes: set[str] = set()
        if self.view.pressured_nodes:  # rare: walking every job's pods is fine then
            for job in self.view.jobs.values():
                for pod in job.pods.values():
                    node = pod.get("spec", {}).get("nodeName")
                    phase = (pod.get("status") or {}).get("phase")
                    if node in self.view.pressured_nodes and phase not in ("Succeeded", "Failed"):
                        nodes.add(node)
        before = self.view.pressure
        state, due, notice = queue_pressure(
            queue, before, PressureSignals(sorted(kills), sorted(nodes)), self.now
        )
        self.wake_at = earliest(self.wake_at, due)
        self.status_changed = self.status_changed or state != before
        if notice is not None and self.view.body:
            self.events.append(notice)
        return state

    def _oom_kills(self) -> list[tuple[float, ...]]:
        kills = [t for key, t in self.view.oom_kills.items() if key not in self.decided]
        kills += [oom_kill_times(a.status) for a in self.decided.values()]
        return kills

    # -- 3. decide -----------------------------------------------------------------------

    def _decide(
        self, queue: VideoQueue, held: Mapping[str, float], pressure: PressureState | None
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Admissions, the reasons of those that wait, and preemption victims."""
        views = self._views(held)
        if not any(v.state is JobState.PENDING for v in views):
            return (), ()
        policy = queue_policy(
            queue, concurrency=pressure.effective if pressure is not None else None
        )
        snapshot = Snapshot(policy, views, self._recent_starts(queue), self._stopping_pods())
        decision = decide_admissions(snapshot, self.now)
        self.wake_at = earliest(self.wake_at, decision.wake_at)
        for rejection in decision.reject:  # (assess_job rejects them first, as a rule)
            assessment, indexed = self.current(rejection.key), self.view.jobs.get(rejection.key)
            if assessment is not None and indexed is not None and (parsed := indexed.job):
                status, reason = assessment.status, rejection.reason.value
                self.record(
                    rejection.key, reject(parsed, status, reason, rejection.message, self.at)
                )
        told = 0
        for key, blocked in decision.blocked_reasons.items():  # (in queue order)
            if told == EXPLAINED_PER_CYCLE:
                self.wake_at = self.now  # the rest in the next cycles
                break
            told += self._explain_wait(key, blocked.reason, blocked.message)  # StrEnum: a str
        preempted: tuple[str, ...] = ()
        if decision.preempt and decision.preempt_for is not None:
            preempted = self._preempt(decision.preempt, decision.preempt_for)
            self.wake_at = self.now  # admit the preemptor once the victims count as pending
        return preempted, decision.admit

    def _views(self, held: Mapping[str, float]) -> tuple[JobView, ...]:
        """The competing jobs as this cycle leaves them, without the held ones."""
        decided = self.decided
        views = [
            v for key, v in self.view.competing.items() if key not in decided and key not in held
        ]
        views += [a.view for key, a in decided.items() if a.view is not None and key not in held]
        return tuple(views)

    def _stopping_pods(self) -> tuple[StoppingPod, ...]:
        decided = self.decided
        pods = [p for key, ps in self.view.stopping.items() if key not in decided for p in ps]
        pods += [p for a in decided.values() for p in a.stopping]
        return (*pods, *self.view.orphans)

    def _recent_starts(self, queue: VideoQueue) -> tuple[float, ...]:
        """Admissions of the last minute, for the rate limit (from the jobs' statuses, so a
        restarted operator knows them too)."""
        if queue.spec.rate_limit is None:
            return ()
        starts: list[float] = []
        for key in self.view.jobs:
            assessment = self.current(key)
            admitted = assessment.status.admitted_time if assessment is not None else None
            if admitted is not None and admitted.timestamp() > self.now - 60.0:
                starts.append(admitted.timestamp())
        return tuple(starts)

    def _explain_wait(self, key: str, reason: str, message: str) -> bool:
        """Say in the job's status why it waits. Only a change of reason is written: the
        numbers in the message (free memory, slots) change all the time and would cost a
        status write per job on every admission in the queue. Whether the job's status was
        told a new reason."""
        if key not in self.decided and self.view.explained.get(key) == reason:
            return False
        assessment, job = self.current(key), self.view.jobs.get(key)
        if assessment is None or job is None:
            return False
        self.explained.append((key, reason))
        current = find_condition(assessment.status.conditions, JobConditionType.ADMITTED)
        if current is not None and current.reason == reason:
            return False
        self.record(key, waiting_because(assessment, reason, message, self.at, job.generation))
        return True

    def _preempt(self, victims: tuple[str, ...], preemptor: str) -> tuple[str, ...]:
        preempted: list[str] = []
        for key in victims:
            assessment, job = self.current(key), self.view.jobs.get(key)
            if assessment is None or job is None or (parsed := job.job) is None:
                continue
            status = assessment.status
            record = next(
                (r for r in reversed(status.attempts) if r.attempt == status.attempt), None
            )
            if record is None or not record.pod:
                continue
            by = preemptor.split("/", 1)[-1]
            self.record(key, preempt(parsed, assessment, record.pod, by, self.at, self.view.queue))
            preempted.append(key)
        return tuple(preempted)

    def _admit(
        self,
        key: str,
        queue: VideoQueue,
        create: list[PodToCreate],
        refused: list[tuple[str, str, str]],
    ) -> None:
        job, assessment = self.view.jobs.get(key), self.current(key)
        if job is None or assessment is None or assessment.view is None:
            return
        parsed, queue_body = job.job, self.view.body
        if parsed is None or queue_body is None:
            return
        attempt = assessment.status.attempt + 1
        memory = assessment.view.memory
        try:
            pod = build_worker_pod(
                dict(job.body),
                dict(queue_body),
                attempt=attempt,
                memory_bytes=memory,
                now_iso=self.at.isoformat().replace("+00:00", "Z"),
                env=[dict(e) for e in self.view.worker_env],
                input_url=resolved.url if (resolved := assessment.status.resolved_input) else None,
            )
        except JobNotDeliverable as e:
            # The job itself can never be handed to a worker: turn it away for good.
            self.record(key, reject(parsed, assessment.status, "NotDeliverable", str(e), self.at))
            return
        except ValueError as e:
            refused.append((key, "WorkerPodInvalid", str(e)))
            return
        pod_name = pod["metadata"]["name"]
        status = admit(
            assessment.status,
            pod_name=pod_name,
            admission=Admission(attempt=attempt, memory=memory),
            now=self.at,
            generation=parsed.metadata.generation,
        )
        notice = None
        if attempt > 1:
            # A first admission is in the job's status (attempts) and its pod's events; one
            # Event per job, its outcome, is a tenth of the API server's writes at scale. A
            # retry's says what changed (memory after an OOM kill).
            notice = Notice(
                "Normal",
                "Admitted",
                f"admitted as attempt {attempt} with {format_bytes(memory)} of memory; "
                f"worker pod {pod_name}",
            )
        waited = (status.wait_seconds or 0.0) - (assessment.status.wait_seconds or 0.0)
        admitted = Assessment(status=status, view=None)
        create.append(PodToCreate(key, pod, attempt, memory, admitted, waited, notice))

    # -- 4. the queue ----------------------------------------------------------------------

    def _finished(self) -> tuple[tuple[FinishedJob, ...], datetime.datetime | None]:
        """What the queue's statistics can count now (`cycle_rules.statistics_step`)."""
        step = statistics_step(self.view, self.decided, self.current, self.now)
        self.status_changed = self.status_changed or step.changed
        self.wake_at = earliest(self.wake_at, step.wake_at)
        return step.confirmed, step.unconfirmed_since

    def _queue_status(
        self,
        queue: VideoQueue | None,
        pressure: PressureState | None,
        finished: tuple[tuple[FinishedJob, ...], datetime.datetime | None],
        create: list[PodToCreate],
    ) -> tuple[bool, dict[str, Any] | None]:
        """The queue's status patch, if its status may have changed and the last write is old
        enough (else the cycle wakes up when it is)."""
        body = self.view.body
        if queue is None or body is None or not self.status_changed:
            return False, None
        due = self.view.status_written_at + QUEUE_STATUS_INTERVAL
        if self.now < due:
            self.wake_at = earliest(self.wake_at, due)
            return False, None
        admitted = {pod.key: pod.admitted for pod in create}
        statuses: list[tuple[str, VideoJobStatus]] = []  # with their types: memory per type
        batches: list[tuple[str, VideoJobStatus]] = []
        unschedulable = 0
        for key, job in self.view.jobs.items():
            assessment = admitted.get(key) or self.current(key)
            if assessment is None:
                continue
            status = assessment.status
            statuses.append((job.type, status))
            if job.batch is not None:
                batches.append((job.batch, status))
            if status.phase == JobPhase.ADMITTED and any(
                pod_unschedulable(dict(pod)) for pod in job.pods.values()
            ):
                unschedulable += 1
        facts = QueueFacts(
            finished=finished[0],
            unconfirmed_since=finished[1],
            batches=tuple(batches),
            unschedulable=unschedulable,
            pressure=pressure,
            stopping=self._stopping_pods(),
        )
        desired: VideoQueueStatus = summarize_queue(queue, statuses, self.at, facts=facts)
        return True, status_patch(body.get("status") or {}, desired)

    def _warn_stall_detection_off(self) -> bool:
        """Say once (per queue and activation) that progressDeadlineSeconds is not enforced
        when there is no progress channel to hear heartbeats on."""
        queue, view = self.view.queue, self.view
        if view.stall_detection or queue is None or view.body is None or view.stall_warned:
            return view.stall_warned
        if queue.spec.progress_deadline_seconds is None:
            return False
        self.events.append(
            Notice(
                "Warning",
                "StallDetectionOff",
                "spec.progressDeadlineSeconds is set but the operator runs without a Redis "
                "progress channel (--redis-url): stalled workers are not detected",
            )
        )
        return True
