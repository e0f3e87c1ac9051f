"""Per-type settings of a queue (spec.types, issue 19) on the real control plane: the apply-time
rules (CRD schema and CEL, client- and server-side apply), the worker pods the operator makes
for each type on KWOK (template patch, memory, deadline), the type's maxAttempts, and a type
template that cannot make a pod."""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest

from tests.integration.objects import (
    RESULT,
    condition,
    create,
    get_job,
    wait_admitted_reason,
    wait_job,
)
from videoqueue.envtest import ClusterBase, NodeSpec, pod_script, poll
from videoqueue.envtest.builders import WORKER, MakeJob, MakeQueue
from videoqueue.envtest.kwok import REASON

pytestmark = pytest.mark.integration

APPLY_MODES = [
    pytest.param(("apply",), id="client-side"),
    pytest.param(("apply", "--server-side"), id="server-side"),
]


def apply(
    cluster: ClusterBase, namespace: str, manifest: dict[str, Any], mode: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        *mode, "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False
    )


def typed_queue(**types: dict[str, Any]) -> MakeQueue:
    """A queue with budget 8Gi, max 2Gi and the given spec.types entries (raw bodies)."""
    return MakeQueue().budget("8Gi").max("2Gi").spec(types=types)


REFUSED = [
    pytest.param(
        typed_queue(Transcode={"maxAttempts": 2}).obj(),
        "spec.types keys must be job types as VideoJob spec.type spells them",
        id="key-not-a-job-type",
    ),
    pytest.param(
        typed_queue(transcode={"memory": {"defaultRequest": "3Gi"}}).obj(),
        "spec.types.transcode.memory.defaultRequest must not exceed spec.memory.max",
        id="type-default-over-max",
    ),
    pytest.param(
        MakeQueue()
        .budget("1Gi")
        .default_request("512Mi")
        .spec(types={"probe": {"memory": {"defaultRequest": "2Gi"}}})
        .obj(),
        "spec.types.probe.memory.defaultRequest must not exceed spec.memory.max (spec.memory."
        "budget when max is unset)",
        id="type-default-over-budget",
    ),
    pytest.param(
        typed_queue(**{f"type-{i}": {"maxAttempts": 1} for i in range(17)}).obj(),
        "spec.types: Too many: 17: must have at most 16 items",
        id="seventeen-types",
    ),
    pytest.param(
        typed_queue(transcode={"maxAttempts": 0}).obj(),
        "spec.types.transcode.maxAttempts: Invalid value: 0: spec.types.transcode.maxAttempts "
        "in body should be greater than or equal to 1",
        id="zero-max-attempts",
    ),
    pytest.param(
        typed_queue(transcode={"activeDeadlineSeconds": 0}).obj(),
        "spec.types.transcode.activeDeadlineSeconds in body should be greater than or equal to 1",
        id="zero-deadline",
    ),
    pytest.param(
        typed_queue(transcode={"memory": {"defaultRequest": "2GB"}}).obj(),
        "must be a positive memory quantity in bytes such as 512Mi, 2Gi or 1.5G (binary "
        'Ki/Mi/Gi/Ti or decimal k/M/G/T suffixes; not m, which means thousandths), not "2GB"',
        id="default-not-a-quantity",
    ),
]


@pytest.mark.parametrize("mode", APPLY_MODES)
@pytest.mark.parametrize(("manifest", "expected"), REFUSED)
def test_bad_type_settings_are_refused_at_apply(
    cluster: ClusterBase,
    crds: None,
    namespace: str,
    manifest: dict[str, Any],
    expected: str,
    mode: tuple[str, ...],
) -> None:
    result = apply(cluster, namespace, manifest, mode)

    assert result.returncode != 0, f"accepted: {manifest['spec']}"
    assert expected in result.stderr


@pytest.mark.parametrize("mode", APPLY_MODES)
def test_type_settings_at_the_limits_are_accepted_and_kept(
    cluster: ClusterBase, crds: None, namespace: str, mode: tuple[str, ...]
) -> None:
    """The counterpart of every refusal: 16 types, a default equal to memory.max, the largest
    attempts, the shortest deadline, a template patch kept as written."""
    types: dict[str, Any] = {f"type-{i}": {"maxAttempts": 1} for i in range(15)}
    types["transcode"] = {
        "memory": {"defaultRequest": "2Gi"},
        "activeDeadlineSeconds": 1,
        "maxAttempts": 100,
        "template": {
            "metadata": {"labels": {"team": "video"}},
            "spec": {"containers": [{"name": "worker", "image": "gpu:1"}]},
        },
    }
    manifest = typed_queue(**types).obj()

    result = apply(cluster, namespace, manifest, mode)

    assert result.returncode == 0, result.stderr
    stored = json.loads(cluster.kubectl("get", "-n", namespace, "vq", "work", "-o", "json").stdout)
    assert stored["spec"]["types"] == types


def test_a_null_in_a_template_patch_survives_server_side_apply_only(
    cluster: ClusterBase, crds: None, namespace: str
) -> None:
    """A null in a type's template patch deletes that key of spec.template (docs/queues.md);
    `kubectl apply --server-side` stores it, client-side `kubectl apply` drops it (it reads a
    null as "remove this field"), as the docs warn."""
    patch = {"spec": {"nodeSelector": None}}
    queue = typed_queue(transcode={"template": patch}).obj()
    kept, dropped = copy.deepcopy(queue), copy.deepcopy(queue)
    kept["metadata"]["name"], dropped["metadata"]["name"] = "server-side", "client-side"

    assert apply(cluster, namespace, kept, ("apply", "--server-side")).returncode == 0
    assert apply(cluster, namespace, dropped, ("apply",)).returncode == 0

    def stored(name: str) -> Any:
        out = cluster.kubectl("get", "-n", namespace, "vq", name, "-o", "json").stdout
        return json.loads(out)["spec"]["types"]["transcode"].get("template")

    assert stored("server-side") == patch
    assert stored("client-side") in (None, {"spec": {}})


def test_lowering_memory_max_below_a_type_default_is_refused(
    cluster: ClusterBase, crds: None, namespace: str
) -> None:
    queue = typed_queue(transcode={"memory": {"defaultRequest": "2Gi"}}).obj()
    assert apply(cluster, namespace, queue, ("apply",)).returncode == 0

    lowered = copy.deepcopy(queue)
    lowered["spec"]["memory"]["max"] = "1Gi"
    result = apply(cluster, namespace, lowered, ("apply",))

    assert result.returncode != 0
    assert "spec.types.transcode.memory.defaultRequest must not exceed" in result.stderr


# --- The operator: worker pods per type ----------------------------------------------------

GPU_IMAGE = "videoqueue/worker-gpu:test"


def worker_of(pod: Any) -> Any:
    return next(c for c in pod.spec.containers if c.name == "worker")


def test_each_type_gets_its_worker_pod_and_attempts(
    operator: subprocess.Popen[bytes],
    cluster: ClusterBase,
    custom: Any,
    core: Any,
    namespace: str,
) -> None:
    pool = f"gpu-{namespace[-5:]}"
    gpu_node = NodeSpec(pool, labels={"videoqueue.dev/test-pool": pool})
    cluster.create_nodes([gpu_node])
    script = pod_script("1s", message=json.dumps(RESULT))
    transcode_patch = {
        "spec": {
            "containers": [
                {"name": "worker", "image": GPU_IMAGE, "resources": {"requests": {"cpu": "4"}}}
            ],
            "nodeSelector": {"videoqueue.dev/test-pool": pool},
        }
    }
    queue = (
        MakeQueue()
        .concurrency(4)
        .budget("8Gi")
        .default_request("1Gi")
        .deadline(3600)
        .retry(3, initial_seconds=1, factor=1, max_seconds=1)
        .template(WORKER, annotations=script)
        .job_type(
            "transcode",
            template=transcode_patch,
            default_request="256Mi",
            deadline=600,
            max_attempts=2,
        )
        .job_type("probe", default_request="64Mi")
    )
    create(custom, namespace, "videoqueues", queue.obj())
    jobs = [
        MakeJob("encode").type("transcode"),
        MakeJob("inspect").type("probe"),
        MakeJob("clip").type("clip"),  # no settings of its type: the queue's
        MakeJob("own").type("transcode").memory("1Gi").deadline(120).max_attempts(1),
        MakeJob("broken").type("transcode").annotations(**{REASON: "Error"}),
    ]
    try:
        for job in jobs:
            create(custom, namespace, "videojobs", job.obj())

        done = {
            name: wait_job(custom, namespace, name, "Complete")
            for name in ("encode", "inspect", "clip", "own")
        }
        failed = wait_job(custom, namespace, "broken", "Failed")
    finally:
        cluster.delete_nodes([gpu_node.name])

    pods = {
        name: core.read_namespaced_pod(job["status"]["attempts"][0]["pod"], namespace)
        for name, job in done.items()
    }
    # (image, CPU request, memory request = limit, node selector, deadline, node)
    seen = {
        name: (
            worker_of(pod).image,
            (worker_of(pod).resources.requests or {}).get("cpu"),
            worker_of(pod).resources.requests["memory"],
            worker_of(pod).resources.limits["memory"],
            pod.spec.node_selector,
            pod.spec.active_deadline_seconds,
        )
        for name, pod in pods.items()
    }
    selector = {"videoqueue.dev/test-pool": pool}
    assert seen == {
        "encode": (GPU_IMAGE, "4", "256Mi", "256Mi", selector, 600),
        "inspect": (WORKER["image"], None, "64Mi", "64Mi", None, 3600),
        "clip": (WORKER["image"], None, "1Gi", "1Gi", None, 3600),
        "own": (GPU_IMAGE, "4", "1Gi", "1Gi", selector, 120),
    }
    assert pods["encode"].spec.node_name == gpu_node.name
    assert pods["own"].spec.node_name == gpu_node.name
    assert pods["inspect"].spec.node_name != gpu_node.name
    # The template's annotations (the KWOK script) survive the patch.
    assert pods["encode"].metadata.annotations.items() >= script.items()
    assert [done[n]["status"]["effectiveMemory"] for n in ("encode", "inspect", "own")] == [
        "256Mi",
        "64Mi",
        "1Gi",
    ]
    # The type's maxAttempts (2), not the queue's (3).
    attempts = failed["status"]["attempts"]
    assert [a["reason"] for a in attempts] == ["Error", "Error"]
    message = (condition(failed, "Failed") or {}).get("message", "")
    assert "attempt 2 of 2 ended Error" in message
    assert "no attempts left" in message


def test_a_type_template_that_cannot_make_a_pod_holds_only_its_jobs_with_a_message(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    """A sidecar without a memory limit in a type's patch: that type's jobs are held with a
    condition and an Event naming spec.types.<type>.template, as for a broken spec.template;
    fixing the patch lets them run."""
    script = pod_script("1s", message=json.dumps(RESULT))
    sidecar = {"name": "log-shipper", "image": "shipper:test"}
    queue = (
        MakeQueue()
        .budget("8Gi")
        .default_request("256Mi")
        .template(WORKER, annotations=script)
        .job_type("thumbnail", template={"spec": {"containers": [sidecar]}})
    )
    create(custom, namespace, "videoqueues", queue.obj())
    create(custom, namespace, "videojobs", MakeJob("thumbs").type("thumbnail").obj())

    held = wait_admitted_reason(custom, namespace, "thumbs", "WorkerPodInvalid", timeout=60)

    message = (condition(held, "Admitted") or {}).get("message", "")
    assert "spec.types.thumbnail.template" in message
    assert "'log-shipper' has no memory limit" in message
    events = poll(
        lambda: [
            e.message
            for e in core.list_namespaced_event(namespace).items
            if e.involved_object.name == "thumbs" and e.reason == "WorkerPodInvalid"
        ],
        timeout=30,
        what="a WorkerPodInvalid Event on VideoJob thumbs",
    )
    assert "spec.types.thumbnail.template" in events[0]
    assert core.list_namespaced_pod(namespace).items == []

    fixed = {**sidecar, "resources": {"limits": {"memory": "64Mi"}}}
    patch = {"spec": {"types": {"thumbnail": {"template": {"spec": {"containers": [fixed]}}}}}}
    custom.patch_namespaced_custom_object(
        "videoqueue.dev", "v1alpha1", namespace, "videoqueues", "work", patch
    )

    done = wait_job(custom, namespace, "thumbs", "Complete")
    pod = core.read_namespaced_pod(done["status"]["attempts"][-1]["pod"], namespace)
    assert [c.name for c in pod.spec.containers] == ["worker", "log-shipper"]
    assert get_job(custom, namespace, "thumbs")["status"]["phase"] == "Succeeded"
