"""KubeClient against the real local API server: every call and every return convention."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from videoqueue.controller.kube import KubeApiError, KubeClient
from videoqueue.controller.kube_helpers import (
    EVENT_MESSAGE_LIMIT,
    PODS,
    VIDEOJOBS,
    CreateResult,
    Resource,
)
from videoqueue.envtest import ClusterBase
from videoqueue.envtest.builders import MakeJob

pytestmark = pytest.mark.integration

CONFIGMAPS = Resource("", "v1", "configmaps")
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)


@pytest.fixture
async def kube(cluster: ClusterBase) -> AsyncIterator[KubeClient]:
    async with await KubeClient.from_kubeconfig(cluster.kubeconfig) as client:
        yield client


def make_pod(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "worker", "image": "videoqueue/worker:test"}],
        },
    }


def make_configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data}


def kubectl_json(cluster: ClusterBase, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


async def test_create_twice_returns_the_existing_object(kube: KubeClient, namespace: str) -> None:
    first = await kube.create(PODS, namespace, make_pod("worker-1"))
    second = await kube.create(PODS, namespace, make_pod("worker-1"))

    assert isinstance(first, CreateResult)
    assert first.created
    assert not second.created
    assert second.obj["metadata"]["uid"] == first.obj["metadata"]["uid"]
    obj, created = second  # unpacks like a tuple
    assert obj["kind"] == "Pod"
    assert not created


async def test_missing_objects_read_and_patch_as_none(kube: KubeClient, namespace: str) -> None:
    assert await kube.get(PODS, namespace, "absent") is None
    assert await kube.patch(PODS, namespace, "absent", {"metadata": {"labels": {"a": "b"}}}) is None


async def test_get_reads_namespaced_and_cluster_scoped_objects(
    kube: KubeClient, namespace: str
) -> None:
    await kube.create(CONFIGMAPS, namespace, make_configmap("settings", mode="fast"))

    configmap = await kube.get(CONFIGMAPS, namespace, "settings")
    ns = await kube.get(NAMESPACES, None, namespace)

    assert configmap is not None
    assert configmap["data"] == {"mode": "fast"}
    assert ns is not None
    assert ns["metadata"]["name"] == namespace


async def test_list_pages_through_label_selected_objects(kube: KubeClient, namespace: str) -> None:
    selected = {"app": "lister", "run": namespace}
    for i in range(5):
        await kube.create(CONFIGMAPS, namespace, make_configmap(f"selected-{i}", selected))
    for i in range(2):
        await kube.create(CONFIGMAPS, namespace, make_configmap(f"other-{i}", {"app": "other"}))
    pages_before = kube.request_counts["list", "configmaps", "2xx"]

    items, resource_version = await kube.list(
        CONFIGMAPS, namespace, label_selector=f"app=lister,run={namespace}", limit=2
    )

    assert sorted(i["metadata"]["name"] for i in items) == [f"selected-{i}" for i in range(5)]
    assert kube.request_counts["list", "configmaps", "2xx"] - pages_before == 3  # 2 + 2 + 1
    assert int(resource_version) > 0
    assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in items)


async def test_list_across_all_namespaces(kube: KubeClient, namespace: str) -> None:
    await kube.create(CONFIGMAPS, namespace, make_configmap("everywhere", {"run": namespace}))

    items, _ = await kube.list(CONFIGMAPS, label_selector=f"run={namespace}")

    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items] == [
        (namespace, "everywhere")
    ]


async def test_merge_and_json_patches(
    kube: KubeClient, cluster: ClusterBase, namespace: str
) -> None:
    await kube.create(CONFIGMAPS, namespace, make_configmap("patched", keep="1", drop="2"))

    merged = await kube.patch(
        CONFIGMAPS, namespace, "patched", {"data": {"drop": None, "added": "3"}}
    )
    jsoned = await kube.patch(
        CONFIGMAPS,
        namespace,
        "patched",
        [
            {"op": "test", "path": "/data/keep", "value": "1"},
            {"op": "replace", "path": "/data/keep", "value": "one"},
        ],
        patch_type="json",
    )

    assert merged is not None
    assert merged["data"] == {"keep": "1", "added": "3"}
    assert jsoned is not None
    assert jsoned["data"] == {"keep": "one", "added": "3"}
    seen = kubectl_json(cluster, "get", "-n", namespace, "configmap/patched")
    assert seen["data"] == {"keep": "one", "added": "3"}


async def test_failed_json_patch_test_op_is_an_api_error(kube: KubeClient, namespace: str) -> None:
    await kube.create(CONFIGMAPS, namespace, make_configmap("guarded", value="a"))

    with pytest.raises(KubeApiError) as caught:
        await kube.patch(
            CONFIGMAPS,
            namespace,
            "guarded",
            [{"op": "test", "path": "/data/value", "value": "b"}],
            patch_type="json",
        )

    assert caught.value.status == 422
    # The API server says no more than this about a failed `test` operation.
    assert caught.value.reason == "Invalid"


async def test_strategic_merge_patch_on_a_pod(kube: KubeClient, namespace: str) -> None:
    await kube.create(PODS, namespace, make_pod("labelled", role="worker"))

    patched = await kube.patch(
        PODS,
        namespace,
        "labelled",
        {"metadata": {"labels": {"attempt": "2"}}},
        patch_type="strategic",
    )

    assert patched is not None
    assert patched["metadata"]["labels"] == {"role": "worker", "attempt": "2"}


@pytest.mark.usefixtures("crds")
async def test_status_is_written_through_the_status_subresource(
    kube: KubeClient, cluster: ClusterBase, namespace: str
) -> None:
    await kube.create(VIDEOJOBS, namespace, MakeJob("encode").obj())
    status = {"status": {"phase": "Pending", "message": "waiting for the queue"}}

    through_main = await kube.patch(VIDEOJOBS, namespace, "encode", status)
    through_status = await kube.patch(VIDEOJOBS, namespace, "encode", status, subresource="status")

    # With a status subresource the main endpoint ignores status, and vice versa for spec.
    assert through_main is not None
    # (The operator of the session may have written a status of its own meanwhile, but
    # never this message.)
    assert through_main.get("status", {}).get("message") != "waiting for the queue"
    assert through_status is not None
    assert through_status["status"]["phase"] == "Pending"
    # Read back from the write's own response: the operator under test in the same session
    # may already have rewritten this job's status since.
    assert through_status["status"]["message"] == "waiting for the queue"
    assert kube.request_counts["patch", "videojobs/status", "2xx"] == 1


async def test_delete_honours_the_uid_precondition(
    kube: KubeClient, cluster: ClusterBase, namespace: str
) -> None:
    pod, _ = await kube.create(PODS, namespace, make_pod("doomed"))
    uid = pod["metadata"]["uid"]

    assert await kube.delete(PODS, namespace, "doomed", uid="not-" + uid) is False
    assert await kube.get(PODS, namespace, "doomed") is not None

    assert await kube.delete(PODS, namespace, "doomed", uid=uid, grace_period_seconds=0) is True
    for _ in range(100):
        if await kube.get(PODS, namespace, "doomed") is None:
            break
        await asyncio.sleep(0.1)
    assert await kube.get(PODS, namespace, "doomed") is None
    assert await kube.delete(PODS, namespace, "doomed") is False
    pods = kubectl_json(cluster, "get", "pods", "-n", namespace)
    assert pods["items"] == []


async def test_delete_of_a_missing_object_is_false(kube: KubeClient, namespace: str) -> None:
    assert await kube.delete(CONFIGMAPS, namespace, "never-was") is False


async def test_delete_spares_a_recreated_object(kube: KubeClient, namespace: str) -> None:
    old, _ = await kube.create(CONFIGMAPS, namespace, make_configmap("reborn", v="1"))
    assert await kube.delete(CONFIGMAPS, namespace, "reborn", uid=old["metadata"]["uid"])
    new, created = await kube.create(CONFIGMAPS, namespace, make_configmap("reborn", v="2"))
    assert created

    assert await kube.delete(CONFIGMAPS, namespace, "reborn", uid=old["metadata"]["uid"]) is False
    survivor = await kube.get(CONFIGMAPS, namespace, "reborn")
    assert survivor is not None
    assert survivor["metadata"]["uid"] == new["metadata"]["uid"]


async def test_post_event_is_visible_to_kubectl(
    kube: KubeClient, cluster: ClusterBase, namespace: str
) -> None:
    pod, _ = await kube.create(PODS, namespace, make_pod("watched"))

    await kube.post_event(pod, type_="Warning", reason="OOMKilled", message="é" * 2000)

    events = kubectl_json(
        cluster,
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=watched,reason=OOMKilled",
    )["items"]
    assert len(events) == 1
    event = events[0]
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "Pod"
    assert event["involvedObject"]["uid"] == pod["metadata"]["uid"]
    assert event["source"]["component"] == "videoqueue-operator"
    assert len(event["message"].encode()) <= EVENT_MESSAGE_LIMIT
    assert event["message"].endswith("...")


async def test_post_event_for_a_listed_object(kube: KubeClient, namespace: str) -> None:
    await kube.create(CONFIGMAPS, namespace, make_configmap("listed", {"run": namespace}))
    [item], _ = await kube.list(CONFIGMAPS, namespace, label_selector=f"run={namespace}")

    await kube.post_event(item, type_="Normal", reason="Seen", message="found by a list")

    events, _ = await kube.list(
        Resource("", "v1", "events"), namespace, label_selector=None, limit=10
    )
    assert [(e["involvedObject"]["kind"], e["reason"]) for e in events] == [("ConfigMap", "Seen")]


async def test_post_event_never_raises(kube: KubeClient, caplog: pytest.LogCaptureFixture) -> None:
    ghost = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ghost", "namespace": "no-such-namespace", "uid": "1"},
    }

    with caplog.at_level(logging.WARNING, logger="videoqueue.controller.kube"):
        await kube.post_event(ghost, type_="Normal", reason="Nothing", message="dropped")

    assert "dropped Normal event Nothing for Pod no-such-namespace/ghost" in caplog.text


@pytest.mark.usefixtures("crds")
async def test_api_error_carries_the_servers_message(kube: KubeClient, namespace: str) -> None:
    with pytest.raises(KubeApiError) as caught:
        await kube.create(VIDEOJOBS, namespace, MakeJob("too-eager").priority(11).obj())

    error = caught.value
    assert error.status == 422
    assert error.reason == "Invalid"
    assert "spec.priority" in error.message
    assert isinstance(error.body, dict)
    assert error.body["kind"] == "Status"
    assert "spec.priority" in str(error)


async def test_parallel_creates_share_one_pool(kube: KubeClient, namespace: str) -> None:
    results = await asyncio.gather(
        *(kube.create(CONFIGMAPS, namespace, make_configmap(f"burst-{i}")) for i in range(120))
    )

    assert all(created for _, created in results)
    items, _ = await kube.list(CONFIGMAPS, namespace, limit=50)
    assert len([i for i in items if i["metadata"]["name"].startswith("burst-")]) == 120
    assert kube.request_counts["create", "configmaps", "2xx"] == 120
    assert kube.request_counts["create", "configmaps", "5xx"] == 0


async def test_from_kopf_uses_kopfs_kubeconfig_login(
    cluster: ClusterBase, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None

    async with await KubeClient.from_kopf(info) as kube:
        assert await kube.get(NAMESPACES, None, namespace) is not None


async def test_from_kubeconfig_with_embedded_credentials(
    cluster: ClusterBase, namespace: str, tmp_path: Path
) -> None:
    """The `*-data` form of a kubeconfig (what cloud CLIs write): CA, cert and key inline."""
    original = yaml.safe_load(cluster.kubeconfig.read_text())

    def inline(entry: dict[str, Any], field: str) -> None:
        entry[f"{field}-data"] = base64.b64encode(Path(entry.pop(field)).read_bytes()).decode()

    for entry in original["clusters"]:
        inline(entry["cluster"], "certificate-authority")
    for entry in original["users"]:
        inline(entry["user"], "client-certificate")
        inline(entry["user"], "client-key")
    path = tmp_path / "inline.kubeconfig"
    path.write_text(yaml.safe_dump(original))

    async with await KubeClient.from_kubeconfig(path) as kube:
        assert await kube.get(NAMESPACES, None, namespace) is not None
