"""Memory sizing benchmark (issue 19): static defaults, learned sizing and an oracle, on a real
node with real ffmpeg.

    .venv/bin/python -m benchmarks.memory_sizing                  # 150 jobs a mode (root)
    .venv/bin/python -m benchmarks.memory_sizing --quick          # 40 jobs a mode
    .venv/bin/python -m benchmarks.memory_sizing --modes static,oracle

One local control plane with a real node (kubelet + containerd, videoqueue.envtest), the
worker image of this checkout imported into it, the operator on the host. Two short inputs
(720p and 1080p test patterns with a tone, --input-seconds long) in a host directory the
worker pods mount at /media. A seeded stream of jobs (benchmarks/memory_sizing_figures.py:
probe, thumbnail, h264 transcodes to 480p/720p/1080p, each on one of the inputs) goes, all
at once, through ONE queue with a fixed memory budget (--budget) and a concurrency high
enough (--concurrency) that memory is what limits how many run. The same stream runs once
per mode, each in a namespace of its own:
- static: jobs name no memory, each gets the queue's defaultRequest (sizing Static where
  the CRD knows the field; today's behaviour on a CRD without it);
- learned: jobs name no memory, the queue sizes them from the peaks of past jobs
  (spec.memory.sizing Learned); the run fails at once if the API server does not keep that
  field (a CRD without learned sizing) and at the end if no job says where its memory came
  from (status.memorySource); with --warm, the queue first drains the same stream once,
  unmeasured, so the measured drain starts with the history of a queue that has run a while;
- oracle: each job names its memory, its true peak x 1.05: the peak of the same job (type,
  params, input) in a calibration pass run first on the node, one job of each.
OOM-killed attempts are retried with twice the memory (the queue's default multiplier).

Per mode (figures from each VideoJob's status.attempts: `memory` and the real cgroup
`peakMemory` the worker reported): reserved memory / peak of each job's completed attempt
(median, p90), first-attempt OOM rate (overall, and of the jobs after the first --warmup of
their kind), jobs finished per hour (all jobs over the drain: first create to last
completion). Then learned/static and learned/oracle, and the issue's targets as verdicts
(printed, not asserted). Results: the table and benchmarks/memory_sizing_results.json
(quick: memory_sizing_results_quick.json).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from benchmarks.memory_sizing_figures import (
    INPUTS,
    MODES,
    ModeFigures,
    PlannedJob,
    distinct_jobs,
    job_body,
    mode_figures,
    oracle_memory,
    outcomes,
    plan_stream,
    table,
)
from benchmarks.results import write_results
from videoqueue.api import parse_quantity
from videoqueue.envtest import ClusterConfig, LocalCluster, default_nodes, poll
from videoqueue.envtest.builders import MakeQueue
from videoqueue.envtest.images import import_worker_image
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.real_worker import REAL_NODE, real_node_worker_template
from videoqueue.envtest.realnode import CGROUP_FS
from videoqueue.envtest.worker import make_media

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION = "videoqueue.dev", "v1alpha1"
OUT = REPO / "benchmarks" / "memory_sizing_results.json"
OUT_QUICK = REPO / "benchmarks" / "memory_sizing_results_quick.json"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class SizingError(SystemExit):
    """The run cannot measure what it claims to (exit status 1, with the reason)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"memory_sizing: {message}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_sizing", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="40 jobs, 2 s inputs, warmup 3")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated, of " + ",".join(MODES)
    )
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--jobs", type=int, help="jobs per mode (default 150, quick 40)")
    parser.add_argument("--input-seconds", type=float, help="input length (default 3, quick 2)")
    parser.add_argument("--budget", default="2Gi", help="the queue's memory budget")
    parser.add_argument("--default-request", default="1Gi", help="static mode's memory per job")
    parser.add_argument("--max", help="the queue's memory.max per job (default: the budget)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--warmup", type=int, help="jobs per kind before OOMs count 'after' (default 10, quick 3)"
    )
    parser.add_argument(
        "--min-observations", type=int, help="learned: minObservations (default 10, quick 3)"
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="learned: run the stream once unmeasured first in the same queue, so the "
        "measured drain starts with history (a queue that has run for a while)",
    )
    parser.add_argument("--percentile", type=int, default=95, help="learned: percentile")
    parser.add_argument("--headroom", type=float, default=1.2, help="learned: headroom")
    parser.add_argument("--floor", default="32Mi", help="learned: floor")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per mode")
    parser.add_argument(
        "--out", type=Path, help=f"default {OUT.name}, quick {OUT_QUICK.name} (in benchmarks/)"
    )
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(args.modes) - set(MODES):
        parser.error(f"--modes: unknown {sorted(unknown)}; choose from {', '.join(MODES)}")
    quick = args.quick
    args.max = args.max or args.budget
    args.out = args.out or (OUT_QUICK if quick else OUT)
    args.jobs = args.jobs or (40 if quick else 150)
    args.input_seconds = args.input_seconds or (2.0 if quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (3 if quick else 10)
    if args.min_observations is None:
        args.min_observations = 3 if quick else 10
    return args


class Bench:
    def __init__(self, cluster: LocalCluster, args: argparse.Namespace, image: str, media: Path):
        self.cluster = cluster
        self.args = args
        self.image = image
        self.media = media
        self.api = cluster.api_client()
        self.custom = client.CustomObjectsApi(self.api)
        self.sizing_field = crd_has_sizing()

    # -- objects --------------------------------------------------------------------------

    def queue(self, mode: str, *, budget: str | None = None) -> dict[str, Any]:
        args = self.args
        made = (
            MakeQueue("work")
            .concurrency(args.concurrency)
            .budget(budget or args.budget)
            .default_request(args.default_request)
            .max(args.max if budget is None else budget)
            .retry(3, initial_seconds=1, factor=2, max_seconds=5)
            .template_body(real_node_worker_template(self.image, self.media))
        )
        if mode == "learned":
            made.set("spec.memory.sizing", "Learned")
            made.set(
                "spec.memory.learned",
                {
                    "percentile": args.percentile,
                    "headroom": args.headroom,
                    "minObservations": args.min_observations,
                    "floor": args.floor,
                },
            )
        elif self.sizing_field:
            made.set("spec.memory.sizing", "Static")  # Learned is the default there
        return made.obj()

    def create_queue(self, namespace: str, mode: str, **kw: Any) -> None:
        self.cluster.create_namespace(namespace)
        body = self.queue(mode, **kw)
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "videoqueues", body)
        if mode != "learned":
            return
        stored = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "videoqueues", "work"
        )
        memory = stored["spec"]["memory"]
        if memory.get("sizing") != "Learned" or "learned" not in memory:
            raise SizingError(
                "the API server did not keep spec.memory.sizing/learned (stored spec.memory: "
                f"{memory}): this cluster's VideoQueue CRD has no learned sizing; merge it "
                "(issue 19) and regenerate crds/, or run --modes static,oracle"
            )

    def node_cpu_seconds(self) -> float | None:
        """CPU seconds used so far by every pod of the real node (cgroup v1 cpuacct of the
        kubelet's cgroup root), or None where there is no such file."""
        root = self.cluster.real_node_layout(REAL_NODE).cgroup_root.lstrip("/")
        for hierarchy in CGROUP_FS.iterdir():
            usage = hierarchy / root / "cpuacct.usage"
            if "cpuacct" in hierarchy.name.split(",") and usage.exists():
                return int(usage.read_text()) / 1e9
        return None

    # -- running a stream -------------------------------------------------------------------

    def drain(
        self, namespace: str, stream: list[PlannedJob], memory: dict[str, str] | None = None
    ) -> tuple[dict[str, dict[str, Any]], float]:
        """Create every job of `stream` at once (`memory`: by job name), wait until all are
        finished; the jobs by name and when the first was created."""
        started = time.time()
        for job in stream:
            body = job_body(job, memory=(memory or {}).get(job.name))
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "videojobs", body
            )
        log(f"{namespace}: {len(stream)} jobs created in {time.time() - started:.1f}s")
        last_report = [time.monotonic()]

        names = {job.name for job in stream}

        def finished() -> dict[str, dict[str, Any]] | None:
            listed = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "videojobs"
            )["items"]
            items = [j for j in listed if j["metadata"]["name"] in names]
            done = {j["metadata"]["name"]: j for j in items if _terminal(j)}
            if time.monotonic() - last_report[0] > 30:
                last_report[0] = time.monotonic()
                log(f"{namespace}: {len(done)}/{len(stream)} finished")
            return {j["metadata"]["name"]: j for j in items} if len(done) >= len(stream) else None

        jobs = poll(finished, timeout=self.args.timeout, what=f"{namespace}'s jobs", interval=2)
        return jobs, started

    def calibrate(self, stream: list[PlannedJob]) -> dict[tuple[str, str], int]:
        """The peak of each distinct job of `stream`, run once with plenty of memory."""
        jobs = distinct_jobs(stream)
        namespace = "sizing-calibration"
        self.create_queue(namespace, "calibration", budget="16Gi")
        memory = {job.name: "2Gi" for job in jobs}
        found, _ = self.drain(namespace, jobs, memory)
        peaks = {}
        for job in jobs:
            attempts = (found[job.name].get("status") or {}).get("attempts") or []
            done = [a for a in attempts if a.get("reason") == "Completed" and a.get("peakMemory")]
            if not done:
                raise SizingError(f"calibration job {job.name} did not complete: {attempts}")
            peaks[job.distinct] = parse_quantity(done[-1]["peakMemory"])
        self.cluster.delete_namespace(namespace)
        return peaks

    def run_mode(
        self, mode: str, stream: list[PlannedJob], peaks: dict[tuple[str, str], int]
    ) -> ModeFigures:
        namespace = f"sizing-{mode}"
        self.create_queue(namespace, mode)
        memory = None
        if mode == "oracle":
            memory = {job.name: oracle_memory(peaks[job.distinct]) for job in stream}
        if mode == "learned" and self.args.warm:
            warm = [PlannedJob(f"w{job.name}", job.key, job.input) for job in stream]
            log(f"{mode}: warming the queue's model with the stream once (not measured) ...")
            self.drain(namespace, warm)
        log(f"{mode}: draining {len(stream)} jobs ...")
        cpu_before = self.node_cpu_seconds()
        jobs, started = self.drain(namespace, stream, memory)
        cpu_after = self.node_cpu_seconds()
        figures = mode_figures(mode, outcomes(stream, jobs), started, self.args.warmup)
        if cpu_before is not None and cpu_after is not None and figures.drain_seconds > 0:
            figures.worker_cpu_seconds = round(cpu_after - cpu_before, 1)
            figures.worker_cores_busy = round(figures.worker_cpu_seconds / figures.drain_seconds, 2)
        log(f"{mode}: {figures.jobs_per_hour:.0f} jobs/h, drain {figures.drain_seconds:.0f}s")
        if mode == "learned" and set(figures.memory_sources) == {"(none)"}:
            raise SizingError(
                "learned: no job has status.memorySource, so the operator does not size "
                "memory from history (is learned sizing merged into this checkout?)"
            )
        if mode == "learned" and not figures.learned_sized:
            log(
                "WARNING learned: no job was sized by the queue's model (every memorySource "
                f"is another: {figures.memory_sources}); see the table"
            )
        self.cluster.delete_namespace(namespace)
        return figures


def _terminal(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)


def crd_has_sizing(crds: Path = REPO / "crds") -> bool:
    """Whether the VideoQueue CRD the run applies has spec.memory.sizing (learned sizing)."""
    crd = yaml.safe_load((crds / "videoqueue.dev_videoqueues.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    memory = schema["properties"]["spec"]["properties"]["memory"]["properties"]
    return "sizing" in memory


def apply_crds(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/videoqueues.videoqueue.dev", "crd/videojobs.videoqueue.dev",
    )  # fmt: skip


def make_inputs(media: Path, seconds: float) -> None:
    """The inputs under `media`, and `media/out` for the outputs, writable by the worker's
    user (it reads the inputs as "other")."""
    media.chmod(0o755)
    (media / "out").mkdir()
    (media / "out").chmod(0o777)
    for name, size in INPUTS.items():
        make_media(media / name, seconds=seconds, size=size)
        (media / name).chmod(0o644)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "learned" in args.modes and not crd_has_sizing():
        raise SizingError(
            "--modes includes learned, but the VideoQueue CRD in crds/ has no "
            "spec.memory.sizing (learned sizing not merged): run --modes static,oracle"
        )
    stream = plan_stream(args.seed, args.jobs)
    figures: dict[str, ModeFigures] = {}
    peaks: dict[tuple[str, str], int] = {}
    workdir = Path(tempfile.mkdtemp(prefix="videoqueue-sizing-"))
    media = workdir / "media"
    media.mkdir()
    make_inputs(media, args.input_seconds)
    log(f"starting the local control plane with a real node (state and logs in {workdir}) ...")
    config = ClusterConfig(nodes=default_nodes(1))
    with LocalCluster(workdir / "cluster", config, real_nodes=1) as cluster:
        apply_crds(cluster)
        image = import_worker_image(cluster.containerd(REAL_NODE), REPO)
        log(f"worker image {image.tag} ({image.seconds})")
        with OperatorProcess(cluster.kubeconfig, workdir / "operator.log") as operator:
            operator.wait_for_log("acting: this replica now schedules", timeout=60)
            bench = Bench(cluster, args, image.tag, media)
            log(f"VideoQueue CRD has spec.memory.sizing: {bench.sizing_field}")
            if "oracle" in args.modes:
                log(f"calibration: {len(distinct_jobs(stream))} distinct jobs ...")
                peaks = bench.calibrate(stream)
                log("calibrated peaks (MiB): " + ", ".join(
                    f"{k}@{i}={p / 2**20:.0f}" for (k, i), p in sorted(peaks.items())
                ))  # fmt: skip
            for mode in [m for m in MODES if m in args.modes]:
                figures[mode] = bench.run_mode(mode, stream, peaks)
    # The media and the cluster's state (etcd, PKI) go; the logs stay in `workdir`.
    shutil.rmtree(media, ignore_errors=True)
    shutil.rmtree(workdir / "cluster", ignore_errors=True)
    text = table(figures, args.warmup)
    if args.warm and "learned" in figures:
        text = "learned: --warm (the queue drained the stream once, unmeasured, first)\n" + text
    print(text)
    write_results(
        args.out, "benchmarks.memory_sizing", argv if argv is not None else sys.argv[1:], args,
        modes_run=list(figures),
        calibrated_peaks_mib={f"{k}@{i}": round(p / 2**20, 1) for (k, i), p in peaks.items()},
        figures={m: asdict(f) for m, f in figures.items()},
        table=text,
    )  # fmt: skip
    log(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
