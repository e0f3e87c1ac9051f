"""The API models: defaults, wire names, validation that mirrors the CRD, round trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from videoqueue.api import (
    AttemptReason,
    Backoff,
    BackoffOverride,
    Condition,
    ConditionStatus,
    JobConditionType,
    JobPhase,
    QueueMemory,
    QueueState,
    VideoJob,
    VideoJobSpec,
    VideoJobStatus,
    VideoQueue,
    VideoQueueSpec,
    find_condition,
    is_condition_true,
    set_condition,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
Gi = 1024**3


def test_queue_defaults() -> None:
    spec = VideoQueueSpec.model_validate({"memory": {"budget": "8Gi"}})

    assert spec.state is QueueState.ACTIVE
    assert spec.concurrency == 4
    assert spec.memory.default_request == "1Gi"
    assert spec.memory.max is None
    assert spec.memory.oom_retry_multiplier == 2
    assert spec.memory.backfill_seconds == 300
    assert spec.retry.max_attempts == 3
    assert spec.retry.backoff == Backoff(initial_seconds=10, factor=2, max_seconds=600)
    assert spec.active_deadline_seconds is None
    assert spec.template == {}


def test_job_defaults() -> None:
    spec = VideoJobSpec.model_validate(
        {"queueName": "work", "type": "probe", "input": {"url": "file:///in.mp4"}}
    )

    assert spec.priority == 5
    assert spec.depends_on == []
    assert spec.suspend is False
    assert spec.cancel is False
    assert spec.resources.memory is None
    assert spec.max_attempts is None
    assert spec.backoff is None
    assert spec.params == {}


def test_status_defaults_are_empty() -> None:
    status = VideoJobStatus()

    assert status.phase is None
    assert status.attempt == 0
    assert status.attempts == []
    assert status.conditions == []
    assert status.to_dict() == {"attempt": 0, "attempts": [], "conditions": []}


def test_wire_names_are_camel_case_and_python_names_snake_case() -> None:
    by_alias = VideoJobSpec.model_validate(
        {
            "queueName": "work",
            "type": "clip",
            "input": {"url": "x"},
            "maxAttempts": 2,
            "dependsOn": ["a"],
            "startAfter": "2026-01-01T00:00:00Z",
        }
    )
    by_name = VideoJobSpec(
        queue_name="work",
        type="clip",
        input={"url": "x"},  # type: ignore[arg-type]
        max_attempts=2,
        depends_on=["a"],
        start_after=T0,
    )

    assert by_alias == by_name
    dumped = by_name.to_dict()
    assert {"queueName", "maxAttempts", "dependsOn", "startAfter"} <= dumped.keys()
    assert dumped["startAfter"] == "2026-01-01T00:00:00Z"
    assert "backoff" not in dumped  # unset optional fields stay off the wire


def test_integer_quantities_become_strings() -> None:
    memory = QueueMemory.model_validate({"budget": 8 * Gi, "max": "2Gi", "defaultRequest": 1024})

    assert memory.budget == str(8 * Gi)
    assert memory.budget_bytes == 8 * Gi
    assert memory.max_bytes == 2 * Gi
    assert memory.default_request_bytes == 1024


def test_per_job_limit_defaults_to_the_budget() -> None:
    assert QueueMemory(budget="4Gi").max_bytes == 4 * Gi


@pytest.mark.parametrize(
    ("memory", "message"),
    [
        pytest.param({"budget": "0"}, "positive memory quantity", id="zero-budget"),
        pytest.param({"budget": "2GB"}, "positive memory quantity", id="not-a-quantity"),
        pytest.param({"budget": "8Gi", "max": "512m"}, "positive memory", id="milli-bytes"),
        pytest.param({"budget": -5}, "positive memory quantity", id="negative-integer"),
        pytest.param(
            {"budget": "4Gi", "max": "8Gi"},
            "spec.memory.max must not exceed spec.memory.budget",
            id="max-over-budget",
        ),
        pytest.param(
            {"budget": "8Gi", "max": "1Gi", "defaultRequest": "2Gi"},
            "spec.memory.defaultRequest must not exceed spec.memory.max",
            id="default-request-over-max",
        ),
        pytest.param(
            {"budget": "512Mi"},
            "must not exceed spec.memory.budget",
            id="default-request-over-budget",
        ),
        pytest.param(
            {"budget": "8Gi", "oomRetryMultiplier": 1}, "greater than 1", id="multiplier-1"
        ),
    ],
)
def test_queue_memory_rules(memory: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        QueueMemory.model_validate(memory)


def test_backoff_initial_may_not_exceed_max() -> None:
    with pytest.raises(ValidationError, match="initialSeconds must not exceed"):
        Backoff(initial_seconds=700, max_seconds=600)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param({"priority": -1}, "priority", id="negative-priority"),
        pytest.param({"priority": 11}, "priority", id="priority-11"),
        pytest.param({"type": "Transcode"}, "type", id="upper-case-type"),
        pytest.param({"queueName": "Work"}, "queueName", id="queue-name-not-dns"),
        pytest.param({"queueName": "q" * 64}, "queueName", id="queue-name-too-long"),
        pytest.param({"dependsOn": ["UPPER"]}, "dependsOn", id="dependency-not-a-name"),
        pytest.param({"startAfter": "2026-01-01T00:00:00"}, "startAfter", id="naive-timestamp"),
        pytest.param({"input": {}}, "input", id="no-input-url-nor-from-job"),
        pytest.param(
            {"input": {"url": "x", "fromJob": "a"}, "dependsOn": ["a"]},
            "input",
            id="input-url-and-from-job",
        ),
        pytest.param({"input": {"fromJob": "a"}}, "", id="from-job-not-in-depends-on"),
        pytest.param({"input": {"url": "x", "outputIndex": 0}}, "input", id="index-without-job"),
        pytest.param(
            {"input": {"fromJob": "a", "outputIndex": -1}, "dependsOn": ["a"]},
            "input.outputIndex",
            id="negative-output-index",
        ),
        pytest.param({"resources": {"memory": "1GB"}}, "resources.memory", id="bad-memory"),
    ],
)
def test_job_spec_rules(spec: dict[str, Any], field: str) -> None:
    base = {"queueName": "work", "type": "transcode", "input": {"url": "x"}}

    with pytest.raises(ValidationError) as raised:
        VideoJobSpec.model_validate({**base, **spec})

    locations = {".".join(map(str, e["loc"])) for e in raised.value.errors()}
    assert any(loc.startswith(field) for loc in locations), locations


def test_custom_job_types_are_allowed() -> None:
    spec = VideoJobSpec.model_validate(
        {"queueName": "work", "type": "scene-detect", "input": {"url": "x"}}
    )

    assert spec.type == "scene-detect"


def test_job_may_not_depend_on_itself() -> None:
    body = {
        "metadata": {"name": "encode"},
        "spec": {
            "queueName": "w",
            "type": "transcode",
            "input": {"url": "x"},
            "dependsOn": ["probe", "encode"],
        },
    }

    with pytest.raises(ValidationError, match="must not name the job itself"):
        VideoJob.model_validate(body)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        pytest.param(BackoffOverride(), Backoff(), id="nothing-overridden"),
        pytest.param(
            BackoffOverride(factor=3),
            Backoff(initial_seconds=10, factor=3, max_seconds=600),
            id="one-field",
        ),
        pytest.param(
            BackoffOverride(initial_seconds=900),
            Backoff(initial_seconds=900, factor=2, max_seconds=900),
            id="initial-above-queue-cap-raises-the-cap",
        ),
    ],
)
def test_backoff_override_applies_on_top_of_the_queue(
    override: BackoffOverride, expected: Backoff
) -> None:
    assert override.apply_to(Backoff()) == expected


def test_terminal_phases() -> None:
    terminal = {p for p in JobPhase if p.is_terminal}

    assert terminal == {JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED, JobPhase.REJECTED}


def cond(type_: str, status: ConditionStatus, at: datetime, reason: str = "Because") -> Condition:
    return Condition(type=type_, status=status, reason=reason, last_transition_time=at)


class TestSetCondition:
    def test_adds_a_new_type(self) -> None:
        admitted = cond("Admitted", ConditionStatus.TRUE, T0)

        assert set_condition([], admitted) == [admitted]

    def test_keeps_transition_time_when_status_is_unchanged(self) -> None:
        before = cond("Running", ConditionStatus.TRUE, T0, reason="Started")
        later = cond("Running", ConditionStatus.TRUE, T0 + timedelta(minutes=5), reason="Progress")

        [result] = set_condition([before], later)

        assert result.last_transition_time == T0
        assert result.reason == "Progress"

    def test_moves_transition_time_when_status_changes(self) -> None:
        before = cond("Running", ConditionStatus.TRUE, T0)
        after = cond("Running", ConditionStatus.FALSE, T0 + timedelta(minutes=5))

        assert set_condition([before], after) == [after]

    def test_leaves_other_types_in_place(self) -> None:
        admitted = cond("Admitted", ConditionStatus.TRUE, T0)
        running = cond("Running", ConditionStatus.TRUE, T0)
        complete = cond("Complete", ConditionStatus.TRUE, T0 + timedelta(minutes=1))

        result = set_condition([admitted, running], complete)

        assert [c.type for c in result] == ["Admitted", "Running", "Complete"]
        assert is_condition_true(result, JobConditionType.COMPLETE)
        assert not is_condition_true(result, JobConditionType.FAILED)
        assert find_condition(result, "Admitted") is admitted


@pytest.mark.parametrize(
    "reason",
    [
        pytest.param("", id="empty"),
        pytest.param("not camel", id="spaces"),
        pytest.param("1Leading", id="leading-digit"),
    ],
)
def test_condition_reason_must_be_camel_case(reason: str) -> None:
    with pytest.raises(ValidationError):
        cond("Complete", ConditionStatus.TRUE, T0, reason=reason)


QUEUE_OBJECT: dict[str, Any] = {
    "apiVersion": "videoqueue.dev/v1alpha1",
    "kind": "VideoQueue",
    "metadata": {
        "name": "transcode",
        "namespace": "media",
        "uid": "0b7e",
        "generation": 3,
        "resourceVersion": "42",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {"team": "media"},
        "annotations": {},
        "managedFields": [{"manager": "kubectl"}],
    },
    "spec": {
        "state": "Draining",
        "concurrency": 8,
        "memory": {
            "budget": "64Gi",
            "defaultRequest": "2Gi",
            "max": "16Gi",
            "oomRetryMultiplier": 1.5,
            "backfillSeconds": 120,
            "sizing": "Learned",
            "learned": {"percentile": 90, "headroom": 1.5, "minObservations": 5, "floor": "128Mi"},
        },
        "retry": {
            "maxAttempts": 4,
            "backoff": {"initialSeconds": 5, "factor": 2.0, "maxSeconds": 300},
        },
        "activeDeadlineSeconds": 7200,
        "maxPending": 500,
        "preemption": "LowerPriority",
        "aging": {"intervalSeconds": 300, "maxBoost": 5},
        "rateLimit": {"startsPerMinute": 60},
        "ttlSecondsAfterFinished": {"succeeded": 3600, "failed": 86400},
        "memoryPressure": {
            "enabled": True,
            "oomKills": 3,
            "windowSeconds": 600,
            "recoverySeconds": 60,
        },
        "notifications": {
            "url": "https://hooks.example.test/video",
            "on": ["Failed"],
            "maxAttempts": 5,
            "timeoutSeconds": 10,
        },
        "health": {
            "backlogWarning": 100,
            "backlogCritical": 1000,
            "failureRateWarning": 0.1,
            "failureRateCritical": 0.5,
            "minFinished": 5,
            "memoryUtilizationWarning": 0.95,
        },
        "statistics": {"windowSeconds": 900},
        "worker": {
            "fileRoots": ["/media", "/scratch"],
            "allowedHosts": ["media.internal", "10.20.0.0/16"],
            "downloadTimeoutSeconds": 600,
            "copyAnnotations": ["example.com/*"],
        },
        "template": {"spec": {"containers": [{"name": "worker", "image": "w:1"}]}},
    },
    "status": {
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Admitting",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:01Z",
                "observedGeneration": 3,
            }
        ],
        "health": "Healthy",
        "pending": 10,
        "waiting": 1,
        "admitted": 2,
        "running": 6,
        "backoff": 1,
        "succeeded": 100,
        "failed": 3,
        "cancelled": 0,
        "rejected": 1,
        "memory": {"reserved": "12Gi", "budget": "64Gi", "summary": "12Gi/64Gi"},
        "healthReasons": [],
        "effectiveConcurrency": 4,
        "statistics": {
            "windowSeconds": 900,
            "finished": 20,
            "succeeded": 19,
            "failed": 1,
            "successRate": 0.95,
            "meanWaitSeconds": 3.5,
            "meanRunSeconds": 61.25,
            "throughputPerMinute": 1.333,
            "byType": [
                {
                    "type": "transcode",
                    "finished": 20,
                    "successRate": 0.95,
                    "meanWaitSeconds": 3.5,
                    "meanRunSeconds": 61.25,
                    "throughputPerMinute": 1.333,
                }
            ],
            "bucketSeconds": 60,
            "countedThrough": "2026-01-01T01:05:00.250000Z",
            "buckets": [
                {
                    "succeeded": 19,
                    "failed": 1,
                    "waitSecondsSum": 70.0,
                    "waitSecondsCount": 20,
                    "runSecondsSum": 1225.0,
                    "runSecondsCount": 20,
                    "start": "2026-01-01T01:05:00Z",
                    "byType": [
                        {
                            "succeeded": 19,
                            "failed": 1,
                            "waitSecondsSum": 70.0,
                            "waitSecondsCount": 20,
                            "runSecondsSum": 1225.0,
                            "runSecondsCount": 20,
                            "type": "transcode",
                        }
                    ],
                }
            ],
        },
        "batches": [
            {"name": "ep-7", "total": 12, "pending": 3, "running": 2, "succeeded": 7, "failed": 0}
        ],
        "sizing": [
            {"key": "transcode/720p/h264/medium", "observations": 40, "peaksMi": [250, 263]}
        ],
    },
}

JOB_OBJECT: dict[str, Any] = {
    "apiVersion": "videoqueue.dev/v1alpha1",
    "kind": "VideoJob",
    "metadata": {
        "name": "encode-42",
        "namespace": "media",
        "generation": 1,
        "labels": {},
        "annotations": {},
    },
    "spec": {
        "queueName": "transcode",
        "priority": 8,
        "type": "transcode",
        "input": {"url": "s3://in/42.mov"},
        "output": {"url": "s3://out/42/"},
        "params": {"codec": "h265", "ladder": [1080, 720]},
        "resources": {"memory": "3Gi"},
        "maxAttempts": 2,
        "backoff": {"factor": 4.0},
        "activeDeadlineSeconds": 900,
        "startAfter": "2026-01-01T01:00:00Z",
        "dependsOn": ["probe-42"],
        "suspend": False,
        "cancel": False,
    },
    "status": {
        "observedGeneration": 1,
        "phase": "Succeeded",
        "conditions": [
            {
                "type": "Complete",
                "status": "True",
                "reason": "WorkerSucceeded",
                "message": "done",
                "lastTransitionTime": "2026-01-01T01:05:00Z",
            }
        ],
        "attempt": 2,
        "attempts": [
            {
                "attempt": 1,
                "pod": "encode-42-a1",
                "node": "n1",
                "memory": "3Gi",
                "exitCode": 137,
                "reason": "OOMKilled",
                "startTime": "2026-01-01T01:00:05Z",
                "finishTime": "2026-01-01T01:01:00Z",
            },
            {"attempt": 2, "pod": "encode-42-a2", "memory": "4608Mi", "reason": "Completed"},
        ],
        "effectiveMemory": "4608Mi",
        "memorySource": "grown after OOMKilled",
        "stage": "upload",
        "progress": 100,
        "message": "finished",
        "queuedTime": "2026-01-01T01:00:00Z",
        "admittedTime": "2026-01-01T01:01:10Z",
        "startTime": "2026-01-01T01:00:05Z",
        "completionTime": "2026-01-01T01:05:00Z",
        "nextAttemptTime": "2026-01-01T01:01:10Z",
        "waitSeconds": 15.0,
        "runSeconds": 280.5,
        "result": {"output": "s3://out/42/master.m3u8", "bytes": 123456},
    },
}


@pytest.mark.parametrize(
    ("model", "body"),
    [
        pytest.param(VideoQueue, QUEUE_OBJECT, id="queue"),
        pytest.param(VideoJob, JOB_OBJECT, id="job"),
    ],
)
def test_objects_round_trip(model: type[VideoQueue] | type[VideoJob], body: dict[str, Any]) -> None:
    assert model.model_validate(body).to_dict() == body


def test_round_trip_reads_typed_values() -> None:
    job = VideoJob.model_validate(JOB_OBJECT)

    assert job.status.phase is JobPhase.SUCCEEDED
    assert job.status.attempts[0].reason is AttemptReason.OOM_KILLED
    assert job.status.completion_time == T0 + timedelta(hours=1, minutes=5)
    assert job.metadata.name == "encode-42"


def test_unknown_fields_are_ignored() -> None:
    # An operator one release behind the installed CRDs must still read new objects.
    spec = VideoQueueSpec.model_validate({"memory": {"budget": "1Gi"}, "fromTheFuture": 1})

    assert "fromTheFuture" not in spec.to_dict()
