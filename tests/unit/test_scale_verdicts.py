"""The scale benchmark's verdicts: each target compares the right scenarios of one run."""

from __future__ import annotations

from benchmarks.scale.run import Scenario, verdicts


def scenario(name: str, wall: float, *, cpu_ms: float = 1.0, writes: float = 2.0) -> Scenario:
    s = Scenario(name, 100, done=100, wall_seconds=wall)
    s.controller_cpu_ms_per_job = cpu_ms
    s.writes_per_job = writes
    return s


def test_ratios_compare_videoqueue_with_each_peer_of_the_same_run() -> None:
    checks = verdicts(
        [
            scenario("honest limit", 80.0),
            scenario("batch/v1 Jobs", 120.0, cpu_ms=4.0),
            scenario("Kueue", 150.0, cpu_ms=9.0),
            scenario("videoqueue", 100.0, cpu_ms=6.0, writes=3.2),
        ],
        [],
    )
    assert checks["drain_vs_batch"] == {"measured": 0.833, "target": 0.8, "met": False}
    assert checks["drain_vs_kueue"] == {"measured": 0.667, "target": 0.7, "met": True}
    assert checks["share_of_honest_limit"] == {"measured": 0.8, "target": 0.8, "met": True}
    assert checks["cpu_per_job_vs_kcm"] == {"measured": 1.5, "target": 1.0, "met": False}
    assert checks["writes_per_job"]["met"] is False


def test_pending_points_and_the_50_per_second_arrivals_have_their_own_targets() -> None:
    arrivals_20 = scenario("arrivals 20/s", 30.0)
    arrivals_20.p99_to_pod = 2.0  # not a target: only 50/s is
    arrivals_50 = scenario("arrivals 50/s", 30.0)
    arrivals_50.p99_to_pod = 0.4
    point = {"jobs": 20000.0, "rss_mib": 160.0, "restart_to_admission_seconds": 8.0}
    checks = verdicts([arrivals_20, arrivals_50], [point])
    assert checks["arrivals_50_p99_seconds"]["met"] is True
    assert checks["pending_20000_rss_mib"] == {"measured": 160.0, "target": 150.0, "met": False}
    assert checks["restart_20000_seconds"]["met"] is True
    assert "pending_100000_rss_mib" not in checks  # not measured, not judged


def test_the_honest_limits_latency_under_arrivals_is_shown_beside_the_target_not_judged() -> None:
    limit_50 = scenario("limit 50/s", 30.0)
    limit_50.p99_to_pod = 0.3
    arrivals_50 = scenario("arrivals 50/s", 30.0)
    arrivals_50.p99_to_pod = 0.7
    checks = verdicts([limit_50, arrivals_50, scenario("videoqueue", 100.0)], [])
    assert "writes_per_job" in checks  # the videoqueue drain was judged
    assert checks["limit_50_p99_seconds"] == {"measured": 0.3, "target": None, "met": None}
    assert checks["arrivals_50_p99_seconds"]["met"] is False
    # "limit 50/s" is not the honest limit's drain: no share is computed from it.
    assert "share_of_honest_limit" not in checks
