"""`python -m videoqueue.envtest up|down|status`: a detached local cluster for development.

`up` starts the control plane and KWOK nodes (and, with --real-nodes N, real nodes: a kubelet
and a containerd each, with the worker image imported; needs root) and returns, leaving them
running; the state (kubeconfig, logs, pids) lives in --state-dir. `down` stops what `up`
started.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from videoqueue.envtest.cluster import ClusterConfig, LocalCluster, default_nodes
from videoqueue.envtest.images import import_worker_image
from videoqueue.envtest.realnode import real_nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m videoqueue.envtest", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=Path(".dev/cluster"))
    parser.add_argument("--nodes", type=int, default=4, help="number of KWOK nodes (default 4)")
    parser.add_argument("--node-cpu", default="16", help="allocatable CPU per node (default 16)")
    parser.add_argument(
        "--node-memory", default="64Gi", help="allocatable memory per node (default 64Gi)"
    )
    parser.add_argument(
        "--real-nodes",
        type=int,
        default=0,
        help="number of real nodes (kubelet + containerd, needs root; default 0)",
    )
    parser.add_argument(
        "--images-from",
        type=Path,
        default=Path.cwd(),
        help="checkout whose worker image real nodes get (default: the current directory)",
    )
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()

    running = (state_dir / "state.json").exists() and LocalCluster.attach(state_dir).is_running()
    if args.command == "status":
        print(f"running, KUBECONFIG={state_dir / 'kubeconfig'}" if running else "not running")
        return 0 if running else 1
    if args.command == "down":
        if (state_dir / "state.json").exists():
            LocalCluster.attach(state_dir).stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        print("stopped")
        return 0

    if running:
        print(f"already running; export KUBECONFIG={state_dir / 'kubeconfig'}")
        return 0
    if (state_dir / "state.json").exists():  # a crashed or half-stopped cluster: clear it
        LocalCluster.attach(state_dir).stop()
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    nodes = default_nodes(args.nodes, cpu=args.node_cpu, memory=args.node_memory)
    config = ClusterConfig(nodes=nodes, real_nodes=real_nodes(args.real_nodes))
    cluster = LocalCluster(state_dir, config, attached=False)
    cluster.start()
    for spec in config.real_nodes:
        try:
            image = import_worker_image(cluster.containerd(spec.name), args.images_from.resolve())
        except BaseException:
            cluster.stop()
            raise
        times = ", ".join(f"{k} {v:.1f}s" for k, v in image.seconds.items())
        print(f"{spec.name}: worker image {image.tag} ({times})", file=sys.stderr)
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in cluster.startup_seconds.items())
    print(f"control plane up at {cluster.server} ({timings})", file=sys.stderr)
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
