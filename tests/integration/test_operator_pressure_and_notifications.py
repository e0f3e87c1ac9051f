"""Memory pressure (OOM kills, node MemoryPressure) and webhook notifications against the
real control plane; the webhook receiver is a local HTTP server on loopback."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.objects import (
    condition,
    create,
    get_job,
    long_job,
    make_job,
    make_queue,
    wait_admitted_reason,
    wait_job,
    wait_queue,
)
from videoqueue.envtest import poll
from videoqueue.envtest.kwok import EXIT_CODE, REASON, RUN_DURATION

pytestmark = pytest.mark.integration


def effective(queue: dict[str, Any]) -> int | None:
    value: int | None = queue.get("status", {}).get("effectiveConcurrency")
    return value


def test_repeated_oom_kills_lower_the_effective_concurrency_then_it_recovers(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    pressure = {"oomKills": 2, "windowSeconds": 120, "recoverySeconds": 10}
    create(
        custom,
        namespace,
        "videoqueues",
        make_queue(concurrency=4, budget="16Gi", memoryPressure=pressure),
    )
    oom = {REASON: "OOMKilled", EXIT_CODE: "137", RUN_DURATION: "1s"}
    for n in range(2):
        job = make_job(f"oom-{n}", annotations=oom)
        job["spec"]["maxAttempts"] = 1
        create(custom, namespace, "videojobs", job)

    lowered = wait_queue(custom, namespace, lambda q: effective(q) == 2, "concurrency lowered to 2")
    found = condition(lowered, "MemoryPressure")
    assert found is not None
    assert (found["status"], found["reason"]) == ("True", "OOMKills")
    assert lowered["status"]["health"] == "Warning"
    events = [
        e
        for e in core.list_namespaced_event(namespace).items
        if e.involved_object.kind == "VideoQueue"
    ]
    assert any(e.reason == "MemoryPressure" for e in events)

    # While lowered, the queue admits only 2 at once.
    for n in range(3):
        create(custom, namespace, "videojobs", long_job(f"long-{n}"))
    third = wait_admitted_reason(custom, namespace, "long-2", "WaitingForSlot", timeout=30)
    assert "2 of 2" in third["status"]["message"]

    # Calm: back up one step per recoverySeconds, to the spec's 4.
    recovered = wait_queue(custom, namespace, lambda q: effective(q) == 4, "concurrency back at 4")
    assert condition(recovered, "MemoryPressure")["status"] == "False"  # type: ignore[index]
    for n in range(3):
        wait_job(custom, namespace, f"long-{n}", "Running")


def test_node_memory_pressure_lowers_the_concurrency_of_queues_running_there(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(
        custom,
        namespace,
        "videoqueues",
        make_queue(concurrency=4, budget="16Gi", memoryPressure={"recoverySeconds": 3}),
    )
    create(custom, namespace, "videojobs", long_job("resident"))
    wait_job(custom, namespace, "resident", "Running")
    node = core.read_namespaced_pod("resident-a1", namespace).spec.node_name

    def set_pressure(value: str) -> None:
        # What a kubelet reports; KWOK's heartbeat rewrites it (False) a minute or two later.
        current = core.read_node_status(node)
        conditions = [
            {
                "type": c.type,
                "status": value if c.type == "MemoryPressure" else c.status,
                "reason": "KubeletHasInsufficientMemory"
                if c.type == "MemoryPressure" and value == "True"
                else c.reason,
                "message": c.message,
                "lastHeartbeatTime": c.last_heartbeat_time,
                "lastTransitionTime": c.last_transition_time,
            }
            for c in current.status.conditions
        ]
        core.patch_node_status(node, {"status": {"conditions": conditions}})

    set_pressure("True")
    try:
        lowered = wait_queue(custom, namespace, lambda q: effective(q) == 2, "concurrency halved")
        found = condition(lowered, "MemoryPressure")
        assert found is not None
        assert found["reason"] == "NodeMemoryPressure"
        assert node in found["message"]
    finally:
        set_pressure("False")
    wait_queue(custom, namespace, lambda q: effective(q) == 4, "concurrency back at 4")


class Receiver:
    """A webhook endpoint on loopback that fails the first `fail_first` requests with 500."""

    def __init__(self, fail_first: int) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self.fail_first = fail_first
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.refused < receiver.fail_first:
                    receiver.refused += 1
                    self.send_response(500)
                else:
                    receiver.received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=1) as r:
        yield r


def test_webhook_is_sent_on_success_and_failure_and_retried(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, receiver: Receiver
) -> None:
    create(
        custom,
        namespace,
        "videoqueues",
        make_queue(notifications={"url": receiver.url, "on": ["Succeeded", "Failed"]}),
    )
    create(custom, namespace, "videojobs", make_job("good"))
    bad = make_job("bad", annotations={EXIT_CODE: "3", RUN_DURATION: "1s"})
    bad["spec"]["maxAttempts"] = 1
    create(custom, namespace, "videojobs", bad)
    wait_job(custom, namespace, "good", "Complete")
    wait_job(custom, namespace, "bad", "Failed")

    poll(lambda: len(receiver.received) == 2 or None, timeout=30, what="two notifications")

    assert receiver.refused == 1  # the first try failed and was retried
    by_job = {n["job"]: n for n in receiver.received}
    good = by_job["good"]
    assert (good["queue"], good["namespace"], good["type"], good["outcome"]) == (
        "work",
        namespace,
        "transcode",
        "Succeeded",
    )
    assert good["result"]["output"] == "file:///media/out.mp4"
    stored = get_job(custom, namespace, "good")["status"]
    assert good["runSeconds"] == stored["runSeconds"]
    assert good["waitSeconds"] == stored["waitSeconds"]
    assert by_job["bad"]["outcome"] == "Failed"
    assert by_job["bad"]["reason"] == "Error"
    assert by_job["bad"]["attempts"] == 1


def test_unreachable_webhook_never_holds_up_admission(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    create(
        custom,
        namespace,
        "videoqueues",
        make_queue(
            concurrency=1, notifications={"url": dead, "maxAttempts": 2, "timeoutSeconds": 1}
        ),
    )
    for n in range(3):
        create(custom, namespace, "videojobs", make_job(f"j{n}"))

    for n in range(3):
        wait_job(custom, namespace, f"j{n}", "Complete")
    poll(
        lambda: (
            any(
                e.reason == "NotificationFailed"
                for e in core.list_namespaced_event(namespace).items
            )
            or None
        ),
        timeout=30,
        what="a NotificationFailed Event on the queue",
    )
