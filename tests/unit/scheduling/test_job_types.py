"""Per-type settings (spec.types): how a type's template patch merges over the queue's template,
the precedence job > type > queue of memory, deadline and attempts, and where they reach the
worker pod, the job's memory, its retries and the memory its pod counts against the budget."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from videoqueue.api import JobPhase, VideoJobStatus, VideoQueueSpec
from videoqueue.envtest.builders import WORKER, MakeJob, MakePod, MakeQueue, container
from videoqueue.scheduling.job_types import (
    TemplateError,
    active_deadline_seconds,
    max_attempts,
    merge_template,
    template_source,
    type_default_memory,
    worker_template,
)
from videoqueue.scheduling.jobs import (
    assess_job,
    effective_memory,
    job_requests,
    queue_overhead,
)
from videoqueue.scheduling.queue_status import reserved_memory, reserved_requests
from videoqueue.scheduling.worker_pod import build_worker_pod

T0 = datetime.datetime(2026, 1, 1, 10, 0, 0, tzinfo=datetime.UTC)
NOW = T0 + datetime.timedelta(minutes=5)
Mi = 1024**2
Gi = 1024**3

GPU_PATCH: dict[str, Any] = {
    "metadata": {"labels": {"gpu": "yes"}},
    "spec": {
        "containers": [
            {"name": "worker", "image": "worker:gpu", "resources": {"requests": {"cpu": "4"}}}
        ],
        "nodeSelector": {"accelerator": "nvidia"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}


def base_template() -> dict[str, Any]:
    """A queue template with labels, a worker with CPU and env, a sidecar, an init container,
    a volume, tolerations and a node selector: something of every kind for a patch to meet."""
    return {
        "metadata": {"labels": {"team": "media"}, "annotations": {"a": "1"}},
        "spec": {
            "containers": [
                {
                    "name": "worker",
                    "image": "worker:1",
                    "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}},
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                },
                container("proxy", "64Mi"),
            ],
            "initContainers": [container("fetch", "128Mi")],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "tolerations": [{"key": "media", "operator": "Exists"}],
            "nodeSelector": {"pool": "cpu"},
            "securityContext": {"runAsNonRoot": True},
        },
    }


# --- The merge -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "expected_changes"),
    [
        pytest.param({}, {}, id="empty-patch-changes-nothing"),
        pytest.param(
            {"metadata": {"labels": {"gpu": "yes"}}},
            {("metadata", "labels"): {"team": "media", "gpu": "yes"}},
            id="objects-merge-key-by-key",
        ),
        pytest.param(
            {"spec": {"nodeSelector": {"accelerator": "nvidia"}}},
            {("spec", "nodeSelector"): {"pool": "cpu", "accelerator": "nvidia"}},
            id="node-selector-merges",
        ),
        pytest.param(
            {"spec": {"nodeSelector": None, "securityContext": {"runAsNonRoot": None}}},
            {("spec", "nodeSelector"): ..., ("spec", "securityContext"): {}},
            id="null-deletes-a-key",
        ),
        pytest.param(
            {"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}},
            {("spec", "tolerations"): [{"key": "gpu", "operator": "Exists"}]},
            id="other-lists-replace",
        ),
        pytest.param(
            {"spec": {"volumes": [{"name": "models", "configMap": {"name": "m"}}]}},
            {
                ("spec", "volumes"): [
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "models", "configMap": {"name": "m"}},
                ]
            },
            id="volume-with-a-new-name-is-appended",
        ),
        pytest.param(
            {"spec": {"volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}]}},
            {("spec", "volumes"): [{"name": "scratch", "emptyDir": {"medium": "Memory"}}]},
            id="volume-of-the-same-name-is-merged",
        ),
        pytest.param(
            {"spec": {"initContainers": [{"name": "fetch", "image": "fetch:2"}]}},
            {("spec", "initContainers"): [container("fetch", "128Mi", image="fetch:2")]},
            id="init-container-merged-by-name",
        ),
    ],
)
def test_merge_template(patch: dict[str, Any], expected_changes: dict[Any, Any]) -> None:
    base = base_template()
    before = copy.deepcopy(base)
    patch_before = copy.deepcopy(patch)

    merged = merge_template(base, patch)

    expected = copy.deepcopy(base)
    for (section, key), value in expected_changes.items():
        if value is ...:
            del expected[section][key]
        else:
            expected[section][key] = value
    assert merged == expected
    assert (base, patch) == (before, patch_before)  # neither input is modified


def test_containers_merge_by_name_and_new_ones_are_appended() -> None:
    patch = {
        "spec": {
            "containers": [
                {"name": "gpu-exporter", "image": "exporter:1"},
                {
                    "name": "worker",
                    "image": "worker:gpu",
                    "resources": {"requests": {"cpu": "4"}},
                    "env": [{"name": "C", "value": "3"}],
                },
            ]
        }
    }

    containers = merge_template(base_template(), patch)["spec"]["containers"]

    assert [c["name"] for c in containers] == ["worker", "proxy", "gpu-exporter"]
    assert containers[0] == {
        "name": "worker",
        "image": "worker:gpu",
        # resources merge key by key: the patch's CPU request, the template's CPU limit
        "resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "2"}},
        # a list inside a container (env) replaces the template's
        "env": [{"name": "C", "value": "3"}],
    }
    assert containers[1] == container("proxy", "64Mi")


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        pytest.param(
            {"spec": {"containers": [{"image": "worker:gpu"}]}},
            "spec.types.transcode.template.spec.containers[0] has no name",
            id="container-without-a-name",
        ),
        pytest.param(
            {"spec": {"volumes": [{"name": "a", "emptyDir": {}}, "scratch"]}},
            "spec.types.transcode.template.spec.volumes[1] has no name",
            id="volume-not-an-object",
        ),
        pytest.param(
            {"spec": {"initContainers": {"name": "fetch"}}},
            "spec.types.transcode.template.spec.initContainers must be a list",
            id="init-containers-not-a-list",
        ),
    ],
)
def test_a_patch_that_cannot_merge_is_a_template_error_naming_the_field(
    patch: dict[str, Any], words: str
) -> None:
    queue = MakeQueue().template_body(base_template()).job_type("transcode", template=patch)

    with pytest.raises(TemplateError, match=r".") as raised:
        worker_template(queue.model(), "transcode")

    assert words in str(raised.value)


def test_worker_template_is_the_queues_for_a_type_without_a_patch() -> None:
    queue = (
        MakeQueue()
        .template_body(base_template())
        .job_type("probe", default_request="64Mi")
        .job_type("transcode", template=GPU_PATCH)
        .model()
    )

    for job_type in ("probe", "clip", None):
        template = worker_template(queue, job_type)
        assert template == base_template()
        assert template is not queue.spec.template  # a copy: the caller may change it
        assert template_source(job_type, queue) == "spec.template"
    merged = worker_template(queue, "transcode")
    assert merged["spec"]["containers"][0]["image"] == "worker:gpu"
    assert template_source("transcode", queue) == (
        "spec.template with spec.types.transcode.template merged over it"
    )


# --- Precedence: job > type > queue ----------------------------------------------------------


def typed_queue() -> MakeQueue:
    """defaultRequest 1Gi, deadline 3600 s, 3 attempts; transcode: 256Mi, 600 s, 2 attempts;
    probe: 64Mi only; thumbnail: a deadline only."""
    return (
        MakeQueue("work", "media")
        .uid("q")
        .default_request("1Gi")
        .deadline(3600)
        .retry(3, initial_seconds=10)
        .template(WORKER)
        .job_type(
            "transcode", template=GPU_PATCH, default_request="256Mi", deadline=600, max_attempts=2
        )
        .job_type("probe", default_request="64Mi")
        .job_type("thumbnail", deadline=30)
    )


def job(type_: str) -> MakeJob:
    made = MakeJob(f"{type_}-1", "media").uid(f"uid-{type_}").generation(1).created(T0)
    return made.type(type_).input("https://a/b.mp4")


PRECEDENCE = [
    # (job, memory, deadline, attempts)
    pytest.param(job("transcode"), 256 * Mi, 600, 2, id="transcode-takes-its-types"),
    pytest.param(job("probe"), 64 * Mi, 3600, 3, id="probe-memory-only-from-its-type"),
    pytest.param(job("thumbnail"), Gi, 30, 3, id="thumbnail-deadline-only-from-its-type"),
    pytest.param(job("clip"), Gi, 3600, 3, id="type-without-settings-takes-the-queues"),
    pytest.param(
        job("transcode").memory("3Gi").deadline(120).max_attempts(5),
        3 * Gi,
        120,
        5,
        id="the-jobs-own-win-over-its-types",
    ),
]


@pytest.mark.parametrize(("made", "memory", "deadline", "attempts"), PRECEDENCE)
def test_job_over_type_over_queue(made: MakeJob, memory: int, deadline: int, attempts: int) -> None:
    queue, video_job = typed_queue().model(), made.model()

    assert effective_memory(video_job, VideoJobStatus(), queue) == memory
    assert active_deadline_seconds(video_job, queue) == deadline
    assert max_attempts(video_job, queue) == attempts
    pod = build_worker_pod(made.obj(), typed_queue().obj(), attempt=1, memory_bytes=memory)
    assert pod["spec"]["activeDeadlineSeconds"] == deadline


def test_type_default_memory_and_no_queue() -> None:
    queue = typed_queue().model()

    assert [type_default_memory(queue, t) for t in ("transcode", "probe", "clip", None)] == [
        256 * Mi,
        64 * Mi,
        Gi,
        Gi,
    ]
    assert active_deadline_seconds(job("transcode").model(), None) is None
    assert max_attempts(job("transcode").model(), None) == 1


# --- Where the settings reach -----------------------------------------------------------------


def test_worker_pod_of_a_type_is_built_from_the_merged_template() -> None:
    transcode = build_worker_pod(
        job("transcode").obj(), typed_queue().obj(), attempt=1, memory_bytes=256 * Mi
    )
    probe = build_worker_pod(job("probe").obj(), typed_queue().obj(), attempt=1, memory_bytes=Gi)

    worker = transcode["spec"]["containers"][0]
    assert worker["image"] == "worker:gpu"
    assert worker["resources"] == {
        "requests": {"cpu": "4", "memory": "256Mi"},
        "limits": {"memory": "256Mi"},
    }
    assert transcode["spec"]["nodeSelector"] == {"accelerator": "nvidia"}
    assert transcode["spec"]["tolerations"] == GPU_PATCH["spec"]["tolerations"]
    assert transcode["metadata"]["labels"]["gpu"] == "yes"
    assert probe["spec"]["containers"][0]["image"] == WORKER["image"]
    assert "nodeSelector" not in probe["spec"]
    assert "gpu" not in probe["metadata"]["labels"]


def test_a_type_sidecar_without_a_memory_limit_is_the_types_template_error() -> None:
    queue = typed_queue().job_type(
        "transcode", template={"spec": {"containers": [{"name": "shipper", "image": "s:1"}]}}
    )

    with pytest.raises(TemplateError, match=r".") as raised:
        build_worker_pod(job("transcode").obj(), queue.obj(), attempt=1, memory_bytes=Gi)
    message = str(raised.value)

    assert message.startswith("VideoQueue media/work: the worker pod template of type 'transcode'")
    assert "container 'shipper' has no memory limit (spec.containers[1]." in message
    assert "spec.template.spec.containers[1]" not in message  # not the queue's template's
    assert "fix it in spec.types.transcode.template or spec.template" in message
    # The queue's other types are not affected.
    build_worker_pod(job("probe").obj(), queue.obj(), attempt=1, memory_bytes=Gi)


def test_a_type_patch_that_removes_every_container_names_the_type() -> None:
    queue = typed_queue().job_type("transcode", template={"spec": {"containers": None}})

    with pytest.raises(TemplateError, match=r"spec\.types\.transcode\.template merged over it"):
        build_worker_pod(job("transcode").obj(), queue.obj(), attempt=1, memory_bytes=Gi)


def test_a_type_sidecar_counts_for_that_types_jobs_only() -> None:
    patch = {"spec": {"containers": [container("gpu-exporter", "256Mi")]}}
    queue = typed_queue().job_type("transcode", template=patch).model()
    running = VideoJobStatus(phase=JobPhase.RUNNING, effective_memory="1Gi")

    assert queue_overhead(queue, "transcode").pod_memory(Gi) == Gi + 256 * Mi
    assert queue_overhead(queue, "probe").pod_memory(Gi) == Gi
    assert queue_overhead(queue, None).pod_memory(Gi) == Gi
    assert reserved_memory(queue, [("transcode", running), ("probe", running)]) == (
        2 * Gi + 256 * Mi
    )
    assert reserved_memory(queue, [running, running]) == 2 * Gi  # no type: the queue's


def test_budgets_count_each_types_own_requests() -> None:
    queue = typed_queue().budgets({"cpu": "8"}).model()  # transcode's patch asks for 4 CPUs
    running = VideoJobStatus(phase=JobPhase.RUNNING, effective_memory="1Gi")

    assert job_requests(job("transcode").model(), queue) == {"cpu": 4000}
    assert job_requests(job("probe").model(), queue) == {"cpu": 0}  # WORKER requests none
    assert reserved_requests(queue, [("transcode", running), ("transcode", running)]) == {
        "cpu": 8000
    }
    assert reserved_requests(queue, [("transcode", running), ("probe", running)]) == {"cpu": 4000}


def test_a_broken_type_patch_counts_what_the_queues_template_holds() -> None:
    queue = typed_queue().sidecar("64Mi")
    broken = queue.job_type("transcode", template={"spec": {"containers": [{"image": "x"}]}})

    assert queue_overhead(broken.model(), "transcode").pod_memory(Gi) == Gi + 64 * Mi


def test_a_failing_job_retries_as_often_as_its_type_allows() -> None:
    queue = typed_queue()
    made = job("transcode").admitted(attempt=2, earlier="Error", attemptsUsed=1)
    pod = MakePod(made, queue, attempt=2).failed().outcome()

    assessment = assess_job(made.model(), [pod], queue.model(), NOW)

    assert assessment.status.phase == JobPhase.FAILED
    assert "attempt 2 of 2 ended Error" in (assessment.status.message or "")
    # The same failure of a probe (the queue's 3 attempts) is retried.
    probe = job("probe").admitted(attempt=2, earlier="Error", attemptsUsed=1)
    pod = MakePod(probe, queue, attempt=2).failed().outcome()
    assert assess_job(probe.model(), [pod], queue.model(), NOW).status.phase == JobPhase.BACKOFF


def test_a_running_attempt_ends_at_its_types_deadline() -> None:
    queue = typed_queue()
    made = job("thumbnail").running(at=T0)
    pod = MakePod(made, queue).running(started=T0).outcome()
    at = T0 + datetime.timedelta(seconds=31)

    assessment = assess_job(made.model(), [pod], queue.model(), at)

    record = assessment.status.attempts[-1]
    assert record.reason == "DeadlineExceeded"
    assert "activeDeadlineSeconds (30s)" in (record.message or "")
    assert assessment.stop_pods == (pod.name,)


# --- The API model's check (the CEL rule's twin) ----------------------------------------------


@pytest.mark.parametrize(
    ("memory", "default", "accepted"),
    [
        pytest.param({"budget": "8Gi", "max": "2Gi"}, "2Gi", True, id="equal-to-max"),
        pytest.param({"budget": "8Gi", "max": "2Gi"}, "3Gi", False, id="over-max"),
        pytest.param({"budget": "2Gi", "defaultRequest": "1Gi"}, "2Gi", True, id="equal-budget"),
        pytest.param({"budget": "2Gi", "defaultRequest": "1Gi"}, "3Gi", False, id="over-budget"),
    ],
)
def test_a_types_default_must_fit_memory_max(
    memory: dict[str, str], default: str, accepted: bool
) -> None:
    spec = {"memory": memory, "types": {"transcode": {"memory": {"defaultRequest": default}}}}

    if accepted:
        VideoQueueSpec.model_validate(spec)
        return
    with pytest.raises(ValidationError, match=r"spec\.types\.transcode\.memory\.defaultRequest"):
        VideoQueueSpec.model_validate(spec)


def test_a_type_whose_pod_could_never_fit_rejects_only_that_types_jobs() -> None:
    patch = {"spec": {"containers": [container("gpu-exporter", "7Gi")]}}
    queue = typed_queue().budget("8Gi").job_type("transcode", template=patch, default_request="2Gi")

    transcode = assess_job(job("transcode").model(), [], queue.model(), NOW)
    probe = assess_job(job("probe").model(), [], queue.model(), NOW)

    assert transcode.status.phase == JobPhase.REJECTED
    assert "spec.types.transcode.template" in (transcode.status.message or "")
    assert probe.status.phase == JobPhase.PENDING
