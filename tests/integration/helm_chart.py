"""The Helm chart in tests: run helm against a test cluster, render, turn workloads into pods,
and make kubeconfigs for ServiceAccount tokens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from videoqueue.envtest import ClusterBase, find_binaries, poll

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "videoqueue-operator"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")

# Realistic value sets besides the defaults, by id.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    # Three replicas spread over nodes, pinned image, debug logs, CRDs managed by GitOps.
    "ha": {
        "replicas": 3,
        "crds": {"enabled": False},
        "image": {"repository": "videoqueue/operator", "digest": "sha256:" + "ab" * 32},
        "logLevel": "debug",
        "peering": {"lifetime": 30},
        "podDisruptionBudget": {"minAvailable": 2},
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "value": "media", "effect": "NoSchedule"}],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
            }
        ],
    },
    # A managed Redis with its password in a Secret the platform team creates.
    "external-redis": {
        "replicas": 1,
        "peering": {"enabled": False},
        "redis": {
            "mode": "external",
            "external": {
                "url": "rediss://redis.media.svc:6380/2",
                "existingSecret": "media-redis",
                "passwordKey": "redis-password",
                "caSecret": "media-redis-ca",
            },
        },
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
        "podAnnotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
    },
    # Prometheus Operator and Grafana; bundled Redis with a volume and a given password.
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
            "grafanaDashboard": {"enabled": True},
        },
        "redis": {
            "bundled": {
                "auth": {"existingSecret": "videoqueue-redis", "passwordKey": "pw"},
                "persistence": {"enabled": True, "size": "2Gi"},
                "maxMemory": "512mb",
            }
        },
    },
}


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the Helm built with the toolchain, against the cluster of `kubeconfig` if given."""
    argv = [str(find_binaries()["helm"]), *args]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
    return result


def values_file(tmp_path: Path, values: Mapping[str, Any], name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(dict(values)))
    return path


def render(
    tmp_path: Path, values: Mapping[str, Any], *, release: str, namespace: str
) -> list[dict[str, Any]]:
    """The chart's objects for these values (`helm template`, hooks and tests included)."""
    out = helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        str(values_file(tmp_path, values)),
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod manifest) for every pod the objects would make: each workload's template
    as a Pod of its own, and the Pods themselves (the `helm test` hook)."""
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "Pod":
            yield f"Pod/{name}", obj
        elif kind in WORKLOAD_KINDS:
            template = obj["spec"]["template"]
            spec = dict(template["spec"])
            # A StatefulSet's pods get a volume per claim template, as its controller adds.
            claims = obj["spec"].get("volumeClaimTemplates") or []
            spec["volumes"] = [*spec.get("volumes", [])] + [
                {
                    "name": claim["metadata"]["name"],
                    "persistentVolumeClaim": {"claimName": f"{claim['metadata']['name']}-{name}-0"},
                }
                for claim in claims
            ]
            yield (
                f"{kind}/{name}",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {**template.get("metadata", {}), "name": f"pss-{name}"[:63]},
                    "spec": spec,
                },
            )


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
    return matches[0]


def token_kubeconfig(cluster: ClusterBase, token: str, path: Path) -> Path:
    """A kubeconfig for `cluster` that authenticates with a bearer token only."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context = admin["current-context"]
    server = next(c for c in admin["clusters"] if c["name"] == context)["cluster"]
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": server}],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "token"}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(document))
    return path


def service_account_token(cluster: ClusterBase, namespace: str, name: str) -> str:
    """A short-lived token of a ServiceAccount (TokenRequest API)."""
    return cluster.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()


def dumps(objects: list[dict[str, Any]]) -> str:
    return "\n---\n".join(json.dumps(o) for o in objects)


class DockerEngine:
    """The Docker engine of $DOCKER_HOST (or the default socket) when it answers, else a
    dockerd of our own (socket, data and exec roots in a temporary directory; no bridge, no
    iptables changes), stopped and removed on exit."""

    def __init__(self) -> None:
        self.host = os.environ.get("DOCKER_HOST", "")  # empty: the default socket
        self.root: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def docker(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
        if self.host:
            env["DOCKER_HOST"] = self.host
        result = subprocess.run(
            ["docker", *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed:\n{result.stderr}")
        return result

    def _answers(self) -> bool:
        return self.docker("info", check=False, timeout=30).returncode == 0

    def __enter__(self) -> DockerEngine:
        if self._answers():
            return self
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise AssertionError("dockerd is missing: run `make system-packages` (docker.io)")
        # A short path: the socket path must fit in 108 bytes.
        root = self.root = Path(tempfile.mkdtemp(prefix="vq-docker-"))
        self.host = f"unix://{root}/docker.sock"
        with (root / "dockerd.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    dockerd,
                    f"--host={self.host}",
                    f"--data-root={root}/data",
                    f"--exec-root={root}/exec",
                    f"--pidfile={root}/docker.pid",
                    "--bridge=none",
                    "--iptables=false",
                    "--ip6tables=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        poll(self._answers, timeout=60, what=f"dockerd on {self.host}", interval=0.5)
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is None or self.root is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # dockerd leaves its network namespace bind-mounted under exec/; unmount what is
        # left under the root, then remove the layers with the engine stopped.
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        for point in sorted((line.split()[1] for line in mounts), reverse=True):
            if point.startswith(f"{self.root}/"):
                subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
