"""The operator's metrics: what the hooks count for each status transition, what the state
collector reads from the index, and the /metrics, /healthz and /readyz endpoints."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from videoqueue.api import JobPhase, VideoJobStatus
from videoqueue.controller import metrics
from videoqueue.controller.entries import JobEntry, QueueEntry
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.loop import Controller
from videoqueue.controller.metrics import REGISTRY, Activity
from videoqueue.controller.metrics_server import make_app, start_server
from videoqueue.envtest.builders import MakeJob, MakeQueue, container

# --- helpers -------------------------------------------------------------------------------


def attempt(number: int, reason: str | None = None) -> dict[str, Any]:
    return {"attempt": number, "reason": reason}


def status(**fields: Any) -> VideoJobStatus:
    return VideoJobStatus.model_validate(fields)


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture
def ns() -> str:
    """A namespace label of this test's own: the metrics are process-wide."""
    return f"ns-{uuid.uuid4().hex[:8]}"


# --- counting transitions ------------------------------------------------------------------

RUNNING_1 = {"phase": "Running", "attempt": 1, "attempts": [attempt(1)]}


@pytest.mark.parametrize(
    ("before", "after", "attempts", "retries", "finished", "run_seconds"),
    [
        pytest.param(
            RUNNING_1,
            {"phase": "Backoff", "attempt": 1, "attempts": [attempt(1, "OOMKilled")]},
            {"OOMKilled": 1},
            {"OOMKilled": 1},
            {},
            None,
            id="oom-killed-and-retried",
        ),
        pytest.param(
            RUNNING_1,
            {"phase": "Pending", "attempt": 1, "attempts": [attempt(1, "Stalled")]},
            {"Stalled": 1},
            {"Stalled": 1},
            {},
            None,
            id="stalled-and-retried",
        ),
        pytest.param(
            RUNNING_1,
            {
                "phase": "Succeeded",
                "attempt": 1,
                "attempts": [attempt(1, "Completed")],
                "runSeconds": 42.0,
            },
            {"Completed": 1},
            {},
            {"Succeeded": 1},
            42.0,
            id="succeeded",
        ),
        pytest.param(
            {"phase": "Running", "attempt": 2, "attempts": [attempt(1, "Error"), attempt(2)]},
            {
                "phase": "Failed",
                "attempt": 2,
                "attempts": [attempt(1, "Error"), attempt(2, "Error")],
                "runSeconds": 7.5,
            },
            {"Error": 1},  # attempt 1's ending was counted when it was written
            {},  # no attempts left: not a retry
            {"Failed": 1},
            7.5,
            id="last-attempt-failed",
        ),
        pytest.param(
            {"phase": "Pending"},
            {"phase": "Rejected"},
            {},
            {},
            {"Rejected": 1},
            None,
            id="rejected-without-running",
        ),
        pytest.param(
            RUNNING_1,
            {"phase": "Cancelled", "attempt": 1, "attempts": [attempt(1, "Cancelled")]},
            {"Cancelled": 1},
            {},
            {"Cancelled": 1},
            None,
            id="cancelled-while-running",
        ),
        pytest.param(
            {"phase": "Succeeded", "attempts": [attempt(1, "Completed")], "runSeconds": 3.0},
            {"phase": "Succeeded", "attempts": [attempt(1, "Completed")], "runSeconds": 3.0},
            {},
            {},
            {},
            None,
            id="rewrite-of-a-final-status-counts-nothing",
        ),
        pytest.param(
            # A deferred write can carry two transitions at once: an attempt that ended and
            # the admission of the next.
            RUNNING_1,
            {
                "phase": "Admitted",
                "attempt": 2,
                "attempts": [attempt(1, "Evicted"), attempt(2)],
            },
            {"Evicted": 1},
            {"Evicted": 1},
            {},
            None,
            id="ended-and-readmitted-in-one-write",
        ),
    ],
)
def test_status_write_counts_its_transitions(
    ns: str,
    before: dict[str, Any],
    after: dict[str, Any],
    attempts: dict[str, int],
    retries: dict[str, int],
    finished: dict[str, int],
    run_seconds: float | None,
) -> None:
    replaced = MakeJob("a", ns).status(**before).obj().get("status") or {}
    metrics.record_status_written((ns, "work", "transcode"), replaced, status(**after))

    labels = {"namespace": ns, "queue": "work", "type": "transcode"}
    counted_attempts = {
        r: v
        for r in metrics.ATTEMPT_REASONS
        if (v := sample("videoqueue_attempts_total", **labels, reason=r))
    }
    counted_retries = {
        r: v
        for r in metrics.RETRY_REASONS
        if (v := sample("videoqueue_job_retries_total", **labels, reason=r))
    }
    counted_finished = {
        o: v
        for o in metrics.OUTCOMES
        if (v := sample("videoqueue_jobs_finished_total", **labels, outcome=o))
    }
    assert counted_attempts == attempts
    assert counted_retries == retries
    assert counted_finished == finished
    runs = sample("videoqueue_job_run_seconds_count", **labels)
    assert runs == (0 if run_seconds is None else 1)
    assert sample("videoqueue_job_run_seconds_sum", **labels) == (run_seconds or 0)


def test_status_writes_are_counted_by_the_phase_written() -> None:
    def written() -> dict[str, float]:
        return {
            p: sample("videoqueue_job_status_writes_total", phase=p) or 0.0 for p in metrics.PHASES
        }

    before = written()
    stored = MakeJob("a", "writes").status(phase="Pending").obj()["status"]
    metrics.record_status_written(("writes", "work", "transcode"), stored, status(phase="Running"))
    metrics.record_status_written(("writes", "work", "transcode"), stored, status(phase="Running"))
    after = written()
    assert {p: after[p] - before[p] for p in metrics.PHASES if after[p] != before[p]} == {
        "Running": 2
    }


def test_admission_counts_and_observes_the_wait(ns: str) -> None:
    job = MakeJob("a", ns).type("probe").model()
    metrics.record_admission(job, wait_seconds=12.0)
    metrics.record_admission(job, wait_seconds=400.0)

    labels = {"namespace": ns, "queue": "work", "type": "probe"}
    assert sample("videoqueue_jobs_admitted_total", **labels) == 2
    assert sample("videoqueue_admission_wait_seconds_count", **labels) == 2
    assert sample("videoqueue_admission_wait_seconds_sum", **labels) == 412.0
    assert sample("videoqueue_admission_wait_seconds_bucket", **labels, le="30.0") == 1
    assert sample("videoqueue_admission_wait_seconds_bucket", **labels, le="600.0") == 2


def test_preemptions_and_cycles(ns: str) -> None:
    metrics.record_preemption(MakeJob("low", ns).type("clip").model())
    metrics.record_cycle(f"{ns}/work", 0.003)

    assert sample("videoqueue_preemptions_total", namespace=ns, queue="work", type="clip") == 1
    assert (
        sample("videoqueue_scheduling_cycle_duration_seconds_count", namespace=ns, queue="work")
        == 1
    )


def test_per_job_series_exist_at_zero_once_a_job_is_seen(ns: str) -> None:
    """So that increase() sees the first finished job, and panels show 0 rather than no data."""
    metrics.ensure_job_series(ns, "work", "audio")
    labels = {"namespace": ns, "queue": "work", "type": "audio"}
    assert sample("videoqueue_jobs_admitted_total", **labels) == 0
    for outcome in metrics.OUTCOMES:
        assert sample("videoqueue_jobs_finished_total", **labels, outcome=outcome) == 0
    for reason in metrics.RETRY_REASONS:
        assert sample("videoqueue_job_retries_total", **labels, reason=reason) == 0
    assert sample("videoqueue_admission_wait_seconds_count", **labels) == 0


# --- state read from the index -------------------------------------------------------------


class FakeKube:
    def __init__(self) -> None:
        self.request_counts: Counter[tuple[str, str, str]] = Counter(
            {("patch", "videojobs/status", "2xx"): 7, ("create", "pods", "5xx"): 2}
        )


def indexed(ns: str) -> Controller:
    """An acting controller's index: a Paused queue with jobs in several phases, and a job
    whose queue does not exist."""
    controller = Controller(cast(KubeClient, FakeKube()))
    queue = (
        MakeQueue("work", ns)
        .generation(1)
        .concurrency(3)
        .state("Paused")
        .status({"health": "Warning"})
        .budgets({"cpu": "2", "example.com/gpu": 1})
        .template({"name": "worker", "image": "w", "resources": {"requests": {"cpu": "500m"}}})
    )
    entry = controller.queues[f"{ns}/work"] = QueueEntry(f"{ns}/work", body={}, queue=queue.model())
    phases = {
        "p1": {"phase": "Pending"},
        "p2": {},  # never written yet: counts as Pending
        "r1": {"phase": "Running", "effectiveMemory": "2Gi"},
        "a1": {"phase": "Admitted", "effectiveMemory": "1Gi"},
        "s1": {"phase": "Succeeded", "effectiveMemory": "4Gi"},  # holds no memory any more
    }
    for name, fields in phases.items():
        key = f"{ns}/{name}"
        controller.jobs[key] = JobEntry(MakeJob(name, ns).status(**fields).model().to_dict())
        entry.jobs.add(key)
    orphans = controller.queues[f"{ns}/gone"] = QueueEntry(f"{ns}/gone")
    controller.jobs[f"{ns}/o1"] = JobEntry(MakeJob("o1", ns, queue="gone").model().to_dict())
    orphans.jobs.add(f"{ns}/o1")
    return controller


@pytest.fixture
def acting(ns: str) -> Iterator[Controller]:
    controller = indexed(ns)
    previous = metrics.STATE.source
    metrics.STATE.source = lambda: Activity("acting", controller, controller.kube)
    yield controller
    metrics.STATE.source = previous


def test_state_collector_reads_the_index(ns: str, acting: Controller) -> None:
    jobs = {
        phase: sample("videoqueue_jobs", namespace=ns, queue="work", phase=phase)
        for phase in metrics.PHASES
    }
    assert jobs == {
        **dict.fromkeys(metrics.PHASES, 0.0),
        "Pending": 2.0,
        "Running": 1.0,
        "Admitted": 1.0,
        "Succeeded": 1.0,
    }
    assert sample("videoqueue_jobs", namespace=ns, queue="gone", phase="Pending") == 1.0
    states = {
        s: sample("videoqueue_queue_state", namespace=ns, queue="work", state=s)
        for s in metrics.STATES
    }
    assert states == {"Active": 0.0, "Paused": 1.0, "Draining": 0.0}
    healths = {
        h: sample("videoqueue_queue_health", namespace=ns, queue="work", health=h)
        for h in metrics.HEALTHS
    }
    assert healths == {"Healthy": 0.0, "Warning": 1.0, "Critical": 0.0, "Offline": 0.0}
    assert sample("videoqueue_queue_memory_reserved_bytes", namespace=ns, queue="work") == 3 * 2**30
    assert sample("videoqueue_queue_memory_budget_bytes", namespace=ns, queue="work") == 8 * 2**30
    assert sample("videoqueue_queue_concurrency", namespace=ns, queue="work") == 3
    # Budgets beyond memory: CPU in cores (two busy jobs of 500m), extended resources in units.
    reserved = {
        r: sample("videoqueue_queue_resource_reserved", namespace=ns, queue="work", resource=r)
        for r in ("cpu", "example.com/gpu")
    }
    budgets = {
        r: sample("videoqueue_queue_resource_budget", namespace=ns, queue="work", resource=r)
        for r in ("cpu", "example.com/gpu")
    }
    assert (reserved, budgets) == (
        {"cpu": 1.0, "example.com/gpu": 0.0},
        {"cpu": 2.0, "example.com/gpu": 1.0},
    )
    # A queue that does not exist has jobs but no state, health or memory.
    assert sample("videoqueue_queue_state", namespace=ns, queue="gone", state="Active") is None
    assert sample("videoqueue_operator_active") == 1.0


def test_api_requests_and_errors_come_from_the_client_counters(acting: Controller) -> None:
    assert (
        sample(
            "videoqueue_api_requests_total", verb="patch", resource="videojobs/status", code="2xx"
        )
        == 7
    )
    assert sample("videoqueue_api_errors_total", verb="create", resource="pods", code="5xx") == 2
    # Error series exist at zero for every (verb, resource) in use.
    assert (
        sample(
            "videoqueue_api_errors_total", verb="patch", resource="videojobs/status", code="error"
        )
        == 0
    )
    assert (
        sample("videoqueue_api_errors_total", verb="patch", resource="videojobs/status", code="4xx")
        is None
    )


def test_standing_by_exports_no_queue_state(ns: str) -> None:
    previous = metrics.STATE.source
    metrics.STATE.source = lambda: Activity("standing-by")
    try:
        assert sample("videoqueue_operator_active") == 0.0
        names = {m.name for m in REGISTRY.collect()}
        assert "videoqueue_jobs" not in names
        assert "videoqueue_build" in names  # the info family of videoqueue_build_info
    finally:
        metrics.STATE.source = previous


# --- the HTTP endpoints ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "ready"),
    [
        pytest.param("starting", False, id="starting"),
        pytest.param("priming", False, id="priming"),
        pytest.param("acting", True, id="acting"),
        pytest.param("standing-by", True, id="standing-by"),
    ],
)
async def test_probes(state: metrics.ActivityState, ready: bool) -> None:
    previous = metrics.STATE.source
    try:
        async with TestClient(TestServer(make_app(lambda: Activity(state)))) as client:
            health = await client.get("/healthz")
            assert health.status == 200
            readiness = await client.get("/readyz")
            assert readiness.status == (200 if ready else 503)
            assert (await readiness.text()).strip() == state
    finally:
        metrics.STATE.source = previous


async def test_metrics_endpoint_serves_the_text_format() -> None:
    previous = metrics.STATE.source
    try:
        async with TestClient(TestServer(make_app(lambda: Activity("starting")))) as client:
            response = await client.get("/metrics")
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await response.text()
    finally:
        metrics.STATE.source = previous
    assert "videoqueue_build_info{" in text
    assert "videoqueue_operator_active 0.0" in text
    assert "_created" not in text


async def test_server_refuses_a_port_in_use() -> None:
    runner = await start_server("127.0.0.1", 0, lambda: Activity("starting"))
    try:
        port = runner.addresses[0][1]
        with pytest.raises(OSError, match="address already in use"):
            await start_server("127.0.0.1", port, lambda: Activity("starting"))
    finally:
        await runner.cleanup()
        metrics.STATE.source = lambda: Activity("starting")


def test_job_phases_cover_the_api() -> None:
    assert set(metrics.PHASES) == {p.value for p in JobPhase}


@pytest.mark.parametrize("port", ["0", "65536"])
def test_metrics_port_out_of_range_is_refused(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from videoqueue.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--metrics-port", port])
    assert exited.value.code == 2
    assert f"--metrics-port must be a port number from 1 to 65535, not {port}" in (
        capsys.readouterr().err
    )


def test_reserved_memory_counts_the_whole_worker_pod(ns: str) -> None:
    """A sidecar's limit is memory the pod can use: the metric counts it, as admission does."""
    controller = Controller(cast(KubeClient, FakeKube()))
    sidecar = container("log-shipper", "512Mi", image="s:1")
    queue = (
        MakeQueue("work", ns)
        .generation(1)
        .concurrency(3)
        .template(container("worker", image="w:1"), sidecar)
    )
    entry = controller.queues[f"{ns}/work"] = QueueEntry(f"{ns}/work", body={}, queue=queue.model())
    for name, phase in (("r1", "Running"), ("a1", "Admitted"), ("p1", "Pending")):
        key = f"{ns}/{name}"
        fields = {"phase": phase, "effectiveMemory": "1Gi"}
        controller.jobs[key] = JobEntry(MakeJob(name, ns).status(**fields).model().to_dict())
        entry.jobs.add(key)
    previous = metrics.STATE.source
    metrics.STATE.source = lambda: Activity("acting", controller, controller.kube)
    try:
        reserved = sample("videoqueue_queue_memory_reserved_bytes", namespace=ns, queue="work")
    finally:
        metrics.STATE.source = previous
    assert reserved == 2 * (2**30 + 512 * 2**20)
