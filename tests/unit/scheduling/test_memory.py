"""What a worker pod's memory adds up to (see videoqueue.scheduling.memory)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from videoqueue.scheduling import PodOverhead
from videoqueue.scheduling.units import GiB, MiB


@pytest.mark.parametrize(
    ("overhead", "worker", "pod"),
    [
        pytest.param(PodOverhead(), GiB, GiB, id="worker-alone"),
        pytest.param(PodOverhead(sidecars=30 * GiB), GiB, 31 * GiB, id="sidecar-adds"),
        pytest.param(PodOverhead(init_peak=3 * GiB), GiB, 3 * GiB, id="init-peak-dominates"),
        pytest.param(PodOverhead(init_peak=3 * GiB), 4 * GiB, 4 * GiB, id="worker-dominates"),
        pytest.param(
            PodOverhead(sidecars=100 * MiB, init_peak=2 * GiB),
            2 * GiB,
            2 * GiB + 100 * MiB,
            id="worker-and-sidecars-dominate",
        ),
    ],
)
def test_pod_memory(overhead: PodOverhead, worker: int, pod: int) -> None:
    assert overhead.pod_memory(worker) == pod
    assert overhead.beside(worker) == pod - worker


@pytest.mark.parametrize(
    ("overhead", "budget", "largest"),
    [
        pytest.param(PodOverhead(), 4 * GiB, 4 * GiB, id="no-overhead"),
        pytest.param(PodOverhead(sidecars=GiB), 4 * GiB, 3 * GiB, id="sidecar"),
        pytest.param(PodOverhead(sidecars=30 * GiB), 4 * GiB, 0, id="sidecar-over-budget"),
        pytest.param(PodOverhead(init_peak=5 * GiB), 4 * GiB, 0, id="init-over-budget"),
        pytest.param(PodOverhead(init_peak=4 * GiB), 4 * GiB, 4 * GiB, id="init-fills-budget"),
    ],
)
def test_largest_worker(overhead: PodOverhead, budget: int, largest: int) -> None:
    assert overhead.largest_worker(budget) == largest


amounts = st.integers(0, 64).map(lambda n: n * 256 * MiB)
workers = st.integers(1, 64).map(lambda n: n * 256 * MiB)


@given(sidecars=amounts, init_peak=amounts, budget=amounts, worker=workers)
def test_largest_worker_is_the_most_that_fits(
    sidecars: int, init_peak: int, budget: int, worker: int
) -> None:
    overhead = PodOverhead(sidecars=sidecars, init_peak=init_peak)

    fits = overhead.pod_memory(worker) <= budget

    assert fits == (worker <= overhead.largest_worker(budget))


def test_negative_memory_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        PodOverhead(sidecars=-1)
