"""The files and command lines a real node's processes get: containerd's config, the CNI
bridge plugin's conflist, the kubelet's KubeletConfiguration and command line, containerd's
command line. Pure functions of the node's layout and spec (unit-tested in
tests/unit/test_envtest_realnode.py); the settings this machine kind needs, and why, are in
the package docstring and docs/real-nodes.md.
"""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path
from typing import Any

from videoqueue.envtest.realnode.layout import (
    REAL_NODE_LABEL,
    REAL_NODE_LABEL_VALUE,
    REAL_NODE_TAINT,
    RealNodeError,
    RealNodeLayout,
    RealNodeSpec,
)

CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins


def containerd_config(layout: RealNodeLayout, sandbox_image: str, root: Path) -> str:
    """containerd's config (version 2): own root (see `claim_image_store`), state and socket;
    the CRI plugin with the node's CNI config dir and the locally built sandbox image."""
    d = layout.directory
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    return f"""version = 2
root = "{root}"
state = "{d / "containerd" / "state"}"
oom_score = 0

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d / "containerd" / "opt"}"

  {cri}
    sandbox_image = "{sandbox_image}"
    # Root may not lower its OOM score adjustment on this machine kind; without this every
    # sandbox fails with "can't get final child's PID from pipe: EOF".
    restrict_oom_score_adj = true
    # Network namespaces under the node's state dir, not /var/run/netns: stop() finds them.
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true

    {cri[:-1]}.containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"

      {cri[:-1]}.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        {cri[:-1]}.containerd.runtimes.runc.options]
          SystemdCgroup = false

    {cri[:-1]}.cni]
      bin_dir = "{CNI_BIN_DIR}"
      conf_dir = "{layout.cni_conf_dir}"
      max_conf_num = 1
"""


def cni_conflist(
    layout: RealNodeLayout, subnet: ipaddress.IPv4Network, service_cidr: str
) -> dict[str, Any]:
    """A bridge with the subnet's first address as the host's side; no masquerading and one
    route beyond the subnet, to the Services' ClusterIPs through the gateway, where
    kube-proxy's rules turn them into endpoints. `forward_guard` drops anything else."""
    return {
        "cniVersion": "0.4.0",
        "name": f"videoqueue-{layout.key}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.bridge,
                "isGateway": True,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(subnet)}]],
                    "routes": [{"dst": service_cidr}],
                    "dataDir": str(layout.directory / "cni" / "ipam"),
                },
            }
        ],
    }


def kubelet_config(
    layout: RealNodeLayout,
    spec: RealNodeSpec,
    *,
    node_ip: str,
    ca_cert: Path,
    port: int,
    healthz_port: int,
) -> dict[str, Any]:
    d = layout.directory
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # Served on the pod bridge's host address only (see `create_bridge`).
        "address": node_ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "cgroupDriver": "cgroupfs",  # the machine runs cgroup v1 without systemd
        "cgroupRoot": layout.cgroup_root,
        "failSwapOn": False,
        # The kubelet cannot read the VM disk's filesystem stats: relaxed thresholds keep
        # it from reporting disk pressure and evicting.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        # Images are imported, never pulled: garbage-collecting one would strand its pods.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "makeIPTablesUtilChains": False,
        "registerNode": True,
        "registerWithTaints": [{"key": REAL_NODE_TAINT, "value": "true", "effect": "NoSchedule"}],
        "maxPods": spec.max_pods,
        "podLogsDir": str(d / "pod-logs"),
        "volumePluginDir": str(d / "volume-plugins"),
        "staticPodPath": "",
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        # Quick status while tests wait on pods.
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "60s",
    }


def kubelet_argv(
    binary: Path, layout: RealNodeLayout, spec: RealNodeSpec, *, node_ip: str
) -> list[str]:
    labels = {REAL_NODE_LABEL: REAL_NODE_LABEL_VALUE, "type": "real", **spec.labels}
    d = layout.directory
    return [
        str(binary),
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={layout.kubelet_kubeconfig}",
        f"--hostname-override={spec.name}",
        # The API server reaches the kubelet (logs, exec) at the node's InternalIP; the
        # kubelet refuses a loopback one ("nodeIP can't be loopback address"), so it is the
        # pod bridge's host address, which never leaves the machine.
        f"--node-ip={node_ip}",
        f"--node-labels={','.join(f'{k}={v}' for k, v in sorted(labels.items()))}",
        f"--root-dir={d / 'kubelet'}",
        f"--cert-dir={d / 'kubelet-pki'}",
        "--v=2",
    ]


def containerd_argv(layout: RealNodeLayout) -> list[str]:
    binary = shutil.which("containerd")
    if binary is None:
        raise RealNodeError("containerd is not installed: run `make system-packages`")
    return [binary, f"--config={layout.containerd_config}"]
