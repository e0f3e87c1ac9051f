"""Without a Redis progress channel (the session's operator has no --redis-url): worker pods
are not told to publish, jobs run to the end all the same, and a queue asking for stalled-
worker detection is told, with a Warning Event, that it is off."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from videoqueue.envtest import poll

from .objects import create, make_job, make_queue, wait_job

pytestmark = pytest.mark.integration


def test_without_redis_jobs_run_and_the_queue_hears_stall_detection_is_off(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(run_for="8s", progressDeadlineSeconds=5))
    create(custom, namespace, "videojobs", make_job("clip"))

    done = wait_job(custom, namespace, "clip", "Complete")
    # The KWOK worker runs 8s and never sends a heartbeat: with detection on it would stall.
    assert [a["reason"] for a in done["status"]["attempts"]] == ["Completed"]
    pod = core.read_namespaced_pod(done["status"]["attempts"][0]["pod"], namespace)
    names = {e.name for e in pod.spec.containers[0].env}
    assert "VIDEOQUEUE_REDIS_URL" not in names
    assert "VIDEOQUEUE_JOB" in names

    def warning() -> Any:
        events = core.list_namespaced_event(
            namespace, field_selector="involvedObject.kind=VideoQueue,reason=StallDetectionOff"
        ).items
        return events[0] if events else None

    event = poll(warning, timeout=30, what="a StallDetectionOff Event on the queue")
    assert event.type == "Warning"
    assert "--redis-url" in event.message
