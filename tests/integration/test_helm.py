"""The Helm chart against the real control plane: lint, render with realistic values and
apply with a server-side dry run, restricted Pod Security for every pod it makes, values
the schema refuses, and a real install, `helm test` and uninstall (pods run on KWOK)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from videoqueue.envtest import ClusterBase, pod_script, poll
from videoqueue.envtest.operator_process import free_port

from .helm_chart import (
    CHART,
    VALUE_SETS,
    dumps,
    find,
    helm,
    pod_specs,
    render,
    values_file,
)

pytestmark = pytest.mark.integration

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}

# The Prometheus Operator's kinds, so that the API server knows them. The real CRDs cannot be
# fetched here (no internet); these accept any spec, so the dry run checks that the objects
# are well-formed for their group, version and kind, not the Prometheus Operator's schema.
MONITORING_KINDS = (("ServiceMonitor", "servicemonitors"), ("PrometheusRule", "prometheusrules"))


def _monitoring_crd(kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def monitoring_crds(cluster: ClusterBase) -> Iterator[None]:
    created = []
    for kind, plural in MONITORING_KINDS:
        name = f"{plural}.monitoring.coreos.com"
        if cluster.kubectl("get", "crd", name, check=False).returncode != 0:
            cluster.kubectl("create", "-f", "-", input=json.dumps(_monitoring_crd(kind, plural)))
            created.append(name)
    if created:
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(f"crd/{name}" for name in created),
        )
    yield
    for name in created:
        cluster.kubectl("delete", "crd", name, "--wait=false", check=False)


@pytest.fixture
def restricted_namespace(cluster: ClusterBase) -> Iterator[str]:
    """A namespace that enforces (and warns about) the restricted Pod Security Standard."""
    name = f"pss-restricted-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name, labels=RESTRICTED)
    yield name
    cluster.delete_namespace(name)


def release_name() -> str:
    return f"vq{uuid.uuid4().hex[:6]}"


def secrets_for(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The Secrets a value set expects the platform team to have created."""
    names = {
        ("redis", "external"): ("existingSecret", "passwordKey"),
        ("redis", "bundled", "auth"): ("existingSecret", "passwordKey"),
    }
    secrets = []
    for path, (name_key, key_key) in names.items():
        node: Any = values
        for part in path:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if node.get(name_key):
            secrets.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": node[name_key]},
                    "stringData": {node[key_key]: "s3cret"},
                }
            )
    return secrets


# -- lint and schema ------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_helm_lint_passes_strict(value_set: str, tmp_path: Path) -> None:
    result = helm(
        "lint",
        "--strict",
        str(CHART),
        "--values",
        str(values_file(tmp_path, VALUE_SETS[value_set])),
    )
    assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("values", "says"),
    [
        pytest.param({"replicass": 2}, "additional properties 'replicass'", id="misspelt-key"),
        pytest.param({"replicas": 0}, "/replicas", id="no-replicas"),
        pytest.param(
            {"redis": {"mode": "external"}}, "/redis/external/url", id="external-redis-no-url"
        ),
        pytest.param({"redis": {"mode": "sentinel"}}, "/redis/mode", id="unknown-redis-mode"),
        pytest.param(
            {"replicas": 2, "peering": {"enabled": False}},
            "more than one replica needs peering.enabled",
            id="replicas-without-peering",
        ),
        pytest.param(
            {"fencing": {"enabled": False}},
            "replicas that peer must be fenced",
            id="peering-without-fencing",
        ),
        pytest.param(
            {"image": {"repository": "videoqueue/operator", "digest": "latest"}},
            "/image/digest",
            id="bad-digest",
        ),
        pytest.param(
            {"serviceAccount": {"create": False}}, "serviceAccount.name", id="no-service-account"
        ),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    values: dict[str, Any], says: str, tmp_path: Path
) -> None:
    result = helm(
        "template", "r", str(CHART), "--values", str(values_file(tmp_path, values)), check=False
    )
    assert result.returncode != 0, f"helm template accepted {values}"
    assert says in result.stderr, result.stderr


def test_defaults_are_least_privilege_and_restricted(tmp_path: Path) -> None:
    objects = render(tmp_path, {}, release="r", namespace="videoqueue-system")
    role = find(objects, "ClusterRole", "r-videoqueue-operator")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # Nothing that lists or watches secrets (it gets the ones queues name for signing
    # notifications), reads configmaps, writes jobs' specs, or grants wildcards.
    assert not any("*" in item for item in granted)
    assert {verb for _, resource, verb in granted if resource == "secrets"} == {"get"}
    assert not any(resource == "configmaps" for _, resource, _ in granted)
    assert ("videoqueue.dev", "videojobs", "update") not in granted
    assert ("videoqueue.dev", "videojobs", "patch") not in granted
    assert ("", "pods", "update") not in granted

    worker = find(objects, "ServiceAccount", "videoqueue-worker")
    assert worker["automountServiceAccountToken"] is False
    assert not [
        b for b in objects if "Binding" in b["kind"] and "videoqueue-worker" in json.dumps(b)
    ]
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    assert {c["metadata"]["name"] for c in crds} == {
        "videoqueues.videoqueue.dev",
        "videojobs.videoqueue.dev",
        "clusterkopfpeerings.kopf.dev",
    }
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The chart's CRDs are the repository's generated ones, not a copy that can drift.
    generated = yaml.safe_load(
        (CHART.parents[1] / "crds/videoqueue.dev_videojobs.yaml").read_text()
    )
    assert (
        find(crds, "CustomResourceDefinition", "videojobs.videoqueue.dev")["spec"]
        == generated["spec"]
    )
    deployment = find(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["replicas"] >= 2
    assert "--peering=videoqueue-operator" in container["args"]
    # Fenced, with the Lease in the release namespace, and leave to touch that Lease only.
    assert "--lease-namespace=videoqueue-system" in container["args"]
    fencing = find(objects, "Role", "r-videoqueue-operator-fencing")
    assert fencing["metadata"]["namespace"] == "videoqueue-system"
    assert fencing["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["videoqueue-operator"],
            "verbs": ["get", "patch"],
        },
    ]
    binding = find(objects, "RoleBinding", "r-videoqueue-operator-fencing")
    assert (
        binding["subjects"][0]["name"]
        == deployment["spec"]["template"]["spec"]["serviceAccountName"]
    )
    # No registry host: the first path component of the image is not a host name.
    first = container["image"].split("/")[0]
    assert not {".", ":"} & set(first), container["image"]


def test_packaged_chart_carries_the_crds(tmp_path: Path) -> None:
    """files/crds is a link to the repository's crds/; `helm package` must store the files."""
    helm("package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("videoqueue-operator-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    for crd in (
        "videoqueue.dev_videoqueues.yaml",
        "videoqueue.dev_videojobs.yaml",
        "peering/clusterkopfpeerings.kopf.dev.yaml",
    ):
        assert f"videoqueue-operator/files/crds/{crd}" in names
    out = helm("template", "r", str(archive)).stdout
    crds = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 3


@pytest.mark.parametrize(
    ("release", "values", "variable"),
    [
        ("media", {}, "MEDIA_VIDEOQUEUE_OPERATOR_METRICS_SERVICE"),
        ("my-videoqueue-operator", {}, "MY_VIDEOQUEUE_OPERATOR_METRICS_SERVICE"),
        ("r", {"fullnameOverride": "vq-prod"}, "VQ_PROD_METRICS_SERVICE"),
    ],
    ids=["release-and-chart", "release-holds-chart-name", "fullname-override"],
)
def test_helm_test_pod_needs_no_cluster_dns(
    release: str, values: dict[str, Any], variable: str, tmp_path: Path
) -> None:
    """The test pod finds the metrics Service by the variables the kubelet sets for each
    Service (upper-cased name, '-' as '_'), and runs where the operator runs."""
    placement = {
        "nodeSelector": {"videoqueue.dev/node": "real"},
        "tolerations": [{"key": "dedicated", "value": "media", "effect": "NoSchedule"}],
    }
    objects = render(tmp_path, {**values, **placement}, release=release, namespace="ns")
    (pod,) = [o for o in objects if o["kind"] == "Pod"]
    (service,) = [
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics")
    ]
    assert service["metadata"]["name"].upper().replace("-", "_") + "_SERVICE" == variable
    spec = pod["spec"]
    assert spec["enableServiceLinks"] is True
    script = spec["containers"][0]["args"][0]
    assert f'os.environ["{variable}_HOST"]' in script
    assert f'os.environ["{variable}_PORT"]' in script
    assert ".svc" not in script
    assert spec["containers"][0]["command"][0] == "python3"  # the image has no `python`
    assert (spec["nodeSelector"], spec["tolerations"]) == (
        placement["nodeSelector"],
        placement["tolerations"],
    )


@pytest.mark.parametrize("password", ["s3cret-Pass", None], ids=["auth", "no-auth"])
def test_bundled_redis_command_runs_a_real_redis(password: str | None, tmp_path: Path) -> None:
    """The StatefulSet's shell command, run against the Debian redis-server: it starts with
    the chart's configuration, requires the password, and keeps it out of the process list."""
    values = {"redis": {"bundled": {"auth": {"enabled": password is not None}}}}
    objects = render(tmp_path, values, release="r", namespace="ns")
    container = find(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    port = free_port()
    # Only where it listens and writes differs from the pod: a free port on loopback, a
    # temporary directory for /data.
    script = container["args"][0].replace("port 6379", f"port {port}\nbind 127.0.0.1")
    script = script.replace("dir /data", f"dir {tmp_path}")
    env = {"PATH": os.environ["PATH"], **({"REDIS_PASSWORD": password} if password else {})}
    process = subprocess.Popen(["/bin/sh", "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        client = redis.Redis(port=port, password=password, socket_timeout=2)
        poll(lambda: _pings(client), timeout=20, what="the bundled Redis command to serve")
        assert client.config_get("maxmemory") == {"maxmemory": str(200 * 2**20)}
        assert client.config_get("save") == {"save": ""}
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert b"redis-server" in cmdline  # exec'd: the shell is gone, Redis gets signals
        if password:
            assert password.encode() not in cmdline
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=port, socket_timeout=2).ping()
    finally:
        process.terminate()
        process.wait(timeout=20)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


# -- server-side dry runs -------------------------------------------------------------------


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_rendered_chart_applies_with_server_dry_run(
    value_set: str,
    cluster: ClusterBase,
    crds: None,
    monitoring_crds: None,
    namespace: str,
    tmp_path: Path,
) -> None:
    values = VALUE_SETS[value_set]
    objects = render(tmp_path, values, release=release_name(), namespace=namespace)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "Service"} <= kinds
    result = cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=helm-test",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=dumps(objects),
    )
    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(objects), result.stdout


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_pod_meets_restricted_pod_security(
    value_set: str, cluster: ClusterBase, restricted_namespace: str, tmp_path: Path
) -> None:
    values = VALUE_SETS[value_set]
    objects = render(tmp_path, values, release=release_name(), namespace=restricted_namespace)
    pods = list(pod_specs(objects))
    bundled = values.get("redis", {}).get("mode", "bundled") == "bundled"
    expected = {"Deployment", "Pod"} | ({"StatefulSet"} if bundled else set())
    assert expected <= {where.split("/")[0] for where, _ in pods}
    # The pods' ServiceAccounts must exist for pods to be admitted at all.
    accounts = [o for o in objects if o["kind"] == "ServiceAccount"]
    cluster.kubectl("apply", "-n", restricted_namespace, "-f", "-", input=dumps(accounts))
    # PodSecurity admission rejects violating Pods; for workloads it only warns.
    for where, pod in pods:
        pod["metadata"]["namespace"] = restricted_namespace
        result = cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
        )
        assert result.returncode == 0, f"{where} violates restricted: {result.stderr}"
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "Pod")]
    result = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-n",
        restricted_namespace,
        "-f",
        "-",
        input=dumps(secrets_for(values) + workloads),
    )
    assert "PodSecurity" not in result.stderr, result.stderr


def test_restricted_namespace_rejects_a_privileged_pod(
    cluster: ClusterBase, restricted_namespace: str
) -> None:
    """The control for the test above: the namespace does enforce the standard."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root", "namespace": restricted_namespace},
        "spec": {"containers": [{"name": "c", "image": "videoqueue/operator:0.1.0"}]},
    }
    result = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr, result.stderr


# -- install, test, uninstall ---------------------------------------------------------------


def test_install_helm_test_and_uninstall(
    cluster: ClusterBase, crds: None, namespace: str, tmp_path: Path
) -> None:
    release = release_name()
    values = values_file(
        tmp_path,
        {
            # The session's CRDs belong to no release; this one leaves them alone.
            "crds": {"enabled": False},
            "jobNamespaces": [namespace],
            # KWOK runs the test pod for a second and ends it with exit code 0.
            "tests": {"annotations": pod_script("1s")},
        },
    )
    kubeconfig = cluster.kubeconfig
    installed = helm(
        "install", release, str(CHART), "-n", namespace, "--values", str(values),
        "--wait", "--timeout", "120s", kubeconfig=kubeconfig,
    )  # fmt: skip
    try:
        notes = installed.stdout[installed.stdout.index("NOTES:") :]
        assert "<no value>" not in notes, notes
        assert f"helm test {release} -n {namespace}" in notes, notes
        assert f"redis://{release}-videoqueue-operator-redis.{namespace}.svc:6379/0" in notes
        status = json.loads(
            helm("status", release, "-n", namespace, "-o", "json", kubeconfig=kubeconfig).stdout
        )
        assert status["info"]["status"] == "deployed"
        fullname = f"{release}-videoqueue-operator"
        deployment = json.loads(
            cluster.kubectl("get", "deployment", fullname, "-n", namespace, "-o", "json").stdout
        )
        assert deployment["status"]["readyReplicas"] == 2
        statefulset = json.loads(
            cluster.kubectl(
                "get", "statefulset", f"{fullname}-redis", "-n", namespace, "-o", "json"
            ).stdout
        )
        assert statefulset["status"]["readyReplicas"] == 1
        result = helm("test", release, "-n", namespace, "--timeout", "60s", kubeconfig=kubeconfig)
        assert "Phase:          Succeeded" in result.stdout, result.stdout

        # An upgrade keeps the generated Redis password (workers and Redis share it).
        def password() -> str:
            return cluster.kubectl(
                "get", "secret", f"{fullname}-redis", "-n", namespace,
                "-o", "jsonpath={.data.password}",
            ).stdout  # fmt: skip

        before = password()
        helm(
            "upgrade", release, str(CHART), "-n", namespace, "--values", str(values),
            "--set", "logLevel=debug", "--wait", "--timeout", "120s", kubeconfig=kubeconfig,
        )  # fmt: skip
        assert password() == before
    finally:
        helm("uninstall", release, "-n", namespace, "--wait", kubeconfig=kubeconfig, check=False)

    def gone() -> bool:
        return all(
            cluster.kubectl("get", kind, name, *scope, check=False).returncode != 0
            for kind, name, scope in (
                ("deployment", fullname, ("-n", namespace)),
                ("statefulset", f"{fullname}-redis", ("-n", namespace)),
                ("clusterrole", fullname, ()),
                ("clusterrole", f"{fullname}-view", ()),
                ("clusterrolebinding", fullname, ()),
            )
        )

    poll(gone, timeout=60, what=f"release {release}'s objects to be deleted")


def test_monitoring_objects_carry_the_shipped_rules_and_dashboard(tmp_path: Path) -> None:
    objects = render(tmp_path, VALUE_SETS["monitoring"], release="r", namespace="monitoring")
    shipped = yaml.safe_load((CHART / "files/prometheus-rules.yaml").read_text())
    rule = find(objects, "PrometheusRule")
    assert rule["spec"]["groups"] == shipped["groups"]
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    dashboard = find(objects, "ConfigMap", "r-videoqueue-operator-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["videoqueue.json"]) == json.loads(
        (CHART / "files/grafana-dashboard.json").read_text()
    )
    monitor = find(objects, "ServiceMonitor")
    service = find(objects, "Service", "r-videoqueue-operator-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
