"""Worker pods: names, what build_worker_pod sets and keeps, and reading a pod's outcome."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videoqueue.api import AttemptReason, VideoJob, VideoJobSpec, parse_quantity
from videoqueue.api.worker import (
    ENV_ALLOWED_HOSTS,
    ENV_DOWNLOAD_TIMEOUT_SECONDS,
    ENV_FILE_ROOTS,
)
from videoqueue.envtest.builders import (
    EVICTION_MESSAGE,
    POD_FINISHED,
    POD_STARTED,
    WORKER,
    MakeJob,
    MakePod,
    MakeQueue,
    container,
)
from videoqueue.scheduling.pod_outcome import (
    PodOutcome,
    disruption,
    pod_essentials,
    pod_unschedulable,
    read_pod_outcome,
)
from videoqueue.scheduling.worker_pod import (
    ANNOTATION_ADMITTED_AT,
    ANNOTATION_JOB_NAME,
    ANNOTATION_JOB_UID,
    ANNOTATION_WORKER_CONTAINER,
    ENV_ATTEMPT,
    ENV_JOB,
    LABEL_APP_NAME,
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    LABEL_QUEUE,
    MAX_JOB_PAYLOAD_BYTES,
    JobNotDeliverable,
    TemplateError,
    annotation_travels,
    build_worker_pod,
    label_value,
    pod_memory_overhead,
    worker_pod_name,
)

NAMESPACE = "media"
UID = "6f1c2a4e-93b1-4c57-9d0e-0a7b1f2c3d4e"
Mi = 1024**2
Gi = 1024**3
T_START, T_END = POD_STARTED, POD_FINISHED  # when worker_pod() ran

DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


# --- Objects ---------------------------------------------------------------------------------


def work_queue(name: str = "work") -> MakeQueue:
    return MakeQueue(name, NAMESPACE).uid("queue-uid").template(WORKER)


def clip(name: str = "clip-1") -> MakeJob:
    """A transcode job as read from the API server."""
    job = MakeJob(name, NAMESPACE).uid(UID).generation(1).input("https://media.example/in.mp4")
    return job.output("file:///out/").params(codec="h264", crf=23)


def build(
    job: MakeJob | None = None,
    queue: MakeQueue | None = None,
    *,
    attempt: int = 1,
    memory: int = 2 * Gi,
) -> dict[str, Any]:
    return MakePod(job or clip(), queue or work_queue(), attempt=attempt, memory=memory).obj()


def worker_of(pod: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod["spec"]["containers"]
    return next(c for c in containers if c["name"] == "worker")


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


# --- Names -----------------------------------------------------------------------------------

LONG = "x" * 60


@pytest.mark.parametrize(
    ("job_name", "attempt", "expected"),
    [
        pytest.param("clip-1", 1, "clip-1-a1", id="short-name"),
        pytest.param("clip-1", 12, "clip-1-a12", id="two-digit-attempt"),
        pytest.param("a.b.c", 2, "a.b.c-a2", id="dotted-name"),
        pytest.param("x" * 60, 1, "x" * 60 + "-a1", id="exactly-63"),
    ],
)
def test_pod_name_is_job_and_attempt(job_name: str, attempt: int, expected: str) -> None:
    assert worker_pod_name(job_name, attempt) == expected


@pytest.mark.parametrize(
    ("job_name", "attempt"),
    [
        pytest.param("x" * 61, 1, id="one-over-63"),
        pytest.param("x" * 60, 10, id="attempt-pushes-over-63"),
        pytest.param("transcode-" * 25 + "x", 3, id="253-characters"),
        pytest.param("a" * 50 + "." + "b" * 50, 1, id="cut-after-a-dot"),
        pytest.param("a" * 50 + "-" + "b" * 50, 1, id="cut-after-a-dash"),
    ],
)
def test_long_names_are_cut_and_hashed(job_name: str, attempt: int) -> None:
    name = worker_pod_name(job_name, attempt)

    assert len(name) <= 63
    assert DNS1123_SUBDOMAIN.fullmatch(name)
    assert name.endswith(f"-a{attempt}")
    assert name == worker_pod_name(job_name, attempt)


def test_long_names_sharing_a_prefix_get_distinct_pods() -> None:
    assert worker_pod_name(LONG + "-first", 1) != worker_pod_name(LONG + "-second", 1)


@pytest.mark.parametrize(
    ("job_name", "attempt", "match"),
    [
        pytest.param("Clip", 1, "not a valid", id="upper-case"),
        pytest.param("-clip", 1, "not a valid", id="leading-dash"),
        pytest.param("", 1, "not a valid", id="empty"),
        pytest.param("clip", 0, "start at 1", id="attempt-zero"),
    ],
)
def test_pod_name_refuses_bad_input(job_name: str, attempt: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        worker_pod_name(job_name, attempt)


def _as_name(raw: str) -> str:
    """A valid object name from any string of name characters: drop empty and dashed edges."""
    return ".".join(p.strip("-") for p in raw.split(".") if p.strip("-")) or "x"


# from_regex alone rarely goes past 63 characters, where the interesting cases are; the
# second strategy draws lengths evenly up to the 253 an object name may have.
job_names = st.from_regex(DNS1123_SUBDOMAIN, fullmatch=True).filter(lambda n: len(n) <= 253) | (
    st.integers(1, 253)
    .flatmap(lambda n: st.text("abcxyz0189-.", min_size=n, max_size=n))
    .map(_as_name)
)
attempts = st.integers(1, 100_000)


@settings(max_examples=300, deadline=None)
@given(job_name=job_names, attempt=attempts)
def test_any_job_name_gives_a_valid_short_pod_name(job_name: str, attempt: int) -> None:
    name = worker_pod_name(job_name, attempt)

    assert DNS1123_SUBDOMAIN.fullmatch(name)
    assert len(name) <= 63
    assert name == worker_pod_name(job_name, attempt)


@settings(max_examples=200, deadline=None)
@given(job_name=job_names, attempts=st.lists(attempts, min_size=2, max_size=5, unique=True))
def test_attempts_of_a_job_get_distinct_pods(job_name: str, attempts: list[int]) -> None:
    names = {worker_pod_name(job_name, a) for a in attempts}

    assert len(names) == len(attempts)


@settings(max_examples=200, deadline=None)
@given(names=st.lists(job_names, min_size=2, max_size=2, unique=True), attempt=attempts)
def test_distinct_jobs_get_distinct_pods(names: list[str], attempt: int) -> None:
    first, second = names

    assert worker_pod_name(first, attempt) != worker_pod_name(second, attempt)


@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=300))
def test_label_value_is_always_valid(value: str) -> None:
    label = label_value(value)

    assert len(label) <= 63
    assert LABEL_VALUE.fullmatch(label)


def test_long_job_name_is_hashed_in_labels_and_exact_in_annotations() -> None:
    long_name = "y" * 40 + "." + "z" * 40
    pod = build(clip(long_name))

    meta = pod["metadata"]
    assert meta["labels"][LABEL_JOB] == label_value(long_name)
    assert meta["labels"][LABEL_JOB] != long_name
    assert meta["annotations"][ANNOTATION_JOB_NAME] == long_name


# --- Building the pod ------------------------------------------------------------------------


def test_pod_identity_labels_and_owner() -> None:
    pod = build(clip("clip-1").queue("work"), attempt=2)

    assert pod["apiVersion"] == "v1"
    assert pod["kind"] == "Pod"
    meta = pod["metadata"]
    assert meta["name"] == "clip-1-a2"
    assert meta["namespace"] == NAMESPACE
    assert meta["labels"] == {
        LABEL_APP_NAME: "videoqueue-worker",
        LABEL_MANAGED_BY: "videoqueue-operator",
        LABEL_QUEUE: "work",
        LABEL_JOB: "clip-1",
        LABEL_ATTEMPT: "2",
    }
    assert meta["annotations"][ANNOTATION_JOB_UID] == UID
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "videoqueue.dev/v1alpha1",
            "kind": "VideoJob",
            "name": "clip-1",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_building_twice_gives_the_same_pod() -> None:
    assert build(attempt=3) == build(attempt=3)


@pytest.mark.parametrize(
    ("memory", "quantity"),
    [
        pytest.param(2 * Gi, "2Gi", id="whole-gibibytes"),
        pytest.param(1536 * Mi, "1536Mi", id="mebibytes"),
        pytest.param(10**9, "1G", id="decimal"),
        pytest.param(Gi + 1, str(Gi + 1), id="odd-bytes"),
    ],
)
def test_memory_request_equals_limit(memory: int, quantity: str) -> None:
    resources = worker_of(build(memory=memory))["resources"]

    assert resources["requests"]["memory"] == quantity
    assert resources["limits"]["memory"] == quantity
    assert parse_quantity(quantity) == memory


def test_template_cpu_kept_and_its_memory_replaced() -> None:
    queue = work_queue().template_body(
        {
            "spec": {
                "containers": [
                    {
                        "name": "worker",
                        "image": "w",
                        "resources": {
                            "requests": {"cpu": "500m", "memory": "64Mi"},
                            "limits": {"cpu": "2", "memory": "64Mi"},
                        },
                    }
                ]
            }
        }
    )

    resources = worker_of(build(queue=queue, memory=Gi))["resources"]

    assert resources == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }


RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}
RICH_TEMPLATE: dict[str, Any] = {
    "metadata": {
        "labels": {"team": "media", LABEL_JOB: "spoofed"},
        "annotations": {"example.com/cost-center": "42"},
    },
    "spec": {
        "securityContext": RESTRICTED_POD,
        "serviceAccountName": "transcoder",
        "automountServiceAccountToken": True,
        "nodeSelector": {"pool": "video"},
        "restartPolicy": "OnFailure",
        "containers": [
            {
                "name": "log-shipper",
                "image": "shipper",
                "resources": {"limits": {"memory": "32Mi"}},
            },
            {
                "name": "worker",
                "image": "videoqueue/worker:1",
                "securityContext": RESTRICTED_CONTAINER,
                "env": [
                    {"name": "LOG_LEVEL", "value": "debug"},
                    {"name": ENV_JOB, "value": "stale"},
                ],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
            },
        ],
        "volumes": [{"name": "work", "emptyDir": {}}],
    },
}


def test_template_is_kept_and_not_mutated() -> None:
    template = copy.deepcopy(RICH_TEMPLATE)
    queue = work_queue().template_body(template)
    queue_obj, job_obj = queue.obj(), clip().obj()
    before = (copy.deepcopy(queue_obj), copy.deepcopy(job_obj))

    pod = build_worker_pod(job_obj, queue_obj, attempt=1, memory_bytes=Gi)

    assert (queue_obj, job_obj) == before
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["labels"]["team"] == "media"
    assert meta["labels"][LABEL_JOB] == "clip-1"  # ours win: the controller selects by it
    assert meta["annotations"]["example.com/cost-center"] == "42"
    assert spec["securityContext"] == RESTRICTED_POD
    assert spec["serviceAccountName"] == "transcoder"
    assert spec["automountServiceAccountToken"] is True
    assert spec["nodeSelector"] == {"pool": "video"}
    assert spec["volumes"] == [{"name": "work", "emptyDir": {}}]
    assert spec["restartPolicy"] == "Never"
    shipper, worker = spec["containers"]
    assert shipper == RICH_TEMPLATE["spec"]["containers"][0]
    assert worker["securityContext"] == RESTRICTED_CONTAINER
    assert worker["volumeMounts"] == [{"name": "work", "mountPath": "/work"}]
    assert [e["name"] for e in worker["env"]] == [
        "LOG_LEVEL",
        ENV_FILE_ROOTS,
        ENV_ALLOWED_HOSTS,
        ENV_DOWNLOAD_TIMEOUT_SECONDS,
        ENV_JOB,
        ENV_ATTEMPT,
    ]
    assert env_of(worker)[ENV_JOB] != "stale"


def test_worker_container_settings() -> None:
    pod = build(attempt=4)

    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False
    worker = worker_of(pod)
    assert worker["terminationMessagePath"] == "/dev/termination-log"
    assert worker["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert env_of(worker)[ENV_ATTEMPT] == "4"


def test_first_container_is_the_worker_when_none_is_named_so() -> None:
    queue = work_queue().template_body(
        {
            "spec": {
                "containers": [
                    {"name": "main", "image": "a"},
                    {"name": "side", "image": "b", "resources": {"limits": {"memory": "64Mi"}}},
                ]
            }
        }
    )

    main, side = build(queue=queue, memory=Gi)["spec"]["containers"]

    assert main["resources"]["limits"]["memory"] == "1Gi"
    assert ENV_JOB in env_of(main)
    assert side == {"name": "side", "image": "b", "resources": {"limits": {"memory": "64Mi"}}}


@pytest.mark.parametrize(
    ("job", "queue", "template_deadline", "expected"),
    [
        pytest.param(clip().deadline(30), work_queue().deadline(600), None, 30, id="job-wins"),
        pytest.param(clip(), work_queue().deadline(600), None, 600, id="queue-default"),
        pytest.param(clip(), work_queue(), None, None, id="none"),
        pytest.param(clip(), work_queue().deadline(600), 90, 600, id="queue-over-template"),
        pytest.param(clip(), work_queue(), 90, 90, id="template-kept-when-nothing-else"),
    ],
)
def test_active_deadline_precedence(
    job: MakeJob, queue: MakeQueue, template_deadline: int | None, expected: int | None
) -> None:
    queue_obj = queue.obj()
    if template_deadline is not None:
        queue_obj["spec"]["template"]["spec"]["activeDeadlineSeconds"] = template_deadline

    pod = build_worker_pod(job.obj(), queue_obj, attempt=1, memory_bytes=Gi)

    assert pod["spec"].get("activeDeadlineSeconds") == expected


def test_job_handed_to_the_worker_round_trips() -> None:
    job = clip("clip-7").priority(9).params(codec="av1", crf=30, preset={"speed": 6})

    worker = worker_of(build(job, attempt=2))

    text = env_of(worker)[ENV_JOB]
    assert " " not in text  # compact
    payload = json.loads(text)
    assert {k: v for k, v in payload.items() if k != "spec"} == {
        "apiVersion": "videoqueue.dev/v1alpha1",
        "kind": "VideoJob",
        "namespace": NAMESPACE,
        "name": "clip-7",
        "uid": UID,
        "attempt": 2,
    }
    assert VideoJobSpec.model_validate(payload["spec"]) == VideoJob.model_validate(job.obj()).spec
    assert payload["spec"]["params"] == {"codec": "av1", "crf": 30, "preset": {"speed": 6}}


def test_admission_time_is_recorded_when_given() -> None:
    pod = build_worker_pod(
        clip().obj(), work_queue().obj(), attempt=1, memory_bytes=Gi, now_iso=T_START
    )

    assert pod["metadata"]["annotations"][ANNOTATION_ADMITTED_AT] == T_START
    assert ANNOTATION_ADMITTED_AT not in build()["metadata"]["annotations"]


@pytest.mark.parametrize(
    "template",
    [
        pytest.param({}, id="empty-template"),
        pytest.param({"spec": {}}, id="no-containers-key"),
        pytest.param({"spec": {"containers": []}}, id="empty-containers"),
    ],
)
def test_template_without_containers_is_refused(template: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match=r"spec\.template\.spec\.containers") as raised:
        build(queue=work_queue("work").template_body(template))

    assert f"VideoQueue {NAMESPACE}/work" in str(raised.value)


def test_oversized_job_is_refused() -> None:
    job = clip().params(blob="x" * MAX_JOB_PAYLOAD_BYTES)

    with pytest.raises(JobNotDeliverable, match=r"spec\.params") as raised:
        build(job)

    assert not isinstance(raised.value, TemplateError)  # the job's to fix, not the queue's


@pytest.mark.parametrize(
    ("attempt", "memory", "match"),
    [
        pytest.param(0, Gi, "start at 1", id="attempt-zero"),
        pytest.param(1, 0, "memory_bytes must be positive", id="no-memory"),
    ],
)
def test_bad_attempt_or_memory_is_refused(attempt: int, memory: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build(attempt=attempt, memory=memory)


def test_job_without_uid_is_refused() -> None:
    job_obj = clip().obj()
    del job_obj["metadata"]["uid"]

    with pytest.raises(ValueError, match=r"metadata\.uid"):
        build_worker_pod(job_obj, work_queue().obj(), attempt=1, memory_bytes=Gi)


# --- The sandbox: the queue's spec.worker handed to the worker -------------------------------


def test_sandbox_defaults_reach_the_worker() -> None:
    environment = env_of(worker_of(build()))

    assert json.loads(environment[ENV_FILE_ROOTS]) == ["/media"]
    assert json.loads(environment[ENV_ALLOWED_HOSTS]) == []
    assert environment[ENV_DOWNLOAD_TIMEOUT_SECONDS] == "3600"


def test_queue_sandbox_settings_reach_the_worker_and_win_over_the_template() -> None:
    queue = (
        work_queue()
        .worker(
            fileRoots=["/data", "/scratch"],
            allowedHosts=["media.internal", "*.svc.cluster.local", "10.20.0.0/16"],
            downloadTimeoutSeconds=120,
        )
        .template_body(
            {
                "spec": {
                    "containers": [
                        {
                            "name": "worker",
                            "image": "w",
                            "env": [
                                {"name": ENV_ALLOWED_HOSTS, "value": '["*"]'},
                                {"name": ENV_FILE_ROOTS, "value": '["/"]'},
                            ],
                        }
                    ]
                }
            }
        )
    )

    worker = worker_of(build(queue=queue))

    names = [e["name"] for e in worker["env"]]
    assert names.count(ENV_ALLOWED_HOSTS) == names.count(ENV_FILE_ROOTS) == 1
    environment = env_of(worker)
    assert json.loads(environment[ENV_FILE_ROOTS]) == ["/data", "/scratch"]
    assert json.loads(environment[ENV_ALLOWED_HOSTS]) == [
        "media.internal",
        "*.svc.cluster.local",
        "10.20.0.0/16",
    ]
    assert environment[ENV_DOWNLOAD_TIMEOUT_SECONDS] == "120"


# --- Annotations: an allow list --------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "patterns", "travels"),
    [
        pytest.param("videoqueue.dev/batch", [], True, id="own-domain"),
        pytest.param("kwok.videoqueue.dev/exit-code", [], True, id="own-subdomain"),
        pytest.param("evilvideoqueue.dev/x", [], False, id="lookalike-domain"),
        pytest.param("videoqueue.dev.example.com/x", [], False, id="own-domain-as-prefix"),
        pytest.param(ANNOTATION_ADMITTED_AT, [], False, id="ours-not-spoofable"),
        pytest.param(ANNOTATION_WORKER_CONTAINER, ["*"], False, id="ours-not-even-listed"),
        pytest.param("sidecar.istio.io/inject", [], False, id="sidecar-injector"),
        pytest.param("vault.hashicorp.com/agent-inject", [], False, id="secret-injector"),
        pytest.param("note", [], False, id="no-domain"),
        pytest.param("note", ["note"], True, id="no-domain-listed"),
        pytest.param("example.com/cost-center", ["example.com/cost-center"], True, id="exact"),
        pytest.param("example.com/cost", ["example.com/cost-center"], False, id="exact-only"),
        pytest.param("example.com/team", ["example.com/*"], True, id="prefix"),
        pytest.param("example.community/team", ["example.com/*"], False, id="prefix-is-literal"),
        pytest.param("team.example.com/x", ["*.example.com/*"], False, id="no-inner-wildcard"),
        pytest.param(
            "kubectl.kubernetes.io/last-applied-configuration",
            ["*"],
            False,
            id="prefix-never-matches-kubernetes-keys",
        ),
        pytest.param(
            "cluster-autoscaler.kubernetes.io/safe-to-evict",
            ["cluster-autoscaler.kubernetes.io/safe-to-evict"],
            True,
            id="exact-kubernetes-key",
        ),
    ],
)
def test_annotation_travels(key: str, patterns: list[str], travels: bool) -> None:
    assert annotation_travels(key, patterns) is travels


def test_job_annotations_reach_the_pod_only_through_the_allow_list() -> None:
    job = clip().annotations(
        **{
            "sidecar.istio.io/inject": "true",
            "vault.hashicorp.com/agent-inject": "true",
            "videoqueue.dev/batch": "b1",
            "kwok.videoqueue.dev/exit-code": "2",
            "example.com/team": "video",
            "example.com/cost-center": "from-the-job",
            "vault.hashicorp.com/role": "admin",
            ANNOTATION_ADMITTED_AT: "1999-01-01T00:00:00Z",
            ANNOTATION_JOB_NAME: "someone-else",
        }
    )
    queue = (
        work_queue()
        .worker(copyAnnotations=["example.com/*"])
        .template_body(
            {
                "metadata": {
                    "annotations": {"example.com/owner": "media", "vault.hashicorp.com/role": "ro"}
                },
                "spec": {"containers": [{"name": "worker", "image": "w"}]},
            }
        )
    )

    annotations = build(job, queue)["metadata"]["annotations"]

    assert annotations == {
        "videoqueue.dev/batch": "b1",
        "kwok.videoqueue.dev/exit-code": "2",
        "example.com/team": "video",
        "example.com/cost-center": "from-the-job",  # allow-listed
        "example.com/owner": "media",  # the template's, the queue owner's, stay
        "vault.hashicorp.com/role": "ro",  # and a job cannot override one not allow-listed
        ANNOTATION_JOB_NAME: "clip-1",
        ANNOTATION_JOB_UID: UID,
        ANNOTATION_WORKER_CONTAINER: "worker",
    }


def test_without_copy_annotations_only_own_domain_annotations_travel() -> None:
    job = clip().annotations(
        **{"example.com/team": "video", "sidecar.istio.io/inject": "true", "videoqueue.dev/x": "1"}
    )

    annotations = build(job)["metadata"]["annotations"]

    assert "example.com/team" not in annotations
    assert "sidecar.istio.io/inject" not in annotations
    assert annotations["videoqueue.dev/x"] == "1"


# --- Memory: the whole pod counts, so every other container needs a limit --------------------


ALWAYS = {"restartPolicy": "Always"}


@pytest.mark.parametrize(
    ("spec", "sidecars", "init_peak"),
    [
        pytest.param({"containers": [WORKER]}, 0, 0, id="worker-alone"),
        pytest.param(
            {"containers": [container("worker", "64Mi")]}, 0, 0, id="worker-limit-is-replaced"
        ),
        pytest.param(
            {"containers": [WORKER, container("proxy", "30Gi")]}, 30 * Gi, 0, id="sidecar"
        ),
        pytest.param(
            {"containers": [container("a", "256Mi"), WORKER, container("b", "512Mi")]},
            768 * Mi,
            0,
            id="two-sidecars",
        ),
        pytest.param(
            {"containers": [container("main", "1Gi"), container("side", "100Mi")]},
            100 * Mi,
            0,
            id="first-container-is-the-worker",
        ),
        pytest.param(
            {"containers": [WORKER], "initContainers": [container("fetch", "2Gi")]},
            0,
            2 * Gi,
            id="init-container",
        ),
        pytest.param(
            {
                "containers": [WORKER],
                "initContainers": [
                    container("a", "1Gi"),
                    container("b", "3Gi"),
                    container("c", "2Gi"),
                ],
            },
            0,
            3 * Gi,
            id="init-containers-run-one-at-a-time",
        ),
        pytest.param(
            {"containers": [WORKER], "initContainers": [container("log", "100Mi", **ALWAYS)]},
            100 * Mi,
            0,
            id="sidecar-init-container-counts-as-regular",
        ),
        pytest.param(
            {
                "containers": [WORKER, container("proxy", "50Mi")],
                "initContainers": [container("log", "100Mi", **ALWAYS), container("fetch", "1Gi")],
            },
            150 * Mi,
            1024 * Mi + 100 * Mi,
            id="init-container-after-a-sidecar-runs-beside-it",
        ),
        pytest.param(
            {
                "containers": [WORKER],
                "initContainers": [container("fetch", "1Gi"), container("log", "100Mi", **ALWAYS)],
            },
            100 * Mi,
            Gi,
            id="init-container-before-a-sidecar-runs-alone",
        ),
    ],
)
def test_pod_memory_overhead(spec: dict[str, Any], sidecars: int, init_peak: int) -> None:
    overhead = pod_memory_overhead({"spec": spec})

    assert (overhead.sidecars, overhead.init_peak) == (sidecars, init_peak)


@pytest.mark.parametrize(
    ("worker", "pod"),
    [
        pytest.param(Gi, 3 * Gi, id="init-container-dominates-a-small-worker"),
        pytest.param(4 * Gi, 4 * Gi + 100 * Mi, id="worker-and-sidecar-dominate"),
    ],
)
def test_pod_memory_is_what_kubernetes_counts(worker: int, pod: int) -> None:
    template = {
        "spec": {
            "containers": [WORKER],
            "initContainers": [container("log", "100Mi", **ALWAYS), container("fetch", "2972Mi")],
        }
    }

    assert pod_memory_overhead(template).pod_memory(worker) == pod


@pytest.mark.parametrize(
    ("spec", "field", "container"),
    [
        pytest.param(
            {"containers": [WORKER, container("proxy")]},
            "spec.template.spec.containers[1].resources.limits.memory",
            "proxy",
            id="sidecar-without-limit",
        ),
        pytest.param(
            {
                "containers": [
                    WORKER,
                    {**container("proxy"), "resources": {"requests": {"memory": "1Gi"}}},
                ]
            },
            "spec.template.spec.containers[1].resources.limits.memory",
            "proxy",
            id="sidecar-with-only-a-request",
        ),
        pytest.param(
            {"containers": [WORKER], "initContainers": [container("a", "1Gi"), container("b")]},
            "spec.template.spec.initContainers[1].resources.limits.memory",
            "b",
            id="init-container-without-limit",
        ),
        pytest.param(
            {"containers": [WORKER], "initContainers": [container("log", **ALWAYS)]},
            "spec.template.spec.initContainers[0].resources.limits.memory",
            "log",
            id="sidecar-init-container-without-limit",
        ),
        pytest.param(
            {"containers": [WORKER, container("proxy", "lots")]},
            "spec.template.spec.containers[1].resources.limits.memory",
            "proxy",
            id="limit-not-a-quantity",
        ),
    ],
)
def test_template_with_unlimited_container_is_refused(
    spec: dict[str, Any], field: str, container: str
) -> None:
    queue = work_queue("work").template_body({"spec": spec})

    with pytest.raises(TemplateError) as raised:
        build(queue=queue)

    message = str(raised.value)
    assert f"VideoQueue {NAMESPACE}/work" in message
    assert field in message
    assert repr(container) in message
    assert isinstance(raised.value, ValueError)  # callers that catch ValueError still do
    with pytest.raises(TemplateError):
        pod_memory_overhead({"spec": spec})
    assert pod_memory_overhead({"spec": spec}, strict=False).sidecars >= 0  # lenient: counts 0


def test_worker_pod_reports_its_whole_memory() -> None:
    template = {
        "spec": {
            "containers": [container("proxy", "30Gi"), WORKER],
            "initContainers": [container("fetch", "40Gi")],
        }
    }
    pod = build_worker_pod(
        clip().obj(), work_queue().template_body(template).obj(), attempt=1, memory_bytes=Gi
    )

    outcome = read_pod_outcome(pod)

    assert (outcome.memory, outcome.pod_memory) == (Gi, 40 * Gi)
    assert read_pod_outcome(pod_essentials(pod)) == outcome
    pod["spec"]["initContainers"] = []
    assert read_pod_outcome(pod).pod_memory == 31 * Gi


# --- Reading the outcome ---------------------------------------------------------------------
# Status shapes as KWOK's stages (envtest/kwok-stages.yaml) and a real kubelet write them.


def worker_pod() -> MakePod:
    """Attempt 2 of clip-1, 2Gi, on kwok-node-1."""
    return (
        MakePod(clip(), work_queue(), attempt=2, memory=2 * Gi).node("kwok-node-1").uid("pod-uid")
    )


RESULT = {"output": "file:///out/clip-1.mp4", "size": 1048576, "codec": "h264"}
PEAK = {"peakMemoryBytes": 118_100 * 1024}
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


def outcome(**fields: Any) -> PodOutcome:
    """The outcome of a pod on kwok-node-1 at attempt 2, with `fields` changed."""
    defaults: dict[str, Any] = {
        "name": worker_pod_name(clip().name, 2),
        "attempt": 2,
        "memory": 2 * Gi,
        "phase": "Failed",
        "running": False,
        "finished": True,
        "reason": None,
        "exit_code": None,
        "message": None,
        "result": None,
        "node": "kwok-node-1",
        "start_time": T_START,
        "finish_time": T_END,
        "deleted": False,
        "pod_memory": 2 * Gi,  # the worker alone
    }
    return PodOutcome(**(defaults | fields))


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(
            worker_pod().obj(),
            outcome(phase="Pending", finished=False, start_time=None, finish_time=None),
            id="just-created",
        ),
        pytest.param(
            worker_pod().running().obj(),
            outcome(phase="Running", running=True, finished=False, finish_time=None),
            id="running",
        ),
        pytest.param(
            worker_pod().terminated(0, "Completed", json.dumps(RESULT)).obj(),
            outcome(phase="Succeeded", reason="Completed", exit_code=0, result=RESULT),
            id="succeeded-with-json-result",
        ),
        pytest.param(
            worker_pod().terminated(0, "Completed", json.dumps(RESULT | PEAK)).obj(),
            outcome(
                phase="Succeeded",
                reason="Completed",
                exit_code=0,
                result=RESULT | PEAK,
                peak_memory=116 * Mi,  # 118100Ki is 115.3Mi
            ),
            id="succeeded-with-peak-memory",
        ),
        pytest.param(
            worker_pod().terminated(0, "Completed", "done, wrote 3 files").obj(),
            outcome(
                phase="Succeeded", reason="Completed", exit_code=0, message="done, wrote 3 files"
            ),
            id="succeeded-with-plain-message",
        ),
        pytest.param(
            worker_pod().terminated(0, "Completed", "[1, 2]").obj(),
            outcome(phase="Succeeded", reason="Completed", exit_code=0, message="[1, 2]"),
            id="succeeded-with-json-that-is-not-an-object",
        ),
        pytest.param(
            worker_pod().terminated(137, "OOMKilled").obj(),
            # The cgroup reached its limit: the limit is the attempt's peak.
            outcome(reason="OOMKilled", exit_code=137, peak_memory=2 * Gi),
            id="oom-killed",
        ),
        pytest.param(
            worker_pod().terminated(137, "OOMKilled", "ffmpeg: frame= 120 fps=30\n").obj(),
            outcome(
                reason="OOMKilled",
                exit_code=137,
                message="ffmpeg: frame= 120 fps=30\n",
                peak_memory=2 * Gi,
            ),
            id="oom-killed-with-log-tail",
        ),
        pytest.param(
            worker_pod().terminated(137, "Error", "Killed").obj(),
            outcome(reason="Error", exit_code=137, message="Killed"),
            id="exit-137-without-oom-is-an-error",
        ),
        pytest.param(
            worker_pod().terminated(1, "Error", "unsupported codec 'h999'").obj(),
            outcome(reason="Error", exit_code=1, message="unsupported codec 'h999'"),
            id="error-exit-1",
        ),
        pytest.param(
            worker_pod()
            .terminated(137, "Error")
            .pod_reason("DeadlineExceeded", DEADLINE_MESSAGE)
            .obj(),
            outcome(reason="DeadlineExceeded", exit_code=137, message=DEADLINE_MESSAGE),
            id="deadline-exceeded",
        ),
        pytest.param(
            worker_pod()
            .terminated(137, "ContainerStatusUnknown")
            .pod_reason("Evicted", EVICTION_MESSAGE)
            .disruption("TerminationByKubelet", EVICTION_MESSAGE)
            .obj(),
            outcome(reason="Evicted", exit_code=137, message=EVICTION_MESSAGE),
            id="evicted-by-kubelet",
        ),
        pytest.param(
            worker_pod()
            .terminated(143, "Error")
            .disruption("EvictionByEvictionAPI", "Eviction API: evicting")
            .obj(),
            outcome(reason="Evicted", exit_code=143, message="Eviction API: evicting"),
            id="drained-through-the-eviction-api",
        ),
        pytest.param(
            worker_pod()
            .status(
                {
                    "phase": "Failed",
                    "reason": "OutOfmemory",
                    "message": "Pod was rejected: Node didn't have enough resource: memory",
                    "startTime": T_START,
                }
            )
            .obj(),
            outcome(
                reason="Disrupted",
                message="Pod was rejected: Node didn't have enough resource: memory",
                finish_time=None,
            ),
            id="rejected-by-its-node-before-running",
        ),
        pytest.param(
            worker_pod().running().deleted().obj(),
            outcome(
                phase="Running",
                running=True,
                finished=False,
                reason="Disrupted",
                finish_time=None,
                deleted=True,
            ),
            id="deleting-while-running",
        ),
        pytest.param(
            worker_pod().terminated(0, "Completed", json.dumps(RESULT)).deleted().obj(),
            outcome(
                phase="Succeeded", reason="Completed", exit_code=0, result=RESULT, deleted=True
            ),
            id="deleted-after-success-is-still-a-success",
        ),
    ],
)
def test_read_pod_outcome(pod: dict[str, Any], expected: PodOutcome) -> None:
    assert read_pod_outcome(pod) == expected
    # The index keeps only a pod's essentials: they read the same.
    assert read_pod_outcome(pod_essentials(pod)) == expected


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        pytest.param(50 * Mi, 50 * Mi, id="whole-mebibytes"),
        pytest.param(50 * Mi + 4096, 51 * Mi, id="rounded-up-to-a-mebibyte"),
        pytest.param(2 * Gi - 4096, 2 * Gi, id="rounded-up-to-the-limit"),
        pytest.param(2 * Gi + 4096, 2 * Gi, id="never-above-the-limit"),
        pytest.param("50Mi", None, id="a-quantity-string-is-not-what-the-worker-writes"),
        pytest.param(5.2e7, None, id="float"),
        pytest.param(True, None, id="bool"),
        pytest.param(0, None, id="zero"),
        pytest.param(-1, None, id="negative"),
        pytest.param(None, None, id="null"),
    ],
)
def test_peak_memory_is_taken_only_as_a_positive_byte_count(
    reported: object, expected: int | None
) -> None:
    result = RESULT | {"peakMemoryBytes": reported}
    pod = worker_pod().terminated(0, "Completed", json.dumps(result)).obj()
    assert read_pod_outcome(pod).peak_memory == expected


@pytest.mark.parametrize(
    "pod",
    [
        # A failing worker writes plain text; a JSON-looking message is still not a result.
        pytest.param(worker_pod().terminated(1, "Error", json.dumps(PEAK)), id="failed"),
        pytest.param(worker_pod().running(), id="running"),
    ],
)
def test_no_peak_memory_for_attempts_that_did_not_complete_or_hit_the_limit(
    pod: MakePod,
) -> None:
    assert read_pod_outcome(pod.obj()).peak_memory is None


def test_pod_essentials_keep_what_is_read_and_little_else() -> None:
    pod = worker_pod().terminated(0, "Completed", json.dumps(RESULT)).obj()
    pod["status"]["conditions"].append(
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    )
    essentials = pod_essentials(pod)

    assert pod_unschedulable(essentials) is pod_unschedulable(pod) is True
    assert essentials["spec"]["nodeName"] == "kwok-node-1"
    assert essentials["metadata"]["uid"] == "pod-uid"
    assert essentials["metadata"]["labels"] == pod["metadata"]["labels"]
    assert set(essentials["spec"]["containers"][0]) <= {"name", "resources"}
    assert len(json.dumps(essentials)) < 0.6 * len(json.dumps(pod))  # more for a served pod
    assert pod_essentials(essentials) == essentials


def test_outcome_reasons_are_attempt_reasons() -> None:
    reasons = {
        read_pod_outcome(pod.obj()).reason
        for pod in (
            worker_pod().terminated(0, "Completed"),
            worker_pod().terminated(1, "Error"),
            worker_pod().terminated(137, "OOMKilled"),
            worker_pod().terminated(137, "Error").pod_reason("DeadlineExceeded"),
            worker_pod().terminated(137, "Error").pod_reason("Evicted"),
        )
    }

    assert reasons <= {r.value for r in AttemptReason}


def test_long_termination_message_is_cut() -> None:
    pod = worker_pod().terminated(1, "Error", "e" * 5000).obj()

    message = read_pod_outcome(pod).message

    assert message is not None
    assert len(message) == 1024
    assert message.endswith("...")


def test_worker_found_by_name_among_sidecars() -> None:
    pod = worker_pod().terminated(3, "Error", "bad input").obj()
    pod["status"]["containerStatuses"].insert(
        0, {"name": "log-shipper", "state": {"running": {"startedAt": T_START}}}
    )
    pod["spec"]["containers"].insert(0, {"name": "log-shipper", "image": "shipper"})

    assert read_pod_outcome(pod).exit_code == 3


def test_worker_done_while_a_sidecar_runs_is_finished() -> None:
    pod = worker_pod().terminated(0, "Completed", json.dumps(RESULT)).obj()
    pod["status"]["phase"] = "Running"
    pod["status"]["containerStatuses"].append(
        {"name": "log-shipper", "state": {"running": {"startedAt": T_START}}}
    )

    result = read_pod_outcome(pod)

    assert (result.finished, result.reason, result.result) == (True, "Completed", RESULT)


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(worker_pod().obj(), False, id="pending"),
        pytest.param(worker_pod().running().obj(), False, id="running"),
        pytest.param(worker_pod().running().deleted().obj(), True, id="deleted-while-running"),
        pytest.param(worker_pod().deleted().obj(), True, id="deleted-before-starting"),
        pytest.param(
            worker_pod().terminated(137, "Error").pod_reason("Evicted").obj(), True, id="evicted"
        ),
        pytest.param(
            worker_pod().terminated(137, "Error").disruption("PreemptionByScheduler", "p").obj(),
            True,
            id="preempted-by-the-scheduler",
        ),
        pytest.param(worker_pod().terminated(0, "Completed").obj(), False, id="succeeded"),
        pytest.param(
            worker_pod().terminated(0, "Completed").deleted().obj(),
            False,
            id="deleted-after-success",
        ),
        pytest.param(worker_pod().terminated(137, "OOMKilled").obj(), False, id="oom-killed"),
        pytest.param(
            worker_pod().terminated(137, "Error").pod_reason("DeadlineExceeded").obj(),
            False,
            id="deadline-exceeded",
        ),
        pytest.param(worker_pod().terminated(1, "Error").obj(), False, id="error"),
        pytest.param(
            worker_pod().terminated(1, "Error").deleted().obj(),
            False,
            id="deleted-after-failing",
        ),
    ],
)
def test_disruption(pod: dict[str, Any], expected: bool) -> None:
    assert disruption(pod) is expected
    assert disruption(pod_essentials(pod)) is expected
