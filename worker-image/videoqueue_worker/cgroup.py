"""The most memory this container has used so far, as the kernel counts it against the
container's limit (page cache included): cgroup v1 `memory.max_usage_in_bytes`, cgroup v2
`memory.peak`.

Where the container's memory cgroup is depends on the runtime: /proc/self/cgroup names it
relative to the hierarchy's root, but a container usually sees only its own cgroup, mounted
at the hierarchy's mount point (v1 without a cgroup namespace: the host's path is listed, yet
/sys/fs/cgroup/memory *is* the container's cgroup; v1 or v2 with a namespace: the path is `/`).
So the listed path is tried first and the mount point second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

V1_PEAK: Final = "memory.max_usage_in_bytes"
V2_PEAK: Final = "memory.peak"
CGROUP_MOUNT: Final = Path("sys/fs/cgroup")
SELF_CGROUP: Final = Path("proc/self/cgroup")


def peak_files(self_cgroup: str, mount: Path) -> list[Path]:
    """Where the peak may be, best first, from the text of /proc/self/cgroup and the cgroup
    mount point (/sys/fs/cgroup)."""
    v1: list[Path] = []
    v2: list[Path] = []
    for line in self_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        # A cgroup outside the reader's namespace is listed as /../..; it cannot be reached
        # from inside, so only the mount point is left.
        parts = [p for p in path.split("/") if p]
        listed = None if ".." in parts else Path(*parts) if parts else Path()
        if "memory" in controllers.split(","):
            base, found = mount / "memory", v1
            name = V1_PEAK
        elif hierarchy == "0" and not controllers:
            base, found = mount, v2
            name = V2_PEAK
        else:
            continue
        if listed is not None:
            found.append(base / listed / name)
        found.append(base / name)
    # A hybrid host lists both; its memory controller is the v1 one.
    return list(dict.fromkeys(v1 + v2))


def _read_bytes(path: Path) -> int | None:
    try:
        value = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return value if value > 0 else None


def peak_memory_bytes(root: Path = Path("/")) -> int | None:
    """This process's container's peak memory in bytes, or None when no cgroup file says
    (not in a memory cgroup, not mounted, unreadable). `root` is where / is (tests give a
    fake tree)."""
    try:
        self_cgroup = (root / SELF_CGROUP).read_text()
    except OSError:
        return None
    for path in peak_files(self_cgroup, root / CGROUP_MOUNT):
        if (value := _read_bytes(path)) is not None:
            return value
    return None
