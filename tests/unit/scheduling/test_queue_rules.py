"""Aging, the start rate limit and preemption (see videoqueue.scheduling.admission)."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.scheduling.builders import job, key, names, queue
from videoqueue.scheduling import (
    BlockReason,
    JobState,
    JobView,
    QueuePolicy,
    Snapshot,
    StoppingPod,
    admission_order,
)
from videoqueue.scheduling import decide_admissions as decide
from videoqueue.scheduling.admission import effective_priority
from videoqueue.scheduling.units import GiB


def policy(**changes: object) -> QueuePolicy:
    return dataclasses.replace(queue().concurrency(1).obj(), **changes)  # type: ignore[arg-type]


# -- aging --------------------------------------------------------------------------------


def test_without_aging_high_priority_stream_always_wins() -> None:
    views = (
        job("old-low").priority(0).created(0).obj(),
        job("new-high").priority(9).created(999).obj(),
    )
    assert names(decide(Snapshot(policy(), views), now=10_000).admit) == ["new-high"]


def test_aging_lets_a_long_waiting_low_priority_job_overtake() -> None:
    aged = policy(aging_interval=60.0)
    views = (
        job("old-low").priority(0).created(0).obj(),
        job("new-high").priority(9).created(999).obj(),
    )
    # After 9 intervals the old job competes as priority 9 and is older: it goes first.
    assert names(decide(Snapshot(aged, views), now=9 * 60).admit) == ["old-low"]
    # One interval earlier it is still behind.
    assert names(decide(Snapshot(aged, views), now=8 * 60).admit) == ["new-high"]


def test_admission_order_ages_priorities_when_the_queue_ages_jobs() -> None:
    views = [
        job("new-high").priority(9).created(999).obj(),
        job("old-low").priority(0).created(0).obj(),
        job("mid").priority(5).created(500).obj(),
    ]
    plain = sorted(views, key=admission_order(policy(), now=9 * 60))
    assert names(v.key for v in plain) == ["new-high", "mid", "old-low"]
    # After 9 intervals old-low competes as priority 9 and, being older, goes first; mid,
    # queued at 500, has earned no step yet.
    aged = sorted(views, key=admission_order(policy(aging_interval=60.0), now=9 * 60))
    assert names(v.key for v in aged) == ["old-low", "new-high", "mid"]


def test_aging_boost_is_capped_by_max_boost_and_top_priority() -> None:
    view = job("a").priority(3).created(0).obj()
    assert effective_priority(view, policy(aging_interval=10.0, aging_max_boost=2), 1000) == 5
    assert effective_priority(view, policy(aging_interval=10.0), 1000) == 10
    assert effective_priority(view, policy(), 1000) == 3


def test_aging_boosts_do_not_schedule_wake_ups() -> None:
    # Thousands of waiting jobs would each add a wake-up; a finishing job wakes anyway.
    aged = policy(aging_interval=60.0, concurrency=0)
    views = tuple(job(f"j{i}").priority(0).created(i).obj() for i in range(100))
    assert decide(Snapshot(aged, views), now=30).wake_at is None


# -- rate limit ---------------------------------------------------------------------------


def test_rate_limit_caps_starts_in_a_minute() -> None:
    limited = policy(concurrency=10, starts_per_minute=3)
    views = tuple(job(f"j{i}").created(i).obj() for i in range(5))
    decision = decide(Snapshot(limited, views, recent_starts=(100.0,)), now=110)
    assert names(decision.admit) == ["j0", "j1"]
    assert decision.blocked_reasons[key("j2")].reason is BlockReason.RATE_LIMITED
    # The start at t=100 leaves the window at t=160.
    assert decision.wake_at == 160


def test_rate_limit_ignores_starts_older_than_a_minute() -> None:
    limited = policy(concurrency=10, starts_per_minute=2)
    views = tuple(job(f"j{i}").created(i).obj() for i in range(3))
    decision = decide(Snapshot(limited, views, recent_starts=(0.0, 1.0)), now=61.5)
    assert names(decision.admit) == ["j0", "j1"]


# -- preemption ---------------------------------------------------------------------------


def running(
    name: str, priority: int, memory: int, admitted_at: float = 0.0, overhead: int = 0
) -> JobView:
    return JobView(
        key=key(name),
        priority=priority,
        created_at=0,
        queued_at=0,
        memory=memory,
        state=JobState.RUNNING,
        admitted_at=admitted_at,
        overhead=overhead,
    )


def test_no_preemption_unless_asked() -> None:
    views = (running("low", 1, GiB), job("high").priority(9).obj())
    decision = decide(Snapshot(policy(), views), now=0)
    assert decision.preempt == ()


def test_preemption_evicts_the_lowest_priority_job_for_a_slot() -> None:
    preempting = policy(concurrency=2, preempt_lower_priority=True)
    views = (
        running("mid", 5, GiB),
        running("low", 1, GiB),
        job("high").priority(9).created(5).obj(),
    )
    decision = decide(Snapshot(preempting, views), now=10)
    assert names(decision.preempt) == ["low"]
    assert decision.preempt_for == key("high")


def test_preemption_never_evicts_equal_or_higher_priority() -> None:
    preempting = policy(concurrency=1, preempt_lower_priority=True)
    views = (running("same", 5, GiB), job("new").priority(5).obj())
    assert decide(Snapshot(preempting, views), now=0).preempt == ()


def test_preemption_takes_the_fewest_jobs_that_free_enough_memory() -> None:
    preempting = dataclasses.replace(
        policy(concurrency=10, preempt_lower_priority=True), memory_budget=8 * GiB
    )
    views = (
        running("small-a", 1, GiB),
        running("small-b", 1, GiB),
        running("big", 2, 4 * GiB),
        running("other", 2, 2 * GiB),
        job("high").priority(9).memory("4Gi").obj(),
    )
    # 0 free; 4Gi needed. Tier 1 (2Gi) is not enough; tier 2 allows one job: big.
    assert names(decide(Snapshot(preempting, views), now=0).preempt) == ["big"]


def test_preemption_counts_whole_pods() -> None:
    preempting = dataclasses.replace(
        policy(concurrency=10, preempt_lower_priority=True), memory_budget=8 * GiB
    )
    views = (
        running("small-worker-big-pod", 1, GiB, overhead=3 * GiB),
        running("other", 2, 2 * GiB),
        running("more", 2, 2 * GiB),
        job("high").priority(9).memory("1Gi").overhead("3Gi").obj(),
    )
    # 0 free; the preemptor's pod needs 4Gi: evicting the 1Gi worker frees its whole 4Gi pod.
    assert names(decide(Snapshot(preempting, views), now=0).preempt) == ["small-worker-big-pod"]


def test_preemption_prefers_lower_priority_among_equally_few() -> None:
    preempting = dataclasses.replace(
        policy(concurrency=10, preempt_lower_priority=True), memory_budget=4 * GiB
    )
    views = (
        running("p1", 1, 2 * GiB),
        running("p2", 2, 2 * GiB),
        job("high").priority(9).memory("2Gi").obj(),
    )
    assert names(decide(Snapshot(preempting, views), now=0).preempt) == ["p1"]


def test_preemption_gives_up_when_even_all_lower_jobs_are_not_enough() -> None:
    preempting = dataclasses.replace(
        policy(concurrency=10, preempt_lower_priority=True), memory_budget=4 * GiB
    )
    views = (
        running("low", 1, GiB),
        running("high-running", 9, 3 * GiB),
        job("high").priority(8).memory("3Gi").obj(),
    )
    assert decide(Snapshot(preempting, views), now=0).preempt == ()


@given(
    st.lists(st.tuples(st.integers(0, 10), st.integers(1, 4)), min_size=1, max_size=8),
    st.integers(0, 10),
    st.integers(1, 4),
    st.integers(1, 8),
)
def test_preemption_victims_make_room_and_are_lower_priority(
    running_jobs: list[tuple[int, int]], priority: int, memory: int, concurrency: int
) -> None:
    preempting = dataclasses.replace(
        policy(concurrency=concurrency, preempt_lower_priority=True), memory_budget=8 * GiB
    )
    views = [running(f"r{i}", p, m * GiB, i) for i, (p, m) in enumerate(running_jobs)]
    pending = JobView(key("new"), priority, 100, 100, memory * GiB)
    decision = decide(Snapshot(preempting, (*views, pending)), now=100)
    if not decision.preempt:
        return
    victims = [v for v in views if v.key in decision.preempt]
    assert all(v.priority < priority for v in victims)
    rest = [v for v in views if v.key not in decision.preempt]
    assert len(rest) < concurrency
    assert sum(v.memory for v in rest) + pending.memory <= 8 * GiB


def test_preemption_waits_for_its_victims_to_stop_instead_of_evicting_more() -> None:
    # The victim of the last cycle is pending again and its pod still stops: what it frees
    # is on its way, so the preemptor waits rather than evicting the next job too.
    preempting = policy(concurrency=2, preempt_lower_priority=True)
    views = (
        running("mid", 5, GiB),
        job("low").priority(1).obj(),
        job("high").priority(9).created(5).obj(),
    )
    before = decide(Snapshot(preempting, views), now=10)
    assert before.admit == (key("high"),)

    while_stopping = Snapshot(preempting, views, stopping=(StoppingPod("low-a1", GiB),))
    decision = decide(while_stopping, now=10)
    assert decision.admit == ()
    assert decision.preempt == ()
    # Once more is needed than the stopping pods free, lower-priority jobs are evicted.
    crowded = dataclasses.replace(preempting, concurrency=1)
    decision = decide(dataclasses.replace(while_stopping, policy=crowded), now=10)
    assert names(decision.preempt) == ["mid"]
