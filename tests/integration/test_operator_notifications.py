"""At-least-once, signed completion notifications against the real control plane, with a
real HTTP receiver on loopback and operator processes of this module's own (SIGKILLed and
restarted), so the module has a control plane of its own (see `own_cluster`).

- The receiver is down while jobs finish; the operator is SIGKILLed and restarted; the
  receiver comes up: every notification arrives, validly signed, and each job ends Delivered
  (an operator that kept them only in memory would have lost them with the kill).
- A receiver that always fails: the notification ends GaveUp, with the job's condition and
  a Warning Event, and the job's TTL waits until then.
- A missing Secret: nothing is sent (never unsigned), the job says which Secret and key are
  missing; creating the Secret makes the notification go out.
- Two replicas: the one that takes over after a SIGKILL sends what the other left owed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from videoqueue.envtest import LocalCluster, poll
from videoqueue.envtest.operator_process import OperatorProcess, free_port

from .objects import GROUP, VERSION, condition, create, make_job, make_queue, wait_job

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRET = b"receiver-shared-key"
STARTED = "videoqueue controller started"


@pytest.fixture(scope="module")
def cluster(own_cluster: LocalCluster) -> LocalCluster:
    """This module's own control plane: its operators must not meet the session's."""
    return own_cluster


@pytest.fixture
def operator(cluster: LocalCluster, tmp_path: Path) -> Iterator[OperatorProcess]:
    with OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", ["--standalone"]) as op:
        op.wait_for_log(STARTED, timeout=60)
        yield op


class Receiver:
    """A webhook endpoint on loopback at `port` that answers every POST with `status` and
    keeps each request's headers and raw body."""

    def __init__(self, port: int, status: int = 204) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.requests]


def verify(headers: dict[str, str], body: bytes) -> None:
    """What a receiver does (docs/notifications.md): the signature over the timestamp and
    the raw body, the timestamp recent, the key in header and body the same."""
    timestamp = headers["X-VideoQueue-Timestamp"]
    expected = hmac.new(SECRET, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-VideoQueue-Signature"], f"sha256={expected}")
    assert abs(time.time() - int(timestamp)) < 300
    assert headers["X-VideoQueue-Delivery"] == json.loads(body)["idempotencyKey"]


def create_secret(core: Any, namespace: str, name: str = "hook-key") -> None:
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            data={"token": base64.b64encode(SECRET).decode()},
        ),
    )


def jobs(custom: Any, namespace: str) -> dict[str, dict[str, Any]]:
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "videojobs")
    return {j["metadata"]["name"]: j for j in listed["items"]}


def notification(job: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = job.get("status", {}).get("notification") or {}
    return found


def wait_notifications(
    custom: Any, namespace: str, names: list[str], state: str, timeout: float = 90
) -> dict[str, dict[str, Any]]:
    def all_in_state() -> dict[str, dict[str, Any]] | None:
        found = jobs(custom, namespace)
        states = [notification(found.get(name, {})).get("state") for name in names]
        return found if all(s == state for s in states) else None

    found: dict[str, dict[str, Any]] = poll(
        all_in_state, timeout=timeout, what=f"notifications of {names} {state}"
    )
    return found


def job_events(core: Any, namespace: str, name: str) -> list[Any]:
    return [
        e
        for e in core.list_namespaced_event(namespace).items
        if e.involved_object.kind == "VideoJob" and e.involved_object.name == name
    ]


def test_owed_notifications_survive_a_sigkill_and_arrive_signed_once_the_receiver_is_up(
    operator: OperatorProcess, custom: Any, core: Any, namespace: str
) -> None:
    port = free_port()  # nobody listens here yet: every try is refused
    url = f"http://127.0.0.1:{port}/hook"
    create_secret(core, namespace)
    settings = {"url": url, "maxAttempts": 20, "secretRef": {"name": "hook-key", "key": "token"}}
    create(custom, namespace, "videoqueues", make_queue(concurrency=4, notifications=settings))
    names = [f"clip-{n}" for n in range(4)]
    for name in names:
        create(custom, namespace, "videojobs", make_job(name))
    for name in names:
        wait_job(custom, namespace, name, "Complete")

    # Recorded with the outcome, before any delivery could succeed.
    owed = wait_notifications(custom, namespace, names, "Owed", timeout=10)
    keys = {}
    for name in names:
        job = owed[name]
        uid, attempt = job["metadata"]["uid"], job["status"]["attempt"]
        keys[name] = f"{uid}/{attempt}/Succeeded"
        assert notification(job)["key"] == keys[name]

    operator.kill()
    operator.start()
    operator.wait_for_log(STARTED, timeout=60)
    with Receiver(port) as receiver:
        done = wait_notifications(custom, namespace, names, "Delivered", timeout=120)
        requests = list(receiver.requests)

    assert {json.loads(body)["idempotencyKey"] for _, body in requests} == set(keys.values())
    for headers, body in requests:
        verify(headers, body)
    for name in names:
        delivered = notification(done[name])
        assert delivered["key"] == keys[name]
        assert delivered["deliveredTime"]
        assert delivered["tries"] >= 1
        by_key = [json.loads(b) for _, b in requests if json.loads(b)["job"] == name]
        assert by_key[0]["outcome"] == "Succeeded"
        assert by_key[0]["uid"] == done[name]["metadata"]["uid"]


def test_a_receiver_that_always_fails_ends_given_up_and_holds_the_ttl_until_then(
    operator: OperatorProcess, custom: Any, core: Any, namespace: str
) -> None:
    port = free_port()
    with Receiver(port, status=503) as receiver:
        settings = {"url": f"http://127.0.0.1:{port}/hook", "maxAttempts": 3}
        queue = make_queue(notifications=settings, ttlSecondsAfterFinished={"succeeded": 0})
        create(custom, namespace, "videoqueues", queue)
        create(custom, namespace, "videojobs", make_job("doomed"))
        # TTL 0, yet the finished job is still there while its notification is owed.
        first_try = poll(lambda: receiver.requests or None, timeout=90, what="a first try")
        assert first_try
        held = jobs(custom, namespace)["doomed"]
        assert held["status"]["phase"] == "Succeeded"
        assert notification(held)["state"] == "Owed"

        # Given up after 3 tries, recorded on the job (read from a watch, since the TTL then
        # deletes it).
        given_up = wait_given_up(custom, namespace, "doomed")
        assert len(receiver.requests) == 3
    recorded = notification(given_up)
    assert recorded["tries"] == 3
    assert "HTTP 503" in recorded["message"]
    failed = condition(given_up, "NotificationFailed")
    assert failed is not None
    assert (failed["status"], failed["reason"]) == ("True", "GaveUp")
    poll(
        lambda: (
            any(e.reason == "NotificationFailed" for e in job_events(core, namespace, "doomed"))
            or None
        ),
        timeout=30,
        what="a NotificationFailed Event on the job",
    )
    assert any("HTTP 503" in e.message for e in job_events(core, namespace, "doomed"))
    # Once given up, the TTL runs: the job is deleted.
    poll(lambda: "doomed" not in jobs(custom, namespace) or None, timeout=30, what="TTL deletion")


def wait_given_up(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    """The job's status as it was when it said GaveUp, from a watch (it may be deleted by
    its TTL right after)."""
    stream = watch.Watch()
    deadline = time.monotonic() + 90
    try:
        for event in stream.stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "videojobs",
            field_selector=f"metadata.name={name}",
            timeout_seconds=90,
        ):
            obj: dict[str, Any] = event["object"]
            if notification(obj).get("state") == "GaveUp":
                return obj
            if time.monotonic() > deadline:
                break
    finally:
        stream.stop()
    raise AssertionError(f"the notification of {name} was not given up")


def test_a_missing_secret_is_shown_on_the_job_and_creating_it_sends_the_notification(
    operator: OperatorProcess, custom: Any, core: Any, namespace: str
) -> None:
    port = free_port()
    with Receiver(port) as receiver:
        settings = {
            "url": f"http://127.0.0.1:{port}/hook",
            "secretRef": {"name": "hook-key", "key": "token"},
        }
        create(custom, namespace, "videoqueues", make_queue(notifications=settings))
        create(custom, namespace, "videojobs", make_job("signed"))
        wait_job(custom, namespace, "signed", "Complete")

        def blocked() -> dict[str, Any] | None:
            job = jobs(custom, namespace)["signed"]
            found = condition(job, "NotificationFailed")
            return job if found and found["reason"] == "NotificationSecretMissing" else None

        job = poll(blocked, timeout=60, what="the missing Secret shown on the job")
        failed = condition(job, "NotificationFailed")
        assert failed is not None
        assert failed["status"] == "True"
        assert f"{namespace}/hook-key" in failed["message"]
        assert "'token'" in failed["message"]
        assert notification(job)["state"] == "Owed"
        assert "does not exist" in notification(job)["message"]
        assert any(
            e.reason == "NotificationSecretMissing" and "hook-key" in e.message
            for e in job_events(core, namespace, "signed")
        )
        assert receiver.requests == []  # never unsigned

        create_secret(core, namespace)
        done = wait_notifications(custom, namespace, ["signed"], "Delivered", timeout=120)
        assert len(receiver.requests) == 1
        verify(*receiver.requests[0])
    cleared = condition(done["signed"], "NotificationFailed")
    assert cleared is not None
    assert (cleared["status"], cleared["reason"]) == ("False", "Delivered")


PEERING_LIFETIME = 10
ACTING = "acting: this replica now schedules"


def test_the_replica_that_takes_over_sends_what_is_owed(
    cluster: LocalCluster, custom: Any, core: Any, namespace: str, tmp_path: Path
) -> None:
    """Two replicas (kopf peering): jobs finish under A while the receiver is down, A is
    SIGKILLed, B takes over and, once the receiver is up, delivers every owed notification."""
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "peering"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev"
    )
    args = ["--peering-lifetime", str(PEERING_LIFETIME)]
    a = OperatorProcess(cluster.kubeconfig, tmp_path / "a.log", args, name="replica-a")
    b = OperatorProcess(cluster.kubeconfig, tmp_path / "b.log", args, name="replica-b")
    port = free_port()
    create_secret(core, namespace)
    settings = {"url": f"http://127.0.0.1:{port}/hook", "maxAttempts": 20}
    settings["secretRef"] = {"name": "hook-key", "key": "token"}
    names = [f"ha-{n}" for n in range(4)]
    with contextlib.ExitStack() as stack:
        stack.enter_context(a)
        a.wait_for_log(ACTING, timeout=120)
        stack.enter_context(b)  # after A acts: started together, each defers to the other
        b.wait_for_log(r"peering in ClusterKopfPeering videoqueue-operator", timeout=60)
        create(custom, namespace, "videoqueues", make_queue(concurrency=4, notifications=settings))
        for name in names:
            create(custom, namespace, "videojobs", make_job(name))
        wait_notifications(custom, namespace, names, "Owed", timeout=90)
        assert not b.log_lines(ACTING)

        a.kill()
        b.wait_for_log(ACTING, timeout=PEERING_LIFETIME * 3)
        with Receiver(port) as receiver:
            done = wait_notifications(custom, namespace, names, "Delivered", timeout=120)
            requests = list(receiver.requests)
    assert {json.loads(body)["job"] for _, body in requests} == set(names)
    for headers, body in requests:
        verify(headers, body)
    for name in names:
        assert (
            notification(done[name])["key"]
            == json.loads(next(b for _, b in requests if json.loads(b)["job"] == name))[
                "idempotencyKey"
            ]
        )
