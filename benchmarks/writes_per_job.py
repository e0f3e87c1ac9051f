"""Writes per job: how many API writes one successful VideoJob costs, read from the API
server's own request metrics (`apiserver_request_total`).

    .venv/bin/python -m benchmarks.writes_per_job --jobs 100

Starts a local control plane with KWOK nodes (`videoqueue.envtest.LocalCluster`), applies the
CRDs, starts the operator (`python -m videoqueue --standalone`), creates one queue and N jobs
that run for a moment and succeed, waits until all are Complete and the operator's writes have
settled, and compares the write counters (verbs POST, PUT, PATCH, DELETE, DELETECOLLECTION,
APPLY, by resource and subresource) from before and after.

The API server counts requests, not clients, so writes are attributed by what writes them:
- the operator: VideoJob status, worker pods, core/v1 Events, VideoQueue status, anything
  else under videoqueue.dev, kopf peering objects;
- the harness itself: its N VideoJob and one VideoQueue creates are subtracted;
- KWOK, standing in for the kubelet: pod status (a real cluster pays these too, to its
  kubelets, whatever the operator does);
- kube-scheduler: pod bindings and events.k8s.io Events;
- the control plane's background: leases, node status and the like (not per job).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from videoqueue.envtest import ClusterBase, LocalCluster, pod_script, poll
from videoqueue.envtest.builders import WORKER, MakeJob, MakeQueue
from videoqueue.envtest.operator_process import OperatorProcess

REPO = Path(__file__).resolve().parents[1]

GROUP, VERSION = "videoqueue.dev", "v1alpha1"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})
_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

# Categories, in the order the table prints them.
JOB_STATUS = "videojobs/status"
PODS = "pods"
EVENTS = "events"
OTHERS = "others"
OPERATOR_CATEGORIES = (JOB_STATUS, PODS, EVENTS, OTHERS)
KWOK = "pods/status (KWOK, the kubelet's)"
SCHEDULER = "kube-scheduler (bindings, events.k8s.io)"
BACKGROUND = "control plane background"


@dataclass(frozen=True, order=True)
class WriteKey:
    verb: str
    group: str
    resource: str
    subresource: str

    @property
    def path(self) -> str:
        name = f"{self.group}/{self.resource}" if self.group else self.resource
        return f"{name}/{self.subresource}" if self.subresource else name


def parse_write_counts(metrics_text: str) -> Counter[WriteKey]:
    """Write requests by verb, group, resource and subresource (all response codes)."""
    counts: Counter[WriteKey] = Counter()
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        key = WriteKey(
            labels["verb"],
            labels.get("group", ""),
            labels.get("resource", ""),
            labels.get("subresource", ""),
        )
        counts[key] += int(float(match["value"]))
    return counts


def scrape_write_counts(cluster: ClusterBase) -> Counter[WriteKey]:
    return parse_write_counts(cluster.kubectl("get", "--raw", "/metrics").stdout)


def category(key: WriteKey) -> str:
    """Who makes writes of this kind (see the module docstring)."""
    if key.group == GROUP:
        return JOB_STATUS if (key.resource, key.subresource) == ("videojobs", "status") else OTHERS
    if key.group == "kopf.dev":
        return OTHERS
    if key.group == "" and key.resource == "pods":
        return {"": PODS, "status": KWOK, "binding": SCHEDULER}.get(key.subresource, BACKGROUND)
    if key.group == "" and key.resource == "events":
        return EVENTS
    if key.group == "events.k8s.io":
        return SCHEDULER
    return BACKGROUND


def harness_writes(jobs: int) -> Counter[WriteKey]:
    """What the harness itself writes between the two scrapes."""
    return Counter(
        {
            WriteKey("POST", GROUP, "videojobs", ""): jobs,
            WriteKey("POST", GROUP, "videoqueues", ""): 1,
        }
    )


@dataclass
class WritesReport:
    jobs: int
    succeeded: int
    seconds: float
    writes: Counter[WriteKey]  # after - before - harness
    # The operator's accepted VideoJob status writes by the phase each wrote (its /metrics).
    status_writes_by_phase: Counter[str] = field(default_factory=Counter)
    by_category: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        totals: Counter[str] = Counter()
        for key, count in self.writes.items():
            totals[category(key)] += count
        self.by_category = {
            name: totals[name] for name in (*OPERATOR_CATEGORIES, KWOK, SCHEDULER, BACKGROUND)
        }

    @property
    def operator_writes(self) -> int:
        return sum(self.by_category[name] for name in OPERATOR_CATEGORIES)

    def per_job(self, count: int) -> float:
        return count / self.succeeded if self.succeeded else float("nan")

    def table(self) -> str:
        lines = [
            f"{self.succeeded} of {self.jobs} jobs succeeded in {self.seconds:.1f}s",
            "",
            f"{'operator writes':<44}{'total':>8}{'per job':>10}",
        ]
        for name in OPERATOR_CATEGORIES:
            count = self.by_category[name]
            lines.append(f"  {name:<42}{count:>8}{self.per_job(count):>10.2f}")
        total = self.operator_writes
        lines.append(f"  {'total':<42}{total:>8}{self.per_job(total):>10.2f}")
        if self.status_writes_by_phase:
            phases = ", ".join(f"{p} {n}" for p, n in sorted(self.status_writes_by_phase.items()))
            lines.append(f"  job status writes by the phase written (its /metrics): {phases}")
        lines += ["", f"{'not the operator':<44}{'total':>8}{'per job':>10}"]
        for name in (KWOK, SCHEDULER, BACKGROUND):
            count = self.by_category[name]
            lines.append(f"  {name:<42}{count:>8}{self.per_job(count):>10.2f}")
        lines += ["", "detail (verb resource: count), harness creates subtracted:"]
        for key, count in sorted(self.writes.items()):
            if count:
                lines.append(f"  {key.verb:<7} {key.path:<40}{count:>8}   {category(key)}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "succeeded": self.succeeded,
            "seconds": round(self.seconds, 2),
            "operator_writes_per_job": round(self.per_job(self.operator_writes), 3),
            "per_job": {k: round(self.per_job(v), 3) for k, v in self.by_category.items()},
            "totals": self.by_category,
            "detail": {f"{k.verb} {k.path}": v for k, v in sorted(self.writes.items()) if v},
        }


def subtract(after: Mapping[WriteKey, int], *before: Mapping[WriteKey, int]) -> Counter[WriteKey]:
    result: Counter[WriteKey] = Counter(after)
    for counts in before:
        for key, count in counts.items():
            result[key] -= count
    return result


def queue_manifest(name: str, *, concurrency: int, run_for: str) -> dict[str, Any]:
    """`concurrency` slots of 1Gi each; its KWOK pods run for `run_for` and succeed."""
    return (
        MakeQueue(name)
        .concurrency(concurrency)
        .budget(f"{concurrency}Gi")
        .default_request("1Gi")
        .max("1Gi")
        .template(WORKER, annotations=pod_script(run_for, message='{"ok": true}'))
        .obj()
    )


def job_manifest(name: str, queue: str) -> dict[str, Any]:
    return MakeJob(name, queue=queue).priority(5).obj()


def _succeeded(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)


def operator_metrics(port: int | None) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        lines: list[str] = response.read().decode().splitlines()
    return lines


def status_writes(port: int | None) -> float:
    """VideoJob status writes the operator made, from its own /metrics."""
    total = 0.0
    for line in operator_metrics(port):
        if line.startswith("videoqueue_api_requests_total{") and (
            'resource="videojobs/status"' in line and 'verb="patch"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def status_writes_by_phase(port: int | None) -> Counter[str]:
    """The operator's accepted VideoJob status writes by the phase each wrote."""
    counts: Counter[str] = Counter()
    prefix = 'videoqueue_job_status_writes_total{phase="'
    for line in operator_metrics(port):
        if line.startswith(prefix):
            phase = line[len(prefix) :].partition('"')[0]
            counts[phase] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def measure(
    cluster: ClusterBase,
    namespace: str,
    *,
    jobs: int,
    log_path: Path,
    concurrency: int = 20,
    run_for: str = "1s",
    timeout: float = 600,
) -> WritesReport:
    """Run `jobs` jobs through a fresh operator in `namespace` (which exists) and count the
    writes. The operator runs standalone: peering keep-alives are a per-replica cost, not a
    per-job one."""
    operator = OperatorProcess(cluster.kubeconfig, log_path, ["--standalone"], name="operator")
    with operator, cluster.api_client() as api:
        custom = client.CustomObjectsApi(api)
        operator.wait_for_log("videoqueue controller started", timeout=60)
        before = scrape_write_counts(cluster)
        begin = time.monotonic()
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "videoqueues",
            queue_manifest("bench", concurrency=concurrency, run_for=run_for),
        )
        for i in range(jobs):
            custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "videojobs", job_manifest(f"job-{i:05d}", "bench")
            )

        def all_done() -> int | None:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "videojobs")
            done = sum(1 for job in items["items"] if _succeeded(job))
            return done if done == jobs else None

        succeeded = poll(all_done, timeout=timeout, what=f"{jobs} jobs to succeed", interval=0.5)
        seconds = time.monotonic() - begin
        after = _settled(cluster)
        by_phase = status_writes_by_phase(operator.metrics_port)
    writes = subtract(after, before, harness_writes(jobs))
    return WritesReport(jobs, succeeded, seconds, writes, by_phase)


def _settled(cluster: ClusterBase, quiet: float = 3.0, timeout: float = 60) -> Counter[WriteKey]:
    """The write counters once the operator's have not moved for `quiet` seconds (trailing
    Events and the rate-limited queue status land after the last job completes)."""
    last: list[tuple[int, float]] = []  # (operator writes, since when unchanged)

    def probe() -> Counter[WriteKey] | None:
        counts = scrape_write_counts(cluster)
        total = sum(n for key, n in counts.items() if category(key) in OPERATOR_CATEGORIES)
        now = time.monotonic()
        if not last or last[0][0] != total:
            last[:] = [(total, now)]
        return counts if now - last[0][1] >= quiet else None

    return poll(probe, timeout=timeout, what="the operator's writes to settle", interval=1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100, help="jobs to run (default 100)")
    parser.add_argument("--concurrency", type=int, default=20, help="queue concurrency")
    parser.add_argument("--run-for", default="1s", help="how long each worker runs (KWOK)")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--keep-logs", action="store_true", help="print the operator log")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="videoqueue-writes-"))
    log_path = workdir / "operator.log"
    print("starting the local control plane ...", file=sys.stderr)
    with LocalCluster() as cluster:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/videoqueues.videoqueue.dev",
            "crd/videojobs.videoqueue.dev",
        )
        namespace = f"writes-{uuid.uuid4().hex[:5]}"
        cluster.create_namespace(namespace)
        print(f"running {args.jobs} jobs ...", file=sys.stderr)
        report = measure(
            cluster,
            namespace,
            jobs=args.jobs,
            log_path=log_path,
            concurrency=args.concurrency,
            run_for=args.run_for,
        )
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if args.keep_logs:
        print(log_path.read_text(), file=sys.stderr)
    return 0 if report.succeeded == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
