"""Pure pieces of real nodes: where a node lives, and the configuration its containerd, CNI
plugins and kubelet get (the settings this machine kind needs, see docs/real-nodes.md)."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest

from videoqueue.envtest.realnode import (
    NODES_ROOT,
    POD_SUBNETS,
    REAL_NODE_LABEL,
    REAL_NODE_PLACEMENT,
    REAL_NODE_TAINT,
    RealNodeLayout,
    RealNodeSpec,
    cni_conflist,
    containerd_config,
    forward_guard,
    kube_proxy_config,
    kubelet_argv,
    kubelet_config,
    real_nodes,
)

LAYOUT = RealNodeLayout.of(Path("/tmp/some/deep/state/dir"), "real-node-0")
SUBNET = ipaddress.IPv4Network("10.245.7.0/24")


def test_layout_is_short_and_the_same_for_the_same_state_dir_and_name() -> None:
    again = RealNodeLayout.of(Path("/tmp/some/deep/state/dir"), "real-node-0")
    other = RealNodeLayout.of(Path("/tmp/some/deep/state/dir"), "real-node-1")
    assert again == LAYOUT
    assert other.key != LAYOUT.key
    assert LAYOUT.directory == NODES_ROOT / LAYOUT.key
    assert LAYOUT.link == Path("/tmp/some/deep/state/dir/nodes/real-node-0")
    # Unix sockets: containerd appends ".ttrpc", the kubelet puts some 40 characters more.
    assert len(f"{LAYOUT.containerd_socket}.ttrpc") < 80
    assert len(LAYOUT.bridge) <= 15  # interface names
    assert RealNodeLayout.found(LAYOUT.directory).key == LAYOUT.key


def test_containerd_config_has_what_this_machine_needs() -> None:
    config = tomllib.loads(
        containerd_config(LAYOUT, "videoqueue.dev/pause:v1", Path("/cache/containerd/root"))
    )
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == "videoqueue.dev/pause:v1"
    assert cri["stream_server_port"] == "0"
    assert cri["cni"]["conf_dir"] == str(LAYOUT.cni_conf_dir)
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert config["root"] == "/cache/containerd/root"
    assert config["state"].startswith(str(LAYOUT.directory))
    assert config["grpc"]["address"] == str(LAYOUT.containerd_socket)


def test_pod_network_stays_on_the_bridge() -> None:
    (bridge,) = cni_conflist(LAYOUT, SUBNET, "10.96.0.0/16")["plugins"]
    assert (bridge["type"], bridge["bridge"]) == ("bridge", LAYOUT.bridge)
    assert bridge["ipMasq"] is False
    assert bridge["isDefaultGateway"] is False
    # One route beyond the subnet: ClusterIPs, through the gateway (kube-proxy's rules).
    assert bridge["ipam"]["routes"] == [{"dst": "10.96.0.0/16"}]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.245.7.0/24"}]]
    assert bridge["ipam"]["dataDir"].startswith(str(LAYOUT.directory))
    assert SUBNET.subnet_of(POD_SUBNETS)


def test_kubelet_config_and_flags() -> None:
    spec = RealNodeSpec("real-node-0", labels={"pool": "video"})
    config = kubelet_config(
        LAYOUT, spec, node_ip="10.245.7.1", ca_cert=Path("/ca.crt"), port=1234, healthz_port=5678
    )
    assert config["address"] == "10.245.7.1"
    assert (config["port"], config["healthzPort"], config["readOnlyPort"]) == (1234, 5678, 0)
    assert config["healthzBindAddress"] == "127.0.0.1"
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == LAYOUT.cgroup_root
    assert config["failSwapOn"] is False
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["makeIPTablesUtilChains"] is False
    assert config["evictionHard"]["nodefs.available"] == "1%"
    assert config["registerWithTaints"] == [
        {"key": REAL_NODE_TAINT, "value": "true", "effect": "NoSchedule"}
    ]
    argv = kubelet_argv(Path("/bin/kubelet"), LAYOUT, spec, node_ip="10.245.7.1")
    assert "--node-ip=10.245.7.1" in argv
    assert "--hostname-override=real-node-0" in argv
    assert "--node-labels=pool=video,type=real,videoqueue.dev/node=real" in argv
    assert all(str(LAYOUT.directory) in a for a in argv if a.startswith(("--root", "--cert")))


@pytest.mark.parametrize("count", [0, 1, 3])
def test_real_nodes_are_named_in_order(count: int) -> None:
    assert [n.name for n in real_nodes(count)] == [f"real-node-{i}" for i in range(count)]


def test_placement_selects_and_tolerates_the_real_node() -> None:
    assert REAL_NODE_PLACEMENT["nodeSelector"] == {REAL_NODE_LABEL: "real"}
    (toleration,) = REAL_NODE_PLACEMENT["tolerations"]
    assert (toleration["key"], toleration["effect"]) == (REAL_NODE_TAINT, "NoSchedule")


def test_forward_guard_drops_what_would_leave_the_pod_bridges() -> None:
    rule = forward_guard(LAYOUT)
    assert rule[:5] == ["FORWARD", "-i", LAYOUT.bridge, "!", "-o"]
    assert rule[5] == "vq+"  # every pod bridge, for endpoints on another real node
    assert rule[-2:] == ["-j", "DROP"]
    assert f"videoqueue {LAYOUT.key}:" in rule[rule.index("--comment") + 1]


def test_kube_proxy_changes_no_host_setting_and_binds_loopback() -> None:
    config = kube_proxy_config(
        kubeconfig=Path("/state/kube-proxy.kubeconfig"),
        hostname="real-node-0",
        pod_cidr=str(POD_SUBNETS),
        node_ips=["10.245.7.1"],
        healthz_port=1234,
        metrics_port=5678,
    )
    assert (config["mode"], config["hostnameOverride"]) == ("iptables", "real-node-0")
    assert config["clusterCIDR"] == "10.245.0.0/16"
    assert config["healthzBindAddress"] == "127.0.0.1:1234"
    assert config["metricsBindAddress"] == "127.0.0.1:5678"
    assert config["nodePortAddresses"] == ["10.245.7.1/32"]
    # Zero: leave the conntrack sysctls alone; no route_localnet on every interface; no
    # OOM score below 0 (root may not set one here).
    assert config["conntrack"] == {
        "maxPerCore": 0,
        "min": 0,
        "tcpEstablishedTimeout": "0s",
        "tcpCloseWaitTimeout": "0s",
    }
    assert config["iptables"]["localhostNodePorts"] is False
    assert config["oomScoreAdj"] == 0
