"""Careless and hostile input against the real control plane (KWOK nodes): what a job may put
on its worker pod (annotations by allow list, the queue's sandbox settings), memory counted
for the whole pod (sidecars), a worker that finds the job invalid, dependency cycles."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.integration.objects import (
    GROUP,
    VERSION,
    PodRecorder,
    condition,
    create,
    long_job,
    make_job,
    make_queue,
    wait_admitted_reason,
    wait_job,
    wait_queue,
)
from videoqueue.api import parse_quantity
from videoqueue.api.worker import (
    ENV_ALLOWED_HOSTS,
    ENV_DOWNLOAD_TIMEOUT_SECONDS,
    ENV_FILE_ROOTS,
    EXIT_INVALID_JOB,
)
from videoqueue.envtest import poll
from videoqueue.envtest.kwok import EXIT_CODE, MESSAGE, REASON

pytestmark = pytest.mark.integration

Gi = 1024**3


def events_for(core: Any, namespace: str, name: str) -> list[tuple[str, str, str]]:
    return [
        (e.type, e.reason, e.message)
        for e in core.list_namespaced_event(namespace).items
        if e.involved_object.name == name
    ]


def worker_pod(core: Any, namespace: str, job: dict[str, Any]) -> Any:
    return core.read_namespaced_pod(job["status"]["attempts"][0]["pod"], namespace)


# --- What travels to the worker pod ----------------------------------------------------------


def test_job_annotations_reach_the_pod_only_by_allow_list(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(
        custom,
        namespace,
        "videoqueues",
        make_queue(worker={"copyAnnotations": ["example.com/*", "team.example.org/owner"]}),
    )
    annotations = {
        "sidecar.istio.io/inject": "true",
        "vault.hashicorp.com/agent-inject": "true",
        "vault.hashicorp.com/role": "admin",
        "example.com/cost-center": "42",
        "team.example.org/owner": "video",
        "team.example.org/other": "no",
        "videoqueue.dev/note": "travels",
    }
    create(custom, namespace, "videojobs", make_job("curious", annotations=annotations))

    job = wait_job(custom, namespace, "curious", "Complete")

    on_pod = worker_pod(core, namespace, job).metadata.annotations
    assert on_pod["example.com/cost-center"] == "42"  # allow-listed: copying works
    assert on_pod["team.example.org/owner"] == "video"
    assert on_pod["videoqueue.dev/note"] == "travels"  # own domain: always
    assert "kwok.videoqueue.dev/run-duration" in on_pod  # the template's own
    for key in (
        "sidecar.istio.io/inject",
        "vault.hashicorp.com/agent-inject",
        "vault.hashicorp.com/role",
        "team.example.org/other",
    ):
        assert key not in on_pod, key


def test_queue_sandbox_settings_reach_the_worker(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    queue = make_queue(
        worker={
            "fileRoots": ["/data", "/scratch"],
            "allowedHosts": ["media.internal", "10.20.0.0/16"],
            "downloadTimeoutSeconds": 60,
        }
    )
    # The template's own setting of the same name must not win.
    queue["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": ENV_ALLOWED_HOSTS, "value": '["*"]'}
    ]
    create(custom, namespace, "videoqueues", queue)
    create(custom, namespace, "videojobs", make_job("sandboxed"))

    job = wait_job(custom, namespace, "sandboxed", "Complete")

    worker = worker_pod(core, namespace, job).spec.containers[0]
    env = [(e.name, e.value) for e in worker.env]
    assert (ENV_FILE_ROOTS, '["/data", "/scratch"]') in env
    assert (ENV_ALLOWED_HOSTS, '["media.internal", "10.20.0.0/16"]') in env
    assert (ENV_DOWNLOAD_TIMEOUT_SECONDS, "60") in env
    assert [name for name, _ in env].count(ENV_ALLOWED_HOSTS) == 1


# --- Memory: the whole pod counts against the budget -----------------------------------------

SIDECAR = {
    "name": "log-shipper",
    "image": "shipper:test",
    "resources": {"limits": {"memory": "1Gi"}},
}


def busy(queue: dict[str, Any]) -> int:
    status = queue.get("status") or {}
    return int(status.get("running", 0)) + int(status.get("admitted", 0))


def test_sidecar_memory_counts_against_the_budget(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    # 4Gi budget, room for 4 jobs by concurrency; each 1Gi job's pod holds 2Gi with the
    # 1Gi sidecar, so only 2 may run at once.
    queue = make_queue(concurrency=4, budget="4Gi", run_for="600s")
    queue["spec"]["template"]["spec"]["containers"].append(SIDECAR)
    create(custom, namespace, "videoqueues", queue)

    with PodRecorder(core, namespace) as pods:
        for name in ("a", "b", "c"):
            create(custom, namespace, "videojobs", long_job(name, memory="1Gi"))
        # Its pod would be 5Gi: never fits.
        create(custom, namespace, "videojobs", make_job("too-big", memory="4Gi"))

        rejected = wait_job(custom, namespace, "too-big", "Rejected")
        # The third job was looked at and held back for memory, not for a slot.
        waiting = wait_admitted_reason(custom, namespace, "c", "WaitingForMemory", timeout=60)
        status = wait_queue(
            custom,
            namespace,
            lambda q: busy(q) == 2 and q["status"].get("memory", {}).get("reserved") == "4Gi",
            "the queue to count 2 whole pods (4Gi) reserved",
        )["status"]

        assert pods.max_count == 2, pods.over(2, 4 * Gi)
    failed = condition(rejected, "Rejected")
    assert failed is not None
    assert failed["reason"] == "PodExceedsBudget"
    assert "1Gi for the sidecar" in failed["message"]
    assert "5Gi" in failed["message"]
    assert "needs 2Gi (1Gi for the worker, 1Gi for the rest of its pod)" in (
        condition(waiting, "Admitted") or {}
    ).get("message", "")
    assert status["memory"]["summary"] == "4Gi/4Gi"
    # Jobs still ask for what they asked for.
    assert wait_job(custom, namespace, "a", "Running")["status"]["effectiveMemory"] == "1Gi"
    real = sum(
        parse_quantity(c.resources.limits["memory"])
        for pod in core.list_namespaced_pod(namespace).items
        if pod.status.phase in ("Pending", "Running")
        for c in pod.spec.containers
    )
    assert real == 4 * Gi  # what the pods can really use is within the budget


def test_template_without_a_sidecar_limit_holds_jobs_until_fixed(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    queue = make_queue()
    queue["spec"]["template"]["spec"]["containers"].append(
        {"name": "log-shipper", "image": "shipper:test"}
    )
    create(custom, namespace, "videoqueues", queue)
    create(custom, namespace, "videojobs", make_job("held"))

    held = wait_admitted_reason(custom, namespace, "held", "WorkerPodInvalid", timeout=60)
    message = (condition(held, "Admitted") or {}).get("message", "")
    assert "spec.template.spec.containers[1].resources.limits.memory" in message
    assert "'log-shipper'" in message
    assert core.list_namespaced_pod(namespace).items == []

    worker = queue["spec"]["template"]["spec"]["containers"][0]
    fixed = {"spec": {"template": {"spec": {"containers": [worker, SIDECAR]}}}}
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "videoqueues", "work", fixed)

    wait_job(custom, namespace, "held", "Complete")


# --- A worker that finds the job invalid -----------------------------------------------------

INVALID = "spec.params.crf: must be an integer from 0 to 51, got 'best'"


def test_invalid_job_fails_at_once_with_the_workers_message(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue())  # maxAttempts 3
    script = {EXIT_CODE: str(EXIT_INVALID_JOB), REASON: "Error", MESSAGE: INVALID}
    create(custom, namespace, "videojobs", make_job("wrong", annotations=script))

    job = wait_job(custom, namespace, "wrong", "Failed")

    status = job["status"]
    assert status["phase"] == "Failed"
    assert [(a["attempt"], a["exitCode"]) for a in status["attempts"]] == [(1, EXIT_INVALID_JOB)]
    failed = condition(job, "Failed")
    assert failed is not None
    assert failed["reason"] == "InvalidJob"
    assert INVALID in failed["message"]
    assert INVALID in status["message"]
    events = poll(
        lambda: [e for e in events_for(core, namespace, "wrong") if e[1] == "Failed"],
        timeout=30,
        what="the Failed Event",
    )
    assert events[0][0] == "Warning"
    assert INVALID in events[0][2]


# --- Dependency cycles -----------------------------------------------------------------------


def test_jobs_depending_on_each_other_fail_naming_the_cycle(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    for name, other in (("a", "b"), ("b", "a"), ("after", "a")):
        job = make_job(name)
        job["spec"]["dependsOn"] = [other]
        create(custom, namespace, "videojobs", job)

    for name, cycle in (("a", "a -> b -> a"), ("b", "b -> a -> b")):
        job = wait_job(custom, namespace, name, "Failed")
        failed = condition(job, "Failed")
        assert failed is not None
        assert failed["reason"] == "DependencyCycle"
        assert cycle in failed["message"]
    # A job that depends on the cycle without being on it fails because its dependency did.
    after = condition(wait_job(custom, namespace, "after", "Failed"), "Failed")
    assert after is not None
    assert after["reason"] == "DependencyFailed"
    assert core.list_namespaced_pod(namespace).items == []
