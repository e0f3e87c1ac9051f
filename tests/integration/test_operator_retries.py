"""Retries against the real control plane: OOM growth, backoff, giving up, disruptions."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.integration.objects import (
    GROUP,
    VERSION,
    condition,
    create,
    get_job,
    long_job,
    make_job,
    make_queue,
    timestamp,
    wait_job,
)
from videoqueue.api import RETRY_ANNOTATION
from videoqueue.envtest import ClusterBase, NodeSpec
from videoqueue.envtest.kwok import REASON, REASON_FOR_ATTEMPT, RUN_DURATION

pytestmark = pytest.mark.integration


def test_oom_killed_attempt_is_retried_with_more_memory(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(budget="8Gi", max_="4Gi"))
    oom_first = {REASON_FOR_ATTEMPT.format(attempt=1): "OOMKilled"}
    create(custom, namespace, "videojobs", make_job("grows", memory="1Gi", annotations=oom_first))

    job = wait_job(custom, namespace, "grows", "Complete")

    attempts = job["status"]["attempts"]
    assert [(a["attempt"], a["reason"], a["memory"]) for a in attempts] == [
        (1, "OOMKilled", "1Gi"),
        (2, "Completed", "2Gi"),
    ]
    assert attempts[0]["exitCode"] == 137
    # The killed attempt peaked at its limit; KWOK's scripted result reports no peak.
    assert [a.get("peakMemory") for a in attempts] == ["1Gi", None]
    assert job["status"]["effectiveMemory"] == "2Gi"
    pod = core.read_namespaced_pod(attempts[1]["pod"], namespace)
    assert pod.spec.containers[0].resources.limits["memory"] == "2Gi"
    assert pod.spec.containers[0].resources.requests["memory"] == "2Gi"
    reasons = [
        e.reason
        for e in core.list_namespaced_event(namespace).items
        if e.involved_object.name == "grows"
    ]
    assert "Retrying" in reasons


def test_oom_growth_is_capped_at_memory_max(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(budget="8Gi", max_="3Gi"))
    oom_twice = {REASON_FOR_ATTEMPT.format(attempt=n): "OOMKilled" for n in (1, 2)}
    create(custom, namespace, "videojobs", make_job("capped", memory="2Gi", annotations=oom_twice))

    job = wait_job(custom, namespace, "capped", "Complete")

    assert [a["memory"] for a in job["status"]["attempts"]] == ["2Gi", "3Gi", "3Gi"]


def test_job_fails_for_good_after_max_attempts_with_backoff(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, cluster: ClusterBase
) -> None:
    create(custom, namespace, "videoqueues", make_queue())  # maxAttempts 3, backoff 1s x2
    create(custom, namespace, "videojobs", make_job("broken", annotations={REASON: "Error"}))

    cluster.kubectl("wait", "-n", namespace, "--for=condition=Failed", "vj/broken", "--timeout=90s")

    job = get_job(custom, namespace, "broken")
    status = job["status"]
    assert status["phase"] == "Failed"
    assert [a["reason"] for a in status["attempts"]] == ["Error", "Error", "Error"]
    failed = condition(job, "Failed")
    assert failed is not None
    assert failed["reason"] == "Error"
    assert "no attempts left" in failed["message"]
    # Backoff: 1s after the first failure, 2s after the second.
    gaps = [
        (timestamp(later["startTime"]) - timestamp(earlier["finishTime"])).total_seconds()
        for earlier, later in zip(status["attempts"], status["attempts"][1:], strict=False)
    ]
    assert gaps[0] >= 1
    assert gaps[1] >= 2
    assert condition(job, "Complete") is None


def delete_pod(core: Any, name: str, namespace: str) -> None:
    core.delete_namespaced_pod(name, namespace)


def evict_pod(core: Any, name: str, namespace: str) -> None:
    # The eviction API, as `kubectl drain` uses it.
    core.create_namespaced_pod_eviction(name, namespace, {"metadata": {"name": name}})


@pytest.mark.parametrize(
    ("take_away", "reasons"),
    [
        pytest.param(delete_pod, {"Disrupted"}, id="deleted"),
        # KWOK removes an evicted pod at once, so the operator may only see it gone.
        pytest.param(evict_pod, {"Evicted", "Disrupted"}, id="evicted"),
    ],
)
def test_worker_taken_away_is_requeued_without_using_an_attempt(
    operator: subprocess.Popen[bytes],
    custom: Any,
    core: Any,
    namespace: str,
    take_away: Any,
    reasons: set[str],
) -> None:
    queue = make_queue()
    queue["spec"]["retry"]["maxAttempts"] = 1
    create(custom, namespace, "videoqueues", queue)
    # The first worker runs long enough to be taken away; the next one finishes.
    create(custom, namespace, "videojobs", long_job("moved"))
    running = wait_job(custom, namespace, "moved", "Running")
    first_pod = running["status"]["attempts"][0]["pod"]
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "videojobs",
        "moved",
        {"metadata": {"annotations": {RUN_DURATION: "1s"}}},
    )

    take_away(core, first_pod, namespace)

    job = wait_job(custom, namespace, "moved", "Complete")
    attempts = job["status"]["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert attempts[0]["reason"] in reasons
    assert attempts[1]["reason"] == "Completed"
    assert attempts[1]["pod"] != first_pod


def test_no_job_gets_two_pods_for_one_attempt(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(concurrency=4, budget="8Gi"))
    for i in range(8):
        create(custom, namespace, "videojobs", make_job(f"job-{i}"))
    for i in range(8):
        wait_job(custom, namespace, f"job-{i}", "Complete")

    pods = core.list_namespaced_pod(namespace).items
    per_attempt = [
        (p.metadata.labels["videoqueue.dev/job"], p.metadata.labels["videoqueue.dev/attempt"])
        for p in pods
    ]
    assert len(per_attempt) == len(set(per_attempt)) == 8


def test_failed_job_is_retried_by_hand_with_one_annotation(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, cluster: ClusterBase
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    job = make_job("fix-me", annotations={REASON: "Error"})
    job["spec"]["maxAttempts"] = 1
    create(custom, namespace, "videojobs", job)
    wait_job(custom, namespace, "fix-me", "Failed")
    # The user fixes the cause (here: the simulated failure goes away), then asks for a retry.
    cluster.kubectl("annotate", "-n", namespace, "vj/fix-me", f"{REASON}-")

    cluster.kubectl("annotate", "-n", namespace, "vj/fix-me", f"{RETRY_ANNOTATION}=1")

    done = wait_job(custom, namespace, "fix-me", "Complete")
    status = done["status"]
    assert [a["reason"] for a in status["attempts"]] == ["Error", "Completed"]
    assert status["manualRetry"] == {"request": "1", "afterAttempt": 1}
    assert condition(done, "Failed")["status"] == "False"  # type: ignore[index]


def test_job_on_a_lost_node_is_requeued_without_using_an_attempt(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, cluster: ClusterBase
) -> None:
    """The node goes away; kube-controller-manager's pod GC deletes its orphaned pods (after
    its quarantine of up to a minute) and the job runs again elsewhere."""
    pool = f"lost-{namespace[-5:]}"
    first, second = (
        NodeSpec(f"{pool}-a", labels={"pool": pool}),
        NodeSpec(f"{pool}-b", labels={"pool": pool}),
    )
    cluster.create_nodes([first])
    queue = make_queue()
    queue["spec"]["retry"]["maxAttempts"] = 1
    queue["spec"]["template"]["spec"]["nodeSelector"] = {"pool": pool}
    create(custom, namespace, "videoqueues", queue)
    create(custom, namespace, "videojobs", long_job("stranded"))
    wait_job(custom, namespace, "stranded", "Running")
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "videojobs",
        "stranded",
        {"metadata": {"annotations": {RUN_DURATION: "1s"}}},
    )
    try:
        cluster.delete_nodes([first.name])
        cluster.create_nodes([second])

        job = wait_job(custom, namespace, "stranded", "Complete", timeout=180)
    finally:
        cluster.delete_nodes([first.name, second.name])

    attempts = job["status"]["attempts"]
    # Pod GC marks the pod with a DisruptionTarget condition before deleting it.
    assert attempts[0]["reason"] in ("Evicted", "Disrupted")
    assert attempts[1]["reason"] == "Completed"
    assert attempts[1]["node"] == second.name
