"""A real Kubernetes control plane on loopback, for tests and `make dev`.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local processes
with TLS and RBAC, the way a kubeadm cluster configures them, and KWOK plays the nodes and
the kubelet. Nothing is mocked: clients talk to the real API server.

Two ways to hold one:
- attached (tests): `with LocalCluster() as cluster: ...` — the processes die with this
  process even if it is SIGKILLed (PR_SET_PDEATHSIG), and the state directory is removed;
- detached (`make cluster-up`): the processes outlive the command; `LocalCluster.attach(dir)`
  finds them again to stop them.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from videoqueue.envtest import realnode
from videoqueue.envtest.binaries import Binaries, default_cache_dir, find_binaries
from videoqueue.envtest.kwok import NODE_SELECTOR, NodeSpec, build_node_manifest, stages_file
from videoqueue.envtest.pki import ClusterPKI, create_pki
from videoqueue.envtest.realnode import RealNodeLayout, RealNodeSpec
from videoqueue.envtest.wait import poll

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
_STATE_FILE = "state.json"
_PR_SET_PDEATHSIG = 1


def default_nodes(count: int = 4, *, cpu: str = "16", memory: str = "64Gi") -> list[NodeSpec]:
    return [NodeSpec(f"kwok-node-{i}", cpu=cpu, memory=memory) for i in range(count)]


@dataclass(frozen=True)
class ClusterConfig:
    nodes: Sequence[NodeSpec] = field(default_factory=default_nodes)
    # fsync costs more than everything else on a loaded CI disk; the data is thrown away.
    etcd_fsync: bool = False
    startup_timeout: float = 120.0
    # Client-side rate limits of kube-controller-manager (the upstream defaults are 20/30).
    controller_manager_qps: int = 20
    controller_manager_burst: int = 30
    # Finished pods kube-controller-manager keeps before deleting the oldest (upstream
    # default 12500); a benchmark that leaves more behind raises it so no deletions run
    # under its measurements.
    terminated_pod_gc_threshold: int = 12500
    # Real nodes (kubelet + containerd, see realnode.py) beside the KWOK ones; needs root.
    real_nodes: Sequence[RealNodeSpec] = ()


@dataclass
class _Component:
    name: str
    argv: list[str]
    pid: int | None = None
    popen: subprocess.Popen[bytes] | None = None


class ClusterError(RuntimeError):
    pass


class ClusterBase:
    """What every cluster flavour offers tests: kubeconfig, kubectl, clients, nodes."""

    def __init__(self, kubeconfig: Path, binaries: Binaries) -> None:
        self.kubeconfig = kubeconfig
        self.binaries = binaries

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built with the control plane; raise with its stderr on failure."""
        result = subprocess.run(
            [str(self.binaries["kubectl"]), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def api_client(self) -> Any:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def create_nodes(self, specs: Iterable[NodeSpec], *, timeout: float = 60) -> None:
        """Create fake nodes and wait until they are Ready and untainted."""
        specs = list(specs)
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            for spec in specs:
                try:
                    core.create_node(build_node_manifest(spec))
                except ApiException as e:
                    if e.status != 409:
                        raise
            names = {s.name for s in specs}

            def not_ready() -> set[str] | None:
                ready = {n.metadata.name for n in core.list_node().items if _ready(n)}
                return names if names <= ready else None

            poll(not_ready, timeout=timeout, what=f"nodes {sorted(names)} to become Ready")

    def delete_nodes(self, names: Iterable[str]) -> None:
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            for name in names:
                with contextlib.suppress(ApiException):
                    core.delete_node(name)

    def create_namespace(self, name: str, *, labels: dict[str, str] | None = None) -> None:
        """Create a namespace and wait for its default ServiceAccount, without which the
        ServiceAccount admission plugin rejects pods."""
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})

            def default_sa() -> bool:
                try:
                    core.read_namespaced_service_account("default", name)
                except ApiException as e:
                    if e.status == 404:
                        return False
                    raise
                return True

            poll(default_sa, timeout=30, what=f"the default ServiceAccount in {name}")

    def delete_namespace(self, name: str) -> None:
        with self.api_client() as api, contextlib.suppress(ApiException):
            client.CoreV1Api(api).delete_namespace(name)


class LocalCluster(ClusterBase):
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

    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self.components if c.pid is not None}

    def is_running(self) -> bool:
        return bool(self.components) and all(_alive(c) for c in self.components)

    # -- real nodes ------------------------------------------------------------------------

    def real_node_layout(self, name: str) -> RealNodeLayout:
        return RealNodeLayout.of(self.state_dir, name)

    def _start_real_nodes(self, pki: ClusterPKI) -> None:
        if not realnode.is_root():
            raise ClusterError("real nodes need root (kubelet, containerd, mounts, cgroups)")
        sandbox = self.binaries["pause.tar"]
        if left := realnode.sweep_stale_nodes():
            print(f"envtest: stale real nodes left behind: {left}", file=sys.stderr)
        for spec in self.config.real_nodes:
            layout = self.real_node_layout(spec.name)
            cert = pki.client(
                self.state_dir / "pki",
                f"kubelet-{spec.name}",
                f"system:node:{spec.name}",
                "system:nodes",
            )
            port, healthz = _free_ports(2)
            self.ports[f"kubelet-{spec.name}"] = port
            node_lock = realnode.claim_node(layout)
            store = realnode.claim_image_store(layout, default_cache_dir())
            try:
                node_ip = realnode.prepare(
                    layout,
                    spec,
                    sandbox_archive=sandbox,
                    ca_cert=pki.ca.cert,
                    kubeconfig=kubeconfig_document(
                        self.server, pki.ca.cert, cert.cert, cert.key, user=f"kubelet-{spec.name}"
                    ),
                    ports=(port, healthz),
                    image_root=store.root,
                    service_cidr=SERVICE_CIDR,
                )
                # containerd holds both locks for as long as it runs.
                locks = (node_lock,) if store.lock_fd is None else (node_lock, store.lock_fd)
                self._launch(
                    f"containerd-{spec.name}", realnode.containerd_argv(layout), pass_fds=locks
                )
            finally:
                store.release()
                os.close(node_lock)
            self._save_state()
            component = self.components[-1]
            try:
                ctr = realnode.wait_for_containerd(
                    layout, functools.partial(_alive, component), self.config.startup_timeout
                )
                # A cached image store may hold containers of a cluster that was killed.
                realnode.remove_all_containers(ctr)
                if realnode.sandbox_image_tag(sandbox) not in ctr.images():
                    ctr.import_archive(sandbox)
            except realnode.RealNodeError as e:
                raise ClusterError(f"{e}\n{self.log_tail(component.name)}") from None
            self._launch(
                f"kubelet-{spec.name}",
                realnode.kubelet_argv(self.binaries["kubelet"], layout, spec, node_ip=node_ip),
            )
            self._save_state()
        for spec in self.config.real_nodes:
            self._wait_real_node_ready(spec.name)
        self._start_service_proxy(pki)

    def _start_service_proxy(self, pki: ClusterPKI) -> None:
        """kube-proxy for the real nodes' pods, and the `kubernetes` Service's endpoint.

        All real nodes share the host's network namespace, so one kube-proxy (named after the
        first real node) serves them all, as one would per machine. The API server listens on
        127.0.0.1 only and the API refuses a loopback endpoint: the endpoint is a relay on the
        first real node's bridge address (envtest/forward.py). Without the machine's
        kube-proxy lock (another cluster's kube-proxy runs) pods reach no Service."""
        lock = realnode.claim_service_proxy()
        if lock is None:
            print(
                "envtest: another cluster's kube-proxy runs on this machine: pods of this one "
                "reach no Service",
                file=sys.stderr,
            )
            return
        try:
            binary = self.binaries["kube-proxy"]
            # Rules of a kube-proxy killed with its cluster: only the lock holder may remove them.
            if left := realnode.cleanup_service_proxy(binary):
                raise ClusterError(f"stale kube-proxy rules could not be removed: {left}")
            first = self.config.real_nodes[0].name
            node_ips = [self._node_ip(spec.name) for spec in self.config.real_nodes]
            api_port = self.ports["apiserver"]
            self._launch(
                "apiserver-relay",
                [
                    sys.executable,
                    "-m",
                    "videoqueue.envtest.forward",
                    f"{node_ips[0]}:{api_port}",
                    f"127.0.0.1:{api_port}",
                ],
            )
            self._save_state()
            self._wait_listening("apiserver-relay", node_ips[0], api_port)
            self._write_kubernetes_endpoints(node_ips[0], api_port)
            cert = pki.client(self.state_dir / "pki", "kube-proxy", "system:kube-proxy", None)
            kubeconfig = self.state_dir / "kube-proxy.kubeconfig"
            kubeconfig.write_text(
                yaml.safe_dump(
                    kubeconfig_document(
                        self.server, pki.ca.cert, cert.cert, cert.key, user="kube-proxy"
                    )
                )
            )
            healthz, metrics = _free_ports(2)
            self.ports["kube-proxy"] = healthz
            config_file = self.state_dir / "kube-proxy.yaml"
            config_file.write_text(
                yaml.safe_dump(
                    realnode.kube_proxy_config(
                        kubeconfig=kubeconfig,
                        hostname=first,
                        pod_cidr=str(realnode.POD_SUBNETS),
                        node_ips=node_ips,
                        healthz_port=healthz,
                        metrics_port=metrics,
                    )
                )
            )
            # kube-proxy holds the lock for as long as it runs.
            self._launch(
                "kube-proxy", realnode.kube_proxy_argv(binary, config_file), pass_fds=(lock,)
            )
        finally:
            os.close(lock)
        self._save_state()
        # 200 once its first sync wrote the rules.
        self._wait_healthy("kube-proxy", f"http://127.0.0.1:{healthz}/healthz", time.monotonic())

    def _node_ip(self, name: str) -> str:
        with self.api_client() as api:
            addresses = client.CoreV1Api(api).read_node(name).status.addresses
        return next(str(a.address) for a in addresses if a.type == "InternalIP")

    def _wait_listening(self, name: str, host: str, port: int) -> None:
        component = next(c for c in self.components if c.name == name)

        def listening() -> bool:
            if not _alive(component):
                raise ClusterError(f"{name} exited during startup:\n{self.log_tail(name)}")
            with socket.socket() as s:
                return s.connect_ex((host, port)) == 0

        poll(listening, timeout=self.config.startup_timeout, what=f"{name} on {host}:{port}")

    def _write_kubernetes_endpoints(self, address: str, port: int) -> None:
        """The endpoint of the `kubernetes` Service (the API server's own reconciler is off:
        it would write 127.0.0.1, which the API refuses)."""
        body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "envtest.videoqueue.dev",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
        with self.api_client() as api:
            discovery = client.DiscoveryV1Api(api)
            try:
                discovery.create_namespaced_endpoint_slice("default", body)
            except ApiException as e:
                if e.status != 409:
                    raise
                discovery.replace_namespaced_endpoint_slice("kubernetes", "default", body)

    @property
    def has_service_proxy(self) -> bool:
        """Whether this cluster's pods reach Services (it runs the machine's kube-proxy)."""
        return any(c.name == "kube-proxy" for c in self.components)

    def _wait_real_node_ready(self, name: str) -> None:
        kubelet = next(c for c in self.components if c.name == f"kubelet-{name}")
        with self.api_client() as api:
            core = client.CoreV1Api(api)

            def ready() -> bool:
                if not _alive(kubelet):
                    raise ClusterError(
                        f"kubelet of {name} exited:\n{self.log_tail(kubelet.name, 40)}"
                    )
                try:
                    return _ready(core.read_node(name))
                except ApiException as e:
                    if e.status == 404:
                        return False
                    raise

            try:
                poll(ready, timeout=self.config.startup_timeout, what=f"real node {name} Ready")
            except AssertionError as e:
                raise ClusterError(f"{e}\n{self.log_tail(kubelet.name, 40)}") from None

    def _stop_real_node(self, name: str) -> list[str]:
        """Kubelet first (it would restart what we remove), then realnode.teardown."""
        self._terminate_named(f"kubelet-{name}")
        return realnode.teardown(
            self.real_node_layout(name),
            stop_containerd=lambda: self._terminate_named(f"containerd-{name}"),
        )

    def restart_kubelet(self, node: str) -> None:
        """Stop a real node's kubelet (SIGTERM) and start it again with the same command
        line, as a node upgrade or crash would; its pods' containers keep running in
        containerd meanwhile. Returns once the node is Ready again."""
        name = f"kubelet-{node}"
        argv = next(c.argv for c in self.components if c.name == name)
        self._terminate_named(name)
        self._launch(name, argv)
        self._save_state()
        self._wait_real_node_ready(node)

    def _terminate_named(self, name: str) -> None:
        for component in [c for c in self.components if c.name == name]:
            _terminate(component)
            self.components.remove(component)

    def containerd(self, node: str) -> realnode.Ctr:
        """`ctr` against the containerd of a real node (CRI namespace)."""
        return realnode.Ctr(self.real_node_layout(node).containerd_socket)

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


def kwok_argv(binaries: Binaries, kubeconfig: Path, port: int) -> list[str]:
    return [
        str(binaries["kwok"]),
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={NODE_SELECTOR}",
        f"--config={stages_file()}",
        f"--cidr={POD_CIDR}",
        "--node-ip=10.240.0.1",
        # Heartbeats through Lease objects, as kubelets do, instead of node status writes.
        "--node-lease-duration-seconds=40",
        f"--server-address=127.0.0.1:{port}",
    ]


def kubeconfig_document(
    server: str, ca: Path, cert: Path, key: Path, *, user: str, context: str = "videoqueue-envtest"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": context, "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
        "current-context": context,
    }


def _ready(node: Any) -> bool:
    """Ready and schedulable: the node lifecycle controller lifts its not-ready taint a
    moment after the Ready condition appears, and the scheduler honours that taint."""
    ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
    tainted = any(t.key.startswith("node.kubernetes.io/") for t in (node.spec.taints or []))
    return ready and not tainted


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
