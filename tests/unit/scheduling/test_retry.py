"""Retry rules: which failures use up an attempt, backoff, and memory growth after OOM."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.scheduling.builders import parse_memory
from videoqueue.api import format_bytes
from videoqueue.scheduling import (
    DISRUPTION_REASONS,
    OOM_KILLED,
    backoff_delay,
    consumes_attempt,
    next_memory_after_oom,
    should_retry,
)
from videoqueue.scheduling.units import MiB

PROPERTIES = settings(max_examples=100, deadline=None)


@pytest.mark.parametrize(
    ("reason", "consumes"),
    [
        pytest.param("Evicted", False, id="evicted"),
        pytest.param("Preempted", False, id="preempted"),
        pytest.param("Disrupted", False, id="disrupted"),
        pytest.param("NodeLost", False, id="node-lost"),
        pytest.param("Deleted", False, id="pod-deleted-by-someone-else"),
        pytest.param(OOM_KILLED, True, id="oom-killed"),
        pytest.param("Error", True, id="error"),
        pytest.param("DeadlineExceeded", True, id="deadline-exceeded"),
        pytest.param("Stalled", True, id="stalled"),
    ],
)
def test_only_failures_of_the_job_itself_use_up_an_attempt(reason: str, consumes: bool) -> None:
    assert consumes_attempt(reason) is consumes


@pytest.mark.parametrize(
    ("attempt", "max_attempts", "reason", "retry"),
    [
        pytest.param(1, 3, "Error", True, id="first-of-three-failed"),
        pytest.param(2, 3, "Error", True, id="second-of-three-failed"),
        pytest.param(3, 3, "Error", False, id="last-attempt-failed"),
        pytest.param(1, 1, OOM_KILLED, False, id="single-attempt-oom"),
        pytest.param(3, 3, "Evicted", True, id="last-attempt-evicted-runs-again"),
        pytest.param(5, 3, "Preempted", True, id="disruption-always-runs-again"),
    ],
)
def test_should_retry(attempt: int, max_attempts: int, reason: str, retry: bool) -> None:
    assert should_retry(attempt, max_attempts, reason) is retry


@pytest.mark.parametrize(
    ("attempt", "initial", "factor", "maximum", "delay"),
    [
        pytest.param(1, 10.0, 2.0, 300.0, 10.0, id="first-failure-waits-initial"),
        pytest.param(2, 10.0, 2.0, 300.0, 20.0, id="second-doubles"),
        pytest.param(4, 10.0, 2.0, 300.0, 80.0, id="fourth"),
        pytest.param(6, 10.0, 2.0, 300.0, 300.0, id="capped-at-maximum"),
        pytest.param(3, 5.0, 1.0, 300.0, 5.0, id="factor-one-is-constant"),
        pytest.param(1, 600.0, 2.0, 300.0, 300.0, id="initial-above-maximum"),
        pytest.param(100_000, 10.0, 2.0, 300.0, 300.0, id="huge-attempt-does-not-overflow"),
    ],
)
def test_backoff_delay(
    attempt: int, initial: float, factor: float, maximum: float, delay: float
) -> None:
    assert backoff_delay(attempt, initial, factor, maximum) == delay


def test_backoff_delay_refuses_attempt_zero() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        backoff_delay(0, 10.0, 2.0, 300.0)


@pytest.mark.parametrize(
    ("current", "multiplier", "memory_max", "expected"),
    [
        pytest.param("1Gi", 2.0, "8Gi", "2Gi", id="doubles"),
        pytest.param("1Gi", 1.5, "8Gi", "1536Mi", id="one-and-a-half"),
        pytest.param("10Mi", 1.1, "8Gi", "11Mi", id="decimal-multiplier-is-exact"),
        pytest.param(1000, 1.5, "8Gi", "1Mi", id="rounded-up-to-a-whole-mebibyte"),
        pytest.param("6Gi", 2.0, "8Gi", "8Gi", id="capped-at-memory-max"),
        pytest.param("8Gi", 2.0, "8Gi", "8Gi", id="already-at-max-stays"),
        pytest.param("10Gi", 2.0, "8Gi", "8Gi", id="above-a-lowered-max-comes-down-to-it"),
        pytest.param("1Gi", 1.0, "8Gi", "1Gi", id="multiplier-one-keeps-memory"),
    ],
)
def test_next_memory_after_oom(
    current: int | str, multiplier: float, memory_max: str, expected: str
) -> None:
    grown = next_memory_after_oom(parse_memory(current), multiplier, parse_memory(memory_max))

    assert format_bytes(grown) == expected


attempts = st.integers(1, 200)
initial_factor_maximum = st.tuples(st.floats(0, 3600), st.floats(1, 10), st.floats(0, 86_400))


@PROPERTIES
@given(attempts, initial_factor_maximum)
def test_backoff_grows_and_never_exceeds_the_maximum(
    attempt: int, backoff: tuple[float, float, float]
) -> None:
    delay, next_delay = (backoff_delay(a, *backoff) for a in (attempt, attempt + 1))

    assert 0 <= delay <= next_delay <= backoff[2]


@PROPERTIES
@given(
    st.integers(0, 64 * 1024).map(lambda n: n * MiB // 4),
    st.floats(1, 4),
    st.integers(1, 64 * 1024).map(lambda n: n * MiB),
)
def test_oom_growth_stays_within_max_and_never_shrinks(
    current: int, multiplier: float, memory_max: int
) -> None:
    grown = next_memory_after_oom(current, multiplier, memory_max)

    assert grown <= memory_max
    assert grown >= min(current, memory_max)
    assert grown == memory_max or grown % MiB == 0
    # The float product may land a hair above the exact decimal one the function uses.
    assert grown == memory_max or grown >= current * multiplier * (1 - 1e-12)


@PROPERTIES
@given(attempts, st.integers(1, 20), st.sampled_from(sorted(DISRUPTION_REASONS)))
def test_disruptions_are_retried_whatever_the_attempt(
    attempt: int, max_attempts: int, reason: str
) -> None:
    assert should_retry(attempt, max_attempts, reason)
