"""Sharding simulation (issue 17): 40 queues drained by 1, 2 and 4 operator processes.

    .venv/bin/python -m benchmarks.scale.shards            # N = 2,000 VideoJobs per round
    .venv/bin/python -m benchmarks.scale.shards --quick    # N = 400

Whether one operator process is the limit, and whether splitting the queues between several
processes (docs/sharding.md) would drain faster on this machine. One local control plane
(videoqueue.envtest.LocalCluster, KWOK nodes, as benchmarks/scale/run.py) for the whole run;
for each process count K of `--processes` (default 1,2,4) a round of its own:
- 40 VideoQueues, one in each of 40 fresh namespaces, each with room for all its jobs
  (concurrency and budget of N/40 jobs of 1Gi), so only the controllers limit the drain;
- K operator processes, `--standalone --no-fencing --shard i/K` (with K = 1 no --shard),
  started and settled before the round; after it they are stopped and the round's
  namespaces deleted, so each round starts on an emptied cluster;
- N VideoJobs created round-robin over the queues (`--parallelism` creates in flight), each
  pod running `--run-for` on KWOK; the drain is timed from the first create to the last job's
  Complete=True on a watch (stamp_watch.py, in a process of its own).
Per round: drain wall time and jobs/s; operator CPU (utime + stime from /proc, summed over
the K processes, from before the first create until the API writes settle after the drain)
and per job; the busiest process's CPU; kube-apiserver's and etcd's CPU; the machine's busy
share of its cores (/proc/stat) over the drain; API writes per job from the API server's
apiserver_request_total (Events included; the harness's creates subtracted), as run.py
counts them. Queues are assigned to processes by the operator's own hash
(`videoqueue.scheduling.sharding`), so the split is what real sharding would get: the largest
shard's share of the jobs is reported beside the figures.

Prints a table and writes the figures as JSON (`--out`). No timing assertion: exit status 1
only when a round did not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.results import write_results
from benchmarks.scale.run import (
    PODS_PER_NODE,
    PRIORITIES,
    Bench,
    Completions,
    Scenario,
    Watch,
    bounded,
    client_settings,
    fmt,
    proc_stats,
    wait_settled,
)
from benchmarks.writes_per_job import GROUP, VERSION, WriteKey, subtract
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.kube_helpers import VIDEOJOBS, VIDEOQUEUES
from videoqueue.envtest import ClusterConfig, LocalCluster, NodeSpec, poll
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.scheduling.sharding import queue_key, shard_of

REPO = Path(__file__).resolve().parents[2]
QUEUE = "bench"
CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")


@dataclass
class Round:
    processes: int
    jobs: int
    queues: int
    done: int = 0
    wall_seconds: float = math.nan
    jobs_per_second: float = math.nan
    # The largest shard's share of the jobs (1.0 with one process; 1/K would be even).
    largest_shard_share: float = math.nan
    operator_cpu_seconds: float = math.nan  # summed over the processes
    operator_cpu_ms_per_job: float = math.nan
    max_process_cpu_seconds: float = math.nan
    process_cpu_seconds: list[float] = field(default_factory=list)
    process_jobs: list[int] = field(default_factory=list)
    process_peak_rss_mib: list[float] = field(default_factory=list)
    # CPU seconds of the control plane's processes (kube-apiserver, etcd, ...) and this
    # harness, over the same span as the operators'.
    component_cpu_seconds: dict[str, float] = field(default_factory=dict)
    # Busy share of all cores over the drain (1.0: every core busy the whole time).
    machine_busy: float = math.nan
    writes_per_job: float = math.nan
    object_writes_per_job: float = math.nan
    writes: dict[str, int] = field(default_factory=dict)


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all cores together, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def component_cpu(cluster: LocalCluster) -> dict[str, float]:
    pids = cluster.pids()
    cpu = {name: proc_stats(pids[name]).cpu_seconds for name in CONTROL_PLANE if name in pids}
    cpu["harness"] = proc_stats(os.getpid()).cpu_seconds
    return cpu


def shard_args(index: int, count: int) -> list[str]:
    args = ["--standalone", "--no-fencing"]
    return args if count == 1 else [*args, "--shard", f"{index}/{count}"]


class ShardBench:
    def __init__(self, cluster: LocalCluster, args: argparse.Namespace, workdir: Path) -> None:
        self.cluster = cluster
        self.args = args
        self.workdir = workdir
        # run.py's helpers: the queue manifest, settled write counters, the drain's figures.
        self.bench = Bench(cluster, args, workdir)

    async def create_queues(self, namespaces: list[str], per_queue: int) -> None:
        async with await KubeClient.from_kubeconfig(self.cluster.kubeconfig) as kube:
            for ns in namespaces:
                await kube.create(VIDEOQUEUES, ns, self.bench.queue(QUEUE, concurrency=per_queue))

    async def create_jobs(self, namespaces: list[str], names: list[str]) -> None:
        async with await KubeClient.from_kubeconfig(
            self.cluster.kubeconfig, settings=client_settings(self.args.parallelism)
        ) as kube:

            async def make(i: int) -> None:
                body = self.bench.video_job(names[i], QUEUE, PRIORITIES[i % len(PRIORITIES)])
                await kube.create(VIDEOJOBS, namespaces[i % len(namespaces)], body)

            await bounded(self.args.parallelism, make, len(names))

    def queues_have_status(self, namespaces: list[str]) -> bool:
        """Every queue's owner has written its first status (so its writes fall before the
        round's write count)."""
        listed = self.cluster.kubectl(
            "get", f"videoqueues.{GROUP}", "-A", "-o", "json", "--chunk-size=0"
        ).stdout
        wanted = set(namespaces)
        seen = {
            q["metadata"]["namespace"]
            for q in json.loads(listed)["items"]
            if q["metadata"]["namespace"] in wanted and (q.get("status") or {})
        }
        return seen == wanted

    async def round(self, k: int) -> Round:
        n: int = self.args.jobs
        q: int = self.args.queues
        namespaces = [f"shards{k}-{i:02d}" for i in range(q)]
        names = [f"vj{k}-{i:05d}" for i in range(n)]
        per_queue = math.ceil(n / q)
        result = Round(k, n, q)
        jobs_of_queue = Counter(namespaces[i % q] for i in range(n))
        result.process_jobs = [
            sum(c for ns, c in jobs_of_queue.items() if shard_of(queue_key(ns, QUEUE), k) == s)
            for s in range(k)
        ]
        result.largest_shard_share = max(result.process_jobs) / n
        operators = [
            OperatorProcess(
                self.cluster.kubeconfig,
                self.workdir / f"operator-{k}-{i}.log",
                shard_args(i, k),
                name=f"shard-{k}-{i}",
            )
            for i in range(k)
        ]
        for ns in namespaces:
            self.bench.namespace(ns)  # waits for its default ServiceAccount
        with contextlib.ExitStack() as stack:
            for operator in operators:
                stack.enter_context(operator)
            for operator in operators:
                wait_settled(operator)
            await self.create_queues(namespaces, per_queue)
            poll(
                lambda: self.queues_have_status(namespaces),
                timeout=120,
                what="every queue's first status",
                interval=1.0,
            )
            pids: list[int] = []
            for operator in operators:
                assert operator.pid is not None
                pids.append(operator.pid)
            cpu_before = [proc_stats(pid).cpu_seconds for pid in pids]
            before = self.bench.settled_writes()
            components_before = component_cpu(self.cluster)
            done = Completions()
            ours = set(names)
            with Watch(self.cluster, f"/apis/{GROUP}/{VERSION}/videojobs", done):
                busy_before, total_before = cpu_times()
                begin = time.monotonic()
                await self.create_jobs(namespaces, names)

                def drained() -> bool:
                    with done.lock:
                        return len(ours & done.at.keys()) >= n

                poll(drained, timeout=self.args.timeout, what=f"{n} jobs to drain", interval=0.5)
                result.wall_seconds = time.monotonic() - begin
                busy_after, total_after = cpu_times()
                with done.lock:
                    result.done = len(ours & done.at.keys())
            after = self.bench.settled_writes()
            components_after = component_cpu(self.cluster)
            stats = [proc_stats(pid) for pid in pids]
        # With the operators stopped: the next round starts on an emptied cluster (finished
        # objects left behind cost the API server and every next operator's intake).
        self.bench.clear_namespaces()
        result.jobs_per_second = n / result.wall_seconds
        result.machine_busy = (busy_after - busy_before) / (total_after - total_before)
        spent = zip(stats, cpu_before, strict=True)
        result.process_cpu_seconds = [s.cpu_seconds - c for s, c in spent]
        result.process_peak_rss_mib = [s.peak_rss_mib for s in stats]
        result.operator_cpu_seconds = sum(result.process_cpu_seconds)
        result.max_process_cpu_seconds = max(result.process_cpu_seconds)
        result.operator_cpu_ms_per_job = 1000 * result.operator_cpu_seconds / n
        result.component_cpu_seconds = {
            name: components_after[name] - components_before[name] for name in components_after
        }
        scenario = Scenario(f"{k} processes", n, done=result.done)
        scenario.wall_seconds = result.wall_seconds
        harness = Counter({WriteKey("POST", GROUP, "videojobs", ""): n})
        self.bench.finish(
            scenario,
            subtract(after, before, harness),
            {},
            {},
            controller={GROUP},
            created_count=n,
        )
        result.writes_per_job = scenario.writes_per_job
        result.object_writes_per_job = scenario.object_writes_per_job
        result.writes = scenario.writes
        return result


def table(rounds: list[Round]) -> str:
    header = (
        f"{'processes':>9}{'jobs':>7}{'done':>7}{'wall s':>8}{'jobs/s':>8}{'largest':>9}"
        f"{'op CPU s':>10}{'ms/job':>8}{'max proc s':>11}{'max util':>9}{'apiserver s':>12}"
        f"{'etcd s':>8}{'harness s':>10}{'busy':>7}{'writes/job':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in rounds:
        cpu = r.component_cpu_seconds
        lines.append(
            f"{r.processes:>9}{r.jobs:>7}{r.done:>7}{fmt(r.wall_seconds, 1):>8}"
            f"{fmt(r.jobs_per_second, 1):>8}{fmt(r.largest_shard_share):>9}"
            f"{fmt(r.operator_cpu_seconds, 1):>10}{fmt(r.operator_cpu_ms_per_job, 1):>8}"
            f"{fmt(r.max_process_cpu_seconds, 1):>11}"
            f"{fmt(r.max_process_cpu_seconds / r.wall_seconds):>9}"
            f"{fmt(cpu.get('kube-apiserver', math.nan), 1):>12}"
            f"{fmt(cpu.get('etcd', math.nan), 1):>8}{fmt(cpu.get('harness', math.nan), 1):>10}"
            f"{fmt(r.machine_busy):>7}{fmt(r.writes_per_job):>11}"
        )
    lines += [
        "largest: the largest shard's share of the jobs (queues assigned by the operator's "
        "hash); op CPU s: all operator processes together; max proc s: the busiest one;",
        "max util: the busiest process's CPU over the drain's wall time (1.00: one core, "
        "the most a Python process can use);",
        f"busy: share of the machine's {os.cpu_count()} cores busy over the drain (everyone: "
        "control plane, operators, harness); writes/job: Events included",
    ]
    return "\n".join(lines)


async def run(cluster: LocalCluster, args: argparse.Namespace, workdir: Path) -> list[Round]:
    bench = ShardBench(cluster, args, workdir)
    rounds = []
    for k in args.processes:
        print(f"[{time.strftime('%H:%M:%S')}] {k} processes ...", file=sys.stderr, flush=True)
        rounds.append(await bench.round(k))
        print(f"  {asdict(rounds[-1])}", file=sys.stderr, flush=True)
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=400")
    parser.add_argument("--jobs", type=int, help="N VideoJobs per round (default 2000)")
    parser.add_argument("--queues", type=int, default=40, help="queues, one per namespace")
    parser.add_argument(
        "--processes",
        type=lambda text: [int(k) for k in text.split(",")],
        default=[1, 2, 4],
        help="operator process counts, one round each (default 1,2,4)",
    )
    parser.add_argument("--parallelism", type=int, default=32, help="client writes in flight")
    parser.add_argument("--run-for", default="1s", help="how long each pod runs on KWOK")
    parser.add_argument("--timeout", type=float, default=900, help="per-round limit")
    parser.add_argument("--kcm-qps", type=int, default=200, help="kube-controller-manager QPS")
    parser.add_argument("--out", type=Path, help="JSON results (default next to this file)")
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (400 if args.quick else 2000)
    out = args.out or Path(__file__).with_name(
        "shards_results_quick.json" if args.quick else "shards_results.json"
    )
    pods = args.jobs * len(args.processes)
    nodes = max(4, math.ceil(1.2 * args.jobs / PODS_PER_NODE))
    config = ClusterConfig(
        nodes=[
            NodeSpec(
                f"kwok-node-{i}", cpu="1000", memory=f"{PODS_PER_NODE * 2}Gi", pods=PODS_PER_NODE
            )
            for i in range(nodes)
        ],
        controller_manager_qps=args.kcm_qps,
        controller_manager_burst=int(args.kcm_qps * 1.5),
        terminated_pod_gc_threshold=10 * pods,  # every round's pods stay, as in run.py
    )
    workdir = Path(tempfile.mkdtemp(prefix="videoqueue-shards-"))
    print(
        f"starting the local control plane with {nodes} KWOK nodes (logs in {workdir}) ...",
        file=sys.stderr,
    )
    with LocalCluster(cluster_config=config) as cluster:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/videoqueues.videoqueue.dev",
            "crd/videojobs.videoqueue.dev",
        )
        rounds = asyncio.run(run(cluster, args, workdir))
    text = table(rounds)
    print(text)
    write_results(
        out, "benchmarks.scale.shards", argv or sys.argv[1:], args,
        rounds=[asdict(r) for r in rounds], table=text,
    )  # fmt: skip
    print(f"results written to {out}", file=sys.stderr)
    return 0 if all(r.done >= r.jobs for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
