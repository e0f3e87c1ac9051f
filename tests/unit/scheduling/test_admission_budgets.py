"""Admission within budgets beyond memory (CPU, extended resources): counted as memory is,
with their own wait reasons, reservations and preemption."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.scheduling.builders import GPU, job, key, names, queue, snapshot
from videoqueue.scheduling import (
    Blocked,
    BlockReason,
    JobState,
    JobView,
    Snapshot,
    StoppingPod,
    never_admitted,
)
from videoqueue.scheduling import decide_admissions as decide


def test_cpu_budget_admits_what_fits_and_the_rest_waits_for_cpu() -> None:
    state = snapshot(
        queue().budgets(cpu=1000),
        *(job(f"j{i}").created(i).requests(cpu=500) for i in range(3)),
    )

    decision = decide(state, now=10)

    assert names(decision.admit) == ["j0", "j1"]
    blocked = decision.blocked_reasons[key("j2")]
    assert blocked.reason is BlockReason.WAITING_FOR_CPU
    assert blocked.message == "waiting for cpu: needs 500m, 0 free of 1"


def test_extended_resource_waits_with_its_name_in_the_message() -> None:
    state = snapshot(
        queue().budgets(gpu=2),
        job("busy").requests(gpu=1).running(),
        job("a").created(1).requests(gpu=1),
        job("b").created(2).requests(gpu=1),
    )

    decision = decide(state, now=10)

    assert names(decision.admit) == ["a"]
    blocked = decision.blocked_reasons[key("b")]
    assert blocked == Blocked(
        BlockReason.WAITING_FOR_RESOURCE, f"waiting for {GPU}: needs 1, 0 free of 2"
    )


def test_pods_still_stopping_hold_their_requests() -> None:
    policy = queue().budgets(gpu=2).obj()
    views = (job("a").requests(gpu=2).obj(),)
    stopping = (StoppingPod("old-a1", 0, {GPU: 1}),)

    decision = decide(Snapshot(policy, views, stopping=stopping), now=0)

    assert decision.admit == ()
    assert decision.blocked_reasons[key("a")].message == (
        f"waiting for {GPU}: needs 2, 1 free of 2 (1 held by worker pods still stopping)"
    )


def test_memory_is_checked_first_then_cpu_then_other_resources() -> None:
    policy = queue().budget("2Gi").budgets(cpu=1000, gpu=1)
    busy = job("busy").memory("1Gi").requests(cpu=1000, gpu=1).running()
    reasons = {
        "all": job("all").memory("2Gi").requests(cpu=500, gpu=1),
        "cpu-and-gpu": job("cpu-and-gpu").memory("1Gi").requests(cpu=500, gpu=1),
        "gpu": job("gpu").memory("1Gi").requests(gpu=1),
    }

    decision = decide(snapshot(policy, busy, *reasons.values()), now=0)

    assert {name: decision.blocked_reasons[key(name)].reason for name in reasons} == {
        "all": BlockReason.WAITING_FOR_MEMORY,
        "cpu-and-gpu": BlockReason.WAITING_FOR_CPU,
        "gpu": BlockReason.WAITING_FOR_RESOURCE,
    }


def test_job_requesting_more_than_a_whole_budget_waits_and_holds_up_no_one() -> None:
    policy = queue().budgets(cpu=1000).backfill(0)
    wide = job("wide").priority(9).requests(cpu=2000)
    narrow = job("narrow").created(5).requests(cpu=500)

    decision = decide(snapshot(policy, wide, narrow), now=100)

    assert names(decision.admit) == ["narrow"]
    assert decision.reserved_for is None
    blocked = decision.blocked_reasons[key("wide")]
    assert blocked.reason is BlockReason.EXCEEDS_RESOURCE_BUDGET
    assert "requests 2 cpu, more than the queue's whole budget of 1 (spec.budgets)" in (
        blocked.message
    )
    assert never_admitted(wide.obj(), policy.obj()) == blocked


def test_cpu_is_reserved_for_the_blocked_head_once_its_backfill_window_closes() -> None:
    policy = queue().budgets(cpu=2000).backfill(60)
    views = (
        job("busy").requests(cpu=1500).running(),
        job("big").priority(5).requests(cpu=1000),
        job("small").created(1).requests(cpu=500),
    )

    during = decide(snapshot(policy, *views), now=30)
    after = decide(snapshot(policy, *views), now=60)

    assert names(during.admit) == ["small"]
    assert during.wake_at == 60
    assert after.admit == ()
    assert after.reserved_for == key("big")
    assert after.blocked_reasons[key("big")].message.endswith(
        "; cpu is reserved for it, no job behind it starts first"
    )
    behind = after.blocked_reasons[key("small")]
    assert behind.reason is BlockReason.MEMORY_RESERVED
    assert behind.message.endswith("has the free memory, cpu reserved")


def test_preemption_frees_the_extended_resource_the_preemptor_lacks() -> None:
    policy = queue().budgets(gpu=2).preempting()
    views = (
        job("low-cpu-only").priority(1).requests(cpu=500).running(),
        job("low-gpu").priority(1).requests(gpu=1).running(),
        job("mid-gpu").priority(3).requests(gpu=1).running(),
        job("high").priority(8).requests(gpu=1),
    )

    decision = decide(snapshot(policy, *views), now=0)

    assert names(decision.preempt) == ["low-gpu"]
    assert decision.preempt_for == key("high")


RUNNING = st.lists(
    st.tuples(st.integers(0, 9), st.integers(0, 3), st.integers(0, 4), st.integers(0, 2)),
    min_size=1,
    max_size=8,
)


@given(RUNNING, st.integers(0, 9), st.integers(0, 3), st.integers(0, 4), st.integers(1, 2))
def test_preemption_victims_make_room_in_every_budget_and_each_is_needed(
    running: list[tuple[int, int, int, int]], priority: int, memory: int, cpu: int, gpu: int
) -> None:
    # Memory in GiB, cpu in 500m steps, GPUs: every victim is of lower priority, and
    # evicting them leaves room in every budget, which no smaller subset of them would.
    policy = queue().concurrency(6).budget("4Gi").budgets(cpu=2000, gpu=2).preempting().obj()
    views = [
        job(f"r{i}").priority(p).memory(f"{m}Gi").requests(cpu=c * 500, gpu=g).running().obj()
        for i, (p, m, c, g) in enumerate(running)
    ]
    pending = job("new").priority(priority).memory(f"{memory}Gi").requests(cpu=cpu * 500, gpu=gpu)

    decision = decide(Snapshot(policy, (*views, pending.obj())), now=0)

    if not decision.preempt:
        return
    victims = {v.key for v in views if v.key in decision.preempt}
    assert all(v.priority < priority for v in views if v.key in victims)

    def room_without(evicted: set[str]) -> bool:
        rest = [v for v in views if v.key not in evicted]
        need = pending.obj()
        return (
            len(rest) < policy.concurrency
            and sum(v.pod_memory for v in rest) + need.pod_memory <= policy.memory_budget
            and all(
                sum(v.requests.get(r, 0) for v in rest) + need.requests.get(r, 0) <= budget
                for r, budget in policy.budgets.items()
            )
        )

    assert room_without(victims)
    assert not any(room_without(victims - {victim}) for victim in victims)


def test_requests_of_admitted_jobs_count_like_running_ones() -> None:
    policy = queue().budgets(cpu=1000).obj()
    admitted = JobView(key("a"), 0, 0, 0, 0, JobState.ADMITTED, requests={"cpu": 1000})
    pending = JobView(key("b"), 0, 1, 1, 0, requests={"cpu": 1})

    decision = decide(Snapshot(policy, (admitted, pending)), now=5)

    assert decision.blocked_reasons[key("b")].reason is BlockReason.WAITING_FOR_CPU
