"""A real node's containerd once it runs, driven through `ctr` in the CRI namespace: wait
until it answers, import the sandbox (pause) image, list and remove tasks and containers.
Also the image store it is started on (`claim_image_store`): the cached root that keeps
imported images from one cluster to the next, locked by the containerd that uses it.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from videoqueue.envtest.realnode.layout import RealNodeError, RealNodeLayout

K8S_NAMESPACE = "k8s.io"  # containerd's namespace for CRI (kubelet) containers and images


def sandbox_image_tag(archive: Path) -> str:
    """The tag of the pause image archive made by hack/build-toolchain.sh."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    return str(manifest[0]["RepoTags"][0])


@dataclass(frozen=True)
class ImageStore:
    """containerd's root (content, snapshots, metadata) for one node.

    The cached one ($VIDEOQUEUE_CACHE/containerd/root) keeps imported images from one
    cluster to the next, so a warm start imports nothing; `lock_fd` holds an exclusive
    flock on it and is handed to containerd, so the lock lives exactly as long as that
    containerd. A second node or cluster while it is taken gets a private root under its
    state dir (and imports again)."""

    root: Path
    lock_fd: int | None

    def release(self) -> None:
        """Close this process's copy of the lock (containerd keeps its own)."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)


def claim_image_store(layout: RealNodeLayout, cache: Path) -> ImageStore:
    directory = cache / "containerd"
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "root.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return ImageStore(layout.directory / "containerd" / "root", None)
    return ImageStore(directory / "root", fd)


class Ctr:
    """`ctr` against one containerd, in the CRI namespace."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.socket), "--namespace", K8S_NAMESPACE, *args]

    def run(
        self, *args: str, stdin: IO[bytes] | None = None, check: bool = True, timeout: float = 60
    ) -> str:
        done = subprocess.run(
            self.argv(*args), stdin=stdin, capture_output=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise RealNodeError(f"ctr {' '.join(args)}: {done.stderr.decode().strip()}")
        return done.stdout.decode()

    def answers(self) -> bool:
        try:
            self.run("version", timeout=5)
        except (RealNodeError, subprocess.TimeoutExpired):
            return False
        return True

    def images(self) -> set[str]:
        return set(self.run("images", "list", "--quiet").split())

    def import_archive(self, archive: Path) -> None:
        with archive.open("rb") as f:
            self.run("images", "import", "-", stdin=f, timeout=600)

    def tasks(self) -> dict[str, str]:
        """Container id -> task status (RUNNING, STOPPED, ...)."""
        rows = self.run("tasks", "list").splitlines()[1:]
        return {r.split()[0]: r.split()[2] for r in rows if len(r.split()) >= 3}

    def containers(self) -> list[str]:
        return self.run("containers", "list", "--quiet").split()


def remove_all_containers(ctr: Ctr, *, timeout: float = 30) -> None:
    """Kill every task, delete tasks and containers (with their snapshots)."""
    for cid in ctr.tasks():
        ctr.run("tasks", "kill", "--signal", "SIGKILL", cid, check=False)
    deadline = time.monotonic() + timeout
    while any(s != "STOPPED" for s in ctr.tasks().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for cid in ctr.tasks():
        ctr.run("tasks", "delete", "--force", cid, check=False)
    for cid in ctr.containers():
        ctr.run("containers", "delete", cid, check=False)


def wait_for_containerd(layout: RealNodeLayout, alive: Callable[[], bool], timeout: float) -> Ctr:
    ctr = Ctr(layout.containerd_socket)
    deadline = time.monotonic() + timeout
    while not ctr.answers():
        if not alive():
            raise RealNodeError(f"containerd of {layout.name} exited during startup")
        if time.monotonic() > deadline:
            raise RealNodeError(f"containerd of {layout.name} did not answer in {timeout:.0f}s")
        time.sleep(0.1)
    return ctr
