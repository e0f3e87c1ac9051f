"""RBAC of the Helm chart, proven on a real API server rather than read off the YAML.

- The operator runs with a token of the chart's ServiceAccount (and the chart's arguments),
  and jobs are admitted and succeed: its ClusterRole grants enough.
- The worker ServiceAccount is refused every read.
- The built-in roles cover the custom kinds: `view` reads jobs but cannot create them,
  `edit` creates jobs but cannot change queues, `admin` pauses a queue.
- `helm uninstall` keeps the CRDs and so every queue and job.

The chart installs the CRDs itself here, and an operator of its own acts cluster-wide, so
the module runs on a control plane of its own (its `cluster` fixture shadows the session's).
The tests share one release and run in file order; the uninstall test comes last.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from videoqueue.envtest import LocalCluster, poll
from videoqueue.envtest.operator_process import OperatorProcess, free_port

from .helm_chart import (
    CHART,
    REPO,
    DockerEngine,
    find,
    helm,
    service_account_token,
    token_kubeconfig,
    values_file,
)
from .objects import GROUP, VERSION, create, long_job, make_job, make_queue, wait_job

pytestmark = pytest.mark.integration

RELEASE = "vq"
RELEASE_NAMESPACE = "videoqueue-system"
JOB_NAMESPACE = "media"
FULLNAME = f"{RELEASE}-videoqueue-operator"
WORKER_ACCOUNT = "videoqueue-worker"


@dataclass(frozen=True)
class Release:
    manifest: list[dict[str, Any]]

    @property
    def operator_args(self) -> list[str]:
        deployment = find(self.manifest, "Deployment", FULLNAME)
        args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return args


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A control plane for this module alone, without CRDs: the chart brings them."""
    with LocalCluster() as local:
        yield local


@pytest.fixture(scope="module")
def release(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Release:
    for name in (RELEASE_NAMESPACE, JOB_NAMESPACE):
        cluster.create_namespace(name)
    values = {
        "jobNamespaces": [JOB_NAMESPACE],
        # No Redis in this test: progress is not what RBAC is about.
        "redis": {"mode": "disabled"},
    }
    path = values_file(tmp_path_factory.mktemp("rbac"), values)
    helm(
        "install", RELEASE, str(CHART), "-n", RELEASE_NAMESPACE, "--values", str(path),
        kubeconfig=cluster.kubeconfig,
    )  # fmt: skip
    manifest = helm(
        "get", "manifest", RELEASE, "-n", RELEASE_NAMESPACE, kubeconfig=cluster.kubeconfig
    ).stdout
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/videoqueues.videoqueue.dev", "crd/videojobs.videoqueue.dev",
        "crd/clusterkopfpeerings.kopf.dev",
    )  # fmt: skip
    return Release([doc for doc in yaml.safe_load_all(manifest) if doc])


def as_token(cluster: LocalCluster, token: str, path: Path) -> Any:
    """kubectl with only this token's rights."""
    kubeconfig = token_kubeconfig(cluster, token, path)
    kubectl = str(cluster.binaries["kubectl"])

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl, "--kubeconfig", str(kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


# -- the operator's own account -------------------------------------------------------------


def test_operator_runs_jobs_with_the_charts_service_account(
    cluster: LocalCluster, release: Release, tmp_path: Path, api: Any
) -> None:
    token = service_account_token(cluster, RELEASE_NAMESPACE, FULLNAME)
    kubeconfig = token_kubeconfig(cluster, token, tmp_path / "operator.kubeconfig")
    custom = client.CustomObjectsApi(api)
    with OperatorProcess(kubeconfig, tmp_path / "operator.log", release.operator_args) as op:
        op.wait_for_log(r"acting: this replica now schedules", timeout=60)
        create(custom, JOB_NAMESPACE, "videoqueues", make_queue(concurrency=2))
        # Cancelling a running job deletes its worker pod (pods: delete).
        create(custom, JOB_NAMESPACE, "videojobs", long_job("rbac-cancel"))
        running = wait_job(custom, JOB_NAMESPACE, "rbac-cancel", "Running", timeout=60)
        pod = running["status"]["attempts"][0]["pod"]
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, JOB_NAMESPACE, "videojobs", "rbac-cancel", {"spec": {"cancel": True}}
        )
        wait_job(custom, JOB_NAMESPACE, "rbac-cancel", "Cancelled", timeout=60)
        core = client.CoreV1Api(api)
        poll(
            lambda: (
                pod not in {p.metadata.name for p in core.list_namespaced_pod(JOB_NAMESPACE).items}
            ),
            timeout=30,
            what=f"worker pod {pod} to be deleted",
        )
        names = [f"rbac-{i}" for i in range(4)]
        for i, name in enumerate(names):
            create(custom, JOB_NAMESPACE, "videojobs", make_job(name, priority=i))
        for name in names:
            job = wait_job(custom, JOB_NAMESPACE, name, "Complete", timeout=90)
            assert job["status"]["phase"] == "Succeeded"
            assert job["status"]["result"]["duration"] == 12.5
        log = op.current_log()
    # The operator had what it needed everywhere, kopf included: no request was refused.
    refusals = [
        line
        for line in log.splitlines()
        if "Forbidden" in line or " 403" in line or "Not enough permissions" in line
    ]
    assert not refusals, "\n".join(refusals)
    # It peered as the chart tells it to, in the object it created itself.
    peering = json.loads(cluster.kubectl("get", "clusterkopfpeering", "-o", "json").stdout)
    assert [p["metadata"]["name"] for p in peering["items"]] == ["videoqueue-operator"]
    # Events were posted (core/v1 create).
    events = client.CoreV1Api(api).list_namespaced_event(JOB_NAMESPACE).items
    assert any(e.source.component == "videoqueue-operator" for e in events)


def test_operator_image_runs_jobs_read_only_as_non_root(
    cluster: LocalCluster, release: Release, namespace: str, tmp_path: Path, api: Any
) -> None:
    """The Dockerfile's image runs the chart's arguments with the chart's account, on a
    read-only root filesystem with no capabilities, and answers its probes."""
    token = service_account_token(cluster, RELEASE_NAMESPACE, FULLNAME)
    kubeconfig = token_kubeconfig(cluster, token, tmp_path / "operator.kubeconfig")
    ca = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["certificate-authority"]
    custom = client.CustomObjectsApi(api)
    port = free_port()
    with DockerEngine() as engine:
        tag = f"videoqueue/operator:test-{uuid.uuid4().hex[:8]}"
        build = subprocess.run(
            [str(REPO / "hack/docker-build-operator.sh"), tag],
            env={**os.environ, "DOCKER_HOST": engine.host} if engine.host else None,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert build.returncode == 0, build.stderr
        user = engine.docker("image", "inspect", tag, "--format", "{{.Config.User}}").stdout
        assert user.strip() == "65532:65532"
        name = f"vq-operator-{uuid.uuid4().hex[:6]}"
        engine.docker(
            "run", "--detach", "--name", name,
            # The control plane listens on the host's loopback.
            "--network=host",
            "--read-only", "--tmpfs=/tmp", "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            f"--volume={kubeconfig}:/etc/videoqueue/kubeconfig:ro",
            f"--volume={ca}:{ca}:ro",
            "--env=KUBECONFIG=/etc/videoqueue/kubeconfig",
            tag, *release.operator_args,
            "--metrics-bind=127.0.0.1", f"--metrics-port={port}",
        )  # fmt: skip
        try:

            def logs() -> str:
                result = engine.docker("logs", name, check=False)
                return result.stdout + result.stderr

            poll(
                lambda: "acting: this replica now schedules" in logs(),
                timeout=90,
                what="the operator in the container to act",
                interval=1,
            )
            create(custom, namespace, "videoqueues", make_queue(concurrency=2))
            names = [f"image-{i}" for i in range(3)]
            for name_ in names:
                create(custom, namespace, "videojobs", make_job(name_))
            for name_ in names:
                job = wait_job(custom, namespace, name_, "Complete", timeout=90)
                assert job["status"]["phase"] == "Succeeded"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                assert r.status == 200
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert b"videoqueue_" in r.read()
            # SIGTERM: kopf exits cleanly (and would hand over to a standby at once).
            engine.docker("stop", "--time=30", name)
            state = json.loads(engine.docker("inspect", name, "--format", "{{json .State}}").stdout)
            assert state["ExitCode"] == 0, logs()
            assert "Forbidden" not in logs()
        except BaseException:
            print(f"--- operator container log ---\n{logs()}")
            raise
        finally:
            engine.docker("rm", "--force", name, check=False)
            engine.docker("image", "rm", "--force", tag, check=False)


def test_operator_account_cannot_list_secrets_or_write_specs(
    cluster: LocalCluster, release: Release, tmp_path: Path
) -> None:
    kubectl = as_token(
        cluster, service_account_token(cluster, RELEASE_NAMESPACE, FULLNAME), tmp_path / "kc"
    )
    # It reads a Secret by name (the one a queue names to sign notifications) ...
    allowed = kubectl("auth", "can-i", "get", "secrets", "-n", JOB_NAMESPACE)
    assert allowed.stdout.strip() == "yes"
    # ... and nothing else of the kind.
    for args in (
        ("auth", "can-i", "list", "secrets", "-n", JOB_NAMESPACE),
        ("auth", "can-i", "watch", "secrets", "-A"),
        ("auth", "can-i", "list", "configmaps", "-A"),
        ("auth", "can-i", "update", "videojobs", "-n", JOB_NAMESPACE),
        ("auth", "can-i", "create", "videoqueues", "-n", JOB_NAMESPACE),
        ("auth", "can-i", "delete", "videoqueues", "-n", JOB_NAMESPACE),
        ("auth", "can-i", "update", "pods", "-n", JOB_NAMESPACE),
        ("auth", "can-i", "create", "pods", "--subresource=exec", "-n", JOB_NAMESPACE),
        ("auth", "can-i", "patch", "nodes"),
    ):
        result = kubectl(*args)
        assert result.stdout.strip() == "no", f"the operator may {' '.join(args[2:])}"


# -- the worker's account -------------------------------------------------------------------

NAMESPACED_READS = (
    "pods", "secrets", "configmaps", "services", "serviceaccounts", "events",
    "videojobs.videoqueue.dev", "videoqueues.videoqueue.dev", "deployments", "statefulsets",
    "roles", "rolebindings", "leases", "persistentvolumeclaims",
)  # fmt: skip
CLUSTER_READS = (
    "nodes", "namespaces", "customresourcedefinitions", "clusterroles",
    "clusterkopfpeerings.kopf.dev", "persistentvolumes",
)  # fmt: skip


def test_worker_account_is_denied_every_read(
    cluster: LocalCluster, release: Release, tmp_path: Path
) -> None:
    # The account the chart made in the job namespace, where worker pods run.
    account = json.loads(
        cluster.kubectl("get", "sa", WORKER_ACCOUNT, "-n", JOB_NAMESPACE, "-o", "json").stdout
    )
    assert account["automountServiceAccountToken"] is False
    kubectl = as_token(
        cluster, service_account_token(cluster, JOB_NAMESPACE, WORKER_ACCOUNT), tmp_path / "kc"
    )
    # The token works (it is authenticated), so refusals below are authorization.
    whoami = kubectl("auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    assert f"system:serviceaccount:{JOB_NAMESPACE}:{WORKER_ACCOUNT}" in whoami.stdout

    allowed = []
    for resource in NAMESPACED_READS:
        for scope in (("-n", JOB_NAMESPACE), ("-n", RELEASE_NAMESPACE), ("-A",)):
            result = kubectl("get", resource, *scope)
            if "Forbidden" not in result.stderr:
                allowed.append(f"list {resource} {' '.join(scope)}: {result.stderr}")
        one = kubectl("get", resource, "anything", "-n", JOB_NAMESPACE)
        if "Forbidden" not in one.stderr:
            allowed.append(f"get {resource}: {one.stderr}")
    for resource in CLUSTER_READS:
        result = kubectl("get", resource)
        if "Forbidden" not in result.stderr:
            allowed.append(f"list {resource}: {result.stderr}")
    assert not allowed, "\n".join(allowed)

    # The account's whole rule list: only what every authenticated user has (asking about
    # itself), no resource rule from the chart.
    rules = kubectl("auth", "can-i", "--list", "-n", JOB_NAMESPACE).stdout.splitlines()[1:]
    # Lines of non-resource URLs (discovery, health) have no resource: they start with "[".
    resources = {line.split()[0] for line in rules if line.strip()} - {
        line.split()[0] for line in rules if line.strip().startswith("[")
    }
    assert resources <= {
        "selfsubjectreviews.authentication.k8s.io",
        "selfsubjectaccessreviews.authorization.k8s.io",
        "selfsubjectrulesreviews.authorization.k8s.io",
    }, rules


# -- users through the built-in roles -------------------------------------------------------


def _bind(cluster: LocalCluster, namespace: str, user: str, role: str) -> None:
    cluster.kubectl(
        "create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}", f"--user={user}",
        "-n", namespace,
    )  # fmt: skip


def _as(
    cluster: LocalCluster, user: str, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(f"--as={user}", *args, input=input, check=False)


def test_view_edit_admin_cover_jobs_and_queues(
    cluster: LocalCluster, release: Release, namespace: str
) -> None:
    for user, role in (("vera", "view"), ("ed", "edit"), ("ada", "admin")):
        _bind(cluster, namespace, user, role)
    # The clusterrole-aggregation controller fills the built-in roles asynchronously.
    for user, verb, resource in (
        ("vera", "list", "videojobs"),
        ("ed", "create", "videojobs"),
        ("ada", "patch", "videoqueues"),
    ):

        def allowed(u: str = user, v: str = verb, r: str = resource) -> bool:
            return _as(cluster, u, "auth", "can-i", v, r, "-n", namespace).stdout.strip() == "yes"

        poll(
            allowed,
            timeout=30,
            what=f"{user} to be allowed to {verb} {resource} through the built-in roles",
        )
    queue = make_queue("media")
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(queue))
    pause = ("patch", "vq", "media", "-n", namespace, "--type=merge", "-p")
    paused = json.dumps({"spec": {"state": "Paused"}})

    # view: reads both kinds, creates and changes nothing.
    assert _as(cluster, "vera", "get", "vq,vj", "-n", namespace).returncode == 0
    refused = _as(cluster, "vera", "create", "-n", namespace, "-f", "-",
                  input=json.dumps(make_job("by-vera", queue="media")))  # fmt: skip
    assert "Forbidden" in refused.stderr, refused
    assert "Forbidden" in _as(cluster, "vera", *pause, paused).stderr

    # edit: submits, changes and deletes jobs; queues stay read-only.
    job = make_job("by-ed", queue="media")
    created = _as(cluster, "ed", "create", "-n", namespace, "-f", "-", input=json.dumps(job))
    assert created.returncode == 0, created.stderr
    cancel = _as(cluster, "ed", "patch", "vj", "by-ed", "-n", namespace, "--type=merge",
                 "-p", json.dumps({"spec": {"cancel": True}}))  # fmt: skip
    assert cancel.returncode == 0, cancel.stderr
    assert "Forbidden" in _as(cluster, "ed", *pause, paused).stderr
    second = make_queue("other")
    refused = _as(cluster, "ed", "create", "-n", namespace, "-f", "-", input=json.dumps(second))
    assert "Forbidden" in refused.stderr, refused
    assert "Forbidden" in _as(cluster, "ed", "delete", "vq", "media", "-n", namespace).stderr
    deleted = _as(cluster, "ed", "delete", "vj", "by-ed", "-n", namespace, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr

    # admin: pauses the queue.
    result = _as(cluster, "ada", *pause, paused)
    assert result.returncode == 0, result.stderr
    state = cluster.kubectl(
        "get", "vq", "media", "-n", namespace, "-o", "jsonpath={.spec.state}"
    ).stdout
    assert state == "Paused"
    # Nobody of the three gets the operator's status-writing rights.
    for user in ("vera", "ed", "ada"):
        can = _as(cluster, user, "auth", "can-i", "patch", "videojobs", "--subresource=status",
                  "-n", namespace)  # fmt: skip
        assert can.stdout.strip() == "no", user


# -- uninstall (last: it removes the module's release) -------------------------------------


def test_uninstall_keeps_crds_and_objects(
    cluster: LocalCluster, release: Release, namespace: str
) -> None:
    custom_queue = make_queue("kept")
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(custom_queue))
    helm("uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait", kubeconfig=cluster.kubeconfig)
    for crd in ("videoqueues.videoqueue.dev", "videojobs.videoqueue.dev"):
        cluster.kubectl("get", "crd", crd)
    assert cluster.kubectl("get", "vq", "kept", "-n", namespace).returncode == 0
    for kind, name in (("clusterrole", FULLNAME), ("clusterrolebinding", FULLNAME)):
        assert cluster.kubectl("get", kind, name, check=False).returncode != 0
    assert (
        cluster.kubectl(
            "get", "deployment", FULLNAME, "-n", RELEASE_NAMESPACE, check=False
        ).returncode
        != 0
    )
