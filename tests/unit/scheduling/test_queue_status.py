"""A VideoQueue's status: counts by phase, memory in use, Ready/Reconciling conditions,
health, and the merge patch that writes it only when something changed."""

from __future__ import annotations

import datetime
import json
import re
import shlex
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from videoqueue.api import (
    Condition,
    ConditionStatus,
    JobPhase,
    QueueConditionType,
    QueueHealth,
    QueueState,
    VideoJobStatus,
    VideoQueueStatus,
    find_condition,
    format_bytes,
    parse_quantity,
)
from videoqueue.api.patching import merge_patch, status_patch
from videoqueue.envtest.builders import WORKER, MakeQueue, container
from videoqueue.scheduling.queue_status import summarize_queue

T0 = datetime.datetime(2026, 1, 1, 10, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)
T2 = T0 + datetime.timedelta(minutes=10)

PHASE_FIELDS = (
    "pending",
    "waiting",
    "admitted",
    "running",
    "backoff",
    "succeeded",
    "failed",
    "cancelled",
    "rejected",
)


def work_queue(namespace: str | None = "media") -> MakeQueue:
    return MakeQueue("work", namespace).generation(1)


def job(phase: JobPhase | None, memory: str | None = "1Gi") -> VideoJobStatus:
    """A job's desired status: only the phase and memory matter to the queue."""
    return VideoJobStatus(phase=phase, effective_memory=memory)


def counts(status: VideoQueueStatus) -> dict[str, int]:
    return {f: n for f in PHASE_FIELDS if (n := getattr(status, f))}


def condition(status: VideoQueueStatus, type_: str) -> Condition:
    found = find_condition(status.conditions, type_)
    assert found is not None, f"no {type_} condition in {status.conditions}"
    return found


# --- Counts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        pytest.param([], {}, id="no-jobs-all-zero"),
        pytest.param(
            [job(p) for p in JobPhase],
            {f: 1 for f in PHASE_FIELDS},
            id="one-of-each-phase",
        ),
        pytest.param([job(None), job(None)], {"pending": 2}, id="no-phase-counts-as-pending"),
        pytest.param(
            [job(JobPhase.PENDING), job(None), job(JobPhase.RUNNING), job(JobPhase.RUNNING)],
            {"pending": 2, "running": 2},
            id="unphased-adds-to-pending",
        ),
        pytest.param(
            [job(JobPhase.SUCCEEDED)] * 3 + [job(JobPhase.FAILED), job(JobPhase.BACKOFF)],
            {"succeeded": 3, "failed": 1, "backoff": 1},
            id="finished-and-retrying",
        ),
    ],
)
def test_counts_jobs_by_phase(jobs: list[VideoJobStatus], expected: dict[str, int]) -> None:
    status = summarize_queue(work_queue().model(), jobs, T0)

    assert counts(status) == expected


def test_counts_are_written_even_when_zero() -> None:
    # The printer columns read .status.pending and .status.running; 0 must show as 0.
    written = summarize_queue(work_queue().model(), [], T0).to_dict()

    assert {f: written[f] for f in PHASE_FIELDS} == dict.fromkeys(PHASE_FIELDS, 0)


def test_accepts_any_iterable_of_jobs() -> None:
    status = summarize_queue(work_queue().model(), (job(JobPhase.RUNNING) for _ in range(3)), T0)

    assert status.running == 3
    assert status.memory is not None
    assert status.memory.reserved == "3Gi"


# --- Memory -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "jobs", "reserved", "summary"),
    [
        pytest.param("8Gi", [], "0", "0/8Gi", id="idle-queue-shows-0"),
        pytest.param(
            "8Gi",
            [job(JobPhase.ADMITTED, "1Gi"), job(JobPhase.RUNNING, "2Gi")],
            "3Gi",
            "3Gi/8Gi",
            id="admitted-and-running-reserve",
        ),
        pytest.param(
            "8Gi",
            [
                job(JobPhase.PENDING, "4Gi"),
                job(JobPhase.WAITING, "4Gi"),
                job(JobPhase.BACKOFF, "4Gi"),
                job(None, "4Gi"),
            ],
            "0",
            "0/8Gi",
            id="waiting-jobs-reserve-nothing",
        ),
        pytest.param(
            "8Gi",
            [
                job(JobPhase.SUCCEEDED, "4Gi"),
                job(JobPhase.FAILED, "4Gi"),
                job(JobPhase.CANCELLED, "4Gi"),
                job(JobPhase.REJECTED, "16Gi"),
            ],
            "0",
            "0/8Gi",
            id="finished-jobs-reserve-nothing",
        ),
        pytest.param(
            "8Gi",
            [job(JobPhase.RUNNING, "512Mi"), job(JobPhase.RUNNING, "1536Mi")],
            "2Gi",
            "2Gi/8Gi",
            id="mebibytes-add-up-to-gibibytes",
        ),
        pytest.param(
            "8Gi",
            [job(JobPhase.RUNNING, "512Mi")],
            "512Mi",
            "512Mi/8Gi",
            id="smaller-than-a-gibibyte",
        ),
        pytest.param(
            "10G",
            [job(JobPhase.RUNNING, "1G"), job(JobPhase.RUNNING, "2G")],
            "3G",
            "3G/10G",
            id="decimal-units",
        ),
        pytest.param(
            "10G",
            [job(JobPhase.RUNNING, "1G"), job(JobPhase.RUNNING, "3G")],
            "4G",
            "4G/10G",
            id="decimal-units-stay-decimal",
        ),
        pytest.param("8192Mi", [], "0", "0/8Gi", id="budget-in-shortest-form"),
        pytest.param(
            "8Gi", [job(JobPhase.RUNNING, None)], "0", "0/8Gi", id="running-without-memory"
        ),
    ],
)
def test_memory_reserved_against_budget(
    budget: str, jobs: list[VideoJobStatus], reserved: str, summary: str
) -> None:
    status = summarize_queue(work_queue().budget(budget).model(), jobs, T0)

    assert status.memory is not None
    assert (status.memory.reserved, status.memory.summary) == (reserved, summary)
    assert status.memory.budget == summary.split("/")[1]


@pytest.mark.parametrize(
    ("queue", "jobs", "reserved"),
    [
        pytest.param(
            work_queue().budget("4Gi").template(WORKER, container("proxy", "30Gi")),
            [job(JobPhase.RUNNING, "1Gi"), job(JobPhase.ADMITTED, "1Gi")],
            "62Gi",
            id="sidecar-counts-per-pod",
        ),
        pytest.param(
            work_queue().template(WORKER, initContainers=[container("fetch", "3Gi")]),
            [job(JobPhase.RUNNING, "1Gi"), job(JobPhase.RUNNING, "4Gi")],
            "7Gi",
            id="init-container-counts-while-bigger-than-the-pod",
        ),
        pytest.param(
            work_queue().template(
                WORKER, initContainers=[container("log", "512Mi", restartPolicy="Always")]
            ),
            [job(JobPhase.RUNNING, "1Gi")],
            "1536Mi",
            id="sidecar-init-container-counts-as-regular",
        ),
        pytest.param(
            work_queue().template(WORKER, container("proxy", "1Gi")),
            [job(JobPhase.PENDING, "1Gi"), job(JobPhase.SUCCEEDED, "1Gi")],
            "0",
            id="waiting-and-finished-jobs-still-reserve-nothing",
        ),
    ],
)
def test_reserved_memory_counts_whole_worker_pods(
    queue: MakeQueue, jobs: list[VideoJobStatus], reserved: str
) -> None:
    status = summarize_queue(queue.model(), jobs, T0)

    assert status.memory is not None
    assert status.memory.reserved == reserved


def test_reserved_memory_of_a_template_the_operator_refuses_counts_what_it_can() -> None:
    queue = work_queue().template(WORKER, {"name": "unlimited", "image": "u"})

    status = summarize_queue(queue.model(), [job(JobPhase.RUNNING, "1Gi")], T0)

    assert status.memory is not None
    assert status.memory.reserved == "1Gi"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(0, "0", id="zero"),
        pytest.param(1, "1", id="one-byte"),
        pytest.param(1024, "1Ki", id="kibibyte"),
        pytest.param(1000, "1k", id="kilobyte"),
        pytest.param(3 * 1024**3, "3Gi", id="gibibytes"),
        pytest.param(4 * 10**9, "4G", id="gigabytes-not-3906250Ki"),
        pytest.param(1024**4, "1Ti", id="tebibyte"),
        pytest.param(1536 * 1024**2, "1536Mi", id="one-and-a-half-gibibytes"),
        pytest.param(1_234_567, "1234567", id="no-suffix-fits"),
    ],
)
def test_format_bytes_is_exact_and_short(value: int, shown: str) -> None:
    assert format_bytes(value) == shown
    assert parse_quantity(shown) == value


@given(st.integers(min_value=0, max_value=2**70))
def test_format_bytes_round_trips(value: int) -> None:
    assert parse_quantity(format_bytes(value)) == value


# --- observedGeneration, health -----------------------------------------------------------


def test_observed_generation_is_the_queues_generation() -> None:
    status = summarize_queue(work_queue().generation(7).model(), [], T0)

    assert status.observed_generation == 7
    assert {c.observed_generation for c in status.conditions} == {7}


@pytest.mark.parametrize("state", list(QueueState), ids=str)
def test_health_is_healthy_by_default(state: QueueState) -> None:
    jobs = [job(JobPhase.FAILED)] * 10 + [job(JobPhase.PENDING)] * 100

    status = summarize_queue(work_queue().state(state).model(), jobs, T0)

    assert status.health == QueueHealth.HEALTHY


# --- Conditions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "ready", "reason", "says"),
    [
        pytest.param(QueueState.ACTIVE, ConditionStatus.TRUE, "Active", "admitted", id="active"),
        pytest.param(
            QueueState.PAUSED,
            ConditionStatus.TRUE,
            "Paused",
            "new jobs are accepted and wait",
            id="paused",
        ),
        pytest.param(
            QueueState.DRAINING,
            ConditionStatus.TRUE,
            "Draining",
            "new jobs are rejected",
            id="draining",
        ),
    ],
)
def test_ready_follows_state(
    state: QueueState, ready: ConditionStatus, reason: str, says: str
) -> None:
    status = summarize_queue(work_queue().state(state).model(), [], T0)

    found = condition(status, QueueConditionType.READY)
    assert (found.status, found.reason, found.last_transition_time) == (ready, reason, T0)
    assert says in found.message
    assert ("kubectl" in found.message) == (state != QueueState.ACTIVE)


@pytest.mark.parametrize(
    ("namespace", "prefix"),
    [
        pytest.param("media", "kubectl -n media patch vq work", id="namespaced"),
        pytest.param(None, "kubectl patch vq work", id="no-namespace"),
    ],
)
@pytest.mark.parametrize("state", [QueueState.PAUSED, QueueState.DRAINING], ids=str)
def test_not_ready_message_gives_a_resume_command_that_works(
    state: QueueState, namespace: str | None, prefix: str
) -> None:
    status = summarize_queue(work_queue(namespace).state(state).model(), [], T0)

    message = condition(status, QueueConditionType.READY).message
    command = message[message.index("kubectl") :]
    assert command.startswith(prefix)
    args = shlex.split(command)
    assert args[args.index("--type") + 1] == "merge"
    assert json.loads(args[args.index("-p") + 1]) == {"spec": {"state": "Active"}}


@pytest.mark.parametrize("state", list(QueueState), ids=str)
def test_reconciling_is_false_for_the_observed_generation(state: QueueState) -> None:
    status = summarize_queue(work_queue().state(state).generation(3).model(), [], T0)

    found = condition(status, QueueConditionType.RECONCILING)
    assert (found.status, found.reason, found.observed_generation) == (
        ConditionStatus.FALSE,
        "Reconciled",
        3,
    )
    assert find_condition(status.conditions, QueueConditionType.STALLED) is None


def test_conditions_are_valid_kubernetes_conditions() -> None:
    status = summarize_queue(work_queue().state(QueueState.DRAINING).model(), [], T0)

    for found in status.to_dict()["conditions"]:
        assert re.fullmatch(r"[A-Z][A-Za-z]*", found["reason"])
        assert found["lastTransitionTime"] == "2026-01-01T10:00:00Z"
        assert Condition.model_validate(found).message == found["message"]


# --- lastTransitionTime -------------------------------------------------------------------


@pytest.mark.parametrize("state", list(QueueState), ids=str)
def test_last_transition_time_kept_while_nothing_transitions(state: QueueState) -> None:
    first = summarize_queue(work_queue().state(state).model(), [], T0)

    later = summarize_queue(
        work_queue().state(state).model(), [job(JobPhase.RUNNING)], T1, previous=first
    )

    kept = [(c.type, c.last_transition_time) for c in later.conditions if c.type != "Drained"]
    assert kept == [("Ready", T0), ("Reconciling", T0)]


@pytest.mark.parametrize(
    ("phases", "drained"),
    [
        pytest.param([], "True", id="nothing-left"),
        pytest.param([JobPhase.PENDING, JobPhase.SUCCEEDED], "True", id="only-waiting-or-done"),
        pytest.param([JobPhase.RUNNING], "False", id="still-running"),
        pytest.param([JobPhase.ADMITTED], "False", id="still-admitted"),
    ],
)
def test_draining_queue_is_drained_once_nothing_runs(phases: list[JobPhase], drained: str) -> None:
    status = summarize_queue(
        work_queue().state(QueueState.DRAINING).model(), [job(p) for p in phases], T0
    )

    found = find_condition(status.conditions, "Drained")
    assert found is not None
    assert found.status == drained


def test_drained_condition_goes_when_the_queue_is_active_again() -> None:
    draining = summarize_queue(work_queue().state(QueueState.DRAINING).model(), [], T0)

    active = summarize_queue(work_queue().model(), [], T1, previous=draining)

    assert find_condition(active.conditions, "Drained") is None


@pytest.mark.parametrize(
    ("before", "after", "ready_since"),
    [
        # Ready stays True across states (only the reason changes), so its time stays.
        pytest.param(QueueState.ACTIVE, QueueState.PAUSED, T0, id="active-to-paused-stays"),
        pytest.param(QueueState.PAUSED, QueueState.ACTIVE, T0, id="paused-to-active-stays"),
        pytest.param(QueueState.PAUSED, QueueState.DRAINING, T0, id="paused-to-draining-stays"),
    ],
)
def test_last_transition_time_moves_only_when_ready_changes_status(
    before: QueueState, after: QueueState, ready_since: datetime.datetime
) -> None:
    first = summarize_queue(work_queue().state(before).generation(1).model(), [], T0)

    later = summarize_queue(work_queue().state(after).generation(2).model(), [], T1, previous=first)

    ready = condition(later, QueueConditionType.READY)
    assert ready.last_transition_time == ready_since
    assert ready.reason == after.value
    assert ready.observed_generation == 2
    assert condition(later, QueueConditionType.RECONCILING).last_transition_time == T0


def test_previous_defaults_to_the_status_the_queue_was_read_with() -> None:
    stored = summarize_queue(work_queue().model(), [], T0)

    later = summarize_queue(work_queue().status(stored).model(), [], T1)

    assert condition(later, QueueConditionType.READY).last_transition_time == T0


def test_conditions_of_other_types_are_kept() -> None:
    custom = Condition(
        type="BackupDone", status=ConditionStatus.TRUE, reason="Nightly", last_transition_time=T0
    )

    status = summarize_queue(
        work_queue().model(), [], T1, previous=VideoQueueStatus(conditions=[custom])
    )

    assert [c.type for c in status.conditions] == ["BackupDone", "Ready", "Reconciling"]
    assert condition(status, "BackupDone") == custom


def test_previous_is_not_modified() -> None:
    previous = summarize_queue(work_queue().model(), [], T0)
    before = previous.model_copy(deep=True)

    summarize_queue(work_queue().state(QueueState.PAUSED).model(), [], T1, previous=previous)

    assert previous == before


# --- Bounded size -------------------------------------------------------------------------


def test_status_size_does_not_grow_with_the_number_of_jobs() -> None:
    def size(n: int) -> int:
        jobs = [job(phase, "1Mi") for phase in JobPhase for _ in range(n)]
        return len(json.dumps(summarize_queue(work_queue().model(), jobs, T0).to_dict()))

    # Only the digits of the counts, the memory total and the backlog finding grow.
    assert size(10_000) - size(1_000) < 64


# --- status_patch ---------------------------------------------------------------------------


def test_patch_is_none_when_the_stored_status_is_the_desired_one() -> None:
    desired = summarize_queue(work_queue().model(), [job(JobPhase.RUNNING)], T0)

    assert status_patch(desired.to_dict(), desired) is None


def test_unchanged_queue_costs_no_write_at_a_later_time() -> None:
    jobs = [job(JobPhase.RUNNING), job(JobPhase.PENDING)]
    stored = summarize_queue(work_queue().model(), jobs, T0).to_dict()

    queue = work_queue().status(VideoQueueStatus.model_validate(stored)).model()
    again = summarize_queue(queue, jobs, T2)

    assert status_patch(stored, again) is None


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        pytest.param(
            [job(JobPhase.PENDING), job(JobPhase.PENDING)],
            {"pending": 2},
            id="only-the-changed-count",
        ),
        pytest.param(
            [job(JobPhase.PENDING), job(JobPhase.RUNNING, "2Gi")],
            {"running": 1, "memory": {"reserved": "2Gi", "summary": "2Gi/8Gi"}},
            id="nested-memory-diffed-key-by-key",
        ),
    ],
)
def test_patch_holds_only_what_changed(
    jobs: list[VideoJobStatus], expected: dict[str, Any]
) -> None:
    stored = summarize_queue(work_queue().model(), [job(JobPhase.PENDING)], T0).to_dict()
    queue = work_queue().status(VideoQueueStatus.model_validate(stored)).model()

    assert status_patch(stored, summarize_queue(queue, jobs, T1)) == expected


def test_patch_replaces_conditions_whole_when_one_changes() -> None:
    stored = summarize_queue(work_queue().model(), [], T0).to_dict()
    queue = work_queue().state(QueueState.PAUSED).status(VideoQueueStatus.model_validate(stored))

    patch = status_patch(stored, summarize_queue(queue.model(), [], T1))

    assert patch is not None
    assert set(patch) == {"conditions"}
    assert [c["type"] for c in patch["conditions"]] == ["Ready", "Reconciling"]


def test_patch_starts_an_empty_status_in_full() -> None:
    desired = summarize_queue(work_queue().model(), [], T0)

    assert status_patch({}, desired) == desired.to_dict()


def test_patch_removes_declared_fields_that_became_unset_and_leaves_foreign_ones() -> None:
    stored = {
        **summarize_queue(work_queue().model(), [], T0).to_dict(),
        "kopf": {"progress": {}},
    }
    desired = VideoQueueStatus.model_validate(stored)
    desired.health = None

    assert status_patch(stored, desired) == {"health": None}


def test_patch_works_for_job_statuses_too() -> None:
    stored = VideoJobStatus(phase=JobPhase.RUNNING, result={"a": 1, "b": 2}).to_dict()
    desired = VideoJobStatus(phase=JobPhase.SUCCEEDED, result={"a": 1})

    assert status_patch(stored, desired) == {"phase": "Succeeded", "result": {"b": None}}
    assert status_patch(desired.to_dict(), desired) is None


@pytest.mark.parametrize(
    ("current", "desired", "expected"),
    [
        pytest.param({"a": 1}, {"a": 1}, {}, id="equal"),
        pytest.param({}, {"a": 1}, {"a": 1}, id="added"),
        pytest.param({"a": 1, "b": 2}, {"a": 1}, {"b": None}, id="removed-is-null"),
        pytest.param({"a": {"x": 1, "y": 2}}, {"a": {"x": 1}}, {"a": {"y": None}}, id="nested"),
        pytest.param({"a": 1}, {"a": {"x": 1}}, {"a": {"x": 1}}, id="scalar-to-object"),
        pytest.param({"a": {"x": 1}}, {"a": 2}, {"a": 2}, id="object-to-scalar"),
        pytest.param({"a": [1, 2]}, {"a": [1]}, {"a": [1]}, id="lists-replaced-whole"),
        pytest.param({}, {"a": {}}, {"a": {}}, id="empty-object-added"),
    ],
)
def test_merge_patch(
    current: dict[str, Any], desired: dict[str, Any], expected: dict[str, Any]
) -> None:
    patch = merge_patch(current, desired)

    assert patch == expected
    assert apply_merge_patch(current, patch) == desired


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result
