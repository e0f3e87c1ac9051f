"""A Docker engine to build the project's images with, never pulling.

Uses the engine DOCKER_HOST (or the default socket) points at; when none answers, starts a
private dockerd whose data root is cached under $VIDEOQUEUE_CACHE/docker (so image builds are
cached across runs) with host networking only, and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from videoqueue.envtest.binaries import default_cache_dir
from videoqueue.envtest.realnode import unmount_under
from videoqueue.envtest.wait import poll


class DockerError(RuntimeError):
    pass


def docker_answers(env: dict[str, str]) -> bool:
    try:
        done = subprocess.run(["docker", "info"], env=env, capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


@contextlib.contextmanager
def docker_engine(cache: Path | None = None) -> Iterator[dict[str, str]]:
    """Environment for `docker` commands that reach a running engine."""
    env = dict(os.environ)
    for tool in ("docker", "dockerd", "debootstrap"):
        if shutil.which(tool) is None:
            raise DockerError(f"{tool} is not installed: run `make system-packages`")
    if docker_answers(env):
        yield env
        return
    cache = cache or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    # One private dockerd per cache at a time: two would share (and corrupt) the data root.
    with (cache / "docker.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run_dir = Path(tempfile.mkdtemp(prefix="vq-dockerd-"))  # short: unix socket paths
        env["DOCKER_HOST"] = f"unix://{run_dir}/docker.sock"
        log = (run_dir / "dockerd.log").open("w")
        daemon = subprocess.Popen(
            [
                "dockerd",
                f"--host={env['DOCKER_HOST']}",
                f"--data-root={cache / 'docker'}",
                f"--exec-root={run_dir / 'exec'}",
                f"--pidfile={run_dir / 'dockerd.pid'}",
                # Host networking only: no bridge, no iptables rules on the machine.
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            poll(
                lambda: daemon.poll() is not None or docker_answers(env),
                timeout=90,
                what="dockerd to answer",
                interval=0.5,
            )
            if daemon.poll() is not None:
                raise DockerError(
                    f"dockerd exited: {(run_dir / 'dockerd.log').read_text()[-2000:]}"
                )
            yield env
        finally:
            daemon.terminate()
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            log.close()
            # dockerd leaves the network namespace it bind-mounted under its exec root.
            unmount_under(run_dir)
            shutil.rmtree(run_dir, ignore_errors=True)
