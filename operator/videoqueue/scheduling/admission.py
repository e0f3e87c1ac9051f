"""Admission: which pending jobs of one queue start now.

`decide_admissions(snapshot, now)` is a pure function of the queue policy, a snapshot of the
queue's unfinished jobs and the time. The controller calls it whenever something changes
(a job appears or finishes, the spec changes) and again at `wake_at`, then writes the result.

Order
    Higher priority first; within a priority, earlier `created_at` first (FIFO); the key
    ("namespace/name") breaks the remaining ties, so the order is total and does not depend
    on the order in which jobs were listed. `created_at` never changes, so a disrupted job
    that is re-queued goes back to its old place.

Limits, never exceeded
    Admitted plus running jobs never number more than `concurrency`, the memory of their
    pods (`JobView.pod_memory`: the worker's memory plus the rest of the pod) never sums to
    more than `memory_budget`, and what their pods request of each resource in `budgets`
    (`JobView.requests`: CPU, extended resources) never sums to more than its budget.
    Pods of attempts that are over but still terminating (`Snapshot.stopping`: a grace
    period, a preStop hook) count like running jobs until they are gone, since their
    containers still run and hold memory (and their requests). Wherever memory is said
    below, the budgeted resources are meant too: a job fits when its memory and each of its
    requests fit what is left (`videoqueue.scheduling.budgets`). When the queue is already
    over a limit (the limit was lowered), nothing is admitted until enough jobs finish.

Rejection
    A pending job asking for more than `memory_max` (its worker's memory) can never run and
    is rejected. A job within `memory_max` whose pod is bigger than the whole `memory_budget`
    is not rejected here (the controller, which knows what the rest of the pod is, rejects
    it with a message saying so); it waits, and because it cannot fit it never holds up
    other jobs. So does a job whose pod requests more of a resource than its whole budget
    (`EXCEEDS_RESOURCE_BUDGET`: its requests come from the queue's template).

Backfill and the starvation guard
    Jobs are admitted in order while they fit. A job that does not fit the free memory does
    not stop the walk: smaller jobs behind it are admitted in its place (backfill). Left at
    that, a big job could wait forever while a stream of small jobs keeps the memory busy.
    So the first job in the order that does not fit the free memory (the *blocked head*) may be
    overtaken only for `backfill_seconds` after it was queued: from
    `queued_at + backfill_seconds` on, the free memory is reserved for it and no job behind it
    in the order is admitted until it has been admitted. Jobs ahead of it are not affected.

    Guarantee: while the reservation holds, nothing starts behind the blocked head and the
    memory that admitted and running jobs free when they finish (their run time is bounded by
    deadlines) stays free, so the head is admitted at the latest when the jobs holding memory
    at `queued_at + backfill_seconds` (or when it became the head, if later) have finished,
    however many smaller jobs keep arriving. Only jobs ahead of it in the order, of higher
    priority or created earlier, can delay it further; those are finite except for a steady
    stream of higher-priority work, which is what the queue's aging setting is for. A job
    bigger than the whole budget is never the blocked head, so a reservation never waits for
    something that cannot happen.

Result
    `admit` (keys, in order), `reject` (with a reason naming the limit), `blocked_reasons` for
    every eligible pending job that was not admitted, `reserved_for` (the blocked head while
    memory is reserved for it) and `wake_at`: the earliest future time at which deciding again
    on the same snapshot could give a different result (a job's `eligible_at`, or the moment
    the reservation for the blocked head begins), or None when only a change of the snapshot
    can. Deciding at any time in `[now, wake_at)` gives the same decision.

Aging
    With `aging_interval` set, a pending job's priority in the order rises by one for every
    `aging_interval` seconds since it was queued, by at most `aging_max_boost` and never above
    `max_priority`. A job of priority p thus competes as a top-priority job after
    (max_priority - p) * aging_interval, and among equal priorities the older job goes first,
    so a steady stream of high-priority work cannot starve it. Aging only reorders; limits
    and the starvation guard apply as before. A boost only matters once capacity frees up,
    and a job finishing wakes the controller anyway, so `wake_at` leaves boosts out (with
    thousands of waiting jobs each boost would otherwise be a wake-up); the guarantee that
    deciding again before `wake_at` gives the same decision holds for queues without aging.

Rate limit
    With `starts_per_minute` set, no more than that many admissions fall into any 60-second
    window (`Snapshot.recent_starts` holds the admissions of the last minute). Jobs that would
    exceed it wait with reason `RateLimited` until the oldest start leaves the window.

Preemption
    With `preempt_lower_priority`, the first job in the order that waits for a slot, for
    memory or for a budgeted resource (the *preemptor*) may evict admitted or running jobs
    of strictly lower `priority` (the job's own, not aged). Victims come from the lowest
    priority tier that suffices: the smallest L such that evicting every candidate of
    priority <= L would give the preemptor a slot, enough memory and enough of every budgeted
    resource; within that pool the fewest jobs that make room are taken, largest memory
    first, then lower priority, then most recently admitted (least work lost). When it lacks
    a budgeted resource too, the victims are found greedily over every resource it lacks,
    each one needed (`budgets.fewest_victims`). The preemptor is admitted on the
    next decision, once the victims count as pending again; it is not preempted for while
    the rate limit holds everything back.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from videoqueue.api import CPU, format_bytes, format_resource
from videoqueue.scheduling.budgets import (
    MEMORY,
    fewest_victims,
    free_of,
    over_budget,
    resource_order,
    short_of,
    take,
)
from videoqueue.scheduling.snapshot import JobState, JobView, QueuePolicy, Snapshot
from videoqueue.scheduling.units import format_seconds


class BlockReason(enum.StrEnum):
    """Why an eligible pending job was not admitted; values are condition reasons."""

    WAITING_FOR_SLOT = "WaitingForSlot"
    WAITING_FOR_MEMORY = "WaitingForMemory"
    WAITING_FOR_CPU = "WaitingForCPU"
    WAITING_FOR_RESOURCE = "WaitingForResource"  # an extended resource, named in the message
    MEMORY_RESERVED = "MemoryReserved"
    EXCEEDS_BUDGET = "ExceedsMemoryBudget"
    EXCEEDS_RESOURCE_BUDGET = "ExceedsResourceBudget"
    QUEUE_NOT_ADMITTING = "QueueNotAdmitting"
    RATE_LIMITED = "RateLimited"


class RejectReason(enum.StrEnum):
    """Why a job can never run in this queue; values are condition reasons."""

    EXCEEDS_MEMORY_MAX = "MemoryExceedsMax"


@dataclass(frozen=True, slots=True)
class Blocked:
    reason: BlockReason
    message: str


@dataclass(frozen=True, slots=True)
class Rejection:
    key: str
    reason: RejectReason
    message: str


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    """What to do now.

    `admit` is in admission order; `blocked_reasons` has an entry for every eligible pending job
    not admitted; `reserved_for` names the blocked head while memory is reserved for it;
    `wake_at` is when to decide again if nothing else happens first.
    """

    admit: tuple[str, ...] = ()
    reject: tuple[Rejection, ...] = ()
    blocked_reasons: Mapping[str, Blocked] = field(default_factory=dict)
    reserved_for: str | None = None
    wake_at: float | None = None
    preempt: tuple[str, ...] = ()  # admitted or running jobs to evict, for `preempt_for`
    preempt_for: str | None = None


def order_key(job: JobView) -> tuple[int, float, str]:
    """The admission order without aging: priority descending, then FIFO, then key."""
    return (-job.priority, job.created_at, job.key)


def effective_priority(job: JobView, policy: QueuePolicy, now: float) -> int:
    """The job's priority plus its aging boost at `now`."""
    if policy.aging_interval is None or job.priority >= policy.max_priority:
        return job.priority
    steps = int(max(0.0, now - job.queued_at) // policy.aging_interval)
    return min(job.priority + min(steps, policy.aging_max_boost), policy.max_priority)


def admission_order(policy: QueuePolicy, now: float) -> Callable[[JobView], tuple[int, float, str]]:
    """The sort key of the admission order at `now` (see "Order" and "Aging"): `order_key`,
    with each job's priority aged when the queue ages jobs."""
    if policy.aging_interval is None:
        return order_key
    return lambda job: (-effective_priority(job, policy, now), job.created_at, job.key)


def never_admitted(job: JobView, policy: QueuePolicy) -> Rejection | Blocked | None:
    """Why `job` can never be admitted under `policy`, whatever runs or finishes (see
    "Rejection"): a Rejection when its worker asks for more than `memory_max`; Blocked
    (`EXCEEDS_BUDGET`) when its whole pod is bigger than the whole `memory_budget`, which is
    not rejected here, and (`EXCEEDS_RESOURCE_BUDGET`) when its pod requests more of a
    resource than the whole budget of it; None when it can start once there is room."""
    if job.memory > policy.memory_max:
        return _rejection(job, policy)
    if job.pod_memory > policy.memory_budget:
        return _exceeds_budget(job, policy)
    if (resource := over_budget(job, policy)) is not None:
        return _exceeds_resource_budget(job, policy, resource)
    return None


def decide_admissions(snapshot: Snapshot, now: float) -> AdmissionDecision:
    """Decide which pending jobs to admit at `now`; see the module docstring for the rules."""
    policy = snapshot.policy

    # 1. Usage: admitted and running jobs hold a slot and their memory until they finish, and
    #    so do the pods of ended attempts until they have terminated.
    active = [job for job in snapshot.jobs if job.state is not JobState.PENDING]
    stopping = len(snapshot.stopping)
    stopping_memory = sum(pod.memory for pod in snapshot.stopping)
    slots_free = policy.concurrency - len(active) - stopping
    memory_free = policy.memory_budget - sum(job.pod_memory for job in active) - stopping_memory
    free, stopping_held = free_of(policy, active, snapshot.stopping)  # the other budgets
    order = resource_order(policy.budgets)

    # 2. Candidates: pending jobs that can run at all and are eligible now. The others either
    #    are rejected for good or set a time to look again. A job bigger than the budget stays
    #    a candidate that is never admitted (step 4).
    rejected: list[tuple[JobView, Rejection]] = []
    too_big: dict[str, Blocked] = {}
    runnable: list[JobView] = []
    for job in snapshot.jobs:
        if job.state is not JobState.PENDING:
            continue
        never = never_admitted(job, policy)
        if isinstance(never, Rejection):
            rejected.append((job, never))
            continue
        if never is not None:
            too_big[job.key] = never
        runnable.append(job)
    candidates = [job for job in runnable if job.eligible_at is None or job.eligible_at <= now]
    wake_times = [t for job in runnable if (t := job.eligible_at) is not None and t > now]
    reject = tuple(never for _, never in sorted(rejected, key=lambda pair: order_key(pair[0])))

    if not policy.admitting:
        # Paused or draining: nothing starts, but jobs still become eligible and wait visibly.
        paused = Blocked(BlockReason.QUEUE_NOT_ADMITTING, "the queue is not admitting new jobs")
        return AdmissionDecision(
            reject=reject,
            blocked_reasons=dict.fromkeys((job.key for job in candidates), paused),
            wake_at=min(wake_times, default=None),
        )

    # 3. Order: (aged) priority, then FIFO, then key.
    candidates.sort(key=admission_order(policy, now))

    # Starts left under the rate limit.
    starts_left = len(candidates)
    window: list[float] = []
    if policy.starts_per_minute is not None:
        window = sorted(t for t in snapshot.recent_starts if t > now - 60.0)
        starts_left = policy.starts_per_minute - len(window)

    # 4. Walk in order, admitting each job that fits the free slots and memory. A job that
    #    does not fit does not stop the walk (backfill) unless memory is reserved for it (5).
    #    Once slots run out or memory is reserved, every later job waits for the same reason:
    #    one shared Blocked keeps long queues cheap.
    admit: list[str] = []
    blocked_reasons: dict[str, Blocked] = {}
    blocked_head: JobView | None = None
    reserved_for: JobView | None = None
    behind_reservation: Blocked | None = None
    no_slot: Blocked | None = None
    rate_limited: Blocked | None = None
    preemptor: JobView | None = None
    for job in candidates:
        if behind_reservation is not None:
            blocked_reasons[job.key] = behind_reservation
        elif (too_big_for_budget := too_big.get(job.key)) is not None:
            blocked_reasons[job.key] = too_big_for_budget
        elif starts_left <= 0:
            rate_limited = rate_limited or _rate_limited(policy)
            blocked_reasons[job.key] = rate_limited
        elif slots_free <= 0:
            preemptor = preemptor or job
            no_slot = no_slot or _no_slot(policy, slots_free, stopping)
            blocked_reasons[job.key] = no_slot
        elif (
            short := MEMORY if job.pod_memory > memory_free else short_of(job, free, order)
        ) is not None:
            preemptor = preemptor or job
            if blocked_head is None:
                # 5. Starvation guard: the first job that does not fit may be overtaken only
                #    until its backfill window closes; then nothing behind it is admitted.
                blocked_head = job
                deadline = job.queued_at + policy.backfill_seconds
                if now >= deadline:
                    reserved_for = job
                    behind_reservation = _behind_reservation(job, policy)
                elif math.isfinite(deadline):  # backfill_seconds inf: never reserved
                    wake_times.append(deadline)
            reserved = reserved_for is job
            if short == MEMORY:
                blocked = _no_memory(job, policy, memory_free, stopping_memory, reserved=reserved)
            else:
                blocked = _no_resource(job, policy, short, free, stopping_held, reserved=reserved)
            blocked_reasons[job.key] = blocked
        else:
            admit.append(job.key)
            slots_free -= 1
            memory_free -= job.pod_memory
            take(job, free)
            starts_left -= 1

    if rate_limited is not None and policy.starts_per_minute is not None:
        # Look again when enough starts (this decision's included) have left the window.
        window += [now] * len(admit)
        wake_times.append(window[len(window) - policy.starts_per_minute] + 60.0)

    # 6. Preemption on behalf of the first job that waits for a slot or memory. What stopping
    #    pods hold is freed soon without evicting anyone (earlier victims among them): only
    #    the rest of the need is taken from running jobs.
    victims: tuple[str, ...] = ()
    if policy.preempt_lower_priority and preemptor is not None:
        victims = choose_victims(
            preemptor,
            active,
            slots_free + stopping,
            memory_free + stopping_memory,
            {name: free[name] + stopping_held[name] for name in free},
        )

    # 7. Result.
    return AdmissionDecision(
        admit=tuple(admit),
        reject=reject,
        blocked_reasons=blocked_reasons,
        reserved_for=None if reserved_for is None else reserved_for.key,
        wake_at=min(wake_times, default=None),
        preempt=victims,
        preempt_for=preemptor.key if victims and preemptor is not None else None,
    )


def choose_victims(
    preemptor: JobView,
    active: list[JobView],
    slots_free: int,
    memory_free: int,
    free: Mapping[str, int] | None = None,
) -> tuple[str, ...]:
    """The jobs to evict so that `preemptor` fits (see "Preemption" above), or () when
    evicting every lower-priority job would still not make room. `free` is what is left of
    each budget beyond memory; when the preemptor lacks some of that too, the fewest
    victims are found greedily over every resource (`budgets.fewest_victims`)."""
    slots_needed = 1 if slots_free <= 0 else 0
    slots_needed += max(0, -slots_free)  # the queue is over a lowered concurrency
    memory_needed = preemptor.pod_memory - memory_free
    lacking = {
        name: need
        for name, left in (free or {}).items()
        if (need := preemptor.requests.get(name, 0) - left) > 0
    }
    lower = [job for job in active if job.priority < preemptor.priority]
    for tier in sorted({job.priority for job in lower}):
        pool = [job for job in lower if job.priority <= tier]
        if lacking:
            needed = {MEMORY: memory_needed, **lacking}
            victims = fewest_victims(pool, slots_needed, needed)
            if victims is None:
                continue
            return tuple(job.key for job in victims)
        if len(pool) < slots_needed or sum(job.pod_memory for job in pool) < memory_needed:
            continue
        # The fewest jobs that free enough memory: the largest ones first.
        by_size = sorted((job.pod_memory for job in pool), reverse=True)
        count, freed = 0, 0
        while count < slots_needed or freed < memory_needed:
            freed += by_size[count]
            count += 1
        # Of the sets of that size, prefer lower priority and later admission: take a job
        # whenever the rest of the need can still be met by the largest jobs left.
        preference = sorted(pool, key=lambda j: (j.priority, -(j.admitted_at or 0.0), j.key))
        chosen: list[JobView] = []
        still_needed = memory_needed
        for index, job in enumerate(preference):
            left = count - len(chosen) - 1
            if left < 0:
                break
            rest = sorted((j.pod_memory for j in preference[index + 1 :]), reverse=True)[:left]
            if job.pod_memory + sum(rest) >= still_needed:
                chosen.append(job)
                still_needed -= job.pod_memory
        return tuple(job.key for job in chosen)
    return ()


def _rejection(job: JobView, policy: QueuePolicy) -> Rejection:
    message = (
        f"needs {format_bytes(job.memory)} but the queue's memory.max is "
        f"{format_bytes(policy.memory_max)}; lower the job's memory or raise memory.max"
    )
    return Rejection(job.key, RejectReason.EXCEEDS_MEMORY_MAX, message)


def _exceeds_budget(job: JobView, policy: QueuePolicy) -> Blocked:
    message = (
        f"needs {_needs(job)}, more than the queue's whole memory.budget of "
        f"{format_bytes(policy.memory_budget)}; it can start only if the budget is raised"
    )
    return Blocked(BlockReason.EXCEEDS_BUDGET, message)


def _exceeds_resource_budget(job: JobView, policy: QueuePolicy, resource: str) -> Blocked:
    needs = format_resource(resource, job.requests.get(resource, 0))
    budget = format_resource(resource, policy.budgets[resource])
    message = (
        f"its worker pod requests {needs} {resource}, more than the queue's whole budget of "
        f"{budget} (spec.budgets); it can start only if the budget is raised or the queue's "
        "template requests less"
    )
    return Blocked(BlockReason.EXCEEDS_RESOURCE_BUDGET, message)


def _no_resource(
    job: JobView,
    policy: QueuePolicy,
    resource: str,
    free: Mapping[str, int],
    stopping_held: Mapping[str, int],
    *,
    reserved: bool,
) -> Blocked:
    def show(units: int) -> str:
        return format_resource(resource, units)

    message = (
        f"waiting for {resource}: needs {show(job.requests.get(resource, 0))}, "
        f"{show(max(free[resource], 0))} free of {show(policy.budgets[resource])}"
    )
    if held := stopping_held.get(resource, 0):
        message += f" ({show(held)} held by worker pods still stopping)"
    if reserved:
        message += f"; {resource} is reserved for it, no job behind it starts first"
    cpu = resource == CPU
    return Blocked(
        BlockReason.WAITING_FOR_CPU if cpu else BlockReason.WAITING_FOR_RESOURCE, message
    )


def _needs(job: JobView) -> str:
    """The job's memory for a message: its pod's, and the worker's share when they differ."""
    if not job.overhead:
        return format_bytes(job.memory)
    return (
        f"{format_bytes(job.pod_memory)} ({format_bytes(job.memory)} for the worker, "
        f"{format_bytes(job.overhead)} for the rest of its pod)"
    )


def _no_slot(policy: QueuePolicy, slots_free: int, stopping: int) -> Blocked:
    in_use = policy.concurrency - slots_free
    message = f"waiting for a free slot: {in_use} of {policy.concurrency} "
    if stopping:
        message += f"in use ({in_use - stopping} admitted or running, {stopping} still stopping)"
    else:
        message += "admitted or running"
    return Blocked(BlockReason.WAITING_FOR_SLOT, message)


def _no_memory(
    job: JobView, policy: QueuePolicy, memory_free: int, stopping_memory: int, *, reserved: bool
) -> Blocked:
    message = (
        f"waiting for memory: needs {_needs(job)}, "
        f"{format_bytes(max(memory_free, 0))} free of {format_bytes(policy.memory_budget)}"
    )
    if stopping_memory:
        message += f" ({format_bytes(stopping_memory)} held by worker pods still stopping)"
    if reserved:
        message += "; memory is reserved for it, no job behind it starts first"
    return Blocked(BlockReason.WAITING_FOR_MEMORY, message)


def _rate_limited(policy: QueuePolicy) -> Blocked:
    message = (
        f"waiting for the rate limit: at most {policy.starts_per_minute} starts per minute "
        "(spec.rateLimit.startsPerMinute)"
    )
    return Blocked(BlockReason.RATE_LIMITED, message)


def _behind_reservation(head: JobView, policy: QueuePolicy) -> Blocked:
    message = (
        f"waiting behind {head.key}, which has waited over "
        f"{format_seconds(policy.backfill_seconds)} and has the free memory"
        f"{''.join(f', {name}' for name in resource_order(policy.budgets))} reserved"
    )
    return Blocked(BlockReason.MEMORY_RESERVED, message)
