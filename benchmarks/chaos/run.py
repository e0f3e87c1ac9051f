"""Chaos benchmark (issue 18): nothing lost, nothing twice, while everything around the
operator fails.

    .venv/bin/python -m benchmarks.chaos.run            # 2,000 jobs, 30 faults, + a baseline
    .venv/bin/python -m benchmarks.chaos.run --quick    # 200 jobs, 9 faults (CI)

One local control plane (videoqueue.envtest.LocalCluster, KWOK nodes), a redis-server and a
webhook receiver on loopback. N VideoJobs (seeded: priorities 0-10 in three queues; 10 %
fail once and are retried, 10 % are OOM-killed once and retried with twice the memory, 8 %
fail both their attempts; the rest succeed at once; each runs 1-3 s on KWOK). Queues notify
the receiver of every outcome and keep statistics over a day (`windowSeconds: 86400`).

While the jobs run, faults at seeded random moments, one after another, each after a random
pause once the one before has recovered: SIGKILL of the operator (restarted at once),
kube-apiserver and etcd SIGKILLed and restarted on the same ports and data, redis-server
SIGKILLed and restarted (empty); then two replicas (kopf peering, `--peering-lifetime` 10 s)
replace the single operator and the acting one is SIGKILLed, a new replica started each
time. Recovery: from the fault's end (operator process or server back; for a replica, the
kill) to the next admission (a worker pod's admitted-at stamp, written by the operator).

Afterwards, from the API (jobs, every worker pod a watch saw during the run, queues) and the
receiver's records, benchmarks/chaos/audit.py counts jobs lost, stuck, attempts run twice,
unexpected outcomes, notifications owed but not sent, statistics that disagree: all must be
zero (exit status 1 otherwise, or when jobs do not finish). The full run then drains the same
seeded workload again without faults (`--baseline`; optional in quick mode): the throughput
cost of the chaos is the ratio of the drain times.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.chaos.audit import TERMINAL, Audit, audit
from benchmarks.chaos.plan import FaultKind, PlannedFault, plan_faults, plan_jobs
from benchmarks.chaos.receiver import Receiver
from benchmarks.results import write_results
from benchmarks.scale.run import (
    IMAGE,
    PODS_PER_NODE,
    Watch,
    bounded,
    client_settings,
    pods_path,
    wait_settled,
)
from benchmarks.writes_per_job import GROUP, VERSION
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.kube_helpers import SECRETS, VIDEOJOBS, VIDEOQUEUES
from videoqueue.envtest import ClusterConfig, LocalCluster, NodeSpec, WaitTimeoutError, poll
from videoqueue.envtest.builders import MakeQueue
from videoqueue.envtest.kwok import pod_script
from videoqueue.envtest.operator_process import OperatorProcess, line_time
from videoqueue.envtest.redis_server import RedisServer
from videoqueue.scheduling.worker_pod import (
    ANNOTATION_ADMITTED_AT,
    ANNOTATION_JOB_NAME,
    LABEL_ATTEMPT,
)

REPO = Path(__file__).resolve().parents[2]
ACTING = "acting: this replica now schedules"
QUEUES = ["q-0", "q-1", "q-2"]
# The key the queues sign their webhooks with (a Secret per namespace); the receiver verifies.
WEBHOOK_SECRET_NAME = "chaos-webhook"
SINGLE_LEASE_SECONDS = 60  # the standalone operator's Lease: its default --peering-lifetime
WEBHOOK_SECRET = os.urandom(32)
RUN_FOR = ("1s", "2s", "3s")


# -- what the watches saw -------------------------------------------------------------------


class Tracker:
    """Fed by the pod and job watches (reader threads): every worker pod UID per job and
    attempt, each pod's admission stamp, and each job's last phase."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)
        self.pods: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.admitted: dict[str, float] = {}  # pod uid -> the operator's admitted-at stamp
        self.phases: dict[str, str | None] = {}
        self.finished: set[str] = set()
        self.drained_at: float | None = None
        self.lock = threading.Lock()

    def on_pod(self, kind: str, pod: Any, _now: float) -> None:
        meta = pod["metadata"]
        job = (meta.get("annotations") or {}).get(ANNOTATION_JOB_NAME)
        attempt = (meta.get("labels") or {}).get(LABEL_ATTEMPT)
        if kind == "DELETED" or job is None or attempt is None:
            return
        stamp = meta["annotations"].get(ANNOTATION_ADMITTED_AT)
        with self.lock:
            self.pods[job][int(attempt)].add(meta["uid"])
            if stamp:
                self.admitted.setdefault(meta["uid"], parse_time(stamp))

    def on_job(self, kind: str, job: Any, now: float) -> None:
        name, phase = job["metadata"]["name"], (job.get("status") or {}).get("phase")
        with self.lock:
            self.phases[name] = phase
            if phase in TERMINAL and name in self.names:
                self.finished.add(name)  # terminal phases are final in this workload
            if self.drained_at is None and len(self.finished) >= len(self.names):
                self.drained_at = now

    def terminal(self) -> int:
        with self.lock:
            return len(self.finished)

    def waiting(self) -> int:
        """Jobs that still need an admission (not seen yet, pending or in backoff)."""
        with self.lock:
            return sum(1 for n in self.names if self.phases.get(n) in (None, "Pending", "Backoff"))

    def first_admission_after(self, moment: float) -> float | None:
        with self.lock:
            return min((at for at in self.admitted.values() if at > moment), default=None)

    def admissions(self) -> list[float]:
        with self.lock:
            return list(self.admitted.values())

    def merge_pods(self, pods: list[dict[str, Any]]) -> None:
        for pod in pods:
            self.on_pod("ADDED", pod, time.time())

    def pods_snapshot(self) -> dict[str, dict[int, set[str]]]:
        with self.lock:
            return {job: {a: set(u) for a, u in by.items()} for job, by in self.pods.items()}


def parse_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- figures --------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    pause: float
    at: float  # seconds since the jobs were created
    back: float  # when the process or server was back (for a replica kill: the kill)
    down_seconds: float
    recovery_seconds: float | None = None  # back -> next admission
    takeover_seconds: float | None = None  # replica kills: kill -> the standby acting


@dataclass
class Drain:
    namespace: str
    jobs: int
    drain_seconds: float = math.nan  # first create -> every job terminal
    finished: int = 0
    faults: list[Fault] = field(default_factory=list)
    skipped_faults: list[str] = field(default_factory=list)  # jobs ran out first
    audit: dict[str, Any] = field(default_factory=dict)
    pods: int = 0  # worker pods seen (every attempt's)
    deliveries: int = 0
    signed_deliveries: int = 0  # with an X-VideoQueue-Signature* header
    duplicate_deliveries: int = 0
    receiver_missed: int = 0
    operator_starts: int = 0


# -- the run --------------------------------------------------------------------------------


class Chaos:
    def __init__(
        self,
        cluster: LocalCluster,
        args: argparse.Namespace,
        workdir: Path,
        redis: RedisServer,
        receiver: Receiver,
    ) -> None:
        self.cluster = cluster
        self.args = args
        self.workdir = workdir
        self.redis = redis
        self.receiver = receiver
        self.rng = random.Random(args.seed)
        self.jobs = plan_jobs(random.Random(args.seed), args.jobs, QUEUES, RUN_FOR)
        self.replicas_started = 0
        self.processes: list[OperatorProcess] = []  # of the chaos run, killed ones too

    def mix(self) -> str:
        counts = Counter(j.outcome.value for j in self.jobs)
        return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))

    def operator(self, name: str, args: list[str]) -> OperatorProcess:
        return OperatorProcess(
            self.cluster.kubeconfig,
            self.workdir / f"{name}.log",
            [*args, "--redis-url", self.redis.url],
            name=name,
        )

    def queue(self, name: str) -> dict[str, Any]:
        per_queue = self.args.concurrency
        return (
            MakeQueue(name)
            .concurrency(per_queue)
            .budget(f"{2 * per_queue}Gi")
            .default_request("1Gi")
            .max("2Gi")
            .oom_multiplier(2)
            .retry(3, initial_seconds=1, factor=2, max_seconds=5)
            # A steady 10 % of OOM kills would halve the concurrency for the whole run.
            .memory_pressure(enabled=False)
            .notifications(
                self.receiver.url,
                maxAttempts=20,
                secretRef={"name": WEBHOOK_SECRET_NAME, "key": "hmac"},
            )
            .spec(statistics={"windowSeconds": 86_400})
            .template(
                {"name": "worker", "image": IMAGE},
                annotations=pod_script("1s", message='{"ok": true}'),
            )
            .obj()
        )

    async def create(self, namespace: str) -> float:
        """The queues, then every job; returns when the first job was created."""
        self.cluster.create_namespace(namespace)
        settings = client_settings(self.args.parallelism)
        async with await KubeClient.from_kubeconfig(
            self.cluster.kubeconfig, settings=settings
        ) as kube:
            # The queues sign their webhooks; the receiver verifies every delivery.
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": WEBHOOK_SECRET_NAME},
                "data": {"hmac": base64.b64encode(WEBHOOK_SECRET).decode()},
            }
            await kube.create(SECRETS, namespace, secret)
            for name in QUEUES:
                await kube.create(VIDEOQUEUES, namespace, self.queue(name))
            begin = time.time()

            async def make(i: int) -> None:
                await kube.create(VIDEOJOBS, namespace, self.jobs[i].manifest())

            await bounded(self.args.parallelism, make, len(self.jobs))
        return begin

    def watches(self, namespace: str, tracker: Tracker) -> tuple[Watch, Watch]:
        jobs = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/videojobs"
        return (
            Watch(self.cluster, pods_path(namespace), tracker.on_pod),
            Watch(self.cluster, jobs, tracker.on_job),
        )

    # -- baseline: the same jobs, no faults ---------------------------------------------------

    def baseline(self) -> Drain:
        namespace = "baseline"
        result = Drain(namespace, len(self.jobs))
        tracker = Tracker([j.name for j in self.jobs])
        operator = self.operator("operator-baseline", ["--standalone"])
        pods, jobs = self.watches(namespace, tracker)
        with operator, pods, jobs:
            wait_settled(operator)
            begin = asyncio.run(self.create(namespace))
            self.wait_drained(tracker, begin, result)
            self.finish(namespace, tracker, result)
        result.operator_starts = operator.starts
        return result

    # -- chaos ---------------------------------------------------------------------------------

    def chaos(self, faults: list[PlannedFault]) -> Drain:
        namespace = "chaos"
        result = Drain(namespace, len(self.jobs))
        tracker = Tracker([j.name for j in self.jobs])
        single = self.operator("operator", ["--standalone"])
        self.processes.append(single)
        replicas: list[OperatorProcess] = []  # [acting, standby] once they replace `single`
        pods, jobs = self.watches(namespace, tracker)
        try:
            with pods, jobs:
                single.start()
                single.wait_for_log(ACTING, timeout=120)
                begin = asyncio.run(self.create(namespace))
                first = poll(
                    lambda: tracker.first_admission_after(0),
                    timeout=120,
                    what="the first admission",
                )
                previous = first
                for planned in faults:
                    time.sleep(max(0.0, previous + planned.pause - time.time()))
                    if tracker.terminal() >= len(self.jobs):
                        result.skipped_faults.append(planned.kind.value)
                        continue
                    if planned.kind is FaultKind.REPLICA_KILL and not replicas:
                        single.stop()  # two replicas replace the single operator
                        replicas += self.start_replicas()
                    fault = self.inject(planned, single, replicas, begin)
                    fault.recovery_seconds = self.wait_recovered(tracker, fault.back)
                    fault.back -= begin
                    result.faults.append(fault)
                    log(
                        f"  {fault.kind}: down {fault.down_seconds:.1f}s, "
                        f"recovered {fmt(fault.recovery_seconds)}s"
                    )
                    previous = time.time()
                self.wait_drained(tracker, begin, result)
                self.finish(namespace, tracker, result)
        finally:
            for process in self.processes:
                process.stop()
        result.operator_starts = sum(p.starts for p in self.processes)
        return result

    def inject(
        self,
        planned: PlannedFault,
        single: OperatorProcess,
        replicas: list[OperatorProcess],
        begin: float,
    ) -> Fault:
        at = time.time()
        takeover = None
        if planned.kind is FaultKind.OPERATOR_KILL:
            single.kill()
            single.start()
            back = time.time()
        elif planned.kind is FaultKind.APISERVER_RESTART:
            back = self.cluster.restart_apiserver(down_seconds=self.args.down)
        elif planned.kind is FaultKind.ETCD_RESTART:
            back = self.cluster.restart_etcd(down_seconds=self.args.down)
        elif planned.kind is FaultKind.REDIS_RESTART:
            self.redis.kill()
            self.redis.start()
            back = time.time()
        else:
            active, standby = replicas[-2], replicas[-1]
            back = active.kill()
            replicas.append(self.replica())  # the next standby
            acting = standby.wait_for_log(ACTING, timeout=6 * self.args.peering_lifetime)
            takeover = line_time(acting) - back
            replicas.remove(active)  # [acting, standby] again
        return Fault(planned.kind.value, planned.pause, at - begin, back, back - at, None, takeover)

    def replica(self) -> OperatorProcess:
        process = self.operator(
            f"replica-{self.replicas_started}",
            ["--peering-lifetime", str(self.args.peering_lifetime)],
        )
        self.replicas_started += 1
        self.processes.append(process)
        return process.start()

    def start_replicas(self) -> list[OperatorProcess]:
        first = self.replica()
        # The single operator frees its Lease when it stops cleanly; when it had to be
        # killed, the first replica waits for that Lease to expire (the operator's default
        # --peering-lifetime, 60 s, as the first replica sees it) before it may act.
        first.wait_for_log(ACTING, timeout=SINGLE_LEASE_SECONDS + 6 * self.args.peering_lifetime)
        second = self.replica()
        second.wait_for_log("peering in ClusterKopfPeering", timeout=120)
        return [first, second]

    def wait_recovered(self, tracker: Tracker, back: float) -> float | None:
        """Until the first admission after `back`; None if none came (no job left waiting,
        or none within --recovery-timeout)."""

        def probe() -> float | bool | None:
            at = tracker.first_admission_after(back)
            if at is not None:
                return at
            return tracker.waiting() == 0 or None

        try:
            found = poll(
                probe, timeout=self.args.recovery_timeout, what="an admission", interval=0.1
            )
        except WaitTimeoutError:
            return None
        return None if found is True else float(found) - back

    def wait_drained(self, tracker: Tracker, begin: float, result: Drain) -> None:
        try:
            poll(
                lambda: tracker.drained_at,
                timeout=self.args.timeout,
                what=f"{len(self.jobs)} jobs to finish",
                interval=0.5,
            )
        except WaitTimeoutError as e:
            log(f"  {e}")
        result.finished = tracker.terminal()
        if tracker.drained_at is not None:
            result.drain_seconds = tracker.drained_at - begin

    # -- the audit -----------------------------------------------------------------------------

    def get(self, resource: str, namespace: str) -> list[dict[str, Any]]:
        text = self.cluster.kubectl("get", "-n", namespace, resource, "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(text)["items"]
        return items

    def finish(self, namespace: str, tracker: Tracker, result: Drain) -> None:
        """Audit once the queues' statistics and the deliveries have settled (each with a
        deadline: what is still missing then is counted)."""
        tracker.merge_pods(self.get("pods", namespace))
        named = {j.name: j for j in self.jobs}
        deadline = time.monotonic() + self.args.settle_timeout
        while True:
            jobs = {j["metadata"]["name"]: j for j in self.get(f"videojobs.{GROUP}", namespace)}
            queues = {q["metadata"]["name"]: q for q in self.get(f"videoqueues.{GROUP}", namespace)}
            found = audit(
                list(named.values()),
                jobs,
                tracker.pods_snapshot(),
                queues,
                self.receiver.of(namespace),
            )
            settled = not found.statistics and not found.receiver_missed
            if settled or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        record_audit(result, found, len(self.receiver.of(namespace)))
        result.signed_deliveries = sum(d.signed for d in self.receiver.of(namespace))
        result.pods = sum(
            len(uids) for by in tracker.pods_snapshot().values() for uids in by.values()
        )


def record_audit(result: Drain, found: Audit, deliveries: int) -> None:
    result.audit = {
        "counts": found.counts(),
        "examples": {
            name: lines[:10]
            for name, lines in asdict(found).items()
            if isinstance(lines, list) and lines
        },
    }
    result.deliveries = deliveries
    result.duplicate_deliveries = found.duplicate_deliveries
    result.receiver_missed = len(found.receiver_missed)
    result.audit["clean"] = found.clean


# -- report ---------------------------------------------------------------------------------


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def table(chaos: Drain, baseline: Drain | None, args: argparse.Namespace, mix: str) -> str:
    lines = [
        f"workload: {chaos.jobs} jobs ({mix}) in {len(QUEUES)} queues of concurrency "
        f"{args.concurrency}, priorities 0-10, {chaos.pods} worker pods; seed {args.seed}",
        "",
    ]
    lines += [f"{'fault':<26}{'at s':>8}{'down s':>8}{'recovery s':>12}{'takeover s':>12}"]
    lines.append("-" * len(lines[-1]))
    for f in chaos.faults:
        lines.append(
            f"{f.kind:<26}{f.at:>8.1f}{f.down_seconds:>8.1f}{fmt(f.recovery_seconds):>12}"
            f"{fmt(f.takeover_seconds):>12}"
        )
    by_kind: dict[str, list[float]] = defaultdict(list)
    for f in chaos.faults:
        if f.recovery_seconds is not None:
            by_kind[f.kind].append(f.recovery_seconds)
    lines.append("")
    for kind, values in by_kind.items():
        lines.append(
            f"{kind:<26} n={len(values):<3} recovery mean {sum(values) / len(values):.1f}s, "
            f"max {max(values):.1f}s"
        )
    if chaos.skipped_faults:
        lines.append(f"not injected (every job had finished): {', '.join(chaos.skipped_faults)}")
    lines.append("")
    for name, count in chaos.audit["counts"].items():
        shown = "n/a (status.notification absent)" if count is None else str(count)
        lines.append(f"{name:<32}{shown:>8}")
    lines.append(
        f"deliveries received: {chaos.deliveries} ({chaos.signed_deliveries} signed, "
        f"{chaos.duplicate_deliveries} duplicates"
        f", {chaos.receiver_missed} owed keys never received)"
    )
    lines.append("")
    lines.append(
        f"drain with chaos: {chaos.finished}/{chaos.jobs} jobs in {fmt(chaos.drain_seconds)}s"
        f" through {len(chaos.faults)} faults, {chaos.operator_starts} operator starts"
    )
    if baseline is not None:
        clean = "clean" if baseline.audit["clean"] else "NOT clean"
        cost = chaos.drain_seconds / baseline.drain_seconds - 1
        lines.append(
            f"drain without faults: {baseline.finished}/{baseline.jobs} jobs in "
            f"{fmt(baseline.drain_seconds)}s (audit {clean})"
            f"; throughput cost of the chaos: {fmt(100 * cost, 0)} %"
        )
    return "\n".join(lines)


def fault_counts(args: argparse.Namespace) -> dict[FaultKind, int]:
    return {
        FaultKind.OPERATOR_KILL: args.kills,
        FaultKind.APISERVER_RESTART: args.apiserver_restarts,
        FaultKind.ETCD_RESTART: args.etcd_restarts,
        FaultKind.REDIS_RESTART: args.redis_restarts,
        FaultKind.REPLICA_KILL: args.replica_kills,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 jobs, 9 faults (for CI)")
    parser.add_argument("--jobs", type=int, help="jobs (default 2000; 200 with --quick)")
    parser.add_argument("--seed", type=int, default=20261203, help="jobs and fault moments")
    parser.add_argument("--concurrency", type=int, help="per queue (default 6; 2 quick)")
    parser.add_argument("--kills", type=int, help="operator SIGKILLs (default 20; 4 quick)")
    parser.add_argument("--apiserver-restarts", type=int, help="default 3; 1 quick")
    parser.add_argument("--etcd-restarts", type=int, default=1, help="default 1")
    parser.add_argument("--redis-restarts", type=int, default=1, help="default 1")
    parser.add_argument("--replica-kills", type=int, help="default 5; 2 quick")
    parser.add_argument(
        "--down", type=float, default=0.0, help="seconds the API server or etcd stays down"
    )
    parser.add_argument("--peering-lifetime", type=int, default=10, help="seconds")
    parser.add_argument(
        "--pause", type=float, nargs=2, default=(1.0, 5.0), help="seconds between faults"
    )
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--baseline", action="store_true", default=None, help="(quick: off)")
    baseline.add_argument("--no-baseline", dest="baseline", action="store_false")
    parser.add_argument("--parallelism", type=int, default=32, help="client writes in flight")
    parser.add_argument("--timeout", type=float, default=1800, help="for the jobs to finish")
    parser.add_argument("--recovery-timeout", type=float, default=180, help="per fault")
    parser.add_argument("--settle-timeout", type=float, default=60, help="statistics, hooks")
    parser.add_argument("--out", type=Path, help="JSON results (default next to this file)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.jobs = args.jobs or (200 if quick else 2000)
    args.concurrency = args.concurrency or (2 if quick else 6)
    args.kills = args.kills if args.kills is not None else (4 if quick else 20)
    if args.apiserver_restarts is None:
        args.apiserver_restarts = 1 if quick else 3
    if args.replica_kills is None:
        args.replica_kills = 2 if quick else 5
    if args.baseline is None:
        args.baseline = not quick
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path(__file__).with_name(
        "results-quick.json" if args.quick else "results.json"
    )
    faults = plan_faults(random.Random(args.seed + 1), fault_counts(args), tuple(args.pause))
    nodes = 4
    config = ClusterConfig(
        nodes=[
            NodeSpec(f"kwok-node-{i}", cpu="1000", memory="1000Gi", pods=PODS_PER_NODE)
            for i in range(nodes)
        ],
        terminated_pod_gc_threshold=20 * args.jobs,  # every worker pod stays for the audit
    )
    workdir = Path(tempfile.mkdtemp(prefix="videoqueue-chaos-"))
    log(f"starting the local control plane (logs in {workdir}) ...")
    baseline: Drain | None = None
    with (
        LocalCluster(cluster_config=config) as cluster,
        RedisServer(workdir / "redis") as redis,
        Receiver(WEBHOOK_SECRET) as receiver,
    ):
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "peering"))
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/videoqueues.videoqueue.dev",
            "crd/videojobs.videoqueue.dev",
            "crd/clusterkopfpeerings.kopf.dev",
        )
        run = Chaos(cluster, args, workdir, redis, receiver)
        log(f"chaos: {args.jobs} jobs, {len(faults)} faults ...")
        chaos = run.chaos(faults)
        if args.baseline:
            log(f"baseline: the same {args.jobs} jobs, no faults ...")
            baseline = run.baseline()
    text = table(chaos, baseline, args, run.mix())
    print(text)
    write_results(
        out, "benchmarks.chaos.run", argv or sys.argv[1:], args,
        chaos=asdict(chaos), baseline=None if baseline is None else asdict(baseline), table=text,
    )  # fmt: skip
    log(f"results written to {out}")
    drains = [chaos] if baseline is None else [chaos, baseline]
    ok = all(d.finished >= d.jobs and d.audit["clean"] for d in drains)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
