"""The operator against the real control plane: admission, worker pods, outcomes, status."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.integration.objects import (
    GROUP,
    RESULT,
    VERSION,
    PodRecorder,
    condition,
    create,
    get_job,
    is_true,
    long_job,
    make_job,
    make_queue,
    wait_admitted_reason,
    wait_job,
)
from videoqueue.envtest import ClusterBase, poll, wait_for_object

pytestmark = pytest.mark.integration


def test_jobs_run_in_priority_order_within_concurrency_and_memory(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(concurrency=2, budget="3Gi", run_for="1s"))
    jobs = [("low-a", 1), ("low-b", 1), ("high-a", 9), ("mid-a", 5), ("high-b", 9), ("mid-b", 5)]
    with PodRecorder(core, namespace) as sampler:
        for name, priority in jobs:
            create(custom, namespace, "videojobs", make_job(name, priority=priority))
        done = {
            name: wait_job(custom, namespace, name, "Complete", timeout=120) for name, _ in jobs
        }

    assert sampler.max_count <= 2
    assert sampler.max_memory <= 3 * 2**30
    for name, job in done.items():
        status = job["status"]
        assert status["phase"] == "Succeeded", name
        assert status["result"] == RESULT
        assert status["attempt"] == 1
        assert status["attempts"][0]["reason"] == "Completed"
        assert status["effectiveMemory"] == "1Gi"
    queue = wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videoqueues",
        name="work",
        predicate=lambda q: q.get("status", {}).get("succeeded") == len(jobs),
        timeout=30,
        what="the queue's status to count every job as succeeded",
    )
    assert queue["status"]["running"] == 0
    assert queue["status"]["memory"] == {"reserved": "0", "budget": "3Gi", "summary": "0/3Gi"}
    assert is_true(queue, "Ready")
    # Jobs created within a moment of each other: the first two may start before the rest
    # exist, but from then on admission follows priority.
    # Admission times from the pods' admitted-at annotations (status times have whole
    # seconds); jobs admitted in the same cycle share a time and go in priority order.
    priority_of = dict(jobs)
    admitted = sorted(
        done,
        key=lambda n: (
            sampler.admitted_at[done[n]["status"]["attempts"][0]["pod"]],
            -priority_of[n],
        ),
    )
    later = [n for n in admitted[2:]]
    priorities = [priority_of[n] for n in later]
    assert priorities == sorted(priorities, reverse=True), admitted


def test_job_over_memory_max_is_rejected_with_condition_and_event(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str, cluster: ClusterBase
) -> None:
    create(custom, namespace, "videoqueues", make_queue(budget="4Gi", max_="2Gi"))
    create(custom, namespace, "videojobs", make_job("huge", memory="3Gi"))

    job = wait_job(custom, namespace, "huge", "Rejected")

    assert job["status"]["phase"] == "Rejected"
    assert is_true(job, "Failed")
    message = condition(job, "Rejected")["message"]  # type: ignore[index]
    assert "memory.max" in message
    assert "2Gi" in message
    events = poll(
        lambda: [
            e
            for e in core.list_namespaced_event(namespace).items
            if e.involved_object.name == "huge" and e.reason == "Rejected"
        ],
        timeout=30,
        what="a Rejected event for the job",
    )
    assert "memory.max" in events[0].message
    assert not core.list_namespaced_pod(namespace).items


def test_job_waits_for_a_missing_queue_and_runs_once_it_exists(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    create(custom, namespace, "videojobs", make_job("early", queue="later"))

    job = wait_job(custom, namespace, "early", "QueueMissing")
    assert "later" in condition(job, "QueueMissing")["message"]  # type: ignore[index]

    create(custom, namespace, "videoqueues", make_queue("later"))
    done = wait_job(custom, namespace, "early", "Complete")
    assert condition(done, "QueueMissing")["status"] == "False"  # type: ignore[index]


def test_kubectl_wait_for_complete(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, cluster: ClusterBase
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    create(custom, namespace, "videojobs", make_job("waited"))

    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Complete", "vj/waited", "--timeout=90s"
    )

    listed = cluster.kubectl("get", "vj", "-n", namespace)
    assert "Succeeded" in listed.stdout


@pytest.mark.parametrize(
    ("backfill_seconds", "small_admitted"),
    [
        pytest.param(600, True, id="small-job-backfills-while-big-one-waits"),
        pytest.param(0, False, id="memory-reserved-for-big-job-at-once"),
    ],
)
def test_job_that_does_not_fit_lets_smaller_ones_pass_until_its_window_closes(
    operator: subprocess.Popen[bytes],
    custom: Any,
    namespace: str,
    backfill_seconds: int,
    small_admitted: bool,
) -> None:
    queue = make_queue(concurrency=3, budget="3Gi")
    queue["spec"]["memory"]["backfillSeconds"] = backfill_seconds
    create(custom, namespace, "videoqueues", queue)
    create(custom, namespace, "videojobs", long_job("running", memory="2Gi"))
    wait_job(custom, namespace, "running", "Admitted")
    create(custom, namespace, "videojobs", make_job("big", memory="2Gi", priority=9))
    wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videojobs",
        name="big",
        predicate=lambda j: (
            (condition(j, "Admitted") or {}).get("reason") in ("WaitingForMemory", "MemoryReserved")
        ),
        timeout=30,
        what="the big job to wait for memory, saying so",
    )

    create(custom, namespace, "videojobs", long_job("small", memory="1Gi", priority=1))

    if small_admitted:
        small = wait_job(custom, namespace, "small", "Admitted")
        assert small["status"]["phase"] in ("Admitted", "Running")
    else:
        small = wait_admitted_reason(custom, namespace, "small", "MemoryReserved", timeout=30)
        assert "big" in small["status"]["message"]
    big = get_job(custom, namespace, "big")
    assert not is_true(big, "Admitted")
    assert "needs 2Gi" in big["status"]["message"]
