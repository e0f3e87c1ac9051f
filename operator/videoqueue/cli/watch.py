"""`kubectl videoqueue watch`: follow a job to its end (the exit code says whether it
succeeded) or a queue until nothing is left to run, one line per change."""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable, Iterator
from typing import Any, TextIO, TypeVar

from videoqueue.api import JobPhase, VideoJob, VideoQueue
from videoqueue.cli.cluster import JOBS, QUEUES, CliError, Cluster
from videoqueue.cli.objects import read_job, read_queue
from videoqueue.cli.render import dump, stage

_T = TypeVar("_T")


def cmd_watch(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    kind, _, name = args.target.rpartition("/")
    kind = kind.lower()
    if kind in ("", "vj", "videojob", "videojobs"):
        return _watch_job(cluster, name, args.timeout, args.output, out)
    if kind in ("vq", "videoqueue", "videoqueues", "queue"):
        return _watch_queue(cluster, name, args.timeout, args.output, out)
    raise CliError(f"watch {args.target!r}: expected NAME, vj/NAME or vq/NAME", 2)


def _follow(
    cluster: Cluster,
    plural: str,
    name: str,
    timeout: float | None,
    read: Callable[[dict[str, Any]], _T],
    seen: Callable[[_T], tuple[object, ...]],
) -> Iterator[tuple[_T, bool]]:
    """The object `name` (which must exist), read by `read` each time it changes, and whether
    what `seen` picks out of it differs from the last time (the first time it does)."""
    cluster.get(plural, name)
    last: tuple[object, ...] | None = None
    for raw in cluster.follow(plural, name, timeout=timeout):
        obj = read(raw)
        current = seen(obj)
        yield obj, current != last
        last = current


def _job_seen(job: VideoJob) -> tuple[object, ...]:
    s = job.status
    return (s.phase or JobPhase.PENDING, s.attempt, s.stage, s.progress, s.message)


def _watch_job(cluster: Cluster, name: str, timeout: float | None, fmt: str, out: TextIO) -> int:
    for job, changed in _follow(cluster, JOBS, name, timeout, read_job, _job_seen):
        s = job.status
        phase = s.phase or JobPhase.PENDING
        if changed:
            if fmt == "table":
                parts = [_clock(), f"{name}", phase.value]
                if s.attempt:
                    parts.append(f"attempt {s.attempt}")
                if s.stage or s.progress is not None:
                    parts.append(stage(s.stage, s.progress))
                if s.message:
                    parts.append(s.message)
                out.write("  ".join(str(p) for p in parts) + "\n")
            else:
                _dump_line({"time": _clock(), "name": name, **s.to_dict()}, fmt, out)
            out.flush()
        if phase.is_terminal:
            return 0 if phase == JobPhase.SUCCEEDED else 1
    return 1  # pragma: no cover - follow() only ends by raising


def _queue_seen(queue: VideoQueue) -> tuple[object, ...]:
    s = queue.status
    return (
        queue.spec.state,
        s.pending,
        s.waiting,
        s.admitted,
        s.running,
        s.backoff,
        s.succeeded,
        s.failed,
        s.cancelled,
        s.rejected,
    )


def _watch_queue(cluster: Cluster, name: str, timeout: float | None, fmt: str, out: TextIO) -> int:
    for queue, changed in _follow(cluster, QUEUES, name, timeout, read_queue, _queue_seen):
        s = queue.status
        if changed:
            counts = {
                "pending": s.pending + s.waiting + s.backoff,
                "running": s.admitted + s.running,
                "succeeded": s.succeeded,
                "failed": s.failed + s.cancelled + s.rejected,
            }
            if fmt == "table":
                text = "  ".join(f"{k} {v}" for k, v in counts.items())
                out.write(f"{_clock()}  {name}  {queue.spec.state.value}  {text}\n")
            else:
                _dump_line(
                    {"time": _clock(), "name": name, "state": queue.spec.state.value, **counts},
                    fmt,
                    out,
                )
            out.flush()
        # Done once the operator has seen the current spec and nothing is left to run.
        busy = s.pending + s.waiting + s.admitted + s.running + s.backoff
        if s.observed_generation == queue.metadata.generation and busy == 0:
            return 0
    return 1  # pragma: no cover


def _dump_line(data: dict[str, Any], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(data, default=str) + "\n")
    else:
        out.write("---\n")
        dump(data, fmt, out)


def _clock() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S")
