"""Queue order, positions and estimated start times, computed on demand from a queue and its
jobs as read from the API. Nothing here is written back: the estimate lives only in the
plugin's output.

The estimate replays the operator's own admission rules (`videoqueue.scheduling`: order with
aging, concurrency and memory, backfill and the starvation guard, the start rate limit) forward
in time: running jobs finish after the queue's mean run time (per job type when known) counted
from their start, each finish frees a slot and memory, and `decide_admissions` says which
waiting jobs start at that moment. Jobs in backoff or with a startAfter enter at their time;
jobs with dependencies enter when the last of them is estimated to finish. A job whose start
depends on something the replay cannot know (a paused queue, no run time measured yet, a job
larger than the whole budget) gets no time but a note saying why.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from videoqueue.api import (
    JobPhase,
    QueueStatistics,
    VideoJob,
    VideoQueue,
    format_bytes,
)
from videoqueue.scheduling import (
    AdmissionDecision,
    BlockReason,
    JobState,
    JobView,
    PodOverhead,
    QueuePolicy,
    Rejection,
    Snapshot,
    admission_order,
    decide_admissions,
    never_admitted,
)
from videoqueue.scheduling.jobs import (
    effective_memory,
    job_requests,
    queue_overhead,
    queue_policy,
)
from videoqueue.scheduling.queue_status import RESERVING_PHASES

# The replay stops after this many decision steps: a queue of thousands of jobs needs one
# step per finishing job, and a person waits for the answer.
MAX_STEPS = 20_000


@dataclass(frozen=True)
class RunTimes:
    """Mean run time in seconds, per job type where measured, and over all types."""

    overall: float | None = None
    by_type: Mapping[str, float] = field(default_factory=dict)

    def for_type(self, type_: str) -> float | None:
        return self.by_type.get(type_, self.overall)


@dataclass(frozen=True)
class JobEstimate:
    """One unfinished job's place in its queue. `position` counts from 1 among the jobs that
    wait for admission (None for admitted and running ones); `start` is the actual start of a
    running job or the estimated start of a waiting one (epoch seconds), None with `note`
    saying why when it cannot be estimated."""

    name: str
    phase: str
    priority: int
    type: str
    position: int | None
    start: float | None
    estimated: bool
    note: str = ""


def run_times_from(statistics: QueueStatistics | None, jobs: Sequence[VideoJob]) -> RunTimes:
    """The queue's rolling statistics (status.statistics) when they hold a run time, else the
    mean runSeconds of the Succeeded jobs still present: an estimate does better with older
    runs than with none, and a failed run says little about how long the next one takes."""
    if statistics is not None:
        by_type = {
            t.type: t.mean_run_seconds for t in statistics.by_type if t.mean_run_seconds is not None
        }
        if statistics.mean_run_seconds is not None or by_type:
            return RunTimes(statistics.mean_run_seconds, by_type)
    samples: dict[str, list[float]] = {}
    for job in jobs:
        if job.status.phase == JobPhase.SUCCEEDED and job.status.run_seconds is not None:
            samples.setdefault(job.spec.type, []).append(job.status.run_seconds)
    every = [s for values in samples.values() for s in values]
    return RunTimes(
        overall=sum(every) / len(every) if every else None,
        by_type={t: sum(v) / len(v) for t, v in samples.items()},
    )


def estimate_queue(
    queue: VideoQueue,
    jobs: Sequence[VideoJob],
    now: float,
    run_times: RunTimes,
    *,
    concurrency: int | None = None,
) -> list[JobEstimate]:
    """The queue's unfinished jobs in queue order (running and admitted first, by start),
    each with its position and start time. `jobs` may include other queues' jobs and finished
    ones (dependencies are looked up among them). `concurrency` is the effective concurrency
    when the operator reports one lower than spec.concurrency."""
    name = queue.metadata.name
    # Preemption is left out: the replay would have to guess which running jobs lose
    # their place, so a preempting job's estimate is the later, non-preempting one.
    policy = dataclasses.replace(
        queue_policy(queue, concurrency=concurrency), preempt_lower_priority=False
    )
    by_name = {job.metadata.name: job for job in jobs}
    mine = [
        job
        for job in jobs
        if job.spec.queue_name == name and not (job.status.phase and job.status.phase.is_terminal)
    ]

    overheads = {t: queue_overhead(queue, t) for t in {job.spec.type for job in mine}}
    active: dict[str, tuple[JobView, float]] = {}  # key -> (view, estimated finish)
    waiting: dict[str, JobView] = {}
    gated: dict[str, JobView] = {}  # waiting for dependencies
    notes: dict[str, str] = {}
    starts: dict[str, float] = {}
    for job in mine:
        key = job.metadata.name
        view = _view(job, queue, overheads[job.spec.type], now)
        if job.status.phase in RESERVING_PHASES:
            starts[key] = _started(job, now)
            mean = run_times.for_type(job.spec.type)
            active[key] = (view, math.inf if mean is None else max(now, starts[key] + mean))
        elif job.spec.cancel:
            notes[key] = "being cancelled (spec.cancel)"
        elif job.spec.suspend:
            notes[key] = "suspended (spec.suspend)"
        elif _unmet(job, by_name):
            gated[key] = view
        else:
            waiting[key] = view

    # Positions follow the admission order; held jobs (cancelling, suspended) come last.
    order = sorted([*waiting.values(), *gated.values()], key=admission_order(policy, now))
    positions = [view.key for view in order] + sorted(notes)

    finishes = {key: finish for key, (_, finish) in active.items()}
    _replay(policy, active, waiting, gated, by_name, run_times, now, starts, finishes, notes)
    unknown_run_time = any(math.isinf(f) for f in finishes.values())
    for key in [*waiting, *gated]:
        if key in starts:
            continue
        if not policy.admitting:
            notes[key] = f"the queue is {queue.spec.state.value}"
        elif unknown_run_time and key not in gated:
            notes[key] = "no run time measured yet for the jobs ahead of it"

    rows = [
        JobEstimate(
            name=key,
            phase=(by_name[key].status.phase or JobPhase.PENDING).value,
            priority=by_name[key].spec.priority,
            type=by_name[key].spec.type,
            position=None,
            start=starts[key],
            estimated=False,
        )
        for key in sorted(active, key=lambda k: (starts[k], k))
    ]
    for position, key in enumerate(positions, start=1):
        job = by_name[key]
        rows.append(
            JobEstimate(
                name=key,
                phase=(job.status.phase or JobPhase.PENDING).value,
                priority=job.spec.priority,
                type=job.spec.type,
                position=position,
                start=starts.get(key),
                estimated=True,
                note="" if key in starts else notes.get(key, "cannot be estimated"),
            )
        )
    return rows


def _replay(
    policy: QueuePolicy,
    active: Mapping[str, tuple[JobView, float]],
    waiting: Mapping[str, JobView],
    gated: Mapping[str, JobView],
    by_name: Mapping[str, VideoJob],
    run_times: RunTimes,
    now: float,
    starts: dict[str, float],
    finishes: dict[str, float],
    notes: dict[str, str],
) -> None:
    """Step from event to event (a finish, a job becoming eligible), admitting what the real
    admission rules admit at each. Fills in `starts` and `finishes` of the jobs it starts and
    `notes` with why the others wait.

    Each step decides on the running jobs, the jobs not yet eligible and only the head of the
    eligible ones in order (`_WINDOW`), which keeps a queue of thousands to about a second; the
    window grows whenever a job behind it could still start (free slot and memory, no
    reservation), so the result is the same as deciding on all of them."""
    running = dict(active)
    held = dict(gated)
    ready: list[JobView] = []  # eligible at t, in admission order
    future: dict[str, JobView] = {}  # not eligible before some later time
    for key, view in waiting.items():
        if not _admissible(view, policy, notes):
            continue
        if view.eligible_at is not None and view.eligible_at > now:
            future[key] = view
        else:
            ready.append(view)
    # Admissions of the last minute, for the rate limit: the active jobs' to begin with.
    recent = [
        moment
        for key in active
        if (moment := _ts(by_name[key].status.admitted_time)) is not None and moment > now - 60.0
    ]
    t = now
    sorted_once = False
    for _ in range(MAX_STEPS):
        running = {k: v for k, v in running.items() if v[1] > t}
        for key, view in list(held.items()):
            release = _release_time(by_name[key], by_name, finishes)
            if release is not None:
                del held[key]
                view = dataclasses.replace(view, eligible_at=max(release, view.eligible_at or 0))
                if _admissible(view, policy, notes):
                    future[key] = view
        arrived = [
            future.pop(key)
            for key, view in list(future.items())
            if view.eligible_at is None or view.eligible_at <= t
        ]
        order = admission_order(policy, t)
        if policy.aging_interval is not None or not sorted_once:
            # Aging reorders jobs as time passes; without it the order never changes.
            ready += arrived
            ready.sort(key=order)
            sorted_once = True
        else:
            for view in arrived:
                bisect.insort(ready, view, key=order)
        decision = _decide(policy, running, ready, future, recent, t)
        admitted = set(decision.admit)
        for key in decision.admit:
            view = next(v for v in ready if v.key == key)
            mean = run_times.for_type(by_name[key].spec.type)
            starts[key] = t
            recent.append(t)
            finishes[key] = math.inf if mean is None else t + mean
            running[key] = (
                dataclasses.replace(view, state=JobState.ADMITTED, eligible_at=None),
                finishes[key],
            )
        if admitted:  # admitted jobs come from the head of the order
            found, cut = 0, 0
            while found < len(admitted):
                found += ready[cut].key in admitted
                cut += 1
            ready = [v for v in ready[:cut] if v.key not in admitted] + ready[cut:]
        for key, blocked in decision.blocked_reasons.items():
            notes[key] = blocked.message
        if not ready and not future and not held:
            return
        upcoming = [f for _, f in running.values() if f > t]
        upcoming += [w for w in [decision.wake_at] if w is not None and w > t]
        upcoming += [
            r for k in held if (r := _release_time(by_name[k], by_name, finishes)) is not None
        ]
        upcoming = [u for u in upcoming if math.isfinite(u)]
        if not upcoming:
            break
        t = max(t, min(upcoming))
    else:
        for view in [*ready, *future.values()]:
            notes.setdefault(view.key, f"more than {MAX_STEPS} starts ahead of it")
    for key in held:
        notes.setdefault(key, "waiting for its dependencies (spec.dependsOn)")


_WINDOW = 64


def _decide(
    policy: QueuePolicy,
    running: Mapping[str, tuple[JobView, float]],
    ready: Sequence[JobView],
    future: Mapping[str, JobView],
    recent: Sequence[float],
    t: float,
) -> AdmissionDecision:
    """`decide_admissions` on the running jobs, the not yet eligible ones and a head of the
    eligible ones (`ready`, in order) that is long enough for the decision to be exact."""
    busy = [view for view, _ in running.values()]
    window = max(_WINDOW, 2 * policy.concurrency)
    while True:
        head = ready[:window]
        views = (*busy, *head, *future.values())
        decision = decide_admissions(Snapshot(policy, views, tuple(recent)), t)
        if len(head) == len(ready) or not _behind_may_start(decision, busy, head, ready, policy):
            return decision
        window *= 4


def _behind_may_start(
    decision: AdmissionDecision,
    busy: Sequence[JobView],
    head: Sequence[JobView],
    ready: Sequence[JobView],
    policy: QueuePolicy,
) -> bool:
    """Whether a job behind the head could have been admitted too: only with a slot and the
    memory for it left over and no memory reserved for a blocked job (a job the head's jobs
    wait behind for a slot, a reservation or the rate limit waits for the same)."""
    if decision.reserved_for is not None or any(
        b.reason is BlockReason.RATE_LIMITED for b in decision.blocked_reasons.values()
    ):
        return False
    admitted = {key for key in decision.admit}
    slots = policy.concurrency - len(busy) - len(admitted)
    if slots <= 0:
        return False
    holding = [*busy, *(v for v in head if v.key in admitted)]
    free = policy.memory_budget - sum(v.pod_memory for v in holding)
    left = {
        name: budget - sum(v.requests.get(name, 0) for v in holding)
        for name, budget in policy.budgets.items()
    }
    return any(
        v.pod_memory <= free and all(v.requests.get(n, 0) <= left[n] for n in left)
        for v in ready[len(head) :]
    )


def _admissible(view: JobView, policy: QueuePolicy, notes: dict[str, str]) -> bool:
    """Jobs the queue can never start (`never_admitted`, admission's own rule) are noted and
    left out of the replay."""
    never = never_admitted(view, policy)
    if never is None:
        return True
    if isinstance(never, Rejection):
        notes[view.key] = (
            f"will be rejected: needs {format_bytes(view.memory)}, more than the queue's "
            f"memory.max of {format_bytes(policy.memory_max)}"
        )
    elif never.reason is BlockReason.EXCEEDS_RESOURCE_BUDGET:
        # It waits until spec.budgets is raised or the template requests less.
        notes[view.key] = f"will not start: {never.message}"
    else:
        # Admission never starts it, and the operator rejects it (PodExceedsBudget).
        notes[view.key] = (
            f"will be rejected: needs {format_bytes(view.pod_memory)} for its whole pod, more "
            "than the queue's whole memory.budget"
        )
    return False


def _view(job: VideoJob, queue: VideoQueue, overhead: PodOverhead, now: float) -> JobView:
    """The job as admission sees it, with the operator's memory rules: an admitted or running
    job holds what its attempt got, a waiting one counts what its next attempt gets."""
    status = job.status
    created = _ts(job.metadata.creation_timestamp) or now
    held = status.effective_memory_bytes if status.phase in RESERVING_PHASES else None
    memory = held if held is not None else effective_memory(job, status, queue)
    eligible = max(
        [t for t in (_ts(status.next_attempt_time), _ts(job.spec.start_after)) if t and t > now],
        default=None,
    )
    return JobView(
        key=job.metadata.name,
        priority=job.spec.priority,
        created_at=created,
        queued_at=_ts(status.queued_time) or created,
        memory=memory,
        overhead=overhead.beside(memory),
        state=JobState.RUNNING
        if status.phase == JobPhase.RUNNING
        else JobState.ADMITTED
        if status.phase == JobPhase.ADMITTED
        else JobState.PENDING,
        eligible_at=eligible,
        requests=job_requests(job, queue),
    )


def _unmet(job: VideoJob, by_name: Mapping[str, VideoJob]) -> bool:
    return any(
        (dep := by_name.get(name)) is None or dep.status.phase != JobPhase.SUCCEEDED
        for name in job.spec.depends_on
    )


def _release_time(
    job: VideoJob, by_name: Mapping[str, VideoJob], finishes: Mapping[str, float]
) -> float | None:
    """When the last unfinished dependency is estimated to finish, None while unknown."""
    times = [0.0]
    for name in job.spec.depends_on:
        dep = by_name.get(name)
        if dep is not None and dep.status.phase == JobPhase.SUCCEEDED:
            continue
        finish = finishes.get(name)
        if finish is None or not math.isfinite(finish):
            return None
        times.append(finish)
    return max(times)


def _started(job: VideoJob, now: float) -> float:
    status = job.status
    latest = status.attempts[-1] if status.attempts else None
    for moment in (
        latest.start_time if latest else None,
        status.admitted_time,
        status.start_time,
    ):
        if moment is not None:
            return moment.timestamp()
    return now


def _ts(moment: datetime.datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()
