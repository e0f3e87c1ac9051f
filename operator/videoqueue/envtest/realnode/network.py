"""A real node's pod network on the host: a /24 of POD_SUBNETS that the host does not route
yet, the node's bridge with the subnet's first address (the pods' gateway and the node's IP),
and the iptables FORWARD guard that keeps pod traffic on the machine. The CNI bridge plugin
(configured in config.py) attaches pods to that bridge; kube_proxy.py adds the Services.
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
from pathlib import Path

from videoqueue.envtest.realnode.layout import RealNodeError, RealNodeLayout

# Pod subnets of real nodes: a /24 each, out of a /16 apart from KWOK's fake pod CIDR.
POD_SUBNETS = ipaddress.IPv4Network("10.245.0.0/16")


def create_bridge(layout: RealNodeLayout, subnet: ipaddress.IPv4Network) -> str:
    """The pod bridge, made before the CNI plugin would (it reuses it), with the subnet's
    first address, the pods' gateway and the node's IP; returns that address."""
    gateway = f"{subnet.network_address + 1}"
    if not Path(f"/sys/class/net/{layout.bridge}").exists():
        _ip("link", "add", "name", layout.bridge, "type", "bridge")
    done = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", layout.bridge],
        capture_output=True,
        text=True,
        check=True,
    )
    if f" {gateway}/" not in done.stdout:
        _ip("addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", layout.bridge)
    _ip("link", "set", layout.bridge, "up")
    return gateway


def forward_guard(layout: RealNodeLayout) -> list[str]:
    """The filter rule (FORWARD) that keeps pod traffic on the machine: a packet from the
    node's bridge is forwarded only to a pod bridge. With the route to the service CIDR, a
    ClusterIP that no kube-proxy rule turns into an endpoint would otherwise leave through
    the host's default route (ip_forward is on, nothing masquerades it)."""
    return [
        "FORWARD",
        "-i", layout.bridge,
        "!", "-o", "vq+",
        "-m", "comment", "--comment", f"videoqueue {layout.key}: pods reach pod bridges only",
        "-j", "DROP",
    ]  # fmt: skip


def add_forward_guard(layout: RealNodeLayout) -> None:
    rule = forward_guard(layout)
    if _iptables("-C", *rule) != 0 and _iptables("-I", *rule) != 0:
        raise RealNodeError(f"iptables -I {' '.join(rule)} failed")


def _iptables(*args: str, binary: str = "iptables") -> int:
    done = subprocess.run([binary, "-w", "5", *args], capture_output=True, text=True, check=False)
    return done.returncode


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RealNodeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def pick_subnet(layout: RealNodeLayout) -> ipaddress.IPv4Network:
    """A /24 for the node's pods derived from its key, skipping any the host routes already."""
    routed = _routed_networks()
    subnets = list(POD_SUBNETS.subnets(new_prefix=24))
    start = int(layout.key, 16) % len(subnets)
    for i in range(len(subnets)):
        candidate = subnets[(start + i) % len(subnets)]
        if not any(candidate.overlaps(r) for r in routed):
            return candidate
    raise RealNodeError(f"no free /24 in {POD_SUBNETS} for the pods of {layout.name}")


def _routed_networks() -> list[ipaddress.IPv4Network]:
    done = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=True)
    networks = []
    for line in done.stdout.splitlines():
        target = line.split()[0]
        if target != "default":
            with contextlib.suppress(ValueError):
                networks.append(ipaddress.IPv4Network(target, strict=False))
    return networks
