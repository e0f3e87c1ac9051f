"""Memory pressure rules (videoqueue.scheduling.pressure)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from videoqueue.envtest.builders import MakeQueue
from videoqueue.scheduling.pressure import (
    PressurePolicy,
    PressureSignals,
    PressureState,
    next_pressure_state,
    pressure_from_status,
)
from videoqueue.scheduling.queue_status import QueueFacts, summarize_queue

POLICY = PressurePolicy(oom_kills=2, window_seconds=100, recovery_seconds=10)


def step(
    state: PressureState | None,
    now: float,
    *,
    oom_kill_times: Sequence[float] = (),
    pressured_nodes: Sequence[str] = (),
) -> PressureState:
    new, _ = next_pressure_state(
        state,
        concurrency=8,
        signals=PressureSignals(oom_kill_times, pressured_nodes),
        policy=POLICY,
        now=now,
    )
    return new


def test_calm_queue_keeps_full_concurrency() -> None:
    assert step(None, 0).effective == 8
    assert step(None, 0, oom_kill_times=[0.0]).effective == 8  # one kill is not "keep"


def test_repeated_oom_kills_halve_then_recover_step_by_step() -> None:
    state = step(None, 50, oom_kill_times=[40.0, 45.0])
    assert (state.effective, state.reason) == (4, "OOMKills")
    # The same kills do not lower it again.
    assert step(state, 55, oom_kill_times=[40.0, 45.0]).effective == 4
    # Two fresh kills after the drop do, once recovery_seconds have passed.
    lowered = step(state, 70, oom_kill_times=[40.0, 45.0, 60.0, 65.0])
    assert lowered.effective == 2
    # Calm: one step up per recovery_seconds.
    up = step(lowered, 75, oom_kill_times=[65.0])
    assert up.effective == 2
    up = step(lowered, 80, oom_kill_times=[65.0])
    assert up.effective == 3
    assert step(up, 91, oom_kill_times=[65.0]).effective == 4


def test_node_pressure_halves_down_to_one() -> None:
    state = step(None, 0, pressured_nodes=["n1"])
    assert (state.effective, state.reason) == (4, "NodeMemoryPressure")
    state = step(state, 10, pressured_nodes=["n1"])
    state = step(state, 20, pressured_nodes=["n1"])
    state = step(state, 30, pressured_nodes=["n1"])
    assert state.effective == 1


def test_recovery_ends_at_the_spec_and_clears_the_reason() -> None:
    state = PressureState(7, 0, "Recovering")
    recovered = step(state, 10)
    assert (recovered.effective, recovered.reason) == (8, None)


def test_lowered_spec_applies_at_once() -> None:
    new, _ = next_pressure_state(
        PressureState(8, 0), concurrency=3, signals=PressureSignals(), policy=POLICY, now=1
    )
    assert new.effective == 3


def test_the_step_down_survives_a_restart_through_the_queue_status() -> None:
    """What the queue's status records is what a restarted operator resumes from: the
    effective value, when it last moved, and why (a queue stepped 4 -> 2 -> 1 stays at 1)."""
    queue = MakeQueue("work", "media").concurrency(4).memory_pressure(oomKills=2).model()
    now = datetime.datetime(2026, 1, 1, 10, 0, tzinfo=datetime.UTC)
    lowered = PressureState(
        effective=1, changed_at=now.timestamp() - 30.5, reason="OOMKills", message="2 OOM kills"
    )
    status = summarize_queue(queue, [], now, facts=QueueFacts(pressure=lowered))
    assert status.effective_concurrency == 1
    assert status.effective_concurrency_since is not None
    written = queue.model_copy(update={"status": status})
    assert pressure_from_status(written) == PressureState(
        effective=1, changed_at=now.timestamp() - 31, reason="OOMKills", message="2 OOM kills"
    )

    # Recovering (lowered, calm): the clock of the next step up survives too.
    calm = PressureState(effective=2, changed_at=now.timestamp() - 5)
    status = summarize_queue(queue, [], now, facts=QueueFacts(pressure=calm))
    assert pressure_from_status(queue.model_copy(update={"status": status})) == calm

    # Back at the spec's concurrency, or never lowered: nothing to resume.
    back = PressureState(effective=4, changed_at=now.timestamp())
    status = summarize_queue(queue, [], now, facts=QueueFacts(pressure=back))
    assert status.effective_concurrency_since is None
    assert pressure_from_status(queue.model_copy(update={"status": status})) is None
    assert pressure_from_status(queue) is None
