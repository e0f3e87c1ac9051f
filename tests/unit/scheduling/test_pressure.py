"""Memory pressure rules (videoqueue.scheduling.pressure)."""

from __future__ import annotations

from collections.abc import Sequence

from videoqueue.scheduling.pressure import (
    PressurePolicy,
    PressureSignals,
    PressureState,
    next_pressure_state,
)

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
