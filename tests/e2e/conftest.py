"""End-to-end: one local control plane with a real node per session, one namespace per test.

The real node (videoqueue.envtest.realnode) is a kubelet built from the pinned Kubernetes
module with a containerd of its own; worker pods run the project's worker image, built
locally (hack/docker-build-worker.sh, a private dockerd when none answers) and imported into
that containerd, with real ffmpeg under memory limits the kernel enforces. The operator runs
on the host as its own process (the integration suite's `operator` fixture), as `make run`
does. Inputs are generated with ffmpeg's lavfi on the host in a directory the worker pods
mount at /media (a hostPath), where ffprobe on the host checks the outputs.

Needs root (kubelet, containerd, mounts, cgroups) and what `make system-packages` and
`make toolchain` install. Settings the real node needs on this machine kind are listed in
docs/real-nodes.md.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.e2e.objects import REAL_NODE

# The integration suite's fixtures, on this suite's cluster (the `cluster` below).
from tests.integration.conftest import (  # noqa: F401
    api,
    core,
    crds,
    custom,
    namespace,
)
from tests.integration.redis_server import RedisServer
from videoqueue.envtest import ClusterConfig, LocalCluster, default_nodes
from videoqueue.envtest.images import ImportedImage, import_operator_image, import_worker_image
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.realnode import leftovers, service_proxy_leftovers

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """The control plane, one KWOK node (pods that do not ask for a real node land there)
    and one real node."""
    with LocalCluster(cluster_config=ClusterConfig(nodes=default_nodes(1)), real_nodes=1) as local:
        timings = ", ".join(f"{k} {v:.1f}s" for k, v in local.startup_seconds.items())
        print(f"\nlocal control plane with a real node up ({timings})", file=sys.stderr)
        layout = local.real_node_layout(REAL_NODE)
        yield local
    # __exit__ raised if the node left anything behind; this checks again from outside.
    assert leftovers(layout) == []
    assert service_proxy_leftovers() == []


@pytest.fixture(scope="session")
def node_ip(cluster: LocalCluster) -> str:
    """The real node's InternalIP: its pod bridge's host address, the one address of the
    host that worker pods reach."""
    with cluster.api_client() as api_client:
        addresses = client.CoreV1Api(api_client).read_node(REAL_NODE).status.addresses
    return next(a.address for a in addresses if a.type == "InternalIP")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def progress_redis(node_ip: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The progress channel's Redis, listening on the pod bridge's host address only."""
    with RedisServer(tmp_path_factory.mktemp("redis"), host=node_ip) as server:
        yield server


@pytest.fixture(scope="session")
def operator(
    cluster: LocalCluster,
    crds: None,  # noqa: F811 (the imported fixture, requested)
    progress_redis: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator on the host (`python -m videoqueue`, watching the whole cluster) with the
    progress channel on: its workers publish to Redis over the pod network."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with OperatorProcess(cluster.kubeconfig, log, ["--redis-url", progress_redis.url]) as process:
        process.wait_for_log("progress: reading stream", timeout=60)
        yield process


@pytest.fixture(scope="session")
def worker_image(cluster: LocalCluster) -> ImportedImage:
    """The worker image of this checkout in the real node's containerd."""
    image = import_worker_image(cluster.containerd(REAL_NODE), REPO)
    times = ", ".join(f"{k} {v:.1f}s" for k, v in image.seconds.items())
    print(f"\nworker image {image.tag} on {REAL_NODE} ({times})", file=sys.stderr)
    return image


@pytest.fixture(scope="session")
def operator_image(cluster: LocalCluster) -> ImportedImage:
    """The operator image of this checkout in the real node's containerd."""
    image = import_operator_image(cluster.containerd(REAL_NODE), REPO)
    times = ", ".join(f"{k} {v:.1f}s" for k, v in image.seconds.items())
    print(f"\noperator image {image.tag} on {REAL_NODE} ({times})", file=sys.stderr)
    return image


@pytest.fixture
def media(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A host directory the test's worker pods mount at /media (readable and writable by
    the worker's non-root user)."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:40]
    directory = tmp_path_factory.mktemp(f"media-{base}")
    directory.chmod(0o777)
    return directory
