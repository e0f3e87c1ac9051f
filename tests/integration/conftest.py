"""One real control plane per test session, one namespace per test.

VIDEOQUEUE_TEST_CLUSTER=kind runs the same tests on a kind cluster via pytest-kind
(needs Docker and internet); the default, and what CI runs, is the local control plane.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from videoqueue.envtest import ClusterBase, LocalCluster, poll
from videoqueue.envtest.operator_process import free_port, metrics_args

from .redis_server import RedisServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterBase]:
    if os.environ.get("VIDEOQUEUE_TEST_CLUSTER", "local") == "kind":
        from videoqueue.envtest.kind import KindBackedCluster

        with KindBackedCluster() as kind_cluster:
            yield kind_cluster
        return
    with LocalCluster() as local:
        timings = ", ".join(f"{k} {v:.1f}s" for k, v in local.startup_seconds.items())
        print(f"\nlocal control plane up ({timings})", file=sys.stderr)
        yield local


@pytest.fixture
def api(cluster: ClusterBase) -> Iterator[Any]:
    with cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def core(api: Any) -> Any:
    return client.CoreV1Api(api)


@pytest.fixture
def custom(api: Any) -> Any:
    """CustomObjectsApi, for VideoQueues and VideoJobs."""
    return client.CustomObjectsApi(api)


@pytest.fixture
def namespace(cluster: ClusterBase, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    yield name
    cluster.delete_namespace(name)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port (no persistence), stopped after the test."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


# Modules that write VideoJob status themselves, to test the API server's schema: they run
# first, before any test starts the session-wide operator, which would write it too.
BEFORE_THE_OPERATOR = ("test_crds.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in BEFORE_THE_OPERATOR)


def apply_crds(cluster: ClusterBase) -> None:
    """Apply the videoqueue CRDs from crds/, as a user would, and wait until established."""
    # Server-side apply: the schemas are too large for the last-applied annotation.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))

    def established() -> bool | None:
        # `kubectl wait` errors out instead of waiting while a fresh CRD has no conditions.
        result = cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=10s",
            "crd/videoqueues.videoqueue.dev",
            "crd/videojobs.videoqueue.dev",
            check=False,
        )
        return result.returncode == 0 or None

    poll(established, timeout=60, what="the videoqueue CRDs to be established")


@pytest.fixture(scope="session")
def crds(cluster: ClusterBase) -> None:
    """The videoqueue CRDs on the session's control plane."""
    apply_crds(cluster)


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[LocalCluster]:
    """A control plane for one module alone, with the videoqueue CRDs. A module whose own
    operators must not meet the session's `operator` (which acts on every namespace) makes
    it its `cluster`:

        @pytest.fixture(scope="module")
        def cluster(own_cluster: LocalCluster) -> LocalCluster:
            return own_cluster
    """
    with LocalCluster() as local:
        apply_crds(local)
        yield local


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print figures to the terminal even when pytest captures output."""

    def show(text: str) -> None:
        with capsys.disabled():
            print(f"\n{text}")

    return show


@pytest.fixture(scope="session")
def operator_metrics_port() -> int:
    """Where the session's operator serves /metrics, /healthz and /readyz (on 127.0.0.1)."""
    return free_port()


@pytest.fixture(scope="session")
def operator(
    cluster: ClusterBase,
    crds: None,
    operator_metrics_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[subprocess.Popen[bytes]]:
    """The operator as its own process (`python -m videoqueue`), watching the whole cluster."""
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    argv = [sys.executable, "-m", "videoqueue", *metrics_args(operator_metrics_port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if os.environ.get("VIDEOQUEUE_SHOW_OPERATOR_LOG"):
            print(log_path.read_text(), file=sys.stderr)
