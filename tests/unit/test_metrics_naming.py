"""Every metric the operator serves follows Prometheus' naming rules: the videoqueue_ prefix,
base units, _total on counters and only there, _info gauges of value 1, no label that names
a single job, and help texts that name each label and the values closed labels take."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client.core import Metric

from videoqueue.api import VideoJobStatus
from videoqueue.controller import metrics
from videoqueue.controller.metrics import REGISTRY, Activity
from videoqueue.envtest.builders import MakeJob

from .test_metrics import indexed

# Runtime metrics from prometheus_client's standard collectors keep their own names.
STANDARD_PREFIXES = ("process_", "python_")
# Labels whose values form a closed set: the help text must list them.
CLOSED_LABELS = {"phase", "outcome", "reason", "state", "health", "code", "verb"}
# Labels that would make a series per job (or per pod): unbounded, never allowed.
PER_JOB_LABELS = {"job", "job_name", "name", "videojob", "pod", "uid", "attempt"}
UNITS = {"seconds", "bytes"}
NON_BASE_UNITS = re.compile(
    r"_(milliseconds|ms|microseconds|minutes|hours|days|kilobytes|megabytes|gigabytes|"
    r"kb|mb|gb|kib|mib|gib|percent)(_|$)"
)


@pytest.fixture(scope="module")
def families() -> Iterator[list[Metric]]:
    """Everything /metrics serves while acting on an index with jobs in it, after every hook
    has counted something, so that every family has samples."""
    ns = f"naming-{uuid.uuid4().hex[:6]}"
    controller = indexed(ns)
    job = MakeJob("secret-job-name", ns).model()
    metrics.record_admission(job, wait_seconds=3.0)
    metrics.record_status_written(
        (ns, "work", job.spec.type),
        {},  # (a new job's status)
        VideoJobStatus.model_validate(
            {
                "phase": "Failed",
                "attempt": 1,
                "attempts": [{"attempt": 1, "reason": "OOMKilled"}],
                "runSeconds": 2.0,
            }
        ),
    )
    metrics.record_preemption(job)
    metrics.record_cycle(f"{ns}/work", 0.01)
    previous = metrics.STATE.source
    metrics.STATE.source = lambda: Activity("acting", controller, controller.kube)
    try:
        yield [m for m in REGISTRY.collect() if not m.name.startswith(STANDARD_PREFIXES)]
    finally:
        metrics.STATE.source = previous


def test_the_expected_families_are_served(families: list[Metric]) -> None:
    names = {m.name for m in families}
    expected = {
        "videoqueue_jobs",
        "videoqueue_jobs_admitted",
        "videoqueue_jobs_finished",
        "videoqueue_attempts",
        "videoqueue_job_retries",
        "videoqueue_preemptions",
        "videoqueue_admission_wait_seconds",
        "videoqueue_job_run_seconds",
        "videoqueue_scheduling_cycle_duration_seconds",
        "videoqueue_queue_state",
        "videoqueue_queue_health",
        "videoqueue_queue_memory_reserved_bytes",
        "videoqueue_queue_memory_budget_bytes",
        "videoqueue_queue_resource_reserved",
        "videoqueue_queue_resource_budget",
        "videoqueue_queue_concurrency",
        "videoqueue_operator_active",
        "videoqueue_api_requests",
        "videoqueue_api_errors",
        "videoqueue_build",  # prometheus_client names an _info family without the suffix
    }
    assert names >= expected, f"missing: {sorted(expected - names)}"


def test_names(families: list[Metric]) -> None:
    problems: list[str] = []
    for family in families:
        name = family.name
        if not name.startswith("videoqueue_"):
            problems.append(f"{name}: no videoqueue_ prefix")
        if NON_BASE_UNITS.search(name):
            problems.append(f"{name}: not a base unit (use seconds or bytes)")
        if re.search(r"(duration|time|wait|latency|seconds)", name) and not name.endswith(
            "_seconds"
        ):
            problems.append(f"{name}: a time must be in seconds and end with _seconds")
        if "memory" in name and not name.endswith("_bytes"):
            problems.append(f"{name}: memory must be in bytes and end with _bytes")
        sample_names = {s.name for s in family.samples}
        if family.type == "counter":
            if sample_names != {f"{name}_total"}:
                problems.append(f"{name}: counter samples {sample_names} must end with _total")
        elif any(n.endswith("_total") for n in sample_names):
            problems.append(f"{name}: a {family.type} must not end with _total")
        if family.type == "gauge" and name.endswith("_info"):
            problems.append(f"{name}: an _info metric must be exposed as info")
        if name.endswith("_build") or family.type == "info":
            values = {s.value for s in family.samples}
            if values != {1.0}:
                problems.append(f"{name}: info metrics have the value 1, not {values}")
        if family.type == "histogram" and not any(name.endswith(f"_{u}") for u in UNITS):
            problems.append(f"{name}: a histogram's name ends with its unit")
    assert problems == []


def test_labels_and_help_texts(families: list[Metric]) -> None:
    problems: list[str] = []
    for family in families:
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        if forbidden := labels & PER_JOB_LABELS:
            problems.append(f"{family.name}: per-job labels {sorted(forbidden)}")
        if not family.documentation.strip():
            problems.append(f"{family.name}: no help text")
        for label in labels:
            if label not in family.documentation:
                problems.append(f"{family.name}: help text does not say what {label} is")
            if label in CLOSED_LABELS:
                for value in {s.labels[label] for s in family.samples}:
                    if not re.search(rf"\b{re.escape(value)}\b", family.documentation):
                        problems.append(
                            f"{family.name}: help text does not name {label} value {value!r}"
                        )
    assert problems == []


@pytest.mark.parametrize(
    ("label", "values"),
    [
        pytest.param("phase", metrics.PHASES, id="phase"),
        pytest.param("outcome", metrics.OUTCOMES, id="outcome"),
        pytest.param("state", metrics.STATES, id="state"),
        pytest.param("health", metrics.HEALTHS, id="health"),
    ],
)
def test_help_names_every_allowed_value(
    families: list[Metric], label: str, values: tuple[str, ...]
) -> None:
    """Not only the values that happen to have samples: every value the label can take."""
    using = [m for m in families if any(label in s.labels for s in m.samples)]
    assert using, f"no family has a {label} label"
    for family in using:
        missing = [v for v in values if not re.search(rf"\b{v}\b", family.documentation)]
        assert missing == [], f"{family.name} help misses {missing}"


def test_no_label_value_is_a_job_name(families: list[Metric]) -> None:
    values = {v for m in families for s in m.samples for v in s.labels.values()}
    assert "secret-job-name" not in values
    assert not {v for v in values if v in {"p1", "p2", "r1", "a1", "s1", "o1"}}
