"""Kueue beside the local control plane, for the scale benchmark's peer scenario.

Kueue (built from its published module by hack/build-toolchain.sh, with the CRDs the module
ships) runs out of cluster against the local API server, as PEERS.md records:
- its CRDs applied server-side (client-side apply fails on their size);
- a `config.kueue.x-k8s.io/v1beta2` Configuration: no leader election, no internal
  certificate management, the webhook server and health probes on loopback ports, only the
  batch/job integration;
- no webhook configuration is installed, so Jobs are created with `suspend: true` and the
  `kueue.x-k8s.io/queue-name` label; Kueue creates their Workloads, admits them within the
  ClusterQueue's nominal quota and unsuspends them;
- with its own certificate management off it reads a metrics certificate from the fixed path
  /etc/kueue/metrics/certs and exits without one: a self-signed pair is written there when
  none exists (the benchmark runs as root, as the real-node suites do).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from videoqueue.envtest import LocalCluster
from videoqueue.envtest.operator_process import free_port
from videoqueue.envtest.pki import self_signed_serving

GROUP = "kueue.x-k8s.io"
KUEUE_API = f"{GROUP}/v1beta2"
METRICS_CERTS = Path("/etc/kueue/metrics/certs")
QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"


def install_crds(cluster: LocalCluster) -> None:
    crds = cluster.binaries["kueue-crds"].resolve()  # kubectl reads a symlink as a file
    cluster.kubectl("apply", "--server-side", "-f", str(crds))
    names = [f"crd/{p.stem.split('_', 1)[1]}.kueue.x-k8s.io" for p in sorted(crds.glob("*.yaml"))]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=300s", *names)


def configuration(webhook_port: int, health_port: int, cert_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{free_port()}"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        # As fast as the API server lets it: the batch scenario's kube-controller-manager
        # runs with the benchmark's --kcm-qps too.
        "clientConnection": {"qps": 200, "burst": 300},
        "integrations": {"frameworks": ["batch/job"]},
    }


def start(cluster: LocalCluster, workdir: Path) -> int:
    """Start Kueue beside the cluster (stopped with it); returns its pid once healthy."""
    if not (METRICS_CERTS / "tls.crt").exists():
        pair = self_signed_serving(workdir / "kueue-metrics", "tls")
        METRICS_CERTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(pair.cert, METRICS_CERTS / "tls.crt")
        shutil.copy(pair.key, METRICS_CERTS / "tls.key")
    cert_dir = workdir / "kueue-webhook"
    self_signed_serving(cert_dir, "tls")
    health_port = free_port()
    config = workdir / "kueue-config.yaml"
    config.write_text(json.dumps(configuration(free_port(), health_port, cert_dir)))
    argv = [
        str(cluster.binaries["kueue"]),
        f"--config={config}",
        f"--kubeconfig={cluster.kubeconfig}",
        # The on-demand visibility server wants certificates of its own; nothing here reads it.
        "--feature-gates=VisibilityOnDemand=false",
    ]
    return cluster.run_beside("kueue", argv, f"http://127.0.0.1:{health_port}/readyz")


def queue_objects(namespace: str, name: str, memory: str) -> list[dict[str, Any]]:
    """A ResourceFlavor, a ClusterQueue whose memory quota is `memory` (the videoqueue
    scenario's budget), and the LocalQueue the Jobs name."""
    return [
        {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": "bench"}},
        {
            "apiVersion": KUEUE_API,
            "kind": "ClusterQueue",
            "metadata": {"name": name},
            "spec": {
                "namespaceSelector": {},
                "queueingStrategy": "BestEffortFIFO",
                "resourceGroups": [
                    {
                        "coveredResources": ["memory"],
                        "flavors": [
                            {
                                "name": "bench",
                                "resources": [{"name": "memory", "nominalQuota": memory}],
                            }
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": KUEUE_API,
            "kind": "LocalQueue",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterQueue": name},
        },
    ]
