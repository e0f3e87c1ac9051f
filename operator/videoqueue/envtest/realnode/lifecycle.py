"""A real node's life on the host, the steps the cluster calls: `claim_node` (lock its
directory), `prepare` (write its config files, create its cgroup root, bridge and FORWARD
guard), `teardown` once its kubelet has stopped (containers, containerd, shims, mounts,
bridge, rule, cgroups, directory), `sweep_stale_nodes` (the teardown of nodes whose cluster
was killed), and `leftovers` (what a clean stop must not leave, for tests).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from videoqueue.envtest.realnode.cgroups import (
    _cgroup_hierarchies,
    _kill_cgroup_processes,
    create_cgroup_root,
    remove_cgroup_root,
)
from videoqueue.envtest.realnode.config import cni_conflist, containerd_config, kubelet_config
from videoqueue.envtest.realnode.containerd import Ctr, remove_all_containers, sandbox_image_tag
from videoqueue.envtest.realnode.layout import (
    NODES_ROOT,
    RealNodeError,
    RealNodeLayout,
    RealNodeSpec,
)
from videoqueue.envtest.realnode.mounts import mounts_under, unmount_under
from videoqueue.envtest.realnode.network import (
    _iptables,
    add_forward_guard,
    create_bridge,
    forward_guard,
    pick_subnet,
)


def claim_node(layout: RealNodeLayout) -> int:
    """Create the node's directory and lock it; returns the locked fd, to hand to containerd
    (which then holds the lock as long as it runs) and close here."""
    layout.directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RealNodeError(f"{layout.directory} is in use by a running node") from None
    return fd


def sweep_stale_nodes(*, min_age: float = 60) -> list[str]:
    """Clean up after real nodes whose cluster was killed (SIGKILL, a crash): directories
    under NODES_ROOT whose lock no containerd holds, older than `min_age` seconds (a node
    being created right now is younger). Their containers, shims, mounts, bridge and cgroups
    go as in `teardown`. Returns what could not be cleaned."""
    problems: list[str] = []
    if not NODES_ROOT.is_dir():
        return problems
    for directory in sorted(NODES_ROOT.iterdir()):
        layout = RealNodeLayout.found(directory)
        try:
            if time.time() - layout.lock_file.stat().st_mtime < min_age:
                continue
            fd = os.open(layout.lock_file, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a running node's
        try:
            problems += teardown(layout, stop_containerd=lambda: None)
        finally:
            os.close(fd)
    return problems


def prepare(
    layout: RealNodeLayout,
    spec: RealNodeSpec,
    *,
    sandbox_archive: Path,
    ca_cert: Path,
    kubeconfig: dict[str, Any],
    ports: tuple[int, int],
    image_root: Path,
    service_cidr: str,
) -> str:
    """Write the node's configuration files, create its cgroup root and pod bridge; return
    the node's IP (the bridge's host address)."""
    layout.directory.mkdir(parents=True, exist_ok=True)
    if layout.link is not None:
        layout.link.parent.mkdir(parents=True, exist_ok=True)
        if not layout.link.is_symlink():
            layout.link.symlink_to(layout.directory)
    layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("pod-logs", "volume-plugins", "kubelet", "kubelet-pki"):
        (layout.directory / sub).mkdir(exist_ok=True)
    layout.containerd_config.write_text(
        containerd_config(layout, sandbox_image_tag(sandbox_archive), image_root)
    )
    subnet = pick_subnet(layout)
    (layout.cni_conf_dir / "10-videoqueue.conflist").write_text(
        json.dumps(cni_conflist(layout, subnet, service_cidr), indent=2)
    )
    create_cgroup_root(layout.cgroup_root)
    node_ip = create_bridge(layout, subnet)
    add_forward_guard(layout)
    layout.kubelet_kubeconfig.write_text(yaml.safe_dump(kubeconfig))
    layout.kubelet_config.write_text(
        yaml.safe_dump(
            kubelet_config(
                layout,
                spec,
                node_ip=node_ip,
                ca_cert=ca_cert,
                port=ports[0],
                healthz_port=ports[1],
            )
        )
    )
    return node_ip


def teardown(layout: RealNodeLayout, *, stop_containerd: Callable[[], None]) -> list[str]:
    """Once the kubelet has stopped: every pod container killed and removed through ctr,
    containerd stopped, mounts under the node dir unmounted, the bridge deleted, the cgroup
    root removed. Returns what could not be cleaned (empty when the host is as before)."""
    problems: list[str] = []
    ctr = Ctr(layout.containerd_socket)
    if layout.containerd_socket.exists() and ctr.answers():
        try:
            remove_all_containers(ctr)
        except (RealNodeError, subprocess.TimeoutExpired) as e:
            problems.append(f"containers of {layout.name}: {e}")
    stop_containerd()
    # What ctr could not reach (containerd gone, killed with its cluster): shims by their
    # -address, container processes by the node's cgroups.
    _kill_processes_mentioning(str(layout.directory))
    _kill_cgroup_processes(layout.cgroup_root)
    if left := unmount_under(layout.directory):
        problems.append(f"mounts left under {layout.directory}: {left}")
    while _iptables("-D", *forward_guard(layout)) == 0:
        pass
    if _iptables("-C", *forward_guard(layout)) == 0:
        problems.append(f"iptables rule left: {' '.join(forward_guard(layout))}")
    if Path(f"/sys/class/net/{layout.bridge}").exists():
        subprocess.run(["ip", "link", "delete", layout.bridge], capture_output=True, check=False)
        if Path(f"/sys/class/net/{layout.bridge}").exists():
            problems.append(f"bridge {layout.bridge} not deleted")
    if left := remove_cgroup_root(layout.cgroup_root):
        problems.append(f"cgroups left: {left}")
    if not mounts_under(layout.directory):  # never delete through a mount
        shutil.rmtree(layout.directory, ignore_errors=True)
        if layout.link is not None:
            layout.link.unlink(missing_ok=True)
        for parent in (NODES_ROOT, NODES_ROOT.parent):
            with contextlib.suppress(OSError):
                parent.rmdir()  # when no other node uses it
    return problems


def _kill_processes_mentioning(text: str) -> None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def leftovers(layout: RealNodeLayout) -> list[str]:
    """What of the node is still on the host (for tests of clean stops)."""
    found = [f"mount {m}" for m in mounts_under(layout.directory)]
    if layout.directory.exists():
        found.append(f"directory {layout.directory}")
    if Path(f"/sys/class/net/{layout.bridge}").exists():
        found.append(f"bridge {layout.bridge}")
    if _iptables("-C", *forward_guard(layout)) == 0:
        found.append(f"iptables rule {' '.join(forward_guard(layout))}")
    found += [
        f"cgroup {h / layout.cgroup_root.lstrip('/')}"
        for h in _cgroup_hierarchies()
        if (h / layout.cgroup_root.lstrip("/")).exists()
    ]
    return found


def is_root() -> bool:
    return os.geteuid() == 0
