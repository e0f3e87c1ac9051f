"""A real node leaves nothing behind: stopping a cluster whose real node still runs pods kills
and removes their containers, stops containerd and its shims, and removes mounts, the pod
bridge and the kubelet's cgroups."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from videoqueue.envtest import ClusterConfig, LocalCluster, poll
from videoqueue.envtest.realnode import (
    REAL_NODE_PLACEMENT,
    leftovers,
    sandbox_image_tag,
    sweep_stale_nodes,
)

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


def _lock_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases it again
    return True


def run_sleepers(cluster: LocalCluster, count: int = 2) -> None:
    """`count` pods on the real node that run until killed (the sandbox image's /pause,
    always present); returns once they are Running."""
    pause = sandbox_image_tag(cluster.binaries["pause.tar"])
    for i in range(count):
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
        return len(pods) == count and all(p["status"].get("phase") == "Running" for p in pods)

    poll(running, timeout=60, what=f"{count} pods Running on the real node", interval=0.5)


def test_stop_with_running_pods_leaves_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "cluster"
    cluster = LocalCluster(state_dir, ClusterConfig(nodes=[]), real_nodes=1)
    node = "real-node-0"
    layout = cluster.real_node_layout(node)
    try:
        cluster.start()
        run_sleepers(cluster)
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


KILLED_CLUSTER = """
import sys
from pathlib import Path
from tests.e2e.test_real_node_lifecycle import run_sleepers
from videoqueue.envtest import ClusterConfig, LocalCluster

cluster = LocalCluster(Path(sys.argv[1]), ClusterConfig(nodes=[]), real_nodes=1)
cluster.start()
run_sleepers(cluster)
print("running", flush=True)
sys.stdin.read()  # until killed
"""


def test_a_killed_cluster_is_swept_by_the_next_start(tmp_path: Path) -> None:
    """SIGKILL of the process holding a cluster takes its kubelet and containerd along
    (PR_SET_PDEATHSIG) but not the shims and containers they started; the next start of a
    real node finds the node's directory unlocked and cleans up after it."""
    state_dir = tmp_path / "killed"
    state_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLUSTER, str(state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],  # imports tests.e2e from the checkout
    )
    layout = LocalCluster(state_dir, ClusterConfig(nodes=[])).real_node_layout("real-node-0")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "running"
        holder.kill()
        holder.wait()
        # Once the last thread of its containerd has exited, the node's lock is free.
        poll(lambda: _lock_free(layout.lock_file), timeout=30, what="the node's lock to be free")
        # Left behind: the shims and the pods' processes, their mounts, bridge, cgroups.
        assert _processes_mentioning(str(layout.directory))  # the shims
        assert leftovers(layout)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        problems = sweep_stale_nodes(min_age=0)

    assert problems == []
    assert leftovers(layout) == []
    assert _processes_mentioning(str(layout.directory)) == []
