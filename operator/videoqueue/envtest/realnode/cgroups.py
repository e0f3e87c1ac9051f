"""A real node's cgroup root (the kubelet's --cgroup-root) in every mounted hierarchy: create
it (cpuset copied from the parent), kill every process left in it, and remove it deepest
first. The machine runs cgroup v1 without systemd, so the kubelet uses cgroupfs and these
directories are ours to make and remove.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")


def _cgroup_hierarchies() -> list[Path]:
    """Mounted cgroup v1 hierarchies (or the v2 root), from /proc/self/mounts."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, fstype, *_ = line.split()
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(point))
    return found


def create_cgroup_root(root: str) -> None:
    """The kubelet's --cgroup-root must exist in every hierarchy; cpuset needs its cpus and
    mems copied from the parent before tasks can join."""
    for hierarchy in _cgroup_hierarchies():
        path = hierarchy / root.lstrip("/")
        path.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (path / name).exists() and not (path / name).read_text().strip():
                (path / name).write_text((hierarchy / name).read_text())


def remove_cgroup_root(root: str, *, timeout: float = 10) -> list[str]:
    """rmdir the root and everything under it, deepest first; returns what stayed (busy)."""
    left: list[str] = []
    for hierarchy in _cgroup_hierarchies():
        top = hierarchy / root.lstrip("/")
        if not top.exists():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for directory in [*dirs, top]:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    # A task that was just killed leaves its cgroup a moment later.
                    if time.monotonic() > deadline:
                        left.append(str(directory))
                        break
                    time.sleep(0.1)
    return left


def _kill_cgroup_processes(root: str, *, timeout: float = 10) -> None:
    """SIGKILL every process in the cgroup root and below, until none is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids: set[int] = set()
        for hierarchy in _cgroup_hierarchies():
            top = hierarchy / root.lstrip("/")
            if top.is_dir():
                for procs in top.rglob("cgroup.procs"):
                    with contextlib.suppress(OSError):
                        pids.update(int(p) for p in procs.read_text().split())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
