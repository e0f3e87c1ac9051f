"""Services for real nodes' pods: kube-proxy's config and command line, the machine-wide lock
that lets one kube-proxy run at a time, and the cleanup of its rules.

Pods reach ClusterIP Services as on any cluster: kube-proxy (iptables mode) turns a
ClusterIP into DNAT rules to the endpoints. Its rules live in the host's tables, which every
real node and every cluster on this machine share, and its chain names are fixed: one
kube-proxy per machine at a time, the holder of KUBE_PROXY_LOCK (flock'ed by the kube-proxy
process itself, so the lock lives exactly as long as it does).
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any

from videoqueue.envtest.realnode.network import _iptables

KUBE_PROXY_LOCK = Path("/run/lock/videoqueue-kube-proxy.lock")
_IPTABLES = ("iptables", "ip6tables")  # kube-proxy runs dual-stack where both work
# The kernel counter (nfacct) kube-proxy's KUBE-FORWARD rule counts dropped invalid packets
# in; `kube-proxy --cleanup` leaves it.
KUBE_PROXY_NFACCT = "ct_state_invalid_dropped_pkts"


def claim_service_proxy() -> int | None:
    """The locked fd to hand to kube-proxy, or None while another cluster's runs."""
    fd = os.open(KUBE_PROXY_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def kube_proxy_config(
    *,
    kubeconfig: Path,
    hostname: str,
    pod_cidr: str,
    node_ips: list[str],
    healthz_port: int,
    metrics_port: int,
) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": hostname,
        "mode": "iptables",
        # Traffic to a Service from outside the pod network (the host) is masqueraded so
        # replies come back through the node; pod-to-Service traffic keeps its source.
        "clusterCIDR": pod_cidr,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # NodePorts only on the pod bridges' addresses, never on the machine's own.
        "nodePortAddresses": [f"{ip}/32" for ip in node_ips],
        # The host's sysctls stay as they are: no conntrack table sizes or timeouts...
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        # ...no route_localnet=1 on every interface (NodePorts on 127.0.0.1)...
        "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "1s"},
        # ...and no lowered OOM score, which root may not set here.
        "oomScoreAdj": 0,
    }


def kube_proxy_argv(binary: Path, config: Path) -> list[str]:
    return [str(binary), f"--config={config}", "--v=2"]


def service_proxy_rules() -> list[str]:
    """kube-proxy's chains and the rules that jump to them, in every table of both families."""
    found = []
    for binary in _IPTABLES:
        done = subprocess.run(
            [f"{binary}-save"], capture_output=True, text=True, check=False, timeout=30
        )
        found += [f"{binary}: {line}" for line in done.stdout.splitlines() if "KUBE-" in line]
    if _nfacct(_NFNL_MSG_ACCT_GET, KUBE_PROXY_NFACCT) == 0:
        found.append(f"nfacct counter {KUBE_PROXY_NFACCT}")
    return found


def cleanup_service_proxy(binary: Path) -> list[str]:
    """Remove every rule and chain of a kube-proxy that has stopped (or was killed with its
    cluster): `kube-proxy --cleanup`, then KUBE-FIREWALL, which it leaves behind on purpose
    (a kubelet may share it; ours make no iptables chains). Returns what is left."""
    done = subprocess.run(
        [str(binary), "--cleanup"], capture_output=True, text=True, check=False, timeout=60
    )
    problems = [] if done.returncode == 0 else [f"kube-proxy --cleanup: {done.stderr[-500:]}"]
    for iptables in _IPTABLES:
        for hook in ("INPUT", "OUTPUT"):
            while _iptables("-D", hook, "-j", "KUBE-FIREWALL", binary=iptables) == 0:
                pass
        _iptables("-F", "KUBE-FIREWALL", binary=iptables)
        _iptables("-X", "KUBE-FIREWALL", binary=iptables)
    _nfacct(_NFNL_MSG_ACCT_DEL, KUBE_PROXY_NFACCT)  # ENOENT when there is none
    return problems + service_proxy_rules()


_NFNL_SUBSYS_ACCT = 7  # linux/netfilter/nfnetlink.h
_NFNL_MSG_ACCT_GET, _NFNL_MSG_ACCT_DEL = 1, 3  # linux/netfilter/nfnetlink_acct.h
_NFACCT_NAME = 1


def _nfacct(message: int, name: str) -> int:
    """Ask the kernel's nfacct subsystem about the counter `name` over netlink (Debian has no
    `nfacct` tool by default); returns the errno it answers, 0 for success."""
    value = name.encode() + b"\0"
    attribute = struct.pack("=HH", 4 + len(value), _NFACCT_NAME) + value
    attribute += b"\0" * (-len(attribute) % 4)
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0) + attribute  # nfgenmsg
    flags = 0x1 | 0x4  # NLM_F_REQUEST | NLM_F_ACK
    header = struct.pack("=IHHII", 16 + len(body), (_NFNL_SUBSYS_ACCT << 8) | message, flags, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12) as netlink:  # NETLINK_NETFILTER
        netlink.settimeout(5)
        netlink.send(header + body)
        while True:
            data = netlink.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == 2:  # NLMSG_ERROR: the acknowledgement, with the (negative) errno
                    (error,) = struct.unpack_from("=i", data, offset + 16)
                    return -int(error)
                offset += (length + 3) & ~3


def service_proxy_leftovers() -> list[str]:
    """kube-proxy's rules while no kube-proxy runs on this machine (for tests of clean stops:
    a stopped cluster removes its kube-proxy's rules, a running one's are its own)."""
    fd = claim_service_proxy()
    if fd is None:
        return []
    try:
        return service_proxy_rules()
    finally:
        os.close(fd)
