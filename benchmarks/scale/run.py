"""Scale benchmark (issues 8 and 17): videoqueue against the honest limit, batch Jobs and Kueue.

    .venv/bin/python -m benchmarks.scale.run            # N = 5,000; 20,000 and 100,000 pending
    .venv/bin/python -m benchmarks.scale.run --quick    # N = 200, 2,000 pending (CI)

One local control plane (videoqueue.envtest.LocalCluster, KWOK nodes) for the whole run:
- limit (the honest limit): for each of N objects the harness creates a pod that the
  scheduler binds and KWOK runs, and patches the object's status once the pod succeeded,
  nothing else: the least any controller can cost per job; the other drains are a share of it;
- batch: N batch/v1 Jobs with the same pod template, drained by kube-controller-manager;
- kueue: the same Jobs through Kueue (benchmarks/scale/kueue.py), created suspended for a
  LocalQueue whose ClusterQueue has the videoqueue scenario's memory budget as quota;
- videoqueue: N VideoJobs at priorities 1, 5 and 9 in one queue with room for all of them;
- arrivals: VideoJobs created at each of `--rates` per second with free capacity
  (creation -> pod), each rate first through the honest limit's controller (markers created
  at that rate, a pod per marker as its watch event arrives): the least latency at that rate;
- pending: the earlier scenarios' namespaces are deleted, then each of `--pending` VideoJobs
  counts is created in a paused queue: operator RSS once they are indexed, then an operator
  restart with the queue resumed: time to the first new worker pod;
- physical (only with `--only physical,...`): a tight client creates N pods nobody schedules
  and patches N statuses: the API server's write ceiling on this machine.
CPU per job of the controllers that ran the jobs comes from /proc (utime + stime): kube-
controller-manager's for batch Jobs, Kueue's plus kube-controller-manager's for Kueue, a fresh
operator process's for VideoJobs.
Every pod runs `--run-for` on KWOK and succeeds. Creation -> pod is measured on this
machine's clock: from the create call's answer to the pod's ADDED event on a watch (the
same path for every scenario). API writes come from the API server's apiserver_request_total
before and after each scenario, the harness's own creates subtracted. Operator CPU and peak
RSS come from /proc (utime + stime, VmHWM) of a fresh operator process per scenario.
Writes per job include core/v1 Events; `cluster w/s` counts everyone's writes (controller,
scheduler, KWOK, creates) per second of the scenario: the share of the write ceiling it used.

Prints a table and writes the figures as JSON (`--out`). No timing assertion: exit status 1
only when a scenario did not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.results import write_results
from benchmarks.scale import kueue
from benchmarks.writes_per_job import (
    BACKGROUND,
    GROUP,
    VERSION,
    WriteKey,
    category,
    scrape_write_counts,
    status_writes,
    status_writes_by_phase,
    subtract,
)
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.kube_helpers import (
    PODS,
    VIDEOJOBS,
    VIDEOQUEUES,
    ClientSettings,
    Resource,
)
from videoqueue.controller.watch import WatchStream
from videoqueue.envtest import ClusterConfig, LocalCluster, NodeSpec, pod_script, poll
from videoqueue.envtest.builders import MakeJob, MakeQueue
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.scheduling.worker_pod import ANNOTATION_ADMITTED_AT, ANNOTATION_JOB_NAME

REPO = Path(__file__).resolve().parents[2]

JOBS = Resource("batch", "v1", "jobs")
BENCH_GROUP = "scale.videoqueue.dev"
MARKERS = Resource(BENCH_GROUP, "v1", "markers")
PODS_PER_NODE = 500
IMAGE = "videoqueue/worker:test"  # never pulled: KWOK plays the container
PRIORITIES = (1, 5, 9)
SCENARIOS = ("physical", "limit", "batch", "kueue", "videoqueue", "arrivals", "pending")
DEFAULT_SCENARIOS = ("limit", "batch", "kueue", "videoqueue", "arrivals", "pending")
# Scenarios that drain N jobs: each is followed by deleting its namespace.
DRAINS = ("physical", "limit", "batch", "kueue", "videoqueue")

# Issue 17's targets. Ratios compare scenarios of the same run; "<=" unless named in AT_LEAST.
TARGETS = {
    "drain_vs_batch": 0.8,  # videoqueue's drain wall time / batch Jobs'
    "drain_vs_kueue": 0.7,  # / Kueue's
    "share_of_honest_limit": 0.80,  # videoqueue's drain rate / the honest limit's
    "cpu_per_job_vs_kcm": 1.0,  # operator CPU per job / kube-controller-manager's per batch Job
    "writes_per_job": 3.0,  # Events included
    "arrivals_50_p99_seconds": 0.5,  # creation -> pod at 50 jobs/s with free capacity
    "pending_20000_rss_mib": 150.0,
    "pending_100000_rss_mib": 600.0,
    "restart_20000_seconds": 10.0,  # restart -> first admission with 20,000 pending
    "restart_100000_seconds": 40.0,
}
AT_LEAST = {"share_of_honest_limit"}


# -- figures ----------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    jobs: int
    done: int = 0
    wall_seconds: float = math.nan
    admissions_per_second: float = math.nan
    p50_to_pod: float = math.nan
    p99_to_pod: float = math.nan
    p50_to_admitted: float = math.nan  # to the operator's admitted-at stamp (VideoJobs)
    p99_to_admitted: float = math.nan
    writes_per_job: float = math.nan  # by who runs the jobs (operator, KCM or the client)
    object_writes_per_job: float = math.nan  # the same without core/v1 Events
    # Everyone's writes (the controller's, KWOK's, the scheduler's, the creates) per second
    # of the scenario's wall time: how much of the API server's write ceiling it used.
    cluster_writes_per_second: float = math.nan
    operator_cpu_seconds: float = math.nan
    operator_peak_rss_mib: float = math.nan
    # CPU of every controller that ran the jobs (kube-controller-manager for batch Jobs,
    # Kueue plus kube-controller-manager for Kueue, the operator for VideoJobs), per job.
    controller_cpu_ms_per_job: float = math.nan
    kcm_cpu_seconds: float = math.nan
    kueue_cpu_seconds: float = math.nan
    kueue_peak_rss_mib: float = math.nan
    writes: dict[str, int] = field(default_factory=dict)
    # The operator's VideoJob status writes per job, by the phase each wrote (its /metrics).
    status_writes_by_phase: dict[str, float] = field(default_factory=dict)


def quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def latencies(created: dict[str, float], first_pod: dict[str, float]) -> list[float]:
    return [first_pod[name] - at for name, at in created.items() if name in first_pod]


def record_admitted(
    result: Scenario, created: dict[str, float], admitted: dict[str, float]
) -> None:
    lat = latencies(created, admitted)
    result.p50_to_admitted, result.p99_to_admitted = quantile(lat, 0.5), quantile(lat, 0.99)


@dataclass(frozen=True)
class ProcStats:
    cpu_seconds: float
    rss_mib: float
    peak_rss_mib: float


def proc_stats(pid: int) -> ProcStats:
    """CPU (user + system) and resident memory of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    kib = {key: int(status[key].split()[0]) for key in ("VmRSS", "VmHWM")}
    return ProcStats(cpu, kib["VmRSS"] / 1024, kib["VmHWM"] / 1024)


def wait_settled(operator: OperatorProcess, timeout: float = 300) -> None:
    """Wait until the operator acts and has digested its start: it indexes what earlier
    scenarios left (thousands of finished jobs and pods) and kopf replays its own listing,
    which is a restart's cost, not what a scenario measures. Settled: under a fifth of a
    core over a second."""
    operator.wait_for_log("acting: this replica now schedules", timeout=timeout)
    assert operator.pid is not None
    pid = operator.pid

    def calm() -> bool:
        before = proc_stats(pid).cpu_seconds
        time.sleep(1.0)
        return proc_stats(pid).cpu_seconds - before < 0.2

    poll(calm, timeout=timeout, what="the operator to settle after its start", interval=0.0)


# -- watching ---------------------------------------------------------------------------


class Watch:
    """A watch stream, stamped on arrival by `stamp_watch.py` in a process of its own (a
    reader thread here fell behind while this process created objects, and the API server
    closes a watch that falls behind); this thread reads the stamped lines from a file and
    hands each event to `on_event` with its arrival time."""

    def __init__(
        self, cluster: LocalCluster, path: str, on_event: Callable[[str, Any, float], None]
    ) -> None:
        self._file = Path(tempfile.mkstemp(prefix="watch-", suffix=".log")[1])
        self._argv = [
            sys.executable,
            str(Path(__file__).with_name("stamp_watch.py")),
            str(cluster.binaries["kubectl"]),
            str(cluster.kubeconfig),
            path,
            str(self._file),
        ]
        self._on_event = on_event
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._process = subprocess.Popen(self._argv)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
        self._stopping.set()  # the thread reads what is left, then ends
        self._thread.join(timeout=60)
        self._file.unlink(missing_ok=True)

    def _run(self) -> None:
        with self._file.open("rb") as lines:
            pending = b""
            while True:
                stopping = self._stopping.is_set()
                chunk = lines.readline()
                if not chunk:
                    if stopping:
                        return
                    time.sleep(0.05)
                    continue
                pending += chunk
                if not pending.endswith(b"\n"):
                    continue  # the writer is mid-line
                stamp, _, line = pending.partition(b" ")
                pending = b""
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:  # a dead reader would stop every count
                    print(f"watch: skipped a malformed line: {line[:200]!r}", file=sys.stderr)
                    continue
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self._on_event(event["type"], event["object"], float(stamp))


class PodTimes:
    """When each pod was first seen, keyed by the job that owns it."""

    def __init__(self, owner: Callable[[Any], str]) -> None:
        self.first_pod: dict[str, float] = {}
        # The operator's own admission time (annotation on its pods): tells the operator's
        # delay from this watch's lag.
        self.admitted_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self._owner = owner

    def __call__(self, kind: str, pod: Any, now: float) -> None:
        if kind != "ADDED":
            return
        owner = self._owner(pod)
        admitted = (pod["metadata"].get("annotations") or {}).get(ANNOTATION_ADMITTED_AT)
        with self.lock:
            self.first_pod.setdefault(owner, now)
            if admitted:
                stamp = datetime.datetime.fromisoformat(admitted).timestamp()
                self.admitted_at.setdefault(owner, stamp)


class Completions:
    """When each object first had condition Complete=True."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    def __call__(self, kind: str, obj: Any, now: float) -> None:
        conditions = (obj.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions):
            with self.lock:
                self.at.setdefault(obj["metadata"]["name"], now)

    def count(self) -> int:
        with self.lock:
            return len(self.at)


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


# -- writing ----------------------------------------------------------------------------


async def bounded(parallelism: int, call: Callable[[int], Awaitable[None]], count: int) -> None:
    """Run call(0) .. call(count - 1) in order, at most `parallelism` in flight."""
    indexes = iter(range(count))

    async def worker() -> None:
        for i in indexes:
            await call(i)

    await asyncio.gather(*(worker() for _ in range(parallelism)))


def client_settings(parallelism: int) -> ClientSettings:
    return ClientSettings(connection_limit=parallelism + 8, write_concurrency=parallelism)


def worker_pod_template(run_for: str) -> dict[str, Any]:
    return {
        "metadata": {"annotations": pod_script(run_for, message='{"ok": true}')},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "worker",
                    "image": IMAGE,
                    "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}},
                }
            ],
        },
    }


def marker_crd() -> dict[str, Any]:
    """A bare custom resource with a status subresource, for the physical limit."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"markers.{BENCH_GROUP}"},
        "spec": {
            "group": BENCH_GROUP,
            "names": {"kind": "Marker", "plural": "markers", "singular": "marker"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


class Profile:
    """py-spy sampling a live process into collapsed stacks (`--profile DIR`)."""

    def __init__(self, pid: int | None, out: Path | None) -> None:
        self._argv = None
        if pid is not None and out is not None:
            py_spy = Path(sys.executable).with_name("py-spy")
            rate = ["--rate", "200", "--format", "raw", "--nonblocking"]
            self._argv = [str(py_spy), "record", "--pid", str(pid), *rate, "-o", str(out)]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profile:
        if self._argv is not None:
            self._process = subprocess.Popen(self._argv, stdout=subprocess.DEVNULL)
        return self

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            self._process.wait(timeout=60)


class MarkerFinisher:
    """The honest limit's second half: each marker's pod as seen on a watch (`on_pod`), and
    one status patch per marker once its pod succeeded (`run`, one or more in parallel)."""

    def __init__(self) -> None:
        self.pods = PodTimes(lambda pod: "m" + pod["metadata"]["name"][1:])
        self._loop = asyncio.get_running_loop()
        self._succeeded: asyncio.Queue[str] = asyncio.Queue()
        self._patched: set[str] = set()

    def on_pod(self, kind: str, pod: Any, now: float) -> None:
        self.pods(kind, pod, now)
        if (pod.get("status") or {}).get("phase") == "Succeeded":
            self._loop.call_soon_threadsafe(self._succeeded.put_nowait, pod["metadata"]["name"])

    async def run(self, kube: KubeClient, ns: str) -> None:
        complete = {"conditions": [{"type": "Complete", "status": "True"}]}
        while True:
            pod = await self._succeeded.get()
            if pod in self._patched:
                continue  # later events of a finished pod
            self._patched.add(pod)
            await kube.patch(MARKERS, ns, "m" + pod[1:], {"status": complete}, subresource="status")


class Bench:
    def __init__(self, cluster: LocalCluster, args: argparse.Namespace, workdir: Path) -> None:
        self.cluster = cluster
        self.args = args
        self.workdir = workdir
        self.namespaces: list[str] = []
        self.kueue_pid: int | None = None

    async def writer(self) -> KubeClient:
        """A client for the harness's own writes, `--parallelism` of them in flight."""
        return await KubeClient.from_kubeconfig(
            self.cluster.kubeconfig, settings=client_settings(self.args.parallelism)
        )

    def namespace(self, name: str) -> str:
        self.cluster.create_namespace(name)
        self.namespaces.append(name)
        return name

    def clear_namespaces(self) -> None:
        """Delete the earlier scenarios' namespaces and wait until they are gone, so that the
        pending scenario's operator holds its 20,000 jobs and nothing else. Their queues'
        finalizer is the operator's, and no operator runs now: it is lifted by hand."""
        for ns in self.namespaces:
            queues = self.cluster.kubectl("get", "-n", ns, "videoqueues", "-o", "name").stdout
            for queue in queues.split():
                self.cluster.kubectl(
                    "patch",
                    "-n",
                    ns,
                    queue,
                    "--type=merge",
                    "-p",
                    '{"metadata":{"finalizers":null}}',
                )
            self.cluster.delete_namespace(ns)
        names = set(self.namespaces)

        def gone() -> bool:
            listed = self.cluster.kubectl("get", "namespaces", "-o", "name").stdout.split()
            return not names & {n.removeprefix("namespace/") for n in listed}

        poll(gone, timeout=self.args.timeout, what="the earlier namespaces to go", interval=2.0)
        self.namespaces.clear()

    def settled_writes(self, quiet: float = 3.0, timeout: float = 300) -> Counter[WriteKey]:
        """Write counters once the writes about jobs and pods (by the operator, KCM, the
        scheduler, KWOK) have not moved for `quiet` seconds."""
        last: list[tuple[int, float]] = []

        def probe() -> Counter[WriteKey] | None:
            counts = scrape_write_counts(self.cluster)
            # Everyone's, KWOK and the scheduler too: what trails behind a scenario would
            # compete with the next one for the API server.
            total = cluster_writes(counts)
            now = time.monotonic()
            if not last or last[0][0] != total:
                last[:] = [(total, now)]
            return counts if now - last[0][1] >= quiet else None

        return poll(probe, timeout=timeout, what="writes to settle", interval=1.0)

    def stop_kueue(self) -> None:
        """Stop Kueue once its namespace is gone (its Workloads' finalizers are its own)."""
        if self.kueue_pid is not None:
            self.cluster.stop_beside("kueue")
            self.kueue_pid = None

    def profile(self, operator: OperatorProcess, name: str) -> Profile:
        out = self.args.profile / f"{name}.txt" if self.args.profile else None
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
        return Profile(operator.pid, out)

    def operator(self, name: str) -> OperatorProcess:
        return OperatorProcess(
            self.cluster.kubeconfig, self.workdir / f"{name}.log", ["--standalone"], name=name
        )

    async def create_markers(self, kube: KubeClient, ns: str, n: int) -> None:
        """N bare custom objects m00000..: what the physical and honest limits act on."""

        async def make_marker(i: int) -> None:
            body = {"apiVersion": f"{BENCH_GROUP}/v1", "kind": "Marker"}
            await kube.create(MARKERS, ns, {**body, "metadata": {"name": f"m{i:05d}"}})

        await bounded(self.args.parallelism, make_marker, n)

    # -- 1. physical limit ----------------------------------------------------------------

    async def physical(self) -> Scenario:
        n, ns = self.args.jobs, self.namespace("physical")
        result = Scenario("physical limit", n)
        template = worker_pod_template(self.args.run_for)
        # No scheduler serves this name: the pods are written and nothing else, so the
        # ceiling is the API server's alone and no scheduling or KWOK work trails into the
        # next scenario.
        spec = {**template["spec"], "schedulerName": "bench-nobody"}
        async with await self.writer() as kube:
            await self.create_markers(kube, ns, n)
            before = self.settled_writes()
            created: dict[str, float] = {}
            first_pod: dict[str, float] = {}

            async def one(i: int) -> None:
                name = f"m{i:05d}"
                created[name] = time.time()
                metadata = {"name": f"p{i:05d}", **template["metadata"]}
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}
                await kube.create(PODS, ns, {**pod, "spec": spec})
                first_pod[name] = time.time()
                await kube.patch(
                    MARKERS, ns, name, {"status": {"admitted": True}}, subresource="status"
                )

            begin = time.monotonic()
            await bounded(self.args.parallelism, one, n)
            result.wall_seconds = time.monotonic() - begin
        after = self.settled_writes()
        writes = subtract(after, before)
        mine = sum(
            v
            for k, v in writes.items()
            if (k.group, k.resource, k.subresource)
            in {("", "pods", ""), (BENCH_GROUP, "markers", "status")}
        )
        result.done = len(first_pod)
        result.admissions_per_second = n / result.wall_seconds
        lat = latencies(created, first_pod)
        result.p50_to_pod, result.p99_to_pod = quantile(lat, 0.5), quantile(lat, 0.99)
        result.writes_per_job = result.object_writes_per_job = mine / n
        markers = sum(n for k, n in writes.items() if k.group == BENCH_GROUP)
        result.cluster_writes_per_second = (cluster_writes(writes) + markers) / result.wall_seconds
        result.writes = by_path(writes)
        return result

    # -- 1b. the honest limit -------------------------------------------------------------

    async def limit(self) -> Scenario:
        """The least work any controller can cost the cluster per job: for each of N objects
        a pod that the scheduler binds and KWOK runs, and one status patch when the pod has
        succeeded, nothing else (no Events, no intermediate statuses). Its drain rate is what
        the other scenarios are a share of."""
        n, ns = self.args.jobs, self.namespace("limit")
        result = Scenario("honest limit", n)
        template = worker_pod_template(self.args.run_for)
        finisher = MarkerFinisher()
        done = Completions()
        created: dict[str, float] = {}
        async with await self.writer() as kube:
            await self.create_markers(kube, ns, n)
            before = self.settled_writes()

            async def make_pod(i: int) -> None:
                metadata = {"name": f"p{i:05d}", **template["metadata"]}
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}
                await kube.create(PODS, ns, {**pod, "spec": template["spec"]})
                created[f"m{i:05d}"] = time.time()

            with (
                Watch(self.cluster, pods_path(ns), finisher.on_pod),
                Watch(self.cluster, f"/apis/{BENCH_GROUP}/v1/namespaces/{ns}/markers", done),
            ):
                begin = time.monotonic()
                patchers = [
                    asyncio.create_task(finisher.run(kube, ns))
                    for _ in range(self.args.parallelism)
                ]
                await bounded(self.args.parallelism, make_pod, n)
                deadline = begin + self.args.timeout
                while done.count() < n:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{n} markers of {result.name} did not complete")
                    await asyncio.sleep(0.5)
                result.done = done.count()
                result.wall_seconds = time.monotonic() - begin
                for task in patchers:
                    task.cancel()
                await asyncio.gather(*patchers, return_exceptions=True)
        after = self.settled_writes()
        self.finish(
            result,
            subtract(after, before),
            created,
            finisher.pods.first_pod,
            controller={BENCH_GROUP},
            created_count=0,
        )
        return result

    async def limit_arrivals(self, rate: float) -> Scenario:
        """The honest limit's controller under arrivals: markers created at `rate` per second
        (open loop, as the VideoJobs of `arrivals`), each turned into its pod as soon as its
        ADDED event arrives on a watch, one status patch once the pod succeeded. Its
        creation -> pod is the least latency any controller has at that rate on this cluster
        (watch delivery and a pod create under the same load), measured the same way."""
        n = max(1, int(rate * self.args.arrival_seconds))
        ns = self.namespace(f"limit-arrivals-{rate:g}".replace(".", "-"))
        result = Scenario(f"limit {rate:g}/s", n)
        template = worker_pod_template(self.args.run_for)
        finisher = MarkerFinisher()
        done = Completions()
        created: dict[str, float] = {}
        async with await self.writer() as kube:
            in_flight = asyncio.Semaphore(self.args.parallelism)
            makers: set[asyncio.Task[None]] = set()

            async def make_pod(marker: str) -> None:
                async with in_flight:
                    metadata = {"name": "p" + marker[1:], **template["metadata"]}
                    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}
                    await kube.create(PODS, ns, {**pod, "spec": template["spec"]})

            seen: set[str] = set()

            def on_marker(body: dict[str, Any], deleted: bool) -> None:
                meta = body["metadata"]
                if deleted or meta.get("namespace") != ns or meta["name"] in seen:
                    return
                seen.add(meta["name"])
                task = asyncio.create_task(make_pod(meta["name"]))
                makers.add(task)
                task.add_done_callback(makers.discard)

            def on_expired() -> None:
                raise AssertionError(f"the watch of {result.name}'s markers expired")

            # The operator's own watch stream (reopened from the last version seen, failures
            # backed off), not `Watch`: its file hand-over polls every 50 ms.
            markers = WatchStream(kube, MARKERS, "", on_event=on_marker, on_expired=on_expired)

            with (
                Watch(self.cluster, pods_path(ns), finisher.on_pod),
                Watch(self.cluster, f"/apis/{BENCH_GROUP}/v1/namespaces/{ns}/markers", done),
            ):
                controller = [
                    asyncio.create_task(markers.run()),
                    *(asyncio.create_task(finisher.run(kube, ns)) for _ in range(4)),
                ]
                begin = time.monotonic()

                async def make_marker(i: int) -> None:
                    await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))
                    name = f"m{i:05d}"
                    body = {"apiVersion": f"{BENCH_GROUP}/v1", "kind": "Marker"}
                    await kube.create(MARKERS, ns, {**body, "metadata": {"name": name}})
                    created[name] = time.time()

                try:
                    await asyncio.gather(*(make_marker(i) for i in range(n)))
                    deadline = begin + self.args.timeout
                    while done.count() < n:
                        for task in controller:
                            if task.done():
                                task.result()  # a controller task that failed: say why
                        if time.monotonic() > deadline:
                            raise AssertionError(f"{n} markers of {result.name} did not complete")
                        await asyncio.sleep(0.5)
                finally:
                    for task in controller:
                        task.cancel()
                    await asyncio.gather(*controller, *makers, return_exceptions=True)
                result.done = done.count()
                result.wall_seconds = time.monotonic() - begin
        lat = latencies(created, finisher.pods.first_pod)
        result.p50_to_pod, result.p99_to_pod = quantile(lat, 0.5), quantile(lat, 0.99)
        result.admissions_per_second = len(finisher.pods.first_pod) / result.wall_seconds
        return result

    # -- 2. batch Jobs --------------------------------------------------------------------

    async def batch(self) -> Scenario:
        n, ns = self.args.jobs, self.namespace("batch")
        result = Scenario("batch/v1 Jobs", n)
        await self.run_batch_jobs(ns, result, {"batch"})
        return result

    async def kueue(self) -> Scenario:
        """The same batch Jobs through Kueue: created suspended with the queue-name label,
        admitted within a ClusterQueue whose memory quota is the videoqueue scenario's
        budget (room for all of them, as there)."""
        n, ns = self.args.jobs, self.namespace("kueue")
        result = Scenario("Kueue", n)
        if self.kueue_pid is None:
            kueue.install_crds(self.cluster)
            self.kueue_pid = kueue.start(self.cluster, self.workdir)
        objects = {
            "apiVersion": "v1",
            "kind": "List",
            "items": kueue.queue_objects(ns, ns, f"{n}Gi"),
        }
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(objects))
        await self.run_batch_jobs(ns, result, {"batch", kueue.GROUP}, queue=ns)
        return result

    async def run_batch_jobs(
        self, ns: str, result: Scenario, controller: set[str], *, queue: str | None = None
    ) -> None:
        """N batch Jobs with the worker pod template, created and drained; with `queue`,
        suspended and labelled for that Kueue LocalQueue. CPU of kube-controller-manager (and
        Kueue) from before the first create until the writes settle after the drain."""
        n = result.jobs
        template = worker_pod_template(self.args.run_for)
        pods = PodTimes(lambda pod: pod["metadata"].get("labels", {}).get("job-name", ""))
        done = Completions()
        before = self.settled_writes()
        cpu_before = self.controller_cpu()
        created: dict[str, float] = {}
        with (
            Watch(self.cluster, pods_path(ns), pods),
            Watch(self.cluster, f"/apis/batch/v1/namespaces/{ns}/jobs", done),
        ):
            begin = time.monotonic()
            async with await self.writer() as kube:

                async def make(i: int) -> None:
                    name = f"job-{i:05d}"
                    spec: dict[str, Any] = {"backoffLimit": 0, "template": template}
                    metadata: dict[str, Any] = {"name": name}
                    if queue is not None:
                        spec["suspend"] = True
                        metadata["labels"] = {kueue.QUEUE_NAME_LABEL: queue}
                    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata}
                    await kube.create(JOBS, ns, {**body, "spec": spec})
                    created[name] = time.time()

                await bounded(self.args.parallelism, make, n)
            self.drain(done, n, begin, result)
        after = self.settled_writes()
        cpu_after = self.controller_cpu()
        result.kcm_cpu_seconds = cpu_after["kcm"] - cpu_before["kcm"]
        controller_cpu = result.kcm_cpu_seconds
        if queue is not None and self.kueue_pid is not None:
            result.kueue_cpu_seconds = cpu_after["kueue"] - cpu_before["kueue"]
            result.kueue_peak_rss_mib = proc_stats(self.kueue_pid).peak_rss_mib
            controller_cpu += result.kueue_cpu_seconds
        result.controller_cpu_ms_per_job = 1000 * controller_cpu / n
        writes = subtract(after, before, Counter({WriteKey("POST", "batch", "jobs", ""): n}))
        self.finish(result, writes, created, pods.first_pod, controller=controller, created_count=n)

    def controller_cpu(self) -> dict[str, float]:
        """CPU seconds so far of kube-controller-manager and (once started) Kueue."""
        cpu = {"kcm": proc_stats(self.cluster.pids()["kube-controller-manager"]).cpu_seconds}
        if self.kueue_pid is not None:
            cpu["kueue"] = proc_stats(self.kueue_pid).cpu_seconds
        return cpu

    def drain(self, done: Completions, n: int, begin: float, result: Scenario) -> None:
        poll(
            lambda: done.count() >= n,
            timeout=self.args.timeout,
            what=f"{n} jobs of {result.name} to complete",
            interval=0.5,
        )
        result.done = done.count()
        result.wall_seconds = time.monotonic() - begin

    def finish(
        self,
        result: Scenario,
        writes: Counter[WriteKey],
        created: dict[str, float],
        first_pod: dict[str, float],
        *,
        controller: set[str],
        created_count: int,
    ) -> None:
        """Latencies and the writes of whoever runs the jobs: `controller` names the API
        groups it writes besides pods and Events (batch for KCM, videoqueue.dev for us)."""
        lat = latencies(created, first_pod)
        result.p50_to_pod, result.p99_to_pod = quantile(lat, 0.5), quantile(lat, 0.99)
        if first_pod:
            span = max(first_pod.values()) - min(created.values())
            result.admissions_per_second = len(first_pod) / span if span > 0 else math.nan
        objects = events = 0
        for key, count in writes.items():
            # Pod writes but deletions: no scenario deletes its pods, and kube-controller-
            # manager's garbage collection of finished pods is not the controller's doing.
            pod = (key.group, key.resource, key.subresource) == ("", "pods", "")
            pod = pod and key.verb != "DELETE"
            if key.group in controller or key.group == "kopf.dev" or pod:
                objects += count
            elif (key.group, key.resource) == ("", "events"):
                events += count
        n = max(result.done, 1)
        result.object_writes_per_job = objects / n
        result.writes_per_job = (objects + events) / n
        result.writes = by_path(writes)
        result.cluster_writes_per_second = (cluster_writes(writes) + created_count) / (
            result.wall_seconds
        )

    # -- 3. videoqueue --------------------------------------------------------------------

    def queue(self, name: str, *, concurrency: int, state: str = "Active") -> dict[str, Any]:
        annotations = worker_pod_template(self.args.run_for)["metadata"]["annotations"]
        return (
            MakeQueue(name)
            .state(state)
            .concurrency(concurrency)
            .budget(f"{concurrency}Gi")
            .default_request("1Gi")
            .max("1Gi")
            .template({"name": "worker", "image": IMAGE}, annotations=annotations)
            .obj()
        )

    @staticmethod
    def video_job(name: str, queue: str, priority: int) -> dict[str, Any]:
        return MakeJob(name, queue=queue).priority(priority).obj()

    async def create_video_jobs(
        self, ns: str, queue: str, names: list[str], created: dict[str, float]
    ) -> None:
        async with await self.writer() as kube:

            async def make(i: int) -> None:
                name = names[i]
                body = self.video_job(name, queue, PRIORITIES[i % len(PRIORITIES)])
                await kube.create(VIDEOJOBS, ns, body)
                created[name] = time.time()

            await bounded(self.args.parallelism, make, len(names))

    async def videoqueue(self) -> Scenario:
        n, ns = self.args.jobs, self.namespace("videoqueue")
        result = Scenario("videoqueue", n)
        pods = PodTimes(lambda pod: pod["metadata"]["annotations"].get(ANNOTATION_JOB_NAME, ""))
        done = Completions()
        created: dict[str, float] = {}
        operator = self.operator("operator-drain")
        with operator:
            wait_settled(operator)
            assert operator.pid is not None
            start_cpu = proc_stats(operator.pid).cpu_seconds
            before = self.settled_writes()
            phases_before = status_writes_by_phase(operator.metrics_port)
            with (
                Watch(self.cluster, pods_path(ns), pods),
                Watch(self.cluster, f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/videojobs", done),
                self.profile(operator, "videoqueue"),
            ):
                begin = time.monotonic()
                async with await KubeClient.from_kubeconfig(self.cluster.kubeconfig) as kube:
                    await kube.create(VIDEOQUEUES, ns, self.queue("bench", concurrency=n))
                await self.create_video_jobs(
                    ns, "bench", [f"vj-{i:05d}" for i in range(n)], created
                )
                self.drain(done, n, begin, result)
            after = self.settled_writes()
            stats = proc_stats(operator.pid)
            phases = status_writes_by_phase(operator.metrics_port)
        result.status_writes_by_phase = per_job_by_phase(phases_before, phases, n)
        result.operator_cpu_seconds = stats.cpu_seconds - start_cpu
        result.operator_peak_rss_mib = stats.peak_rss_mib
        result.controller_cpu_ms_per_job = 1000 * result.operator_cpu_seconds / n
        harness = Counter(
            {
                WriteKey("POST", GROUP, "videojobs", ""): n,
                WriteKey("POST", GROUP, "videoqueues", ""): 1,
            }
        )
        self.finish(
            result,
            subtract(after, before, harness),
            created,
            pods.first_pod,
            controller={GROUP},
            created_count=n + 1,
        )
        record_admitted(result, created, pods.admitted_at)
        return result

    # -- 4. arrivals at a fixed rate ------------------------------------------------------

    async def arrivals(self, rate: float) -> Scenario:
        n = max(1, int(rate * self.args.arrival_seconds))
        ns = self.namespace(f"arrivals-{rate:g}".replace(".", "-"))
        result = Scenario(f"arrivals {rate:g}/s", n)
        pods = PodTimes(lambda pod: pod["metadata"]["annotations"].get(ANNOTATION_JOB_NAME, ""))
        done = Completions()
        created: dict[str, float] = {}
        operator = self.operator(f"operator-arrivals-{rate:g}")
        with operator:
            wait_settled(operator)
            phases_before = status_writes_by_phase(operator.metrics_port)
            with (
                Watch(self.cluster, pods_path(ns), pods),
                Watch(self.cluster, f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/videojobs", done),
                self.profile(operator, f"arrivals-{rate:g}"),
            ):
                async with await KubeClient.from_kubeconfig(self.cluster.kubeconfig) as kube:
                    await kube.create(VIDEOQUEUES, ns, self.queue("steady", concurrency=n))
                    begin = time.monotonic()

                    async def make(i: int) -> None:
                        # Open loop: the i-th job is due at i / rate, however slow others are.
                        await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))
                        name = f"vj-{i:05d}"
                        await kube.create(VIDEOJOBS, ns, self.video_job(name, "steady", 5))
                        created[name] = time.time()

                    await asyncio.gather(*(make(i) for i in range(n)))
                self.drain(done, n, begin, result)
            phases = status_writes_by_phase(operator.metrics_port)
        result.status_writes_by_phase = per_job_by_phase(phases_before, phases, n)
        lat = latencies(created, pods.first_pod)
        result.p50_to_pod, result.p99_to_pod = quantile(lat, 0.5), quantile(lat, 0.99)
        record_admitted(result, created, pods.admitted_at)
        result.admissions_per_second = len(pods.first_pod) / result.wall_seconds
        return result

    # -- 5. many pending jobs, and a restart ----------------------------------------------

    async def pending(self, n: int) -> dict[str, float]:
        cleared = time.monotonic()
        self.clear_namespaces()
        cleared_seconds = time.monotonic() - cleared
        self.settled_writes()
        ns = self.namespace(f"pending-{n}")
        created: dict[str, float] = {}
        async with await KubeClient.from_kubeconfig(self.cluster.kubeconfig) as kube:
            await kube.create(
                VIDEOQUEUES, ns, self.queue("backlog", concurrency=10, state="Paused")
            )
        begin = time.monotonic()
        await self.create_video_jobs(ns, "backlog", [f"vj-{i:05d}" for i in range(n)], created)
        create_seconds = time.monotonic() - begin
        pods = PodTimes(lambda pod: pod["metadata"]["annotations"].get(ANNOTATION_JOB_NAME, ""))
        operator = self.operator(f"operator-pending-{n}")
        figures: dict[str, float] = {
            "jobs": n,
            "create_seconds": create_seconds,
            "clear_seconds": cleared_seconds,
        }
        with Watch(self.cluster, pods_path(ns), pods), operator:
            started = time.monotonic()
            operator.wait_for_log("videoqueue controller started", timeout=300)

            def indexed() -> bool:
                queue = self.cluster.kubectl(
                    "get", "-n", ns, f"videoqueues.{GROUP}/backlog", "-o", "json"
                ).stdout
                status = json.loads(queue).get("status") or {}
                return bool(int(status.get("pending", 0)) >= n)

            with self.profile(operator, f"pending-{n}-index"):
                poll(
                    indexed,
                    timeout=self.args.timeout,
                    what=f"the queue to count {n} pending",
                    interval=1.0,
                )
            figures["index_seconds"] = time.monotonic() - started
            # Each new job's first status (Pending, why it waits) is written after the queue
            # counts it: read the RSS once those writes are done, not during them.
            assert operator.metrics_port is not None
            with self.profile(operator, f"pending-{n}-statuses"):
                poll(
                    lambda: status_writes(operator.metrics_port) >= n,
                    timeout=self.args.timeout,
                    what=f"the operator to write {n} job statuses",
                    interval=1.0,
                )
            figures["status_written_seconds"] = time.monotonic() - started
            await asyncio.sleep(5)  # let the start-up burst's garbage go before reading RSS
            assert operator.pid is not None
            stats = proc_stats(operator.pid)
            figures["rss_mib"] = stats.rss_mib
            figures["peak_rss_mib"] = stats.peak_rss_mib
            figures["cpu_seconds_to_index"] = stats.cpu_seconds
            operator.kill()
            self.cluster.kubectl(
                "patch",
                "-n",
                ns,
                f"videoqueues.{GROUP}/backlog",
                "--type=merge",
                "-p",
                '{"spec": {"state": "Active"}}',
            )
            restart = time.time()
            operator.start()
            with self.profile(operator, f"pending-{n}-restart"):
                first = poll(
                    lambda: min(pods.first_pod.values(), default=None),
                    timeout=self.args.timeout,
                    what="the first admission after the restart",
                    interval=0.1,
                )
            figures["restart_to_admission_seconds"] = first - restart
            assert operator.pid is not None
            figures["restart_peak_rss_mib"] = proc_stats(operator.pid).peak_rss_mib
        return figures


def per_job_by_phase(before: Counter[str], after: Counter[str], jobs: int) -> dict[str, float]:
    return {
        phase: round((after[phase] - before[phase]) / max(jobs, 1), 3)
        for phase in sorted(after)
        if after[phase] > before[phase]
    }


def cluster_writes(writes: Counter[WriteKey]) -> int:
    """Writes about the scenario's objects, whoever made them (no leases, node heartbeats)."""
    return sum(n for key, n in writes.items() if category(key) != BACKGROUND)


def by_path(writes: Counter[WriteKey]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for key, count in writes.items():
        # Leases and node heartbeats are the control plane's own background.
        if count and key.group != "coordination.k8s.io" and key.resource != "nodes":
            totals[f"{key.verb} {key.path}"] += count
    return dict(sorted(totals.items()))


# -- report ---------------------------------------------------------------------------------


def fmt(value: float, digits: int = 2) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def table(scenarios: list[Scenario], pending: list[dict[str, float]]) -> str:
    header = (
        f"{'scenario':<20}{'jobs':>7}{'done':>7}{'wall s':>9}{'adm/s':>9}{'p50 s':>8}"
        f"{'p99 s':>8}{'adm p99':>8}{'writes/job':>12}{'objects/job':>13}{'ctl ms/job':>11}"
        f"{'op RSS MiB':>12}{'cluster w/s':>13}"
    )
    lines = [header, "-" * len(header)]
    for s in scenarios:
        lines.append(
            f"{s.name:<20}{s.jobs:>7}{s.done:>7}{fmt(s.wall_seconds, 1):>9}"
            f"{fmt(s.admissions_per_second, 1):>9}"
            f"{fmt(s.p50_to_pod, 3):>8}{fmt(s.p99_to_pod, 3):>8}{fmt(s.p99_to_admitted, 3):>8}"
            f"{fmt(s.writes_per_job):>12}{fmt(s.object_writes_per_job):>13}"
            f"{fmt(s.controller_cpu_ms_per_job, 1):>11}{fmt(s.operator_peak_rss_mib, 0):>12}"
            f"{fmt(s.cluster_writes_per_second, 0):>13}"
        )
    lines.append(
        "ctl ms/job: CPU per job of the controllers that ran the jobs (kube-controller-manager;"
        " Kueue + kube-controller-manager; the operator)"
    )
    for s in scenarios:
        if s.status_writes_by_phase:
            phases = ", ".join(f"{p} {v:.3f}" for p, v in s.status_writes_by_phase.items())
            lines.append(f"{s.name}: VideoJob status writes per job by phase written: {phases}")
    for point in pending:
        lines += [
            "",
            f"pending: {int(point['jobs'])} VideoJobs in a paused queue, alone in the cluster "
            f"(earlier namespaces deleted in {point['clear_seconds']:.0f}s; jobs created in "
            f"{point['create_seconds']:.0f}s); operator indexed them in "
            f"{point['index_seconds']:.1f}s and wrote their first statuses in "
            f"{point['status_written_seconds']:.1f}s using {point['cpu_seconds_to_index']:.1f} "
            f"CPU s; RSS {point['rss_mib']:.0f} MiB (peak {point['peak_rss_mib']:.0f} MiB)",
            f"restart with the queue resumed -> first new worker pod: "
            f"{point['restart_to_admission_seconds']:.1f}s "
            f"(peak RSS {point['restart_peak_rss_mib']:.0f} MiB)",
        ]
    return "\n".join(lines)


def verdicts(scenarios: list[Scenario], pending: list[dict[str, float]]) -> dict[str, Any]:
    named = {s.name.split()[0]: s for s in scenarios}
    arrivals = {s.name: s for s in scenarios if s.name.startswith("arrivals")}
    measured: dict[str, float] = {}
    for point in pending:
        measured[f"pending_{int(point['jobs'])}_rss_mib"] = point["rss_mib"]
        measured[f"restart_{int(point['jobs'])}_seconds"] = point["restart_to_admission_seconds"]
    if "videoqueue" in named:
        ours = named["videoqueue"]
        measured["writes_per_job"] = ours.writes_per_job
        if "batch/v1" in named:
            batch = named["batch/v1"]
            measured["drain_vs_batch"] = ours.wall_seconds / batch.wall_seconds
            measured["cpu_per_job_vs_kcm"] = (
                ours.controller_cpu_ms_per_job / batch.controller_cpu_ms_per_job
            )
        if "Kueue" in named:
            measured["drain_vs_kueue"] = ours.wall_seconds / named["Kueue"].wall_seconds
        if "honest" in named:
            measured["share_of_honest_limit"] = named["honest"].wall_seconds / ours.wall_seconds
        if "physical" in named:
            # Not a target: the share of the write ceiling the drain kept busy.
            ceiling = named["physical"].cluster_writes_per_second
            measured["share_of_write_ceiling"] = ours.cluster_writes_per_second / ceiling
    if "arrivals 50/s" in arrivals:
        measured["arrivals_50_p99_seconds"] = arrivals["arrivals 50/s"].p99_to_pod
    informative = {}  # figures beside the targets, not targets
    for s in scenarios:
        if s.name.startswith("limit ") and s.name.endswith("/s"):
            rate = s.name.split()[1].removesuffix("/s")
            informative[f"limit_{rate}_p99_seconds"] = s.p99_to_pod
    result: dict[str, dict[str, Any]] = {}
    for key, target in TARGETS.items():
        if key not in measured:
            continue
        value = measured[key]
        ok = value >= target if key in AT_LEAST else value <= target
        result[key] = {"measured": round(value, 3), "target": target, "met": ok}
    if "share_of_write_ceiling" in measured:
        informative["share_of_write_ceiling"] = measured["share_of_write_ceiling"]
    for key, value in informative.items():
        result[key] = {"measured": round(value, 3), "target": None, "met": None}
    return result


def verdict_text(checks: dict[str, Any]) -> str:
    lines = ["", f"{'target':<32}{'measured':>10}{'target':>9}  met"]
    for key, check in checks.items():
        if check["target"] is None:
            lines.append(f"{key:<32}{check['measured']:>10}  (not a target)")
            continue
        sign = ">=" if key in AT_LEAST else "<="
        lines.append(
            f"{key:<32}{check['measured']:>10}{sign:>4}{check['target']:>5}  "
            f"{'yes' if check['met'] else 'NO'}"
        )
    return "\n".join(lines)


async def run(
    cluster: LocalCluster, args: argparse.Namespace, workdir: Path
) -> tuple[list[Scenario], list[dict[str, float]]]:
    bench = Bench(cluster, args, workdir)
    steps: list[tuple[str, Callable[[], Awaitable[Scenario]]]] = [
        ("physical", bench.physical),
        ("limit", bench.limit),
        ("batch", bench.batch),
        ("kueue", bench.kueue),
        ("videoqueue", bench.videoqueue),
    ]
    for rate in args.rates:  # the least latency at this rate, then ours
        steps += [
            ("arrivals", functools.partial(bench.limit_arrivals, rate)),
            ("arrivals", functools.partial(bench.arrivals, rate)),
        ]
    scenarios = []
    for name, step in steps:
        if name not in args.only:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        scenarios.append(await step())
        print(f"  {asdict(scenarios[-1])}", file=sys.stderr, flush=True)
        if name in DRAINS:
            # The next drain starts on an empty cluster with no peer running: the earlier
            # drains' thousands of finished Jobs, pods and Workloads cost every later one
            # (the API server held 4.8 GiB and a core with them; Kueue kept reconciling).
            bench.clear_namespaces()
            bench.stop_kueue()
    pending = []
    if "pending" in args.only:
        for n in args.pending:
            print(f"[{time.strftime('%H:%M:%S')}] pending {n} ...", file=sys.stderr, flush=True)
            pending.append(await bench.pending(n))
            print(f"  {pending[-1]}", file=sys.stderr, flush=True)  # kept if a later one fails
    return scenarios, pending


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=200, 2,000 pending (for CI)")
    parser.add_argument("--jobs", type=int, help="N (default 5000; 200 with --quick)")
    parser.add_argument(
        "--pending",
        type=lambda text: [int(n) for n in text.split(",")],
        help="pending points, comma-separated (default 20000,100000; 2000 with --quick)",
    )
    parser.add_argument(
        "--rates",
        type=lambda text: [float(r) for r in text.split(",")],
        default=[20.0, 50.0],
        help="arrival rates per second, comma-separated (default 20,50)",
    )
    parser.add_argument(
        "--arrival-seconds", type=float, help="seconds of arrivals per rate (30; 10 quick)"
    )
    parser.add_argument("--parallelism", type=int, default=32, help="client writes in flight")
    parser.add_argument("--run-for", default="1s", help="how long each pod runs on KWOK")
    parser.add_argument("--timeout", type=float, default=1800, help="per-scenario limit")
    parser.add_argument("--kcm-qps", type=int, default=200, help="kube-controller-manager QPS")
    parser.add_argument("--out", type=Path, help="JSON results (default next to this file)")
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(DEFAULT_SCENARIOS),
        help=f"comma-separated scenarios of {','.join(SCENARIOS)} (default all but physical)",
    )
    parser.add_argument(
        "--profile", type=Path, help="write py-spy collapsed stacks of the operator here"
    )
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (200 if args.quick else 5000)
    args.pending = args.pending or ([2000] if args.quick else [20000, 100000])
    args.arrival_seconds = args.arrival_seconds or (10 if args.quick else 30)
    arrival_jobs = int(max(args.rates) * args.arrival_seconds)
    out = args.out or Path(__file__).with_name(
        "results-quick.json" if args.quick else "results.json"
    )

    nodes = max(4, math.ceil(1.2 * max(args.jobs, arrival_jobs) / PODS_PER_NODE))
    config = ClusterConfig(
        nodes=[
            NodeSpec(
                f"kwok-node-{i}", cpu="1000", memory=f"{PODS_PER_NODE * 2}Gi", pods=PODS_PER_NODE
            )
            for i in range(nodes)
        ],
        controller_manager_qps=args.kcm_qps,
        controller_manager_burst=int(args.kcm_qps * 1.5),
        # Every scenario's pods stay: no garbage collection of finished pods (at the default
        # 12,500 it deleted thousands of pods during the videoqueue scenario of N=5,000).
        terminated_pod_gc_threshold=10 * (4 * args.jobs + arrival_jobs * len(args.rates)),
    )
    workdir = Path(tempfile.mkdtemp(prefix="videoqueue-scale-"))
    print(
        f"starting the local control plane with {nodes} KWOK nodes (logs in {workdir}) ...",
        file=sys.stderr,
    )
    with LocalCluster(cluster_config=config) as cluster:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(marker_crd()))
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/videoqueues.videoqueue.dev",
            "crd/videojobs.videoqueue.dev",
            f"crd/markers.{BENCH_GROUP}",
        )
        scenarios, pending = asyncio.run(run(cluster, args, workdir))
    checks = verdicts(scenarios, pending)
    text = table(scenarios, pending) + "\n" + verdict_text(checks)
    print(text)
    figures = {"scenarios": [asdict(s) for s in scenarios], "pending": pending}
    write_results(
        out, "benchmarks.scale.run", argv or sys.argv[1:], args,
        **figures, targets=checks, table=text,
    )  # fmt: skip
    print(f"results written to {out}", file=sys.stderr)
    return 0 if all(s.done >= s.jobs for s in scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
