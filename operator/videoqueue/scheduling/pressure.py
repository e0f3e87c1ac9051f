"""Memory pressure: how far a queue lowers its concurrency while workers run out of memory.

Signals are OOMKilled attempts of the queue's jobs and nodes that run its workers reporting
the MemoryPressure condition. Rules (times in epoch seconds, all inputs passed in):

- Pressure is *on* while a node running the queue's workers reports MemoryPressure, or when
  at least `oom_kills` attempts ended OOMKilled within the last `window_seconds` *and* since
  the last step down (so the same kills do not count twice).
- While pressure is on, the effective concurrency is halved (rounded down, at least 1), at
  most once per `recovery_seconds`.
- Once calm, that is no pressure and no OOM kill for `recovery_seconds` since the last step,
  it rises by one, then by one again after each further `recovery_seconds`, up to the
  queue's concurrency.
- The effective concurrency never exceeds the queue's concurrency (a lowered spec applies
  at once).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from videoqueue.api import ConditionStatus, QueueConditionType, VideoQueue, find_condition
from videoqueue.scheduling.jobs import Notice


@dataclass(frozen=True, slots=True)
class PressurePolicy:
    oom_kills: int = 3
    window_seconds: float = 600.0
    recovery_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class PressureState:
    """The effective concurrency, when it last changed, and why it is lowered (None: not)."""

    effective: int
    changed_at: float
    reason: str | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class PressureSignals:
    oom_kill_times: Sequence[float] = ()
    pressured_nodes: Sequence[str] = ()


def next_pressure_state(
    state: PressureState | None,
    *,
    concurrency: int,
    signals: PressureSignals,
    policy: PressurePolicy,
    now: float,
) -> tuple[PressureState, float | None]:
    """The state at `now` and when to look again (None: only a new signal can change it)."""
    if state is None:
        state = PressureState(effective=concurrency, changed_at=now)
    effective = min(state.effective, concurrency)
    since = max(now - policy.window_seconds, state.changed_at if state.reason else -1.0)
    recent_kills = [t for t in signals.oom_kill_times if t > since]
    reason, message = None, ""
    if signals.pressured_nodes:
        nodes = ", ".join(sorted(signals.pressured_nodes)[:3])
        reason, message = "NodeMemoryPressure", f"nodes report MemoryPressure: {nodes}"
    elif len(recent_kills) >= policy.oom_kills:
        reason = "OOMKills"
        message = (
            f"{len(recent_kills)} attempts ended OOMKilled within {policy.window_seconds:.0f}s"
        )
    next_step = state.changed_at + policy.recovery_seconds
    if reason is not None:
        if effective > 1 and (state.reason is None or now >= next_step):
            lowered = max(1, effective // 2)
            return (
                PressureState(lowered, now, reason, f"{message}; concurrency lowered to {lowered}"),
                now + policy.recovery_seconds,
            )
        return PressureState(effective, state.changed_at, reason, state.message or message), (
            next_step if effective > 1 else None
        )
    if effective >= concurrency:
        return PressureState(concurrency, state.changed_at), None
    calm_since = max([state.changed_at, *signals.oom_kill_times])
    if now >= calm_since + policy.recovery_seconds:
        raised = effective + 1
        if raised >= concurrency:
            return PressureState(concurrency, now), None
        return (
            PressureState(raised, now, "Recovering", f"calm again; concurrency raised to {raised}"),
            now + policy.recovery_seconds,
        )
    return (
        PressureState(effective, state.changed_at, state.reason or "Recovering", state.message),
        calm_since + policy.recovery_seconds,
    )


def queue_pressure(
    queue: VideoQueue, before: PressureState | None, signals: PressureSignals, now: float
) -> tuple[PressureState, float | None, Notice | None]:
    """`next_pressure_state` with the queue's spec.memoryPressure settings, and the Event to
    post when the effective concurrency moved."""
    settings = queue.spec.memory_pressure
    state, due = next_pressure_state(
        before,
        concurrency=queue.spec.concurrency,
        signals=signals,
        policy=PressurePolicy(
            oom_kills=settings.oom_kills,
            window_seconds=float(settings.window_seconds),
            recovery_seconds=float(settings.recovery_seconds),
        ),
        now=now,
    )
    if before is None or state.effective == before.effective:
        return state, due, None
    lowered = state.effective < before.effective
    message = (
        f"effective concurrency {before.effective} -> {state.effective} of "
        f"{queue.spec.concurrency}: {state.message or 'calm again'}"
    )
    reason = "MemoryPressure" if lowered else "PressureEased"
    return state, due, Notice("Warning" if lowered else "Normal", reason, message)


# -- kept in the queue's status, so that a restarted operator resumes where it was ----------

_EFFECTIVE = "; effective concurrency "


def describe_pressure(state: PressureState, concurrency: int) -> str:
    """The MemoryPressure condition's message (`pressure_from_status` reads it back)."""
    return f"{state.message}{_EFFECTIVE}{state.effective} of {concurrency}"


def pressure_since(state: PressureState | None, concurrency: int) -> datetime.datetime | None:
    """status.effectiveConcurrencySince: when the state last moved, while it is lowered or
    under pressure (whole seconds; None once back at the queue's concurrency)."""
    if state is None or (state.effective >= concurrency and state.reason is None):
        return None
    return datetime.datetime.fromtimestamp(int(state.changed_at), datetime.UTC)


def pressure_from_status(queue: VideoQueue) -> PressureState | None:
    """The state a queue's status records (effectiveConcurrency, effectiveConcurrencySince
    and the MemoryPressure condition), or None when it records none: the step-down of a
    queue that stepped 4 -> 2 -> 1 survives a restart, and so does the recovery's clock."""
    status = queue.status
    since, effective = status.effective_concurrency_since, status.effective_concurrency
    if not queue.spec.memory_pressure.enabled or since is None or effective is None:
        return None
    reason, message = None, ""
    pressed = find_condition(status.conditions, QueueConditionType.MEMORY_PRESSURE)
    if pressed is not None and pressed.status == ConditionStatus.TRUE:
        reason, message = pressed.reason, pressed.message.rpartition(_EFFECTIVE)[0]
    return PressureState(
        effective=min(effective, queue.spec.concurrency),
        changed_at=since.timestamp(),
        reason=reason,
        message=message,
    )
