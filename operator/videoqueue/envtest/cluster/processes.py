"""Process supervision for LocalCluster: every component (etcd, the API server, the
controllers, KWOK, containerd, kubelets, kube-proxy, the API relay) is a `_Component`, a
process started by `_launch` in a session of its own with its log under <state dir>/logs,
killed with this process when the cluster is attached (PR_SET_PDEATHSIG), recorded in
state.json so a detached cluster can be found again, and stopped by `_terminate` (SIGTERM,
then SIGKILL after a grace period). `SupervisorMixin` holds the cluster's side of this
(launch, wait until healthy or listening, terminate by name, save state, log tails).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from videoqueue.envtest.cluster.base import ClusterConfig, ClusterError
from videoqueue.envtest.pki import ClusterPKI
from videoqueue.envtest.wait import poll

_STATE_FILE = "state.json"
_PR_SET_PDEATHSIG = 1


@dataclass
class _Component:
    name: str
    argv: list[str]
    pid: int | None = None
    popen: subprocess.Popen[bytes] | None = None


class SupervisorMixin:
    """LocalCluster's processes: launch them, wait for them, stop them, record them."""

    # Set by LocalCluster (__init__ and start).
    state_dir: Path
    attached: bool
    config: ClusterConfig
    components: list[_Component]
    ports: dict[str, int]
    startup_seconds: dict[str, float]
    real_node_names: list[str]
    server: str
    _pki: ClusterPKI

    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self.components if c.pid is not None}

    def is_running(self) -> bool:
        return bool(self.components) and all(_alive(c) for c in self.components)

    def _terminate_named(self, name: str) -> None:
        for component in [c for c in self.components if c.name == name]:
            _terminate(component)
            self.components.remove(component)

    def run_beside(self, name: str, argv: list[str], health_url: str) -> int:
        """Run another server beside the control plane (a benchmark's peer such as Kueue),
        supervised like a component: its log under <state dir>/logs, killed with this process
        when attached, stopped with the cluster or by `stop_beside`. Returns its pid once
        `health_url` answers 200."""
        self._launch(name, argv)
        self._save_state()
        self._wait_healthy(name, health_url, time.monotonic())
        pid = self.pids()[name]
        return pid

    def stop_beside(self, name: str) -> None:
        self._terminate_named(name)
        self._save_state()

    def _launch(self, name: str, argv: list[str], *, pass_fds: Sequence[int] = ()) -> None:
        log = (self.state_dir / "logs" / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
            # Own session: a Ctrl-C in the terminal reaches us, and we stop them in order.
            start_new_session=True,
            preexec_fn=_die_with_parent if self.attached else None,
        )
        log.close()
        self.components.append(_Component(name, argv, pid=popen.pid, popen=popen))

    def _wait_healthy(
        self, name: str, url: str, begin: float, *, client_cert: bool = False
    ) -> None:
        component = next(c for c in self.components if c.name == name)
        context = ssl.create_default_context(cafile=str(self._pki.ca.cert))
        if client_cert:
            admin = self._pki.ca.cert.parent
            context.load_cert_chain(admin / "admin.crt", admin / "admin.key")
        else:
            # The controllers serve a self-signed certificate of their own; this probe
            # only asks whether they are up.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE

        def healthy() -> bool:
            if not _alive(component):
                raise ClusterError(f"{name} exited during startup:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
                return False

        try:
            poll(
                healthy, timeout=self.config.startup_timeout, what=f"{name} at {url}", interval=0.1
            )
        except AssertionError as e:
            raise ClusterError(f"{e}\n{self.log_tail(name)}") from None
        self.startup_seconds[name] = time.monotonic() - begin

    def _wait_listening(self, name: str, host: str, port: int) -> None:
        component = next(c for c in self.components if c.name == name)

        def listening() -> bool:
            if not _alive(component):
                raise ClusterError(f"{name} exited during startup:\n{self.log_tail(name)}")
            with socket.socket() as s:
                return s.connect_ex((host, port)) == 0

        poll(listening, timeout=self.config.startup_timeout, what=f"{name} on {host}:{port}")

    def _save_state(self) -> None:
        state = {
            "server": self.server,
            "ports": self.ports,
            "components": [[c.name, c.argv, c.pid] for c in self.components],
            "real_nodes": self.real_node_names,
        }
        (self.state_dir / _STATE_FILE).write_text(json.dumps(state, indent=2))

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.state_dir / "logs" / f"{name}.log"
        if not path.exists():
            return f"(no log for {name})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all sockets are held open until every port is chosen."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _alive(component: _Component) -> bool:
    if component.popen is not None:
        return component.popen.poll() is None
    if component.pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{component.pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{component.pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # A recycled pid runs something else; a zombie has already exited.
    return cmdline.split(b"\0", 1)[0].decode() == component.argv[0] and ") Z " not in stat


def _terminate(component: _Component, grace: float = 15) -> None:
    if component.pid is None or not _alive(component):
        if component.popen is not None:
            component.popen.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(component.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(component) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(component):
        print(
            f"envtest: {component.name} ignored SIGTERM for {grace}s, killing it", file=sys.stderr
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(component.pid, signal.SIGKILL)
    if component.popen is not None:
        component.popen.wait()
    else:
        while _alive(component):
            time.sleep(0.05)
