"""A real Kubernetes control plane on loopback, for tests and `make dev`: `LocalCluster`.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local processes
with TLS and RBAC, the way a kubeadm cluster configures them, and KWOK plays the nodes and
the kubelet. Nothing is mocked: clients talk to the real API server.

Two ways to hold one:
- attached (tests): `with LocalCluster() as cluster: ...` — the processes die with this
  process even if it is SIGKILLed (PR_SET_PDEATHSIG), and the state directory is removed;
- detached (`make cluster-up`): the processes outlive the command; `LocalCluster.attach(dir)`
  finds them again to stop them.

This module holds the lifecycle (start in order, stop, attach) and the control plane's
command lines; process supervision is in processes.py, real nodes and kube-proxy in
real_nodes.py, the client side shared with kind in base.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from videoqueue.envtest import realnode
from videoqueue.envtest.binaries import Binaries, find_binaries
from videoqueue.envtest.cluster import audit
from videoqueue.envtest.cluster.base import (
    SERVICE_CIDR,
    ClusterBase,
    ClusterConfig,
    ClusterError,
    kwok_argv,
)
from videoqueue.envtest.cluster.processes import (
    _STATE_FILE,
    _Component,
    _free_ports,
    _terminate,
)
from videoqueue.envtest.cluster.real_nodes import RealNodesMixin
from videoqueue.envtest.pki import ClusterPKI, create_pki, kubeconfig_document
from videoqueue.envtest.wait import poll


class LocalCluster(RealNodesMixin, ClusterBase):
    def __init__(
        self,
        state_dir: Path | None = None,
        cluster_config: ClusterConfig | None = None,
        *,
        binaries: Binaries | None = None,
        attached: bool = True,
        real_nodes: int | None = None,
    ) -> None:
        """`real_nodes=N` is short for `ClusterConfig(real_nodes=realnode.real_nodes(N))`."""
        self._owns_state_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="videoqueue-envtest-"))
        self.config = cluster_config or ClusterConfig()
        if real_nodes is not None:
            self.config = dataclasses.replace(
                self.config, real_nodes=realnode.real_nodes(real_nodes)
            )
        super().__init__(
            self.state_dir / "kubeconfig",
            binaries or find_binaries(real_nodes=bool(self.config.real_nodes)),
        )
        self.real_node_names: list[str] = [n.name for n in self.config.real_nodes]
        self.attached = attached
        self.components: list[_Component] = []
        self.ports: dict[str, int] = {}
        self.startup_seconds: dict[str, float] = {}

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        begin = time.monotonic()
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.ports = dict(
            zip(
                ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok"),
                _free_ports(6),
                strict=True,
            )
        )
        pki = create_pki(self.state_dir / "pki")
        self._pki = pki
        server = f"https://127.0.0.1:{self.ports['apiserver']}"
        self.server = server
        kubeconfigs = {
            name: self._write_kubeconfig(pki, name, cn, org)
            for name, cn, org in (
                ("admin", "videoqueue-admin", "system:masters"),
                ("controller-manager", "system:kube-controller-manager", None),
                ("scheduler", "system:kube-scheduler", None),
                ("kwok", "kwok", "system:masters"),
            )
        }
        shutil.copyfile(kubeconfigs["admin"], self.kubeconfig)

        self._launch("etcd", self._etcd_argv())
        self._wait_healthy("etcd", f"http://127.0.0.1:{self.ports['etcd']}/health", begin)
        self._launch("kube-apiserver", self._apiserver_argv(pki))
        self._wait_healthy("kube-apiserver", f"{server}/readyz", begin, client_cert=True)
        self._launch(
            "kube-controller-manager",
            self._controller_manager_argv(pki, kubeconfigs["controller-manager"]),
        )
        self._launch("kube-scheduler", self._scheduler_argv(kubeconfigs["scheduler"]))
        self._launch("kwok", self._kwok_argv(kubeconfigs["kwok"]))
        self._save_state()
        self._wait_healthy(
            "kube-controller-manager",
            f"https://127.0.0.1:{self.ports['controller-manager']}/healthz",
            begin,
        )
        self._wait_healthy(
            "kube-scheduler", f"https://127.0.0.1:{self.ports['scheduler']}/healthz", begin
        )
        self._wait_healthy("kwok", f"http://127.0.0.1:{self.ports['kwok']}/healthz", begin)
        self._wait_for_default_service_account()
        self.startup_seconds["controllers"] = time.monotonic() - begin
        if self.config.nodes:
            self.create_nodes(self.config.nodes)
        if self.config.real_nodes:
            self._start_real_nodes(pki)
            self.startup_seconds["real nodes"] = time.monotonic() - begin
        self.startup_seconds["total"] = time.monotonic() - begin

    def stop(self) -> None:
        """Stop real nodes (kubelet, their containers, containerd, mounts, bridge, cgroups),
        terminate every other component (newest first), remove kube-proxy's rules, then
        remove an owned state directory.

        Raises ClusterError, after stopping everything else, if a real node left something
        behind on the host."""
        problems: list[str] = []
        service_proxy = self.has_service_proxy
        for name in self.real_node_names:
            problems += self._stop_real_node(name)
        for component in reversed(self.components):
            _terminate(component)
        self.components.clear()
        if service_proxy:
            problems += realnode.cleanup_service_proxy(self.binaries["kube-proxy"])
        state = self.state_dir / _STATE_FILE
        state.unlink(missing_ok=True)
        if self._owns_state_dir and not problems:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if problems:
            raise ClusterError("real nodes left behind:\n" + "\n".join(problems))

    # -- faults (the chaos benchmark) --------------------------------------------------------

    def restart_apiserver(self, *, down_seconds: float = 0.0, kill: bool = True) -> float:
        """Stop kube-apiserver (SIGKILL, or SIGTERM with `kill=False`), wait `down_seconds`,
        start it again with the same command line (ports, certificates, etcd) and wait until
        /readyz answers. Returns when it was ready again (time.time())."""
        return self._restart(
            "kube-apiserver", f"{self.server}/readyz", down_seconds, kill, client_cert=True
        )

    def restart_etcd(self, *, down_seconds: float = 0.0, kill: bool = True) -> float:
        """The same for etcd, on its data directory: everything stored survives. Returns when
        etcd answered /health again; the API server reconnects by itself (its /readyz fails
        meanwhile)."""
        return self._restart(
            "etcd", f"http://127.0.0.1:{self.ports['etcd']}/health", down_seconds, kill
        )

    def _restart(
        self, name: str, url: str, down_seconds: float, kill: bool, *, client_cert: bool = False
    ) -> float:
        index, old = next((i, c) for i, c in enumerate(self.components) if c.name == name)
        if kill and old.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(old.pid, signal.SIGKILL)
        _terminate(old)  # SIGTERM if still alive; reaps the process either way
        time.sleep(down_seconds)
        self.components.remove(old)
        self._launch(name, old.argv)
        # Back in its place, so stop() still stops the components in reverse start order.
        self.components.insert(index, self.components.pop())
        self._save_state()
        startup = self.startup_seconds.get(name)
        self._wait_healthy(name, url, time.monotonic(), client_cert=client_cert)
        if startup is not None:  # keep the figure of the cluster's own start
            self.startup_seconds[name] = startup
        return time.time()

    @classmethod
    def attach(cls, state_dir: Path) -> LocalCluster:
        """The detached cluster recorded in `state_dir`, to inspect or stop it."""
        state = json.loads((state_dir / _STATE_FILE).read_text())
        cluster = cls(state_dir, attached=False)
        cluster.ports = state["ports"]
        cluster.server = state["server"]
        cluster.components = [
            _Component(name, argv, pid=pid) for name, argv, pid in state["components"]
        ]
        cluster.real_node_names = list(state.get("real_nodes", []))
        return cluster

    # -- component command lines ----------------------------------------------------------

    def _etcd_argv(self) -> list[str]:
        client_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        argv = [
            str(self.binaries["etcd"]),
            "--name=envtest",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=envtest={peer_url}",
            "--log-level=warn",
        ]
        if not self.config.etcd_fsync:
            argv.append("--unsafe-no-fsync")
        return argv

    def _apiserver_argv(self, pki: ClusterPKI) -> list[str]:
        kubelet_client = pki.client(
            self.state_dir / "pki",
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            "system:masters",
        )
        return [
            str(self.binaries["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--cert-dir={self.state_dir / 'apiserver'}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            "--authorization-mode=Node,RBAC",
            # The `kubernetes` Service's endpoint is written by envtest (a relay on a real
            # node's bridge): the reconciler would write 127.0.0.1, which the API refuses.
            "--endpoint-reconciler-type=none",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # Logs and exec on real nodes: kubelets authenticate the API server by this
            # certificate and are reached at their InternalIP (their pod bridge's address).
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
            "--v=1",
            *(audit.apiserver_args(self.state_dir) if self.config.audit_log else ()),
        ]

    def _controller_manager_argv(self, pki: ClusterPKI, kubeconfig: Path) -> list[str]:
        return [
            str(self.binaries["kube-controller-manager"]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['controller-manager']}",
            f"--cert-dir={self.state_dir / 'controller-manager'}",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            # Each controller acts as its own ServiceAccount, as on kubeadm clusters, so
            # RBAC is exercised for the built-in controllers too.
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--kube-api-qps={self.config.controller_manager_qps}",
            f"--kube-api-burst={self.config.controller_manager_burst}",
            f"--terminated-pod-gc-threshold={self.config.terminated_pod_gc_threshold}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]

    def _scheduler_argv(self, kubeconfig: Path) -> list[str]:
        return [
            str(self.binaries["kube-scheduler"]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['scheduler']}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]

    def _kwok_argv(self, kubeconfig: Path) -> list[str]:
        return kwok_argv(self.binaries, kubeconfig, self.ports["kwok"])

    # -- helpers -----------------------------------------------------------------------------

    def _write_kubeconfig(self, pki: ClusterPKI, name: str, user: str, group: str | None) -> Path:
        cert = pki.client(self.state_dir / "pki", name, user, group)
        path = self.state_dir / f"{name}.kubeconfig"
        path.write_text(
            yaml.safe_dump(
                kubeconfig_document(self.server, pki.ca.cert, cert.cert, cert.key, user=name)
            )
        )
        return path

    def _wait_for_default_service_account(self) -> None:
        with self.api_client() as api:
            core = client.CoreV1Api(api)

            def present() -> bool:
                try:
                    core.read_namespaced_service_account("default", "default")
                except ApiException as e:
                    if e.status in (404, 403):
                        return False
                    raise
                return True

            poll(present, timeout=self.config.startup_timeout, what="the default ServiceAccount")
