"""LocalCluster's real nodes (`ClusterConfig.real_nodes`, needs root): for each node, a
client certificate, the host side prepared by videoqueue.envtest.realnode, its containerd and
kubelet launched as cluster components, and the wait until the node is Ready; then one
kube-proxy for all of them with the relay and EndpointSlice that let pods reach the API
server as the `kubernetes` Service. Also stopping a real node, restarting its kubelet, and
`ctr` against its containerd. What a node is on the host lives in the realnode package; this
module is the cluster's side of it.
"""

from __future__ import annotations

import functools
import os
import sys
import time

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from videoqueue.envtest import realnode
from videoqueue.envtest.binaries import default_cache_dir
from videoqueue.envtest.cluster.base import SERVICE_CIDR, ClusterBase, ClusterError, _ready
from videoqueue.envtest.cluster.processes import SupervisorMixin, _alive, _free_ports
from videoqueue.envtest.pki import ClusterPKI, kubeconfig_document
from videoqueue.envtest.realnode import RealNodeLayout
from videoqueue.envtest.wait import poll

# What a kubelet logs when it met containerd's CRI service before it had initialized.
CRI_NOT_READY = "server is not initialized yet"
KUBELET_STARTS = 30


class RealNodesMixin(SupervisorMixin, ClusterBase):
    """LocalCluster's real nodes and the kube-proxy that serves their pods."""

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
        starts = 1
        with self.api_client() as api:
            core = client.CoreV1Api(api)

            def ready() -> bool:
                nonlocal kubelet, starts
                if not _alive(kubelet):
                    # containerd answers `ctr` before its CRI service has initialized (slow
                    # on a loaded machine), and a kubelet that meets that gives up at once:
                    # start it again, a bounded number of times.
                    last = self.log_tail(kubelet.name, 3)
                    if CRI_NOT_READY in last and starts < KUBELET_STARTS:
                        self._terminate_named(kubelet.name)
                        self._launch(kubelet.name, kubelet.argv)
                        self._save_state()
                        kubelet = self.components[-1]
                        starts += 1
                        return False
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

    def containerd(self, node: str) -> realnode.Ctr:
        """`ctr` against the containerd of a real node (CRI namespace)."""
        return realnode.Ctr(self.real_node_layout(node).containerd_socket)
