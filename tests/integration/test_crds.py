"""The generated CRDs on a real API server: defaults, schema and CEL rules, status, columns."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from videoqueue.api import (
    POSITIVE_QUANTITY_MESSAGE,
    VideoJobSpec,
    VideoJobStatus,
    VideoQueueSpec,
)
from videoqueue.envtest import ClusterBase
from videoqueue.envtest.builders import MakeJob, MakeQueue

pytestmark = pytest.mark.integration

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


def create(
    cluster: ClusterBase, namespace: str, manifest: dict[str, Any], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=check
    )


def get(cluster: ClusterBase, namespace: str, resource: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "-n", namespace, resource, name, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def patch(
    cluster: ClusterBase,
    namespace: str,
    resource: str,
    name: str,
    body: dict[str, Any],
    *,
    status: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    args = ["patch", "-n", namespace, resource, name, "--type=merge", "-p", json.dumps(body)]
    if status:
        args.append("--subresource=status")
    return cluster.kubectl(*args, check=check)


def test_valid_queue_and_job_are_accepted_with_defaults(
    cluster: ClusterBase, namespace: str, crds: None
) -> None:
    create(cluster, namespace, MakeQueue().obj())
    create(cluster, namespace, MakeJob().obj())

    queue = get(cluster, namespace, "vq", "work")["spec"]
    job = get(cluster, namespace, "vj", "job")["spec"]

    assert queue == {
        "state": "Active",
        "concurrency": 4,
        "memory": {
            "budget": "8Gi",
            "defaultRequest": "1Gi",
            "oomRetryMultiplier": 2,
            "backfillSeconds": 300,
            "sizing": "Learned",
            "learned": {"percentile": 95, "headroom": 1.2, "minObservations": 10, "floor": "32Mi"},
        },
        "retry": {
            "maxAttempts": 3,
            "backoff": {"initialSeconds": 10, "factor": 2, "maxSeconds": 600},
        },
        "preemption": "Never",
        "memoryPressure": {
            "enabled": True,
            "oomKills": 3,
            "windowSeconds": 600,
            "recoverySeconds": 60,
        },
        "health": {
            "backlogWarning": 1000,
            "backlogCritical": 10000,
            "failureRateWarning": 0.1,
            "failureRateCritical": 0.5,
            "minFinished": 5,
            "memoryUtilizationWarning": 0.95,
        },
        "statistics": {"windowSeconds": 900},
        "worker": {
            "fileRoots": ["/media"],
            "allowedHosts": [],
            "downloadTimeoutSeconds": 3600,
            "copyAnnotations": [],
        },
    }
    assert job == {
        "queueName": "work",
        "type": "transcode",
        "input": {"url": "file:///media/in.mp4"},
        "priority": 5,
        "suspend": False,
        "cancel": False,
    }
    # What the server filled in is exactly what the models assume when a field is absent.
    assert VideoQueueSpec.model_validate(queue) == VideoQueueSpec.model_validate(
        MakeQueue().obj()["spec"]
    )
    assert VideoJobSpec.model_validate(job) == VideoJobSpec.model_validate(MakeJob().obj()["spec"])


FULL_QUEUE_SPEC: dict[str, Any] = {
    "state": "Paused",
    "concurrency": 12,
    "memory": {
        "budget": 68719476736,  # int-or-string: a plain integer is a byte count
        "defaultRequest": "1.5G",
        "max": "16Gi",
        "oomRetryMultiplier": 1.5,
        "backfillSeconds": 0,
        "sizing": "Static",
        "learned": {"percentile": 99, "headroom": 2.0, "minObservations": 1, "floor": "128Mi"},
    },
    "retry": {"maxAttempts": 5, "backoff": {"initialSeconds": 1, "factor": 3, "maxSeconds": 60}},
    "activeDeadlineSeconds": 3600,
    "notifications": {
        "url": "https://hooks.example.test/video",
        "on": ["Failed"],
        "maxAttempts": 7,
        "timeoutSeconds": 3,
        "secretRef": {"name": "media-webhook", "key": "token.v2"},
    },
    "template": {
        "metadata": {"labels": {"team": "media"}},
        "spec": {
            "securityContext": {"runAsNonRoot": True},
            "containers": [{"name": "worker", "image": "videoqueue/worker:1"}],
        },
    },
}

FULL_JOB_SPEC: dict[str, Any] = {
    "queueName": "work",
    "priority": 9,
    "type": "my-custom-type",
    "input": {"url": "https://example.test/in.mov"},
    "output": {"url": "s3://media/out/"},
    "params": {"codec": "h264", "crf": 23, "scaleWidth": 1280, "fps": 29.97, "tags": ["a", "b"]},
    "resources": {"memory": "3Gi"},
    "maxAttempts": 2,
    "backoff": {"initialSeconds": 5},
    "activeDeadlineSeconds": 600,
    "startAfter": "2030-01-02T03:04:05Z",
    "dependsOn": ["probe", "thumbs"],
    "suspend": True,
    "cancel": False,
}


def test_every_spec_field_survives_the_api_server(
    cluster: ClusterBase, namespace: str, crds: None
) -> None:
    """Nothing the models define is pruned: the schema and the models agree."""
    create(cluster, namespace, MakeQueue().spec(**FULL_QUEUE_SPEC).obj())
    create(cluster, namespace, MakeJob().spec(**FULL_JOB_SPEC).obj())

    queue = get(cluster, namespace, "vq", "work")["spec"]
    job = get(cluster, namespace, "vj", "job")["spec"]

    assert VideoQueueSpec.model_validate(queue) == VideoQueueSpec.model_validate(FULL_QUEUE_SPEC)
    assert VideoJobSpec.model_validate(job) == VideoJobSpec.model_validate(FULL_JOB_SPEC)
    assert queue["template"] == FULL_QUEUE_SPEC["template"]


FULL_JOB_STATUS: dict[str, Any] = {
    "observedGeneration": 1,
    "phase": "Backoff",
    "conditions": [
        {
            "type": "Admitted",
            "status": "False",
            "reason": "AttemptFailed",
            "message": "attempt 1 was OOMKilled; retrying with 4Gi",
            "lastTransitionTime": "2026-01-01T00:01:00Z",
            "observedGeneration": 1,
        }
    ],
    "attempt": 1,
    "attempts": [
        {
            "attempt": 1,
            "pod": "job-a1",
            "node": "kwok-node-0",
            "memory": "2Gi",
            "peakMemory": "2Gi",
            "exitCode": 137,
            "reason": "OOMKilled",
            "message": "container worker was OOMKilled",
            "startTime": "2026-01-01T00:00:10Z",
            "finishTime": "2026-01-01T00:01:00Z",
        }
    ],
    "effectiveMemory": "4Gi",
    "memorySource": "grown after OOMKilled",
    "stage": "encode",
    "progress": 40,
    "message": "retrying in 10s",
    "queuedTime": "2026-01-01T00:00:00Z",
    "admittedTime": "2026-01-01T00:00:05Z",
    "startTime": "2026-01-01T00:00:10Z",
    "nextAttemptTime": "2026-01-01T00:01:10Z",
    "waitSeconds": 5.5,
    "runSeconds": 50,
    "result": {"duration": 12.5, "streams": [{"codec": "h264"}]},
    "notification": {
        "key": "0f6e-uid/1/Failed",
        "state": "GaveUp",
        "owedTime": "2026-01-01T00:00:50Z",
        "tries": 5,
        "lastTryTime": "2026-01-01T00:02:00Z",
        "message": "5 tries to https://hooks.example.test/video failed; the last: HTTP 503",
    },
}


def test_status_changes_only_through_the_status_subresource(
    cluster: ClusterBase, namespace: str, crds: None
) -> None:
    create(cluster, namespace, MakeJob().obj())

    patch(cluster, namespace, "vj", "job", {"status": {"phase": "Running"}})
    assert "status" not in get(cluster, namespace, "vj", "job")

    patch(
        cluster,
        namespace,
        "vj",
        "job",
        {"spec": {"priority": 1}, "status": FULL_JOB_STATUS},
        status=True,
    )
    job = get(cluster, namespace, "vj", "job")

    assert job["spec"]["priority"] == 5  # spec is not writable through /status
    assert VideoJobStatus.model_validate(job["status"]) == VideoJobStatus.model_validate(
        FULL_JOB_STATUS
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param({"progress": 101}, "less than or equal to 100", id="progress-over-100"),
        pytest.param({"phase": "Done"}, 'Unsupported value: "Done"', id="unknown-phase"),
        pytest.param(
            {"notification": {"key": "u/1/Succeeded", "state": "Sent"}},
            'Unsupported value: "Sent"',
            id="unknown-notification-state",
        ),
        pytest.param(
            {"attempts": [{"attempt": 1, "reason": "Crashed"}]},
            'Unsupported value: "Crashed"',
            id="unknown-attempt-reason",
        ),
        pytest.param(
            {"attempts": [{"attempt": 1, "peakMemory": "lots"}]},
            "status.attempts[0].peakMemory",
            id="peak-memory-not-a-quantity",
        ),
        pytest.param(
            {
                "conditions": [
                    {
                        "type": "Complete",
                        "status": "Yes",
                        "reason": "Done",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ]
            },
            'Unsupported value: "Yes"',
            id="condition-status-not-true-false-unknown",
        ),
        pytest.param(
            {
                "conditions": [
                    {
                        "type": "Complete",
                        "status": "True",
                        "reason": "not camel case",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ]
            },
            "status.conditions[0].reason",
            id="condition-reason-not-camel-case",
        ),
    ],
)
def test_status_is_validated(
    cluster: ClusterBase, namespace: str, crds: None, status: dict[str, Any], expected: str
) -> None:
    create(cluster, namespace, MakeJob().obj())

    result = patch(cluster, namespace, "vj", "job", {"status": status}, status=True, check=False)

    assert result.returncode != 0
    assert expected in result.stderr


REJECTED = [
    pytest.param(
        MakeJob().set("spec.priority", -1).obj(),
        "spec.priority in body should be greater than or equal to 0",
        id="negative-priority",
    ),
    pytest.param(
        MakeJob().set("spec.priority", 11).obj(),
        "spec.priority in body should be less than or equal to 10",
        id="priority-11",
    ),
    pytest.param(
        MakeJob().set("spec.resources.memory", "2GB").obj(),
        "must be a positive memory quantity",
        id="bad-memory-quantity",
    ),
    pytest.param(
        MakeJob().set("spec.resources.memory", "512m").obj(),
        f'{POSITIVE_QUANTITY_MESSAGE}, not "512m"',
        id="memory-in-thousandths-of-a-byte",
    ),
    pytest.param(
        MakeQueue().set("spec.memory.budget", 0).obj(),
        "spec.memory.budget: Invalid value",
        id="zero-budget",
    ),
    pytest.param(
        MakeQueue().set("spec.memory.max", "16Gi").obj(),
        "spec.memory.max must not exceed spec.memory.budget",
        id="max-over-budget",
    ),
    pytest.param(
        MakeQueue().set("spec.memory.max", "2Gi").set("spec.memory.defaultRequest", "4Gi").obj(),
        "spec.memory.defaultRequest must not exceed spec.memory.max",
        id="default-request-over-max",
    ),
    pytest.param(
        MakeQueue().set("spec.memory.budget", "512Mi").obj(),
        "spec.memory.defaultRequest (1Gi unless set) must not exceed spec.memory.budget",
        id="default-request-over-budget",
    ),
    pytest.param(
        MakeQueue().max("1Gi").default_request("512Mi").sizing("Learned", floor="2Gi").obj(),
        "spec.memory.learned.floor (32Mi unless set) must not exceed spec.memory.max",
        id="learned-floor-over-max",
    ),
    pytest.param(
        MakeQueue().budget("1Gi").default_request("512Mi").sizing("Static", floor="2Gi").obj(),
        "spec.memory.learned.floor (32Mi unless set) must not exceed spec.memory.max",
        id="learned-floor-over-budget",
    ),
    pytest.param(
        MakeQueue().sizing("Learned", percentile=101).obj(),
        "spec.memory.learned.percentile in body should be less than or equal to 100",
        id="learned-percentile-over-100",
    ),
    pytest.param(
        MakeQueue().sizing("Auto").obj(),
        'spec.memory.sizing: Unsupported value: "Auto"',
        id="sizing-unknown",
    ),
    pytest.param(
        MakeQueue().set("spec.memory.oomRetryMultiplier", 1).obj(),
        "spec.memory.oomRetryMultiplier in body should be greater than 1",
        id="oom-multiplier-not-above-1",
    ),
    pytest.param(
        MakeQueue().set("spec.retry.backoff", {"initialSeconds": 900, "maxSeconds": 60}).obj(),
        "spec.retry.backoff.initialSeconds must not exceed spec.retry.backoff.maxSeconds",
        id="queue-backoff-initial-over-max",
    ),
    pytest.param(
        MakeJob().set("spec.backoff", {"initialSeconds": 900, "maxSeconds": 60}).obj(),
        "spec.backoff.initialSeconds must not exceed spec.backoff.maxSeconds",
        id="job-backoff-initial-over-max",
    ),
    pytest.param(
        MakeJob("encode").set("spec.dependsOn", ["probe", "encode"]).obj(),
        "spec.dependsOn must not name the job itself",
        id="depends-on-itself",
    ),
    pytest.param(
        MakeJob().set("spec.dependsOn", ["probe", "probe"]).obj(),
        "Duplicate value",
        id="depends-on-twice",
    ),
    pytest.param(
        MakeQueue().set("spec.state", "Stopped").obj(),
        'spec.state: Unsupported value: "Stopped"',
        id="unknown-state",
    ),
    pytest.param(
        MakeQueue().set("spec.concurrency", 0).obj(),
        "spec.concurrency in body should be greater than or equal to 1",
        id="zero-concurrency",
    ),
    pytest.param(
        MakeJob().set("spec.type", "Transcode!").obj(),
        "spec.type in body should match",
        id="bad-job-type",
    ),
    pytest.param(
        MakeJob().set("spec.input", {}).obj(),
        "spec.input needs exactly one of url (where the media is) and fromJob",
        id="missing-input-url",
    ),
    pytest.param(
        MakeJob().set("spec.startAfter", "tomorrow").obj(),
        "spec.startAfter in body must be of type date-time",
        id="start-after-not-a-timestamp",
    ),
    pytest.param(
        MakeQueue()
        .notifications("https://hooks.example.test/", secretRef={"name": "Hook_Key", "key": "k"})
        .obj(),
        "spec.notifications.secretRef.name in body should match",
        id="secret-ref-name-not-a-dns-name",
    ),
    pytest.param(
        MakeQueue()
        .notifications("https://hooks.example.test/", secretRef={"name": "hook", "key": "a/b"})
        .obj(),
        "spec.notifications.secretRef.key in body should match",
        id="secret-ref-key-with-a-slash",
    ),
    pytest.param(
        MakeJob("x" * 64).obj(),
        "metadata.name of a VideoJob must be at most 63 characters",
        id="job-name-too-long-for-a-label",
    ),
]


@pytest.mark.parametrize(("manifest", "expected"), REJECTED)
def test_invalid_objects_are_rejected_with_a_message(
    cluster: ClusterBase, namespace: str, crds: None, manifest: dict[str, Any], expected: str
) -> None:
    result = create(cluster, namespace, manifest, check=False)

    assert result.returncode != 0, f"accepted: {manifest}"
    assert expected in result.stderr


def test_queue_name_is_immutable(cluster: ClusterBase, namespace: str, crds: None) -> None:
    create(cluster, namespace, MakeJob().obj())

    moved = patch(cluster, namespace, "vj", "job", {"spec": {"queueName": "other"}}, check=False)
    reprioritised = patch(cluster, namespace, "vj", "job", {"spec": {"priority": 8}}, check=False)

    assert moved.returncode != 0
    assert "spec.queueName is immutable: delete and recreate the job" in moved.stderr
    assert reprioritised.returncode == 0, reprioritised.stderr


def test_kubectl_get_shows_the_printer_columns(
    cluster: ClusterBase, namespace: str, crds: None
) -> None:
    create(cluster, namespace, MakeQueue().obj())
    create(cluster, namespace, MakeJob().priority(7).obj())
    patch(cluster, namespace, "vj", "job", {"status": FULL_JOB_STATUS}, status=True)
    status = {"pending": 3, "running": 2, "health": "Healthy", "memory": {"summary": "3Gi/8Gi"}}
    patch(cluster, namespace, "vq", "work", {"status": status}, status=True)

    jobs = cluster.kubectl("get", "-n", namespace, "vj").stdout.split("\n")
    queues = cluster.kubectl("get", "-n", namespace, "vq").stdout.split("\n")

    assert jobs[0].split() == [
        "NAME",
        "QUEUE",
        "TYPE",
        "PRIORITY",
        "PHASE",
        "PROGRESS",
        "ATTEMPT",
        "AGE",
    ]
    assert jobs[1].split()[:7] == ["job", "work", "transcode", "7", "Backoff", "40", "1"]
    assert queues[0].split() == ["NAME", "STATE", "HEALTH", "PENDING", "RUNNING", "MEMORY", "AGE"]
    assert queues[1].split()[:6] == ["work", "Active", "Healthy", "3", "2", "3Gi/8Gi"]


def test_names_category_and_field_selector(
    cluster: ClusterBase, namespace: str, crds: None
) -> None:
    create(cluster, namespace, MakeQueue().obj())
    create(cluster, namespace, MakeJob("a").obj())
    create(cluster, namespace, MakeJob("b", queue="other").obj())

    everything = cluster.kubectl("get", "-n", namespace, "videoqueue", "-o", "name").stdout
    in_work = cluster.kubectl(
        "get", "-n", namespace, "videojobs", "--field-selector=spec.queueName=work", "-o", "name"
    ).stdout

    assert sorted(everything.split()) == [
        "videojob.videoqueue.dev/a",
        "videojob.videoqueue.dev/b",
        "videoqueue.videoqueue.dev/work",
    ]
    assert in_work.split() == ["videojob.videoqueue.dev/a"]


def test_kubectl_wait_for_complete_works_as_for_batch_jobs(
    cluster: ClusterBase, namespace: str, crds: None
) -> None:
    create(cluster, namespace, MakeJob().obj())
    complete = {
        "type": "Complete",
        "status": "True",
        "reason": "WorkerSucceeded",
        "message": "transcode finished",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    patch(cluster, namespace, "vj", "job", {"status": {"conditions": [complete]}}, status=True)

    waited = cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Complete", "--timeout=10s", "vj/job"
    )

    assert "condition met" in waited.stdout
