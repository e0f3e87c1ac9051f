"""The queue commands: `stats`, `pause`/`resume`/`drain` and `batch`. What they show is
summarised in `videoqueue.cli.summary`, by the operator's own functions."""

from __future__ import annotations

import argparse
import time
from typing import Any, TextIO

from videoqueue.api import BATCH_LABEL, BatchProgress, QueueState
from videoqueue.cli.cluster import JOBS, QUEUES, CliError, Cluster
from videoqueue.cli.objects import read_jobs, read_queue, read_queues
from videoqueue.cli.render import conditions_table, dump, duration, table
from videoqueue.cli.summary import batches, queue_summary


def cmd_stats(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    now = time.time()
    if args.queue:
        queues = [read_queue(cluster.get(QUEUES, args.queue))]
    else:
        queues = read_queues(cluster.list(QUEUES))
    jobs = read_jobs(cluster.list(JOBS))
    stats = [queue_summary(q, jobs, now) for q in queues]
    if args.output != "table":
        dump(stats[0] if args.queue else stats, args.output, out)
        return 0
    if not args.queue:
        if not stats:
            out.write(f"No VideoQueues in namespace {cluster.namespace}.\n")
            return 0
        table(
            [
                "NAME",
                "STATE",
                "HEALTH",
                "PENDING",
                "RUNNING",
                "SUCCEEDED",
                "FAILED",
                "MEMORY",
                "MEAN RUN",
                "SUCCESS",
            ],
            [
                [
                    s["name"],
                    s["state"],
                    s["health"],
                    s["jobs"]["pending"],
                    s["jobs"]["running"],
                    s["jobs"]["succeeded"],
                    s["jobs"]["failed"],
                    s["memory"],
                    _seconds(s["meanRunSeconds"]),
                    _percent(s["successRate"]),
                ]
                for s in stats
            ],
            out,
        )
        return 0
    s, queue = stats[0], queues[0]
    counts = "  ".join(f"{k} {v}" for k, v in s["jobs"].items())
    lines: list[tuple[str, object]] = [
        ("Queue", f"{s['name']} ({s['state']}, {s['health'] or 'not yet reported'})"),
        (
            "Concurrency",
            f"{s['concurrency']}"
            + (
                f" (effective {s['effectiveConcurrency']})"
                if s["effectiveConcurrency"] not in (None, s["concurrency"])
                else ""
            ),
        ),
        ("Memory", f"{s['memory']} reserved"),
        ("Budgets", ", ".join(f"{name} {used} reserved" for name, used in s["budgets"].items())),
        ("Jobs", counts),
        ("Mean wait", _seconds(s["meanWaitSeconds"])),
        ("Mean run", _seconds(s["meanRunSeconds"])),
        ("Success rate", _percent(s["successRate"])),
        (
            "Throughput",
            f"{s['throughputPerMinute']:.2f}/min" if s["throughputPerMinute"] is not None else None,
        ),
        ("Statistics from", s["statisticsSource"]),
        ("Health", "; ".join(queue.status.health_reasons)),
    ]
    for label, value in lines:
        if value not in (None, ""):
            out.write(f"{label + ':':<16} {value}\n")
    if s["byType"]:
        out.write("By type:\n")
        table(
            ["  TYPE", "FINISHED", "SUCCESS", "MEAN WAIT", "MEAN RUN"],
            [
                [
                    f"  {t['type']}",
                    t["finished"],
                    _percent(t["successRate"]),
                    _seconds(t["meanWaitSeconds"]),
                    _seconds(t["meanRunSeconds"]),
                ]
                for t in s["byType"]
            ],
            out,
        )
    if s["types"]:
        _types_table(s["types"], out)
    _sizing_table(s["sizing"], out)
    conditions_table(queue.status.conditions, now, out)
    return 0


def _types_table(types: list[dict[str, Any]], out: TextIO) -> None:
    """Per-type settings (spec.types over the queue's; `(queue)`: no entry of its own) and
    usage: image when the type patches it, CPU request, default memory, deadline, attempts,
    running and pending jobs and the memory they reserve."""
    out.write("Types (settings: the job's own win, then the type's, then the queue's):\n")
    table(
        [
            "  TYPE",
            "IMAGE",
            "CPU",
            "MEMORY",
            "DEADLINE",
            "ATTEMPTS",
            "RUNNING",
            "PENDING",
            "RESERVED",
        ],
        [
            [
                f"  {t['type']}" + ("" if t["declared"] else " (queue)"),
                t["image"] or "-",
                t["cpu"] or "-",
                t["defaultMemory"],
                _seconds(t["activeDeadlineSeconds"]) or "-",
                t["maxAttempts"],
                t["running"],
                t["pending"],
                t["reserved"],
            ]
            for t in types
        ],
        out,
    )
    for t in types:
        if t["templateError"]:
            out.write(f"  {t['type']}: cannot make a worker pod: {t['templateError']}\n")


def _sizing_table(sizing: dict[str, Any], out: TextIO) -> None:
    """Learned memory sizing per key: observations, the percentile and the size it gives."""
    if not sizing["keys"]:
        return
    pct = f"P{sizing['percentile']}"
    out.write(
        f"Memory sizing ({sizing['mode']}: {pct.lower()} x {sizing['headroom']:g} once a key "
        f"has {sizing['minObservations']} observations):\n"
    )
    table(
        ["  KEY", "OBSERVATIONS", pct, "SIZE"],
        [
            [
                f"  {k['key']}",
                k["observations"],
                f"{k['percentileMi']}Mi" if k["percentileMi"] is not None else None,
                k["size"] or "default",
            ]
            for k in sizing["keys"]
        ],
        out,
    )


def cmd_set_state(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    state: QueueState = args.state
    cluster.get(QUEUES, args.queue)
    patched = cluster.merge_patch(QUEUES, args.queue, {"spec": {"state": state.value}})
    if args.output != "table":
        dump(patched, args.output, out)
    else:
        out.write(f"videoqueue.videoqueue.dev/{args.queue} is {state.value}\n")
    return 0


def cmd_batch(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    found: list[BatchProgress]
    source = "jobs"
    if args.queue and not args.name:
        queue = read_queue(cluster.get(QUEUES, args.queue))
        # The operator keeps the queue's unfinished batches in its status; without them (an
        # operator that does not write them, or only finished batches left) count the jobs.
        found, source = list(queue.status.batches), "queue status"
        if not found:
            labelled = cluster.list(JOBS, label_selector=BATCH_LABEL)
            found, source = batches(read_jobs(labelled), args.queue), "jobs"
    else:
        selector = f"{BATCH_LABEL}={args.name}" if args.name else BATCH_LABEL
        found = batches(read_jobs(cluster.list(JOBS, label_selector=selector)), args.queue)
        if args.name and not found:
            raise CliError(
                f"no VideoJobs labelled {BATCH_LABEL}={args.name} in namespace "
                f"{cluster.namespace!r}"
            )
    if args.output != "table":
        shown = [{**b.to_dict(), "source": source} for b in found]
        dump(shown[0] if args.name else shown, args.output, out)
        return 0
    if not found:
        out.write(f"No batches in namespace {cluster.namespace}.\n")
        return 0
    table(
        ["NAME", "TOTAL", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "DONE"],
        [
            [
                b.name,
                b.total,
                b.pending,
                b.running,
                b.succeeded,
                b.failed,
                _percent((b.succeeded + b.failed) / b.total if b.total else None),
            ]
            for b in found
        ],
        out,
    )
    return 0


def _seconds(value: float | None) -> str | None:
    return None if value is None else duration(value)


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:.0f}%"
