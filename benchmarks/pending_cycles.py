"""What a queue of N waiting jobs costs the operator itself, in one process without an API
server: the controller's index and cycles are driven as the watch streams would drive them,
and writes are answered at once (`videoqueue.envtest.recording_kube`). It isolates the
operator's share of the scale harness's pending points (issue 17: restart -> first admission
and RSS with 20,000 and 100,000 jobs), so that growth with N shows without a control plane.

For each N, one paused queue (concurrency 10) holding N new VideoJobs:
  intake     every job observed as the priming listing delivers it;
  first      the cycles until each job is assessed and its first status written;
  restart    a fresh controller primed with the stored jobs, the queue made Active: the
             cycles until the first worker pod is created;
  memory     (--memory) what the index holds after `first`, per job, by tracemalloc (which
             slows the run: take the CPU figures from a run without it).
Figures are CPU seconds of this process (time.process_time) and microseconds per job; a
per-job cost that grows with N is work that is O(queue) per event or per slice. Each size runs
first with the interpreter's garbage-collector settings, then with the operator's
(`videoqueue.controller.gc_settings`), in one process.

    make bench-pending
    python -m benchmarks.pending_cycles [--jobs 2000,20000] [--gc both|tuned|default]
        [--memory] [--profile FILE] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import gc
import json
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import orjson

from videoqueue.api import VideoQueue
from videoqueue.controller.entries import QueueEntry
from videoqueue.controller.gc_settings import tune_garbage_collection
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.kube_helpers import Resource
from videoqueue.controller.loop import Controller
from videoqueue.envtest.builders import MakeJob, MakeQueue, container
from videoqueue.envtest.recording_kube import RecordingKube

NS = "media"
NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


def queue_body(state: str) -> dict[str, Any]:
    queue = MakeQueue("backlog", NS).as_indexed().state(state).concurrency(10)
    queue.budget("100Gi").default_request("1Gi").template(container("worker", image="w:1"))
    return queue.obj()


def job_bodies(n: int) -> dict[str, dict[str, Any]]:
    bodies = {}
    for i in range(n):
        name = f"vj-{i:06d}"
        job = MakeJob(name, NS, queue="backlog").uid(f"uid-{name}").generation(1)
        # Created before the operator started, as in the harness (a new job's first status
        # waits 5 s after its creation).
        created = (NOW - datetime.timedelta(seconds=60 + n - i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        bodies[f"{NS}/{name}"] = job.resource_version(str(10 + i)).created(created).obj()
    return bodies


class CompactKube(RecordingKube):
    """Keeps each object as JSON bytes, as an API server keeps it outside this process: a
    heap of N parsed bodies would make every full garbage collection of this process walk
    them, a cost the operator does not have."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        super().__init__({})
        self.stored = {key: orjson.dumps(body) for key, body in objects.items()}

    async def patch(
        self, resource: Resource, namespace: str, name: str, patch: Any, subresource: str = ""
    ) -> dict[str, Any] | None:
        key = f"{namespace}/{name}"
        if key not in self.stored:
            return None  # (the queue: its status is not read back here)
        self.calls[f"patch {resource.plural}/{subresource}"] += 1
        updated: dict[str, Any] = orjson.loads(self.stored[key])
        updated.setdefault("status", {}).update(patch.get("status", {}))
        self.version += 1
        updated["metadata"]["resourceVersion"] = str(self.version)
        self.stored[key] = orjson.dumps(updated)
        return updated

    def bodies(self) -> Iterator[dict[str, Any]]:
        return (orjson.loads(raw) for raw in self.stored.values())


def primed(kube: CompactKube, state: str) -> tuple[Controller, QueueEntry, float]:
    """A controller whose index holds the queue and every job of `kube`, as after priming;
    returns it, the queue's entry and the CPU seconds the intake took."""
    controller = Controller(cast(KubeClient, kube), clock=NOW.timestamp, start_loops=False)
    body = queue_body(state)
    entry = QueueEntry(f"{NS}/backlog", body=body, queue=VideoQueue.model_validate(body))
    controller.queues[entry.key] = entry
    started = time.process_time()
    for job in kube.bodies():
        controller.observe_job(job, deleted=False)
    return controller, entry, time.process_time() - started


async def drain_writes(entry: QueueEntry) -> None:
    while entry.writers:
        await asyncio.gather(*entry.writers)


async def measure(n: int, *, memory: bool) -> dict[str, float]:
    kube = CompactKube(job_bodies(n))
    gc.collect()
    if memory:
        tracemalloc.start()
    controller, entry, intake = primed(kube, "Paused")
    started = time.process_time()
    await controller.reconcile_queue(entry)
    await drain_writes(entry)
    first = time.process_time() - started
    writes = kube.calls["patch videojobs/status"]
    assert writes == n, f"{writes} status writes for {n} jobs"
    figures: dict[str, float] = {"jobs": n, "intake_s": intake, "first_s": first}
    if memory:
        gc.collect()
        # Allocated since the start and still alive, but not by this module (CompactKube's
        # copies of the objects, which an API server would hold).
        outside = [tracemalloc.Filter(False, __file__)]
        held = tracemalloc.take_snapshot().filter_traces(outside).statistics("filename")
        figures["index_bytes_per_job"] = sum(stat.size for stat in held) / n
        tracemalloc.stop()
    await controller.stop()
    del controller, entry
    gc.collect()

    controller, entry, intake = primed(kube, "Active")
    started = time.process_time()
    await controller.reconcile_queue(entry)
    figures["restart_intake_s"] = intake
    figures["restart_to_admission_s"] = time.process_time() - started
    assert kube.calls["create pods"] > 0, "no admission after the restart"
    await drain_writes(entry)
    await controller.stop()
    for key in ("intake_s", "first_s", "restart_intake_s", "restart_to_admission_s"):
        figures[key.removesuffix("_s") + "_us_per_job"] = figures[key] / n * 1e6
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[2000, 5000, 20000],
        help="queue sizes, comma-separated (default 2000,5000,20000)",
    )
    parser.add_argument(
        "--gc",
        choices=["both", "tuned", "default"],
        default="both",
        help="the operator's garbage-collector settings, the interpreter's, or both in turn",
    )
    parser.add_argument("--memory", action="store_true", help="trace the index's memory")
    parser.add_argument("--profile", type=Path, help="cProfile stats of the last size here")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    results: list[dict[str, object]] = []
    settings = ["default", "tuned"] if args.gc == "both" else [args.gc]
    runs = [(n, gc_setting) for gc_setting in settings for n in args.jobs]
    for i, (n, gc_setting) in enumerate(runs):
        if gc_setting == "tuned":
            tune_garbage_collection()
        profile = cProfile.Profile() if args.profile and i == len(runs) - 1 else None
        if profile is not None:
            profile.enable()
        figures = asyncio.run(measure(n, memory=args.memory))
        if profile is not None:
            profile.disable()
            profile.dump_stats(args.profile)
        results.append({"gc": gc_setting, **figures})
        print(
            f"gc {gc_setting:<7} N={n:>7,}: intake {figures['intake_s']:6.2f} s "
            f"({figures['intake_us_per_job']:5.0f} us/job), first statuses "
            f"{figures['first_s']:6.2f} s ({figures['first_us_per_job']:5.0f} us/job), "
            f"restart -> first admission {figures['restart_to_admission_s']:6.2f} s "
            f"({figures['restart_to_admission_us_per_job']:5.0f} us/job)"
            + (
                f", index {figures['index_bytes_per_job'] / 1024:.1f} KiB/job"
                if "index_bytes_per_job" in figures
                else ""
            ),
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
