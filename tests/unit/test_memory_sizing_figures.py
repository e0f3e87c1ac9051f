"""The memory sizing benchmark's figures (benchmarks/memory_sizing_figures.py), from VideoJob
statuses as the operator writes them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from benchmarks.memory_sizing import crd_has_sizing
from benchmarks.memory_sizing_figures import (
    KINDS,
    ModeFigures,
    PlannedJob,
    distinct_jobs,
    job_body,
    mode_figures,
    nearest_rank,
    oracle_memory,
    outcomes,
    plan_stream,
    ratios,
    table,
    verdicts,
)

T0 = 1_800_000_000.0  # when the first job was created (time.time() scale)


def iso(seconds: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(T0 + seconds, datetime.UTC).isoformat()


def finished_job(
    name: str, *attempts: tuple[str, str, str | None], done_at: float, source: str | None = None
) -> dict[str, Any]:
    """A terminal VideoJob whose attempts ended (reason, memory, peak), each 10 s long."""
    records = [
        {
            "attempt": n,
            "reason": reason,
            "memory": memory,
            **({"peakMemory": peak} if peak else {}),
            "startTime": iso(done_at - 10),
            "finishTime": iso(done_at),
        }
        for n, (reason, memory, peak) in enumerate(attempts, start=1)
    ]
    complete = attempts[-1][0] == "Completed"
    status: dict[str, Any] = {
        "attempts": records,
        "completionTime": iso(done_at),
        "conditions": [{"type": "Complete" if complete else "Failed", "status": "True"}],
    }
    if source is not None:
        status["memorySource"] = source
    return {"metadata": {"name": name}, "status": status}


def test_the_stream_is_seeded_and_mixes_every_kind() -> None:
    stream = plan_stream(19, 150)
    assert stream == plan_stream(19, 150)
    assert stream != plan_stream(20, 150)
    counts = Counter(job.key for job in stream)
    assert set(counts) == {kind.key for kind in KINDS}
    assert all(count > 10 for count in counts.values()), counts  # past the warm-up per key
    assert len({job.name for job in stream}) == 150


def test_calibration_runs_each_distinct_job_once() -> None:
    stream = [
        PlannedJob("a", "probe", "in-720.mp4"),
        PlannedJob("b", "probe", "in-720.mp4"),
        PlannedJob("c", "transcode/1080p", "in-1080.mp4"),
    ]
    assert [(j.name, j.distinct) for j in distinct_jobs(stream)] == [
        ("cal-probe-in-720", ("probe", "in-720.mp4")),
        ("cal-transcode-1080p-in-1080", ("transcode/1080p", "in-1080.mp4")),
    ]


@pytest.mark.parametrize(
    ("peak", "expected"),
    [(100 * 2**20, "105Mi"), (100 * 2**20 + 1, "106Mi"), (300 * 2**20, "315Mi")],
    ids=["exact", "rounded-up", "larger"],
)
def test_oracle_memory_is_the_peak_plus_five_percent_in_whole_mebibytes(
    peak: int, expected: str
) -> None:
    assert oracle_memory(peak) == expected


def test_job_bodies_name_memory_only_when_given() -> None:
    transcode, thumbnail = (
        PlannedJob("t", "transcode/720p", "in-720.mp4"),
        PlannedJob("s", "thumbnail", "in-1080.mp4"),
    )
    body = job_body(transcode)
    assert "resources" not in body["spec"]
    assert body["spec"]["output"] == {"url": "file:///media/out/"}
    assert body["spec"]["params"] == {"preset": "h264-720p"}
    assert job_body(thumbnail, memory="70Mi")["spec"]["resources"] == {"memory": "70Mi"}
    assert job_body(thumbnail)["spec"]["output"] == {"url": "file:///media/out/s.jpg"}
    assert "output" not in job_body(PlannedJob("p", "probe", "in-720.mp4"))["spec"]


def test_nearest_rank_takes_an_observed_value() -> None:
    assert nearest_rank([], 50) is None
    assert nearest_rank([3.0, 1.0, 2.0], 50) == 2.0
    assert nearest_rank([1.0, 2.0, 3.0], 95) == 3.0
    assert nearest_rank([float(v) for v in range(1, 11)], 90) == 9.0


def stream_and_jobs() -> tuple[list[PlannedJob], dict[str, dict[str, Any]]]:
    """Four probes (the 1st OOM-killed at once, the 4th after the warm-up of 2) and one
    transcode that failed."""
    stream = [PlannedJob(f"p{i}", "probe", "in-720.mp4") for i in range(4)]
    stream.append(PlannedJob("t0", "transcode/480p", "in-720.mp4"))
    oom, learned = ("OOMKilled", "64Mi", "64Mi"), "p95 of 2 past probe jobs x 1.2"
    jobs = {
        "p0": finished_job("p0", oom, ("Completed", "128Mi", "100Mi"), done_at=20),
        "p1": finished_job("p1", ("Completed", "200Mi", "100Mi"), done_at=30),
        "p2": finished_job("p2", ("Completed", "120Mi", "100Mi"), done_at=40, source=learned),
        "p3": finished_job("p3", oom, ("Completed", "180Mi", "100Mi"), done_at=60),
        "t0": finished_job("t0", ("Error", "1Gi", None), done_at=50),
    }
    return stream, jobs


def test_mode_figures_from_job_statuses() -> None:
    stream, jobs = stream_and_jobs()

    figures = mode_figures("learned", outcomes(stream, jobs), T0, warmup=3)

    assert (figures.jobs, figures.succeeded, figures.attempts) == (5, 4, 7)
    assert figures.drain_seconds == 60
    assert figures.jobs_per_hour == 5 / 60 * 3600
    # Completed attempts' memory / peak: 1.28, 2.0, 1.2, 1.8.
    assert figures.reserved_over_peak_median == 1.28
    assert figures.reserved_over_peak_p90 == 2.0
    assert figures.first_attempt_oom_rate == 2 / 5
    # Past the first 3 of each key: p3 alone, OOM-killed.
    assert (figures.first_attempt_oom_rate_after_warmup, figures.jobs_after_warmup) == (1.0, 1)
    assert figures.reserved_over_peak_median_after_warmup == 1.8  # p3's 180Mi / 100Mi
    assert figures.mean_running_workers == round(70 / 60, 2)  # 7 attempts of 10 s
    assert figures.per_key["probe"]["first_attempt_ooms"] == 2
    assert figures.per_key["transcode/480p"]["peak_mib_median"] is None
    assert figures.memory_sources == {"(none)": 4, "p# of # past probe jobs x #": 1}
    assert figures.learned_sized == 1


def figures_with(mode: str, jobs_per_hour: float, median: float, oom: float) -> ModeFigures:
    return ModeFigures(
        mode=mode, jobs=100, succeeded=100, attempts=100, drain_seconds=60,
        jobs_per_hour=jobs_per_hour, reserved_over_peak_median=median,
        reserved_over_peak_p90=median, first_attempt_oom_rate=oom,
        first_attempt_oom_rate_after_warmup=oom, jobs_after_warmup=50, mean_running_workers=2,
        reserved_over_peak_median_after_warmup=median,
    )  # fmt: skip


def test_verdicts_against_the_issue_targets() -> None:
    figures = {
        "static": figures_with("static", 100, 6.0, 0),
        "learned": figures_with("learned", 160, 1.3, 0.03),
        "oracle": figures_with("oracle", 200, 1.05, 0),
    }
    assert ratios(figures)["throughput_learned_over_static"] == 1.6
    assert ratios(figures)["throughput_learned_over_oracle"] == 0.8
    assert [v for _, _, v in verdicts(figures, 10)] == ["MET", "MET", "MISSED", "MET", "MISSED"]
    assert "learned throughput >= 1.5x static" in table(figures, 10)


def test_verdicts_say_not_run_without_the_learned_mode() -> None:
    figures = {"static": figures_with("static", 100, 6.0, 0)}
    assert ratios(figures) == {}
    assert {v for _, _, v in verdicts(figures, 10)} == {"not run"}
    assert "not run" in table(figures, 10)


@pytest.mark.parametrize(
    ("fields", "expected"), [(["budget"], False), (["budget", "sizing"], True)]
)
def test_the_benchmark_knows_whether_the_crd_has_learned_sizing(
    tmp_path: Path, fields: list[str], expected: bool
) -> None:
    memory = {"properties": {name: {"type": "string"} for name in fields}}
    schema = {"properties": {"spec": {"properties": {"memory": memory}}}}
    crd = {"spec": {"versions": [{"schema": {"openAPIV3Schema": schema}}]}}
    (tmp_path / "videoqueue.dev_videoqueues.yaml").write_text(yaml.safe_dump(crd))
    assert crd_has_sizing(tmp_path) is expected
