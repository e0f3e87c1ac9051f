"""The job commands: `list` (queue order with positions and estimated starts), `show`,
`retry` and `cancel`."""

from __future__ import annotations

import argparse
import datetime
import json
import time
from collections.abc import Sequence
from typing import Any, TextIO

from videoqueue.api import (
    BATCH_LABEL,
    RETRY_ANNOTATION,
    JobPhase,
    VideoJob,
    VideoJobSpec,
    VideoJobStatus,
    VideoQueue,
)
from videoqueue.cli.cluster import JOBS, QUEUES, CliError, Cluster
from videoqueue.cli.estimate import JobEstimate, estimate_queue, run_times_from
from videoqueue.cli.objects import (
    CI_RUN_ANNOTATION,
    EPOCH,
    created,
    read_job,
    read_jobs,
    read_queue,
    read_queues,
)
from videoqueue.cli.render import (
    conditions_table,
    dump,
    duration,
    iso,
    relative,
    stage,
    table,
)

# Only a job still waiting for admission has a position and an estimated start.
WAITING_PHASES = frozenset({JobPhase.PENDING, JobPhase.WAITING, JobPhase.BACKOFF})


def cmd_list(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    now = time.time()
    jobs = read_jobs(cluster.list(JOBS))
    if args.queue:
        queues = [read_queue(cluster.get(QUEUES, args.queue))]
    else:
        queues = read_queues(cluster.list(QUEUES))
    result: list[dict[str, Any]] = []
    for queue in queues:
        estimates = _estimate(queue, jobs, now)
        entry: dict[str, Any] = {
            "queue": queue.metadata.name,
            "state": queue.spec.state.value,
            "jobs": [_estimate_dict(e) for e in estimates],
        }
        if args.all:
            done = [
                j
                for j in jobs
                if j.spec.queue_name == queue.metadata.name
                and j.status.phase is not None
                and j.status.phase.is_terminal
            ]
            done.sort(key=lambda j: j.status.completion_time or EPOCH)
            entry["finished"] = [_finished_dict(j) for j in done]
        result.append(entry)
    if not args.queue:
        result += _orphans(jobs, {q.metadata.name for q in queues})
    if args.output != "table":
        dump(result if not args.queue else result[0], args.output, out)
        return 0
    rows: list[list[object]] = []
    for entry in result:
        for e in entry["jobs"]:
            start = e["startTime"] or e["estimatedStart"]
            moment = _parse(start)
            when = relative(moment, now) if moment is not None else f"unknown: {e['note']}"
            if moment is not None and e["estimatedStart"] is not None:
                when = f"~{when}"
            rows.append(
                [
                    entry["queue"],
                    e["position"] or "-",
                    e["name"],
                    e["phase"],
                    e["priority"],
                    e["type"],
                    when,
                ]
            )
        for f in entry.get("finished", []):
            rows.append(
                [
                    entry["queue"],
                    "-",
                    f["name"],
                    f["phase"],
                    f["priority"],
                    f["type"],
                    f"finished {relative(_parse(f['completionTime']), now)}",
                ]
            )
    if not rows:
        out.write(f"No unfinished jobs in namespace {cluster.namespace}.\n")
        return 0
    table(["QUEUE", "POS", "NAME", "PHASE", "PRIORITY", "TYPE", "START"], rows, out)
    return 0


def _orphans(jobs: Sequence[VideoJob], queues: set[str]) -> list[dict[str, Any]]:
    """Unfinished jobs naming a queue that does not exist: they wait until it is created."""
    missing: dict[str, list[dict[str, Any]]] = {}
    for job in sorted(jobs, key=lambda j: (created(j), j.metadata.name)):
        name = job.spec.queue_name
        if name in queues or (job.status.phase is not None and job.status.phase.is_terminal):
            continue
        missing.setdefault(name, []).append(
            {
                "position": None,
                "name": job.metadata.name,
                "phase": (job.status.phase or JobPhase.PENDING).value,
                "priority": job.spec.priority,
                "type": job.spec.type,
                "startTime": None,
                "estimatedStart": None,
                "note": f"VideoQueue {name!r} does not exist; create it to run the job",
            }
        )
    return [{"queue": n, "state": "Missing", "jobs": j} for n, j in sorted(missing.items())]


def cmd_show(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    raw = cluster.get(JOBS, args.job)
    job = read_job(raw)
    now = time.time()
    estimate: JobEstimate | None = None
    if job.status.phase is None or job.status.phase in WAITING_PHASES:
        try:
            queue = read_queue(cluster.get(QUEUES, job.spec.queue_name))
        except CliError:
            queue = None  # the job says QueueMissing itself
        if queue is not None:
            estimates = _estimate(queue, read_jobs(cluster.list(JOBS)), now)
            estimate = next((e for e in estimates if e.name == job.metadata.name), None)
    if args.output != "table":
        if estimate is not None:
            raw = {**raw, "estimate": _estimate_dict(estimate)}
        dump(raw, args.output, out)
        return 0
    spec, status, meta = job.spec, job.status, job.metadata
    phase = (status.phase or JobPhase.PENDING).value
    lines: list[tuple[str, object]] = [
        ("Name", meta.name),
        ("Namespace", meta.namespace),
        ("Queue", spec.queue_name),
        ("Type", spec.type),
        ("Priority", spec.priority),
        ("Phase", _phase_line(phase, status.attempt, spec.max_attempts)),
        ("Stage", stage(status.stage, status.progress)),
        ("Message", status.message),
        ("Input", _input_line(spec, status)),
        ("Output", spec.output.url if spec.output else None),
        ("Memory", _memory_line(status.effective_memory or spec.resources.memory, status)),
        ("Depends on", ", ".join(spec.depends_on)),
        ("Batch", meta.labels.get(BATCH_LABEL)),
        ("CI run", meta.annotations.get(CI_RUN_ANNOTATION)),
        ("Created", _when(meta.creation_timestamp, now)),
        ("Started", _when(status.start_time, now)),
        ("Completed", _when(status.completion_time, now)),
        ("Next attempt", _when(status.next_attempt_time, now)),
        ("Waited", duration(status.wait_seconds) if status.wait_seconds is not None else None),
        ("Ran", duration(status.run_seconds) if status.run_seconds is not None else None),
    ]
    if estimate is not None:
        where = f"{estimate.position} in queue {spec.queue_name}"
        start = relative(estimate.start, now) if estimate.start is not None else None
        lines.append(("Position", where))
        lines.append(("Estimated start", f"~{start}" if start else f"unknown: {estimate.note}"))
    for label, value in lines:
        if value not in (None, ""):
            out.write(f"{label + ':':<16} {value}\n")
    conditions_table(status.conditions, now, out)
    if status.attempts:
        out.write("Attempts:\n")
        table(
            ["  #", "POD", "NODE", "MEMORY", "PEAK", "EXIT", "REASON", "STARTED", "RAN", "MESSAGE"],
            [
                [
                    f"  {a.attempt}",
                    a.pod,
                    a.node,
                    a.memory,
                    a.peak_memory,
                    a.exit_code,
                    a.reason.value if a.reason else None,
                    _when(a.start_time, now),
                    duration((a.finish_time - a.start_time).total_seconds())
                    if a.start_time and a.finish_time
                    else None,
                    a.message,
                ]
                for a in status.attempts
            ],
            out,
        )
    if status.result is not None:
        out.write("Result:\n")
        for line in json.dumps(status.result, indent=2).splitlines():
            out.write(f"  {line}\n")
    return 0


def cmd_retry(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    job = read_job(cluster.get(JOBS, args.job))
    if job.status.phase != JobPhase.FAILED:
        phase = job.status.phase.value if job.status.phase else "not yet assessed"
        raise CliError(
            f"VideoJob {args.job!r} in namespace {cluster.namespace!r} is {phase}: only a Failed "
            "job can be retried (a Cancelled or Rejected one must be recreated)"
        )
    stamp = str(time.time_ns())
    patched = cluster.merge_patch(
        JOBS, args.job, {"metadata": {"annotations": {RETRY_ANNOTATION: stamp}}}
    )
    if args.output != "table":
        dump(patched, args.output, out)
    else:
        out.write(
            f"videojob.videoqueue.dev/{args.job} retry requested ({RETRY_ANNOTATION}={stamp})\n"
        )
    return 0


def cmd_cancel(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    job = read_job(cluster.get(JOBS, args.job))
    if job.status.phase is not None and job.status.phase.is_terminal:
        raise CliError(
            f"VideoJob {args.job!r} in namespace {cluster.namespace!r} is already "
            f"{job.status.phase.value}; nothing to cancel"
        )
    patched = cluster.merge_patch(JOBS, args.job, {"spec": {"cancel": True}})
    if args.output != "table":
        dump(patched, args.output, out)
    else:
        out.write(f"videojob.videoqueue.dev/{args.job} cancelled\n")
    return 0


def _estimate(queue: VideoQueue, jobs: Sequence[VideoJob], now: float) -> list[JobEstimate]:
    return estimate_queue(
        queue,
        jobs,
        now,
        run_times_from(queue.status.statistics, jobs),
        concurrency=queue.status.effective_concurrency,
    )


def _estimate_dict(e: JobEstimate) -> dict[str, Any]:
    return {
        "position": e.position,
        "name": e.name,
        "phase": e.phase,
        "priority": e.priority,
        "type": e.type,
        "startTime": None if e.estimated else iso(e.start),
        "estimatedStart": iso(e.start) if e.estimated else None,
        "note": e.note or None,
    }


def _finished_dict(job: VideoJob) -> dict[str, Any]:
    done = job.status.completion_time
    return {
        "name": job.metadata.name,
        "phase": job.status.phase.value if job.status.phase else None,
        "priority": job.spec.priority,
        "type": job.spec.type,
        "completionTime": iso(done.timestamp()) if done else None,
    }


def _phase_line(phase: str, attempt: int, max_attempts: int | None) -> str:
    if not attempt:
        return phase
    of = f" of {max_attempts}" if max_attempts else ""
    return f"{phase} (attempt {attempt}{of})"


def _when(moment: datetime.datetime | None, now: float) -> str | None:
    if moment is None:
        return None
    return f"{iso(moment.timestamp())} ({relative(moment.timestamp(), now)})"


def _parse(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _input_line(spec: VideoJobSpec, status: VideoJobStatus) -> str:
    """spec.input.url, or which job's output it is and, once resolved, the URL taken."""
    if spec.input.from_job is None:
        return spec.input.url
    which = spec.input.from_job
    if spec.input.output_index is not None:
        which += f" (output {spec.input.output_index})"
    resolved = status.resolved_input
    return f"{resolved.url} (from {which})" if resolved else f"the output of {which}"


def _memory_line(memory: str | None, status: VideoJobStatus) -> str | None:
    """The job's memory and where it came from (status.memorySource)."""
    if memory is None or not status.memory_source:
        return memory
    return f"{memory} ({status.memory_source})"
