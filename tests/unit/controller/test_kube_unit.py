"""The pure parts of videoqueue.controller.kube (kube_helpers), and its retry policy.

The retry tests talk to a tiny loopback HTTP server that answers with scripted statuses:
the real API server cannot be made to answer 429 or 503 on demand, and what is checked is
only this client's reaction to them (the integration tests cover the real API).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
import yaml
from aiohttp import web

from videoqueue.controller.kube import (
    TLS_READ_BUFFER_BYTES,
    FencedError,
    KubeApiError,
    KubeClient,
    KubeConfigError,
    KubeConnectionError,
)
from videoqueue.controller.kube_helpers import (
    EVENT_MESSAGE_LIMIT,
    LEASES,
    PODS,
    VIDEOJOBS,
    VIDEOQUEUES,
    ClientSettings,
    Resource,
    backoff_delay,
    build_event,
    retry_after_seconds,
    status_class,
    truncate_utf8,
)
from videoqueue.controller.kubeconfig import (
    connection_info_from_kubeconfig,
    in_cluster_connection_info,
    kubeconfig_paths,
    load_kubeconfig,
)
from videoqueue.controller.kubeconfig import pem as pem_text

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)


# -- Resource -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "args", "expected"),
    [
        pytest.param(PODS, ("ns",), "/api/v1/namespaces/ns/pods", id="core-collection"),
        pytest.param(PODS, (None,), "/api/v1/pods", id="core-all-namespaces"),
        pytest.param(PODS, ("ns", "p"), "/api/v1/namespaces/ns/pods/p", id="core-object"),
        pytest.param(
            VIDEOJOBS,
            ("ns", "j", "status"),
            "/apis/videoqueue.dev/v1alpha1/namespaces/ns/videojobs/j/status",
            id="custom-status",
        ),
        pytest.param(
            VIDEOQUEUES,
            ("ns", "q"),
            "/apis/videoqueue.dev/v1alpha1/namespaces/ns/videoqueues/q",
            id="custom-object",
        ),
        pytest.param(
            LEASES,
            ("kube-system", "videoqueue"),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/videoqueue",
            id="grouped-builtin",
        ),
        pytest.param(NAMESPACES, (None, "default"), "/api/v1/namespaces/default", id="cluster"),
    ],
)
def test_resource_paths(resource: Resource, args: tuple[Any, ...], expected: str) -> None:
    assert resource.path(*args) == expected


@pytest.mark.parametrize(
    ("resource", "args"),
    [
        pytest.param(NAMESPACES, ("ns", "x"), id="namespace-for-cluster-scoped"),
        pytest.param(PODS, (None, "p"), id="name-without-namespace"),
        pytest.param(PODS, ("ns", None, "status"), id="subresource-without-name"),
    ],
)
def test_resource_paths_refuse_nonsense(resource: Resource, args: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        resource.path(*args)


def test_api_versions() -> None:
    assert PODS.api_version == "v1"
    assert VIDEOJOBS.api_version == "videoqueue.dev/v1alpha1"


# -- small helpers --------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(10))
def test_backoff_is_capped_and_never_zero(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(5.0, 0.2 * 2**attempt)
    delays = [backoff_delay(attempt, base=0.2, cap=5.0, rng=rng) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_backoff_is_jittered() -> None:
    rng = random.Random(1)
    assert len({backoff_delay(3, base=0.2, cap=5.0, rng=rng) for _ in range(20)}) > 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("3", 3.0, id="seconds"),
        pytest.param(" 1.5 ", 1.5, id="fraction"),
        pytest.param("-2", 0.0, id="negative"),
        pytest.param("Sat, 01 Mar 2025 12:00:10 GMT", 10.0, id="http-date"),
        pytest.param("Sat, 01 Mar 2025 11:00:00 GMT", 0.0, id="http-date-past"),
        pytest.param("soon", None, id="garbage"),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, now=NOW) == expected


@pytest.mark.parametrize(
    ("status", "label"), [(200, "2xx"), (201, "2xx"), (404, "4xx"), (503, "5xx"), (None, "error")]
)
def test_status_class(status: int | None, label: str) -> None:
    assert status_class(status) == label


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("short", 10, "short", id="fits"),
        pytest.param("x" * 10, 10, "x" * 10, id="exactly"),
        pytest.param("x" * 11, 10, "xxxxxxx...", id="ascii"),
        pytest.param("é" * 6, 10, "ééé...", id="no-split-char"),
    ],
)
def test_truncate_utf8(text: str, limit: int, expected: str) -> None:
    result = truncate_utf8(text, limit)
    assert result == expected
    assert len(result.encode()) <= limit


def test_api_error_from_a_status_object() -> None:
    status = {
        "kind": "Status",
        "status": "Failure",
        "reason": "Invalid",
        "message": 'VideoJob "x" is invalid: spec.priority: must be <= 10',
        "code": 422,
    }
    error = KubeApiError.from_response(422, json.dumps(status).encode())
    assert (error.status, error.reason) == (422, "Invalid")
    assert error.message == status["message"]
    assert error.body == status
    assert str(error) == f"422 Invalid: {status['message']}"


def test_api_error_from_plain_text() -> None:
    error = KubeApiError.from_response(502, b"Bad Gateway\n")
    assert (error.status, error.reason, error.message, error.body) == (
        502,
        "BadGateway",
        "Bad Gateway",
        "Bad Gateway\n",
    )


# -- events ---------------------------------------------------------------------------------


JOB = {
    "apiVersion": "videoqueue.dev/v1alpha1",
    "kind": "VideoJob",
    "metadata": {"name": "encode", "namespace": "media", "uid": "u-1", "resourceVersion": "7"},
}


def test_event_refers_to_its_object() -> None:
    event = build_event(
        JOB,
        type_="Warning",
        reason="OOMKilled",
        message="attempt 1 ran out of memory",
        component="videoqueue-operator",
        instance="pod-a",
        now=NOW,
        suffix="abc",
    )
    assert event["metadata"] == {"name": "encode.abc", "namespace": "media"}
    assert event["involvedObject"] == {
        "apiVersion": "videoqueue.dev/v1alpha1",
        "kind": "VideoJob",
        "name": "encode",
        "namespace": "media",
        "uid": "u-1",
        "resourceVersion": "7",
    }
    assert (event["type"], event["reason"]) == ("Warning", "OOMKilled")
    assert event["source"] == {"component": "videoqueue-operator"}
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2025-03-01T12:00:00Z"


def test_event_message_and_name_are_bounded() -> None:
    long_name = {**JOB, "metadata": {**JOB["metadata"], "name": "n" * 253}}  # type: ignore[dict-item]
    event = build_event(
        long_name,
        type_="Normal",
        reason="Admitted",
        message="m" * 5000,
        component="c",
        instance="i",
        now=NOW,
        suffix="1234",
    )
    assert len(event["metadata"]["name"]) == 253
    assert event["metadata"]["name"].endswith(".1234")
    assert len(event["message"]) == EVENT_MESSAGE_LIMIT


def test_event_about_a_cluster_object_goes_to_default() -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "u"}}
    event = build_event(
        node,
        type_="Normal",
        reason="R",
        message="m",
        component="c",
        instance="i",
        now=NOW,
        suffix="1",
    )
    assert event["metadata"]["namespace"] == "default"
    assert "namespace" not in event["involvedObject"]


# -- credentials ----------------------------------------------------------------------------


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


def kubeconfig(cluster: dict[str, Any], user: dict[str, Any], **context: Any) -> dict[str, Any]:
    return {
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", **context}}],
        "current-context": "ctx",
    }


def test_kubeconfig_paths_are_relative_to_their_file(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "conf" / "config",
        kubeconfig(
            {"server": "https://k:6443", "certificate-authority": "pki/ca.crt"},
            {"client-certificate": "pki/me.crt", "client-key": "/abs/me.key"},
            namespace="media",
        ),
    )
    info, token_file = connection_info_from_kubeconfig(load_kubeconfig([path]))
    assert info.server == "https://k:6443"
    assert info.ca_path == str(tmp_path / "conf" / "pki" / "ca.crt")
    assert info.certificate_path == str(tmp_path / "conf" / "pki" / "me.crt")
    assert info.private_key_path == "/abs/me.key"
    assert info.default_namespace == "media"
    assert token_file is None


def test_kubeconfig_merge_first_definition_wins(tmp_path: Path) -> None:
    first = write_yaml(
        tmp_path / "a", kubeconfig({"server": "https://first"}, {"token": "t1"}) | {"users": []}
    )
    second = write_yaml(
        tmp_path / "b",
        kubeconfig({"server": "https://second"}, {"token": "t2"}) | {"current-context": "other"},
    )
    info, _ = connection_info_from_kubeconfig(load_kubeconfig([first, second]))
    assert (info.server, info.token) == ("https://first", "t2")


def test_kubeconfig_token_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret\n")
    path = write_yaml(
        tmp_path / "config",
        kubeconfig(
            {"server": "https://k", "insecure-skip-tls-verify": True}, {"tokenFile": "token"}
        ),
    )
    info, token_file = connection_info_from_kubeconfig(load_kubeconfig([path]))
    assert info.token == "secret"
    assert info.insecure is True
    assert token_file == tmp_path / "token"


def test_kubeconfig_other_context(tmp_path: Path) -> None:
    document = kubeconfig({"server": "https://k"}, {"token": "t"})
    document["contexts"].append(
        {"name": "prod", "context": {"cluster": "c", "user": "u", "namespace": "p"}}
    )
    info, _ = connection_info_from_kubeconfig(document, context="prod")
    assert info.default_namespace == "p"


@pytest.mark.parametrize(
    ("document", "match"),
    [
        pytest.param(
            kubeconfig({"server": "https://k"}, {"exec": {"command": "aws"}}),
            "exec credential plugin",
            id="exec",
        ),
        pytest.param(
            kubeconfig({"server": "https://k"}, {}) | {"current-context": None},
            "no current-context",
            id="no-context",
        ),
        pytest.param(
            kubeconfig({"server": "https://k"}, {}) | {"clusters": []},
            "no cluster named 'c'",
            id="dangling-cluster",
        ),
    ],
)
def test_kubeconfig_errors(document: dict[str, Any], match: str) -> None:
    with pytest.raises(KubeConfigError, match=match):
        connection_info_from_kubeconfig(document)


def test_kubeconfig_discovery(tmp_path: Path) -> None:
    present = write_yaml(tmp_path / "present", {})
    listed = f"{present}:{tmp_path / 'absent'}"
    assert kubeconfig_paths(None, {"KUBECONFIG": listed}) == [present]
    assert kubeconfig_paths(present) == [present]
    with pytest.raises(KubeConfigError, match="does not exist"):
        kubeconfig_paths(tmp_path / "absent")


def test_in_cluster_service_account(tmp_path: Path) -> None:
    assert in_cluster_connection_info(tmp_path, {}) is None
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "namespace").write_text("videoqueue-system")
    (tmp_path / "ca.crt").write_text("ca")
    found = in_cluster_connection_info(
        tmp_path, {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    )
    assert found is not None
    info, token_file = found
    assert info.server == "https://[fd00::1]:443"
    assert info.token == "sa-token"
    assert info.default_namespace == "videoqueue-system"
    assert info.ca_path == str(tmp_path / "ca.crt")
    assert token_file == tmp_path / "token"


# -- retries, against a scripted loopback server -------------------------------------------


@dataclass
class Script:
    """Answers to hand out in order (status, headers, body); the last one repeats."""

    answers: Sequence[tuple[int, dict[str, str], dict[str, Any]]]
    seen: list[web.Request] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request)
        raw = await request.read()
        self.bodies.append(json.loads(raw) if raw else None)
        self.authorizations.append(request.headers.get("Authorization"))
        status, headers, body = self.answers[min(len(self.seen), len(self.answers)) - 1]
        return web.json_response(body, status=status, headers=headers)


FAST = ClientSettings(max_attempts=4, backoff_base=0.001, backoff_cap=0.005)
OBJ = {"kind": "Pod", "metadata": {"name": "p"}}


def status_body(code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {"kind": "Status", "code": code, "reason": reason, "message": message or reason}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []
    clients: list[KubeClient] = []

    async def start(script: Script, **kwargs: Any) -> KubeClient:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", script.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        kube = KubeClient(
            f"http://127.0.0.1:{port}", aiohttp.ClientSession(), settings=FAST, **kwargs
        )
        clients.append(kube)
        return kube

    yield start
    for kube in clients:
        await kube.close()
    for runner in runners:
        await runner.cleanup()


async def test_server_errors_are_retried_on_reads(serve: Callable[..., Any]) -> None:
    script = Script([(503, {}, status_body(503, "ServiceUnavailable"))] * 2 + [(200, {}, OBJ)])
    kube = await serve(script)

    assert await kube.get(PODS, "ns", "p") == OBJ
    assert len(script.seen) == 3
    assert kube.request_counts == {("get", "pods", "5xx"): 2, ("get", "pods", "2xx"): 1}


async def test_retries_give_up_with_the_servers_error(serve: Callable[..., Any]) -> None:
    kube = await serve(Script([(500, {}, status_body(500, "InternalError", "etcd is sad"))]))

    with pytest.raises(KubeApiError, match="etcd is sad") as caught:
        await kube.patch(VIDEOJOBS, "ns", "j", {"status": {}}, subresource="status")

    assert caught.value.status == 500
    assert kube.request_counts == {("patch", "videojobs/status", "5xx"): FAST.max_attempts}


async def test_too_many_requests_honours_retry_after(serve: Callable[..., Any]) -> None:
    script = Script(
        [(429, {"Retry-After": "0.2"}, status_body(429, "TooManyRequests")), (201, {}, OBJ)]
    )
    kube = await serve(script)
    loop = asyncio.get_running_loop()

    started = loop.time()
    obj, created = await kube.create(PODS, "ns", {"metadata": {"generateName": "p-"}})

    assert loop.time() - started >= 0.2
    assert (obj, created) == (OBJ, True)


async def test_unnamed_creates_are_not_repeated_on_server_errors(serve: Callable[..., Any]) -> None:
    """A POST with generateName that failed with 5xx may have landed; repeating it could
    create a second object."""
    script = Script([(503, {}, status_body(503, "ServiceUnavailable")), (201, {}, OBJ)])
    kube = await serve(script)

    with pytest.raises(KubeApiError):
        await kube.create(PODS, "ns", {"metadata": {"generateName": "p-"}})
    assert len(script.seen) == 1


async def test_named_creates_are_repeated_and_find_their_object(
    serve: Callable[..., Any],
) -> None:
    """The first POST landed but its answer was lost: the retry's 409 reads it back."""
    script = Script(
        [
            (504, {}, status_body(504, "Timeout")),
            (409, {}, status_body(409, "AlreadyExists")),
            (200, {}, OBJ),
        ]
    )
    kube = await serve(script)

    assert await kube.create(PODS, "ns", {"metadata": {"name": "p"}}) == (OBJ, False)
    assert [r.method for r in script.seen] == ["POST", "POST", "GET"]


async def test_other_conflicts_are_errors(serve: Callable[..., Any]) -> None:
    kube = await serve(
        Script([(409, {}, status_body(409, "Conflict", "namespace is terminating"))])
    )

    with pytest.raises(KubeApiError, match="terminating"):
        await kube.create(PODS, "ns", {"metadata": {"name": "p"}})


async def test_unreachable_server_raises_after_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the client connects
    async with KubeClient(
        f"http://127.0.0.1:{port}", aiohttp.ClientSession(), settings=FAST
    ) as kube:
        with pytest.raises(KubeConnectionError):
            await kube.get(PODS, "ns", "p")
        assert kube.request_counts == {("get", "pods", "error"): FAST.max_attempts}


async def test_a_rotated_token_is_reloaded_on_401(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("new")
    script = Script([(401, {}, status_body(401, "Unauthorized")), (200, {}, OBJ)])
    kube = await serve(script, authorization="Bearer old", token_file=token)

    assert await kube.get(PODS, "ns", "p") == OBJ
    assert script.authorizations == ["Bearer old", "Bearer new"]


async def test_delete_sends_options_and_reads_outcomes(serve: Callable[..., Any]) -> None:
    script = Script(
        [
            (409, {}, status_body(409, "Conflict", "Precondition failed: UID")),
            (404, {}, status_body(404, "NotFound")),
            (200, {}, status_body(200, "")),
        ]
    )
    kube = await serve(script)

    assert await kube.delete(PODS, "ns", "p", uid="u", grace_period_seconds=0) is False
    assert await kube.delete(PODS, "ns", "p") is False
    assert await kube.delete(PODS, "ns", "p", propagation_policy="Foreground") is True
    first, _, third = script.bodies
    assert first == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Background",
        "preconditions": {"uid": "u"},
        "gracePeriodSeconds": 0,
    }
    assert third["propagationPolicy"] == "Foreground"
    assert [r.method for r in script.seen] == ["DELETE"] * 3


def test_pem_data_may_be_base64_or_pem() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert pem_text(pem) == pem
    assert pem_text(base64.b64encode(pem.encode())) == pem


def test_retry_after_http_date_is_relative_to_now() -> None:
    later = NOW + timedelta(seconds=30)
    header = later.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after_seconds(header, now=NOW) == 30.0


async def test_the_write_guard_refuses_writes_before_they_are_sent(
    serve: Callable[..., Any],
) -> None:
    script = Script([(200, {}, OBJ)])
    kube = await serve(script)
    allowed = [True]

    def guard() -> None:
        if not allowed[0]:
            raise FencedError("fenced")

    kube.write_guard = guard
    await kube.patch(PODS, "ns", "p", {"metadata": {"labels": {"a": "b"}}}, patch_type="strategic")
    assert len(script.seen) == 1  # the guard lets a fresh claim write
    allowed[0] = False
    with pytest.raises(FencedError):
        await kube.create(PODS, "ns", OBJ)
    with pytest.raises(FencedError):
        await kube.delete(PODS, "ns", "p")
    assert await kube.get(PODS, "ns", "p") == OBJ  # reads are not guarded
    assert [r.method for r in script.seen] == ["PATCH", "GET"]


async def test_tls_connections_read_into_a_bounded_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    protocol = asyncio.sslproto.SSLProtocol
    monkeypatch.setattr(protocol, "max_size", 256 * 1024)  # asyncio's own size
    kube = await KubeClient.from_kopf(kopf.ConnectionInfo(server="https://127.0.0.1:1"))
    try:
        # Each TLS connection allocates (and zero-fills) its read buffer when it is made.
        loop = asyncio.get_running_loop()
        made = protocol(
            loop, asyncio.Protocol(), ssl.create_default_context(), loop.create_future()
        )
        buffer: bytearray = made._ssl_buffer  # type: ignore[attr-defined]
        assert len(buffer) == TLS_READ_BUFFER_BYTES == 64 * 1024
    finally:
        await kube.close()
