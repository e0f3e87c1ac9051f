"""Mounts below a directory (containerd's overlay snapshots, the kubelet's volumes, network
namespaces): list them from /proc/self/mounts and unmount them deepest first, so a node's
directory is never deleted through a mount. docker.py uses the same for its build dirs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def mounts_under(directory: Path) -> list[str]:
    prefix = f"{directory.resolve()}/"
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return points


def unmount_under(directory: Path) -> list[str]:
    """Unmount everything below `directory`, deepest first; returns what stayed mounted."""
    for _ in range(3):
        points = mounts_under(directory)
        if not points:
            return []
        for point in sorted(set(points), key=len, reverse=True):
            done = subprocess.run(["umount", point], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    return mounts_under(directory)
