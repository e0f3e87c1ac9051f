"""The test environment cleans up after itself, even when its owner is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from videoqueue.envtest import ClusterConfig, LocalCluster, poll

pytestmark = pytest.mark.integration

# No nodes: these tests are about processes, ports and files, not workloads.
BARE = ClusterConfig(nodes=[])


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return ") Z " not in stat


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_stop_leaves_no_process_port_or_directory() -> None:
    cluster = LocalCluster(cluster_config=BARE)
    with cluster:
        pids = cluster.pids()
        ports = list(cluster.ports.values())
        state_dir = cluster.state_dir
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        assert all(pid_alive(p) for p in pids.values())

    assert not [name for name, pid in pids.items() if pid_alive(pid)]
    assert not state_dir.exists()
    poll(
        lambda: all(port_free(p) for p in ports),
        timeout=30,
        what="the cluster's ports to be released",
    )


def test_components_die_with_a_sigkilled_owner(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a test run killed with SIGKILL leaves no control plane behind."""
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, sys, time\n"
            "from pathlib import Path\n"
            "from videoqueue.envtest import ClusterConfig, LocalCluster\n"
            f"c = LocalCluster(Path({str(tmp_path)!r}), ClusterConfig(nodes=[]))\n"
            "c.start()\n"
            "print(json.dumps(c.pids()), flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        pids: dict[str, int] = json.loads(owner.stdout.readline())
        assert len(pids) == 5
        assert all(pid_alive(p) for p in pids.values())

        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()

        poll(
            lambda: not any(pid_alive(p) for p in pids.values()),
            timeout=30,
            what=f"components {pids} to die with their owner",
        )
    finally:
        owner.kill()
        owner.wait()


def read_configmap(cluster: LocalCluster) -> dict[str, str] | None:
    result = cluster.kubectl("get", "configmap", "kept", "-o", "json", check=False)
    data: dict[str, str] | None = (
        json.loads(result.stdout)["data"] if result.returncode == 0 else None
    )
    return data


def test_apiserver_and_etcd_restart_in_place_and_keep_what_was_stored() -> None:
    """The chaos benchmark's faults: each restarted process is a new one on the same port and
    data, what was written before is still there, and stop() stops the new processes too."""
    with LocalCluster(cluster_config=BARE) as cluster:
        cluster.kubectl("create", "configmap", "kept", "--from-literal=k=v")
        ports = dict(cluster.ports)
        before = cluster.pids()
        seen = [before]
        for restart in (cluster.restart_apiserver, cluster.restart_etcd):
            back = restart()
            # etcd back does not mean the API server has reconnected to it yet.
            stored = poll(
                lambda: read_configmap(cluster),
                timeout=60,
                what="the configmap through the restarted component",
            )
            assert stored == {"k": "v"}
            assert back <= time.time()
            seen.append(cluster.pids())
        assert cluster.ports == ports
        assert not pid_alive(before["kube-apiserver"])
        assert not pid_alive(before["etcd"])
        assert seen[1]["kube-apiserver"] != before["kube-apiserver"]
        assert seen[2]["etcd"] != before["etcd"]
        # Order kept: stop() still stops the control plane newest first.
        assert [c.name for c in cluster.components] == list(before)
        after = cluster.pids()
    assert not [name for name, pid in after.items() if pid_alive(pid)]
