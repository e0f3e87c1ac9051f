"""Properties of `decide_admissions` over random snapshots and simulated timelines."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.scheduling.checks import (
    assert_admissions_within_limits,
    assert_follows_the_order,
    candidates,
    over_a_budget,
    resource_usage,
    resources_fit,
    usage,
)
from tests.unit.scheduling.simulator import Arrival, Step, simulate
from tests.unit.scheduling.strategies import (
    arrivals,
    memories,
    policies,
    roomy_snapshots,
    snapshots,
    times,
)
from videoqueue.scheduling import (
    Blocked,
    BlockReason,
    JobState,
    QueuePolicy,
    Rejection,
    Snapshot,
    admission_order,
    never_admitted,
)
from videoqueue.scheduling import decide_admissions as decide

SNAPSHOTS = settings(max_examples=100, deadline=None)
TIMELINES = settings(max_examples=60, deadline=None)


@SNAPSHOTS
@given(snapshots() | roomy_snapshots(), times)
def test_admissions_never_take_the_queue_over_a_limit(state: Snapshot, now: float) -> None:
    decision = decide(state, now)

    assert_admissions_within_limits(state, decision)
    jobs, memory = usage(state)
    over = over_a_budget(state.policy, resource_usage(state))
    if jobs > state.policy.concurrency or memory > state.policy.memory_budget or over:
        assert decision.admit == (), "nothing starts while the queue is over a limit"


@SNAPSHOTS
@given(snapshots() | roomy_snapshots(), times)
def test_every_job_is_admitted_or_skipped_for_a_reason_at_its_turn(
    state: Snapshot, now: float
) -> None:
    assert_follows_the_order(state, now, decide(state, now))


@SNAPSHOTS
@given(snapshots(admitting=True) | roomy_snapshots(), times)
def test_nothing_left_waiting_would_fit_in_what_remains(state: Snapshot, now: float) -> None:
    decision = decide(state, now)
    jobs, memory = usage(state, decision.admit)
    slots_free, memory_free = state.policy.concurrency - jobs, state.policy.memory_budget - memory
    used = resource_usage(state, decision.admit)
    free = {name: budget - used[name] for name, budget in state.policy.budgets.items()}
    order = candidates(state, now)
    if decision.reserved_for is not None:  # jobs behind a reservation wait whatever fits
        order = order[: [job.key for job in order].index(decision.reserved_for)]

    for job in order:
        if job.key not in decision.admit:
            fits = job.pod_memory <= memory_free and resources_fit(job, free)
            assert slots_free <= 0 or not fits, job


@SNAPSHOTS
@given(snapshots() | roomy_snapshots(), times, memories)
def test_fifo_and_priority_order_when_memory_is_uniform(
    state: Snapshot, now: float, memory: int
) -> None:
    # With equal memory, a job that does not fit means no later one fits: no backfill can
    # happen, so the admitted jobs are exactly the first ones in the order.
    uniform = dataclasses.replace(
        state,
        jobs=tuple(
            dataclasses.replace(job, memory=memory, overhead=0, requests={}) for job in state.jobs
        ),
    )
    order = [job.key for job in candidates(uniform, now)]

    admit = decide(uniform, now).admit

    assert list(admit) == order[: len(admit)]


@SNAPSHOTS
@given(snapshots() | roomy_snapshots(), times, st.data())
def test_same_input_same_decision_whatever_the_job_order(
    state: Snapshot, now: float, data: st.DataObject
) -> None:
    shuffled = dataclasses.replace(state, jobs=tuple(data.draw(st.permutations(state.jobs))))

    assert decide(shuffled, now) == decide(state, now) == decide(state, now)


@SNAPSHOTS
@given(snapshots() | roomy_snapshots(), times)
def test_every_pending_job_is_admitted_blocked_rejected_or_not_yet_eligible(
    state: Snapshot, now: float
) -> None:
    decision = decide(state, now)
    pending = [job for job in state.jobs if job.state is JobState.PENDING]

    rejected = [job.key for job in pending if job.memory > state.policy.memory_max]
    eligible = {job.key for job in candidates(state, now)}
    assert sorted(r.key for r in decision.reject) == sorted(rejected), "exactly those over max"
    assert set(decision.admit) | set(decision.blocked_reasons) == eligible
    assert not set(decision.admit) & set(decision.blocked_reasons)


@SNAPSHOTS
@given(snapshots() | roomy_snapshots(), times)
def test_never_admitted_agrees_with_the_decision(state: Snapshot, now: float) -> None:
    # The exported rule (the plugin's estimate uses it) says what decide_admissions does.
    decision = decide(state, now)
    rejections = {r.key: r for r in decision.reject}
    admitted = set(decision.admit)
    for job in state.jobs:
        if job.state is not JobState.PENDING:
            continue
        never = never_admitted(job, state.policy)
        assert (job.key in rejections) == isinstance(never, Rejection), job
        if isinstance(never, Rejection):
            assert rejections[job.key] == never
        if never is not None:
            assert job.key not in admitted, job
        if isinstance(never, Blocked) and job.key in decision.blocked_reasons:
            # Unless it waits behind a reservation or the queue is not admitting.
            blocked = decision.blocked_reasons[job.key]
            assert blocked == never or blocked.reason in (
                BlockReason.MEMORY_RESERVED,
                BlockReason.QUEUE_NOT_ADMITTING,
            ), (job, blocked)


@SNAPSHOTS
@given(snapshots() | roomy_snapshots(), times, st.none() | st.sampled_from([1.0, 30.0, 600.0]))
def test_admissions_follow_admission_order(
    state: Snapshot, now: float, aging_interval: float | None
) -> None:
    policy = dataclasses.replace(state.policy, aging_interval=aging_interval)
    state = dataclasses.replace(state, policy=policy)
    decision = decide(state, now)
    by_key = {job.key: job for job in state.jobs}
    admitted = [by_key[k] for k in decision.admit]
    assert admitted == sorted(admitted, key=admission_order(state.policy, now))


@SNAPSHOTS
@given(snapshots() | roomy_snapshots(), times, st.floats(0, 1, exclude_max=True))
def test_decision_holds_until_wake_at_and_changes_then(
    state: Snapshot, now: float, fraction: float
) -> None:
    decision = decide(state, now)
    horizon = now + 10_000 if decision.wake_at is None else decision.wake_at

    before_horizon = min(now + fraction * (horizon - now), math.nextafter(horizon, now))

    assert decision.wake_at is None or decision.wake_at > now
    assert decide(state, before_horizon) == decision
    if decision.wake_at is not None:
        assert decide(state, decision.wake_at) != decision


def _check_step(policy: QueuePolicy) -> Callable[[Step], None]:
    def check(step: Step) -> None:
        jobs, memory = usage(step.snapshot)
        assert jobs <= policy.concurrency
        assert memory <= policy.memory_budget
        assert not over_a_budget(policy, resource_usage(step.snapshot))
        assert_admissions_within_limits(step.snapshot, step.decision)
        assert_follows_the_order(step.snapshot, step.now, step.decision)

    return check


@TIMELINES
@given(
    policies(admitting=True, min_concurrency=1),
    arrivals(),
    st.sampled_from([0.0, 1.0, 3.0]),
    st.data(),
)
def test_simulated_queue_keeps_its_limits_and_runs_every_job_that_can_run(
    policy: QueuePolicy, jobs: list[Arrival], start_latency: float, data: st.DataObject
) -> None:
    keys = [arrival.key for arrival in jobs]
    evict_once = data.draw(st.frozensets(st.sampled_from(keys)) if keys else st.just(frozenset()))

    timeline = simulate(
        policy,
        jobs,
        start_latency=start_latency,
        evict_once=evict_once,
        on_step=_check_step(policy),
    )

    fits_at_all = min(policy.memory_max, policy.memory_budget)
    assert set(timeline.finished_at) == {
        a.key
        for a in jobs
        if a.memory <= fits_at_all
        and all(a.requests.get(name, 0) <= budget for name, budget in policy.budgets.items())
    }
    assert timeline.rejected == {a.key for a in jobs if a.memory > policy.memory_max}
