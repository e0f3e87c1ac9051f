"""A real node leaves nothing behind: stopping a cluster whose real node still runs pods kills
and removes their containers, stops containerd and its shims, and removes mounts, the pod
bridge and the kubelet's cgroups."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from videoqueue.envtest import ClusterConfig, LocalCluster, poll
from videoqueue.envtest.realnode import REAL_NODE_PLACEMENT, leftovers, sandbox_image_tag

pytestmark = pytest.mark.e2e


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if text in cmdline:
            found.append(f"{proc.name} {cmdline}")
    return found


def test_stop_with_running_pods_leaves_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "cluster"
    cluster = LocalCluster(state_dir, ClusterConfig(nodes=[]), real_nodes=1)
    node = "real-node-0"
    layout = cluster.real_node_layout(node)
    try:
        cluster.start()
        # The sandbox image is always there; its /pause runs until killed.
        pause = sandbox_image_tag(cluster.binaries["pause.tar"])
        for i in range(2):
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"sleeper-{i}", "namespace": "default"},
                "spec": {
                    **REAL_NODE_PLACEMENT,
                    "containers": [
                        {
                            "name": "pause",
                            "image": pause,
                            "imagePullPolicy": "Never",
                            "resources": {"limits": {"memory": "16Mi"}},
                        }
                    ],
                },
            }
            cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))

        def running() -> bool:
            pods = json.loads(cluster.kubectl("get", "pods", "-o", "json").stdout)["items"]
            return len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods)

        poll(running, timeout=60, what="both pods Running on the real node", interval=0.5)
        # Sandboxes and containers: 4 tasks, each with a shim and mounts under the node.
        assert len(cluster.containerd(node).tasks()) == 4
        assert any("mount" in found for found in leftovers(layout))
        assert _processes_mentioning(str(layout.containerd_socket))  # shims
    finally:
        cluster.stop()

    assert leftovers(layout) == []
    assert _processes_mentioning(str(state_dir)) == []
    assert _processes_mentioning(str(layout.directory)) == []
    assert not Path(f"/sys/class/net/{layout.bridge}").exists()
    done = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert layout.bridge not in done.stdout
