"""Queue and job controls against the real control plane: pause, drain, cancel, suspend,
delayed start."""

from __future__ import annotations

import datetime
import subprocess
from typing import Any

import pytest

from tests.integration.objects import (
    GROUP,
    VERSION,
    condition,
    create,
    get_job,
    is_true,
    long_job,
    make_job,
    make_queue,
    wait_admitted_reason,
    wait_job,
    wait_queue,
)
from videoqueue.envtest import poll, wait_for_object
from videoqueue.envtest.kwok import RUN_DURATION

pytestmark = pytest.mark.integration


def patch(custom: Any, namespace: str, plural: str, name: str, body: dict[str, Any]) -> None:
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, body)


def set_state(custom: Any, namespace: str, state: str) -> None:
    patch(custom, namespace, "videoqueues", "work", {"spec": {"state": state}})


def test_paused_queue_accepts_jobs_but_admits_none_until_resumed(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(state="Paused"))
    create(custom, namespace, "videojobs", make_job("held"))
    waiting = wait_admitted_reason(custom, namespace, "held", "QueueNotAdmitting", timeout=30)
    assert waiting["status"]["phase"] == "Pending"
    queue = wait_queue(custom, namespace, lambda q: condition(q, "Ready") is not None, "Ready")
    assert condition(queue, "Ready")["reason"] == "Paused"  # type: ignore[index]
    assert not core.list_namespaced_pod(namespace).items

    set_state(custom, namespace, "Active")

    wait_job(custom, namespace, "held", "Complete")


def test_draining_queue_rejects_new_jobs_and_reports_drained(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    create(custom, namespace, "videojobs", long_job("running"))
    wait_job(custom, namespace, "running", "Running")

    set_state(custom, namespace, "Draining")
    wait_queue(custom, namespace, lambda q: condition(q, "Drained") is not None, "Drained")
    create(custom, namespace, "videojobs", make_job("late"))

    late = wait_job(custom, namespace, "late", "Rejected")
    assert condition(late, "Rejected")["reason"] == "QueueDraining"  # type: ignore[index]
    # The running job finishes; then the queue is drained.
    patch(custom, namespace, "videojobs", "running", {"spec": {"cancel": True}})
    queue = wait_queue(custom, namespace, lambda q: is_true(q, "Drained"), "Drained=True")
    assert queue["status"]["running"] == 0


def test_cancel_stops_the_worker_and_ends_the_job(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    create(custom, namespace, "videojobs", long_job("unwanted"))
    pod = wait_job(custom, namespace, "unwanted", "Running")["status"]["attempts"][0]["pod"]

    patch(custom, namespace, "videojobs", "unwanted", {"spec": {"cancel": True}})

    job = wait_job(custom, namespace, "unwanted", "Cancelled")
    assert job["status"]["phase"] == "Cancelled"
    assert job["status"]["attempts"][0]["reason"] == "Cancelled"
    poll(
        lambda: pod not in [p.metadata.name for p in core.list_namespaced_pod(namespace).items],
        timeout=30,
        what=f"worker pod {pod} to be deleted",
    )


def test_suspend_stops_a_running_job_and_resume_requeues_it_without_using_an_attempt(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    queue = make_queue()
    queue["spec"]["retry"]["maxAttempts"] = 1
    create(custom, namespace, "videoqueues", queue)
    create(custom, namespace, "videojobs", long_job("paused-job"))
    wait_job(custom, namespace, "paused-job", "Running")

    patch(custom, namespace, "videojobs", "paused-job", {"spec": {"suspend": True}})
    suspended = wait_job(custom, namespace, "paused-job", "Suspended")
    assert suspended["status"]["phase"] == "Waiting"
    assert suspended["status"]["attempts"][0]["reason"] == "Suspended"

    patch(
        custom,
        namespace,
        "videojobs",
        "paused-job",
        {"metadata": {"annotations": {RUN_DURATION: "1s"}}, "spec": {"suspend": False}},
    )

    done = wait_job(custom, namespace, "paused-job", "Complete")
    assert [a["reason"] for a in done["status"]["attempts"]] == ["Suspended", "Completed"]


def test_delayed_job_waits_until_start_after(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    start_after = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(
        seconds=6
    )
    job = make_job("later")
    job["spec"]["startAfter"] = start_after.isoformat().replace("+00:00", "Z")
    create(custom, namespace, "videojobs", job)

    waiting = wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videojobs",
        name="later",
        predicate=lambda j: j.get("status", {}).get("phase") == "Waiting",
        timeout=30,
        what="the job to wait for its start time",
    )
    assert "startAfter" in waiting["status"]["message"]

    done = wait_job(custom, namespace, "later", "Complete")
    admitted = datetime.datetime.fromisoformat(
        get_job(custom, namespace, "later")["status"]["admittedTime"].replace("Z", "+00:00")
    )
    assert admitted >= start_after
    assert done["status"]["phase"] == "Succeeded"
