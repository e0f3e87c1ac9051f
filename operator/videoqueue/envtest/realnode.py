"""Real nodes: a kubelet and a containerd of their own, beside the KWOK nodes.

A real node runs pods for real: containers under runc with memory limits the kernel enforces,
termination messages written by the container, a pod network on a bridge of the node's own.
Everything it needs lives in a directory of its own, /var/lib/videoqueue/nodes/<key> (linked
from `<cluster state dir>/nodes/<name>`; short because sockets live there): containerd's state,
socket and config, the CNI config and IPAM state, the kubelet's root and certificates. Images
live in a cached containerd root (`claim_image_store`). Elsewhere the kernel keeps a cgroup root
of the node's own and its pod bridge, and containerd its shims' sockets under
/run/containerd/s. `stop()` removes all of those.

Only pods that ask land on a real node: it carries the label `videoqueue.dev/node=real` and
the taint `videoqueue.dev/real-node=true:NoSchedule`; `REAL_NODE_PLACEMENT` is the
nodeSelector + toleration a pod template adds. KWOK nodes keep serving everything else.

Settings that this machine kind needs (see docs/real-nodes.md for the reasons):
containerd's CRI `restrict_oom_score_adj = true` (root may not lower an OOM score here, and
without it every sandbox fails), the kubelet on cgroupfs with swap allowed, eviction
thresholds at 1 % (it cannot read the VM disk's stats), image GC off (imported images cannot be
pulled again), its own ports, and as node IP the pod bridge's host address (the kubelet refuses
a loopback one) so the API server reaches it for logs and exec without leaving the machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

# What a pod template adds to run on a real node (and only there).
REAL_NODE_LABEL = "videoqueue.dev/node"
REAL_NODE_LABEL_VALUE = "real"
REAL_NODE_TAINT = "videoqueue.dev/real-node"
REAL_NODE_PLACEMENT: dict[str, Any] = {
    "nodeSelector": {REAL_NODE_LABEL: REAL_NODE_LABEL_VALUE},
    "tolerations": [
        {"key": REAL_NODE_TAINT, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ],
}

CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CGROUP_FS = Path("/sys/fs/cgroup")
# Pod subnets of real nodes: a /24 each, out of a /16 apart from KWOK's fake pod CIDR.
POD_SUBNETS = ipaddress.IPv4Network("10.245.0.0/16")
# Real nodes' directories: short paths of their own, because the kubelet and containerd
# create unix sockets inside them (at most 104 characters), and a state dir may be deep.
NODES_ROOT = Path("/var/lib/videoqueue/nodes")
K8S_NAMESPACE = "k8s.io"  # containerd's namespace for CRI (kubelet) containers and images


class RealNodeError(RuntimeError):
    pass


@dataclass(frozen=True)
class RealNodeSpec:
    """One real node: a kubelet registering as `name`, with a containerd of its own."""

    name: str = "real-node-0"
    labels: dict[str, str] = field(default_factory=dict)
    max_pods: int = 50


def real_nodes(count: int) -> list[RealNodeSpec]:
    return [RealNodeSpec(f"real-node-{i}") for i in range(count)]


@dataclass(frozen=True)
class RealNodeLayout:
    """Where a real node keeps everything: NODES_ROOT/<key>, linked from the cluster's
    <state dir>/nodes/<name>. Derived from the state dir and the node's name only, so a
    detached cluster finds it again for `stop()`."""

    name: str
    directory: Path
    key: str  # short and unique per state dir and node: names the bridge and cgroup root
    link: Path | None  # <state dir>/nodes/<name>; unknown for a stale node found on disk

    @classmethod
    def of(cls, state_dir: Path, name: str) -> RealNodeLayout:
        key = hashlib.sha256(f"{state_dir.resolve()}\0{name}".encode()).hexdigest()[:8]
        return cls(name, NODES_ROOT / key, key, state_dir / "nodes" / name)

    @classmethod
    def found(cls, directory: Path) -> RealNodeLayout:
        """The layout of a node directory found under NODES_ROOT (its name is its key)."""
        return cls(directory.name, directory, directory.name, None)

    @property
    def lock_file(self) -> Path:
        """flock'ed by the node's containerd for as long as it runs: a node directory whose
        lock is free belongs to no running node."""
        return self.directory / "node.lock"

    @property
    def containerd_socket(self) -> Path:
        return self.directory / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.directory / "containerd.toml"

    @property
    def kubelet_config(self) -> Path:
        return self.directory / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.directory / "kubelet.kubeconfig"

    @property
    def cni_conf_dir(self) -> Path:
        return self.directory / "cni" / "net.d"

    @property
    def bridge(self) -> str:
        return f"vq{self.key}"  # interface names have at most 15 characters

    @property
    def cgroup_root(self) -> str:
        return f"/videoqueue-{self.key}"


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


def claim_node(layout: RealNodeLayout) -> int:
    """Create the node's directory and lock it; returns the locked fd, to hand to containerd
    (which then holds the lock as long as it runs) and close here."""
    layout.directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RealNodeError(f"{layout.directory} is in use by a running node") from None
    return fd


def sweep_stale_nodes(*, min_age: float = 60) -> list[str]:
    """Clean up after real nodes whose cluster was killed (SIGKILL, a crash): directories
    under NODES_ROOT whose lock no containerd holds, older than `min_age` seconds (a node
    being created right now is younger). Their containers, shims, mounts, bridge and cgroups
    go as in `teardown`. Returns what could not be cleaned."""
    problems: list[str] = []
    if not NODES_ROOT.is_dir():
        return problems
    for directory in sorted(NODES_ROOT.iterdir()):
        layout = RealNodeLayout.found(directory)
        try:
            if time.time() - layout.lock_file.stat().st_mtime < min_age:
                continue
            fd = os.open(layout.lock_file, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a running node's
        try:
            problems += teardown(layout, stop_containerd=lambda: None)
        finally:
            os.close(fd)
    return problems


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


# -- cgroups --------------------------------------------------------------------------------


def _cgroup_hierarchies() -> list[Path]:
    """Mounted cgroup v1 hierarchies (or the v2 root), from /proc/self/mounts."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, fstype, *_ = line.split()
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(point))
    return found


def create_cgroup_root(root: str) -> None:
    """The kubelet's --cgroup-root must exist in every hierarchy; cpuset needs its cpus and
    mems copied from the parent before tasks can join."""
    for hierarchy in _cgroup_hierarchies():
        path = hierarchy / root.lstrip("/")
        path.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (path / name).exists() and not (path / name).read_text().strip():
                (path / name).write_text((hierarchy / name).read_text())


def remove_cgroup_root(root: str, *, timeout: float = 10) -> list[str]:
    """rmdir the root and everything under it, deepest first; returns what stayed (busy)."""
    left: list[str] = []
    for hierarchy in _cgroup_hierarchies():
        top = hierarchy / root.lstrip("/")
        if not top.exists():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for directory in [*dirs, top]:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    # A task that was just killed leaves its cgroup a moment later.
                    if time.monotonic() > deadline:
                        left.append(str(directory))
                        break
                    time.sleep(0.1)
    return left


# -- mounts ---------------------------------------------------------------------------------


def mounts_under(directory: Path) -> list[str]:
    prefix = f"{directory.resolve()}/"
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return points


def unmount_under(directory: Path) -> list[str]:
    """Unmount everything below `directory`, deepest first; returns what stayed mounted."""
    for _ in range(3):
        points = mounts_under(directory)
        if not points:
            return []
        for point in sorted(set(points), key=len, reverse=True):
            done = subprocess.run(["umount", point], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    return mounts_under(directory)


# -- containerd through ctr -------------------------------------------------------------------


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


def prepare(
    layout: RealNodeLayout,
    spec: RealNodeSpec,
    *,
    sandbox_archive: Path,
    ca_cert: Path,
    kubeconfig: dict[str, Any],
    ports: tuple[int, int],
    image_root: Path,
    service_cidr: str,
) -> str:
    """Write the node's configuration files, create its cgroup root and pod bridge; return
    the node's IP (the bridge's host address)."""
    layout.directory.mkdir(parents=True, exist_ok=True)
    if layout.link is not None:
        layout.link.parent.mkdir(parents=True, exist_ok=True)
        if not layout.link.is_symlink():
            layout.link.symlink_to(layout.directory)
    layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("pod-logs", "volume-plugins", "kubelet", "kubelet-pki"):
        (layout.directory / sub).mkdir(exist_ok=True)
    layout.containerd_config.write_text(
        containerd_config(layout, sandbox_image_tag(sandbox_archive), image_root)
    )
    subnet = pick_subnet(layout)
    (layout.cni_conf_dir / "10-videoqueue.conflist").write_text(
        json.dumps(cni_conflist(layout, subnet, service_cidr), indent=2)
    )
    create_cgroup_root(layout.cgroup_root)
    node_ip = create_bridge(layout, subnet)
    add_forward_guard(layout)
    layout.kubelet_kubeconfig.write_text(yaml.safe_dump(kubeconfig))
    layout.kubelet_config.write_text(
        yaml.safe_dump(
            kubelet_config(
                layout,
                spec,
                node_ip=node_ip,
                ca_cert=ca_cert,
                port=ports[0],
                healthz_port=ports[1],
            )
        )
    )
    return node_ip


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


def teardown(layout: RealNodeLayout, *, stop_containerd: Callable[[], None]) -> list[str]:
    """Once the kubelet has stopped: every pod container killed and removed through ctr,
    containerd stopped, mounts under the node dir unmounted, the bridge deleted, the cgroup
    root removed. Returns what could not be cleaned (empty when the host is as before)."""
    problems: list[str] = []
    ctr = Ctr(layout.containerd_socket)
    if layout.containerd_socket.exists() and ctr.answers():
        try:
            remove_all_containers(ctr)
        except (RealNodeError, subprocess.TimeoutExpired) as e:
            problems.append(f"containers of {layout.name}: {e}")
    stop_containerd()
    # What ctr could not reach (containerd gone, killed with its cluster): shims by their
    # -address, container processes by the node's cgroups.
    _kill_processes_mentioning(str(layout.directory))
    _kill_cgroup_processes(layout.cgroup_root)
    if left := unmount_under(layout.directory):
        problems.append(f"mounts left under {layout.directory}: {left}")
    while _iptables("-D", *forward_guard(layout)) == 0:
        pass
    if _iptables("-C", *forward_guard(layout)) == 0:
        problems.append(f"iptables rule left: {' '.join(forward_guard(layout))}")
    if Path(f"/sys/class/net/{layout.bridge}").exists():
        subprocess.run(["ip", "link", "delete", layout.bridge], capture_output=True, check=False)
        if Path(f"/sys/class/net/{layout.bridge}").exists():
            problems.append(f"bridge {layout.bridge} not deleted")
    if left := remove_cgroup_root(layout.cgroup_root):
        problems.append(f"cgroups left: {left}")
    if not mounts_under(layout.directory):  # never delete through a mount
        shutil.rmtree(layout.directory, ignore_errors=True)
        if layout.link is not None:
            layout.link.unlink(missing_ok=True)
        for parent in (NODES_ROOT, NODES_ROOT.parent):
            with contextlib.suppress(OSError):
                parent.rmdir()  # when no other node uses it
    return problems


def _kill_processes_mentioning(text: str) -> None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _kill_cgroup_processes(root: str, *, timeout: float = 10) -> None:
    """SIGKILL every process in the cgroup root and below, until none is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids: set[int] = set()
        for hierarchy in _cgroup_hierarchies():
            top = hierarchy / root.lstrip("/")
            if top.is_dir():
                for procs in top.rglob("cgroup.procs"):
                    with contextlib.suppress(OSError):
                        pids.update(int(p) for p in procs.read_text().split())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def leftovers(layout: RealNodeLayout) -> list[str]:
    """What of the node is still on the host (for tests of clean stops)."""
    found = [f"mount {m}" for m in mounts_under(layout.directory)]
    if layout.directory.exists():
        found.append(f"directory {layout.directory}")
    if Path(f"/sys/class/net/{layout.bridge}").exists():
        found.append(f"bridge {layout.bridge}")
    if _iptables("-C", *forward_guard(layout)) == 0:
        found.append(f"iptables rule {' '.join(forward_guard(layout))}")
    found += [
        f"cgroup {h / layout.cgroup_root.lstrip('/')}"
        for h in _cgroup_hierarchies()
        if (h / layout.cgroup_root.lstrip("/")).exists()
    ]
    return found


def is_root() -> bool:
    return os.geteuid() == 0


# -- Services: kube-proxy ---------------------------------------------------------------------
#
# Pods reach ClusterIP Services as on any cluster: kube-proxy (iptables mode) turns a
# ClusterIP into DNAT rules to the endpoints. Its rules live in the host's tables, which every
# real node and every cluster on this machine share, and its chain names are fixed: one
# kube-proxy per machine at a time, the holder of KUBE_PROXY_LOCK (flock'ed by the kube-proxy
# process itself, so the lock lives exactly as long as it does).

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
