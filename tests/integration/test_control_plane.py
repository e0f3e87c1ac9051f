"""The local control plane is a real Kubernetes: scheduling, GC, CRDs, CEL, kubectl, KWOK pods."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from videoqueue.envtest import ClusterBase, NodeSpec, pod_script, wait_for_object

pytestmark = pytest.mark.integration


def make_pod(
    name: str,
    *,
    memory: str = "64Mi",
    annotations: dict[str, str] | None = None,
    node_selector: dict[str, str] | None = None,
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "annotations": annotations or {}}
    if owner:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": node_selector or {},
            "containers": [
                {
                    "name": "worker",
                    "image": "videoqueue/worker:test",
                    "resources": {
                        "requests": {"memory": memory, "cpu": "100m"},
                        "limits": {"memory": memory},
                    },
                }
            ],
        },
    }


def wait_pod(
    core: Any, namespace: str, name: str, predicate: Any, what: str, timeout: float = 60
) -> Any:
    return wait_for_object(
        core.list_namespaced_pod,
        namespace,
        name=name,
        predicate=predicate,
        timeout=timeout,
        what=what,
    )


def terminated(pod: Any) -> Any:
    statuses = pod.status.container_statuses or []
    return statuses[0].state.terminated if statuses else None


def test_server_reports_the_pinned_kubernetes_version(cluster: ClusterBase) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.34.12"
    assert version["clientVersion"]["gitVersion"] == "v1.34.12"


def test_rbac_denies_an_unprivileged_service_account(cluster: ClusterBase, namespace: str) -> None:
    allowed = cluster.kubectl(
        "auth",
        "can-i",
        "list",
        "pods",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:default",
        check=False,
    )
    assert allowed.stdout.strip() == "no"
    assert cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace).stdout.strip() == "yes"


class TestScheduling:
    @pytest.fixture
    def two_nodes(self, cluster: ClusterBase) -> Any:
        """A small and a big node that only pods selecting this pool can land on."""
        pool = f"pool-{uuid.uuid4().hex[:6]}"
        small = NodeSpec(f"{pool}-small", memory="2Gi", labels={"pool": pool})
        big = NodeSpec(f"{pool}-big", memory="8Gi", labels={"pool": pool})
        cluster.create_nodes([small, big])
        yield pool, small, big
        cluster.delete_nodes([small.name, big.name])

    def test_pod_is_bound_to_the_only_node_its_memory_fits(
        self, core: Any, namespace: str, two_nodes: Any
    ) -> None:
        pool, _, big = two_nodes
        core.create_namespaced_pod(
            namespace, make_pod("fits-big", memory="4Gi", node_selector={"pool": pool})
        )

        pod = wait_pod(
            core, namespace, "fits-big", lambda p: p.status.phase == "Running", "pod running"
        )

        assert pod.spec.node_name == big.name

    def test_pod_that_fits_no_node_stays_pending_unschedulable(
        self, core: Any, namespace: str, two_nodes: Any
    ) -> None:
        pool, _, _ = two_nodes
        core.create_namespaced_pod(
            namespace, make_pod("too-big", memory="16Gi", node_selector={"pool": pool})
        )

        def unschedulable(p: Any) -> bool:
            return any(
                c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                for c in (p.status.conditions or [])
            )

        pod = wait_pod(
            core, namespace, "too-big", unschedulable, "PodScheduled=False/Unschedulable"
        )

        assert pod.status.phase == "Pending"
        assert pod.spec.node_name is None
        message = next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
        assert "Insufficient memory" in message


class TestKwokPodLifecycle:
    def test_pod_without_script_keeps_running(self, core: Any, namespace: str) -> None:
        core.create_namespaced_pod(namespace, make_pod("server"))

        pod = wait_pod(
            core, namespace, "server", lambda p: p.status.phase == "Running", "pod running"
        )

        assert pod.status.pod_ip
        assert pod.status.container_statuses[0].state.running.started_at is not None

    def test_scripted_pod_succeeds_with_its_termination_message(
        self, core: Any, namespace: str
    ) -> None:
        result = json.dumps({"output": "file:///out/a.mp4", "size": 1234})
        core.create_namespaced_pod(
            namespace, make_pod("worker", annotations=pod_script("1s", message=result))
        )

        pod = wait_pod(
            core, namespace, "worker", lambda p: p.status.phase == "Succeeded", "pod succeeded"
        )

        state = terminated(pod)
        assert (state.exit_code, state.reason) == (0, "Completed")
        assert json.loads(state.message) == {"output": "file:///out/a.mp4", "size": 1234}
        assert state.finished_at >= state.started_at

    def test_pod_annotated_oom_killed_fails_with_oomkilled(self, core: Any, namespace: str) -> None:
        core.create_namespaced_pod(
            namespace, make_pod("oom", annotations=pod_script("500ms", reason="OOMKilled"))
        )

        pod = wait_pod(core, namespace, "oom", lambda p: p.status.phase == "Failed", "pod failed")

        state = terminated(pod)
        assert (state.exit_code, state.reason) == (137, "OOMKilled")

    def test_pod_with_exit_code_fails_with_error(self, core: Any, namespace: str) -> None:
        core.create_namespaced_pod(
            namespace, make_pod("crash", annotations=pod_script("0s", exit_code=3))
        )

        pod = wait_pod(core, namespace, "crash", lambda p: p.status.phase == "Failed", "pod failed")

        assert (terminated(pod).exit_code, terminated(pod).reason) == (3, "Error")


def test_garbage_collector_deletes_pods_of_a_deleted_owner(core: Any, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    for i in range(2):
        core.create_namespaced_pod(namespace, make_pod(f"owned-{i}", owner=ref))
    wait_pod(core, namespace, "owned-1", lambda p: p.status.phase == "Running", "owned pod running")

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def gone() -> bool:
        return not core.list_namespaced_pod(namespace).items

    from videoqueue.envtest import poll

    poll(gone, timeout=60, what="the garbage collector to delete the owned pods")


WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.envtest.videoqueue.dev"},
    "spec": {
        "group": "envtest.videoqueue.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "min": {"type": "integer"},
                                    "max": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.min <= self.max",
                                        "message": "spec.min must not exceed spec.max",
                                    }
                                ],
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def widgets(cluster: ClusterBase) -> Any:
    with cluster.api_client() as api:
        ext = client.ApiextensionsV1Api(api)
        try:
            ext.create_custom_resource_definition(WIDGET_CRD)
        except ApiException as e:
            if e.status != 409:
                raise
        wait_for_object(
            ext.list_custom_resource_definition,
            name=WIDGET_CRD["metadata"]["name"],
            predicate=lambda crd: any(
                c.type == "Established" and c.status == "True"
                for c in (crd.status.conditions or [])
            ),
            timeout=30,
            what="the Widget CRD to be established",
        )
        yield
        ext.delete_custom_resource_definition(WIDGET_CRD["metadata"]["name"])


class TestCustomResources:
    def custom(self, api: Any) -> Any:
        return client.CustomObjectsApi(api)

    def test_cel_rule_rejects_an_invalid_object_with_its_message(
        self, api: Any, namespace: str, widgets: None
    ) -> None:
        body = {
            "apiVersion": "envtest.videoqueue.dev/v1",
            "kind": "Widget",
            "metadata": {"name": "bad"},
            "spec": {"min": 5, "max": 1},
        }

        with pytest.raises(ApiException) as raised:
            self.custom(api).create_namespaced_custom_object(
                "envtest.videoqueue.dev", "v1", namespace, "widgets", body
            )

        assert raised.value.status == 422
        assert "spec.min must not exceed spec.max" in raised.value.body

    def test_status_changes_only_through_the_status_subresource(
        self, api: Any, namespace: str, widgets: None
    ) -> None:
        group = ("envtest.videoqueue.dev", "v1", namespace, "widgets")
        custom = self.custom(api)
        body = {
            "apiVersion": "envtest.videoqueue.dev/v1",
            "kind": "Widget",
            "metadata": {"name": "ok"},
            "spec": {"min": 1, "max": 5},
            "status": {"phase": "Ignored"},
        }
        custom.create_namespaced_custom_object(*group, body)

        custom.patch_namespaced_custom_object(
            *group, "ok", {"status": {"phase": "ViaMainResource"}}
        )
        assert "status" not in custom.get_namespaced_custom_object(*group, "ok")

        custom.patch_namespaced_custom_object_status(*group, "ok", {"status": {"phase": "Done"}})
        assert custom.get_namespaced_custom_object(*group, "ok")["status"] == {"phase": "Done"}


def test_kubectl_get_apply_and_wait(cluster: ClusterBase, namespace: str) -> None:
    manifest = json.dumps(make_pod("applied", annotations=pod_script("1s")))

    applied = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    assert "pod/applied created" in applied.stdout

    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/applied",
        "--timeout=60s",
    )
    listed = cluster.kubectl(
        "get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}"
    )
    assert listed.stdout == "applied"
    relabelled = json.loads(manifest)
    relabelled["metadata"]["labels"] = {"stage": "done"}
    configured = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(relabelled))
    assert "pod/applied configured" in configured.stdout
    label = cluster.kubectl(
        "get", "pod/applied", "-n", namespace, "-o", "jsonpath={.metadata.labels.stage}"
    )
    assert label.stdout == "done"
