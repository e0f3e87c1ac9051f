"""Retry rules: whether a failed attempt is retried, after how long, and with how much memory.

Counting attempts. `attempt` below is the attempt number that counts against `maxAttempts`
(1 for the first). A disruption (the pod was evicted, preempted, deleted by someone else, or
its node went away) is not the job's fault: it does not use up an attempt, and the job is
re-queued at once at its old place in the order, without backoff. Worker pods must therefore
be named from a counter that grows with every pod (e.g. the length of the attempt history),
not from `attempt`, or the re-queued attempt would collide with the disrupted pod's name.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Final

from videoqueue.scheduling.units import MiB

OOM_KILLED: Final = "OOMKilled"

# Failure reasons that are not the job's fault (see the module docstring).
DISRUPTION_REASONS: Final = frozenset(
    {"Evicted", "Preempted", "Disrupted", "NodeLost", "Deleted", "Suspended"}
)


def consumes_attempt(reason: str) -> bool:
    """Whether an attempt that ended with `reason` counts against `maxAttempts`."""
    return reason not in DISRUPTION_REASONS


def should_retry(attempt: int, max_attempts: int, reason: str) -> bool:
    """Whether a job whose attempt number `attempt` just failed with `reason` runs again.

    Disruptions are always retried (the attempt number stays); any other failure is retried
    while attempts remain.
    """
    return not consumes_attempt(reason) or attempt < max_attempts


def backoff_delay(attempt: int, initial: float, factor: float, maximum: float) -> float:
    """Seconds to wait before the next attempt after attempt number `attempt` failed.

    `initial` after the first failure, multiplied by `factor` for each further one, never more
    than `maximum`.
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    try:
        delay = initial * factor ** (attempt - 1)
    except OverflowError:
        return maximum
    return min(delay, maximum)


def next_memory_after_oom(current: int, multiplier: float, memory_max: int) -> int:
    """Memory in bytes for the attempt after an OOMKilled one.

    `current` times `multiplier`, rounded up to a whole MiB, never more than `memory_max` (a job
    asking more than that would be rejected) and never less than `current` unless capped. The
    controller should pass the smaller of `memory.max` and `memory.budget` if the queue allows
    a max above its budget, or the grown job could never start.
    """
    # The multiplier's decimal spelling (1.1, not its binary approximation) so that
    # 10Mi x 1.1 is exactly 11Mi, not a hair above it and rounded up to 12Mi.
    grown = math.ceil(current * Fraction(repr(multiplier)) / MiB) * MiB
    return min(max(grown, current), memory_max)
