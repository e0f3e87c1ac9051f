"""The `kubectl videoqueue` commands: argument parsing and what each command does."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from videoqueue.api import (
    API_VERSION,
    RETRY_ANNOTATION,
    JobPhase,
    QueueState,
    VideoJob,
    VideoJobSpec,
    VideoQueue,
    format_bytes,
    parse_quantity,
)
from videoqueue.cli.cluster import JOBS, QUEUES, CliError, Cluster
from videoqueue.cli.estimate import JobEstimate, estimate_queue, run_times_from
from videoqueue.cli.render import OUTPUT_FORMATS, dump, duration, iso, relative, table

BATCH_LABEL = "videoqueue.dev/batch"
"""Jobs sharing this label's value form a batch (`kubectl videoqueue batch NAME`)."""
CI_RUN_ANNOTATION = "videoqueue.dev/ci-run-url"
"""The URL of the CI run that created the job; `show` prints it."""

PENDING_PHASES = frozenset({JobPhase.PENDING, JobPhase.WAITING, JobPhase.BACKOFF})
BUSY_PHASES = frozenset({JobPhase.ADMITTED, JobPhase.RUNNING})
FAILED_PHASES = frozenset({JobPhase.FAILED, JobPhase.CANCELLED, JobPhase.REJECTED})

Command = Callable[[argparse.Namespace, Cluster, TextIO], int]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command; the exit code is 0 on success, 1 on an error or a job that did not
    succeed (watch), 2 on bad usage."""
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with Cluster(
            kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace
        ) as cluster:
            command: Command = args.run
            return command(args, cluster, out)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())


def build_parser() -> argparse.ArgumentParser:
    # The cluster flags work before and after the command; the command's copies default to
    # SUPPRESS so they do not overwrite a value given before it.
    common = _common_flags(argparse.ArgumentParser(add_help=False), default=None)
    after = _common_flags(argparse.ArgumentParser(add_help=False), default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="kubectl videoqueue",
        description="Submit, inspect and steer VideoJobs and VideoQueues.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, run: Command, help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_, parents=[after])
        sub.set_defaults(run=run)
        return sub

    submit = add("submit", cmd_submit, "Create a job from flags or from a manifest file.")
    submit.add_argument("-f", "--filename", help="VideoJob manifest(s), YAML or JSON; - is stdin")
    submit.add_argument("-q", "--queue", help="spec.queueName")
    submit.add_argument("--type", help="spec.type: probe, transcode, thumbnail, audio, clip, ...")
    submit.add_argument("--input", help="spec.input.url")
    submit.add_argument("--output-url", help="spec.output.url")
    submit.add_argument("--priority", type=int, help="spec.priority, 0-10 (default 5)")
    submit.add_argument("--memory", help="spec.resources.memory, e.g. 2Gi")
    submit.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="spec.params entry"
    )
    submit.add_argument("--depends-on", action="append", default=[], metavar="JOB")
    submit.add_argument("--name", help="metadata.name (default: generated from the type)")
    submit.add_argument("--batch", help=f"put the job in a batch (label {BATCH_LABEL})")
    submit.add_argument(
        "--ci-run-url", help=f"link the job to the CI run that created it ({CI_RUN_ANNOTATION})"
    )

    listing = add("list", cmd_list, "Jobs in queue order with positions and estimated starts.")
    listing.add_argument("-q", "--queue", help="only this queue (default: every queue)")
    listing.add_argument("-a", "--all", action="store_true", help="include finished jobs")

    show = add("show", cmd_show, "A job with its attempts, conditions and result.")
    show.add_argument("job")

    stats = add("stats", cmd_stats, "Queue statistics: counts, memory, rolling statistics.")
    stats.add_argument("queue", nargs="?", help="one queue in detail (default: every queue)")

    for name, state, text in (
        ("pause", QueueState.PAUSED, "Stop admitting jobs; running ones finish, new ones wait."),
        ("resume", QueueState.ACTIVE, "Admit jobs again."),
        ("drain", QueueState.DRAINING, "Stop admitting and reject new jobs; running ones finish."),
    ):
        sub = add(name, cmd_set_state, text)
        sub.add_argument("queue")
        sub.set_defaults(state=state)

    retry = add("retry", cmd_retry, f"Run a Failed job again ({RETRY_ANNOTATION}).")
    retry.add_argument("job")

    cancel = add("cancel", cmd_cancel, "Cancel a job for good (spec.cancel).")
    cancel.add_argument("job")

    batch = add("batch", cmd_batch, f"Progress of batches (jobs labelled {BATCH_LABEL}).")
    batch.add_argument("name", nargs="?", help="one batch (default: every batch)")
    batch.add_argument("-q", "--queue", help="batches of this queue, from its status")

    follow = add(
        "watch", cmd_watch, "Follow a job (NAME or vj/NAME) or queue (vq/NAME) to the end."
    )
    follow.add_argument("target")
    follow.add_argument("--timeout", type=float, help="give up after this many seconds")
    return parser


def _common_flags(parser: argparse.ArgumentParser, default: Any) -> argparse.ArgumentParser:
    parser.add_argument(
        "--kubeconfig",
        default=default,
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)",
    )
    parser.add_argument(
        "--context", default=default, help="kubeconfig context (default: the current one)"
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default=default,
        help="namespace (default: the context's namespace, else default)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUT_FORMATS,
        default="table" if default is None else default,
        help="output format (default: table)",
    )
    return parser


# -- submit -------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    if args.filename:
        flags = [
            f"--{f.replace('_', '-')}" for f in _SPEC_FLAGS if getattr(args, f) not in (None, [])
        ]
        if flags:
            raise CliError(
                f"{', '.join(flags)} cannot be combined with -f: put them in the manifest "
                "(--batch, --ci-run-url and --name do combine)"
            )
        bodies = _read_manifests(args.filename)
    else:
        bodies = [_job_from_flags(args)]
    if args.name and len(bodies) > 1:
        raise CliError("--name needs a manifest with a single VideoJob")
    # Every job is checked (fields, namespace, queue) before the first one is created.
    queues: set[str] = set()
    for body in bodies:
        metadata = body.setdefault("metadata", {})
        if args.name:
            metadata["name"] = args.name
            metadata.pop("generateName", None)
        if args.batch:
            metadata.setdefault("labels", {})[BATCH_LABEL] = args.batch
        if args.ci_run_url:
            metadata.setdefault("annotations", {})[CI_RUN_ANNOTATION] = args.ci_run_url
        stated = metadata.pop("namespace", None)
        if stated not in (None, cluster.namespace):
            raise CliError(
                f"VideoJob {metadata.get('name')!r} names namespace {stated!r} but the target is "
                f"{cluster.namespace!r}; pass -n {stated} or remove metadata.namespace"
            )
        queues.add(_validate(body).spec.queue_name)
    for queue in sorted(queues):
        cluster.get(QUEUES, queue)  # a clear error for an unknown queue
    created = [cluster.create(JOBS, body) for body in bodies]
    if args.output != "table":
        dump(created if len(created) > 1 else created[0], args.output, out)
    else:
        for obj in created:
            name, queue = obj["metadata"]["name"], obj["spec"]["queueName"]
            out.write(f"videojob.videoqueue.dev/{name} created in queue {queue}\n")
    return 0


_SPEC_FLAGS = ("queue", "type", "input", "output_url", "priority", "memory", "param", "depends_on")


def _job_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    missing = [f"--{f}" for f in ("queue", "type", "input") if not getattr(args, f)]
    if missing:
        raise CliError(f"submit needs {', '.join(missing)} (or a manifest with -f FILE)", 2)
    spec: dict[str, Any] = {
        "queueName": args.queue,
        "type": args.type,
        "input": {"url": args.input},
    }
    if args.output_url:
        spec["output"] = {"url": args.output_url}
    if args.priority is not None:
        spec["priority"] = args.priority
    if args.memory:
        spec["resources"] = {"memory": args.memory}
    if args.param:
        spec["params"] = dict(_key_value(p) for p in args.param)
    if args.depends_on:
        spec["dependsOn"] = args.depends_on
    metadata: dict[str, Any] = {"generateName": f"{args.type}-"}
    return {"apiVersion": API_VERSION, "kind": "VideoJob", "metadata": metadata, "spec": spec}


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CliError(f"--param {text!r}: expected KEY=VALUE, e.g. --param height=720", 2)
    try:  # numbers, booleans and JSON values stay typed: --param height=720
        return key, json.loads(value)
    except ValueError:
        return key, value


def _read_manifests(filename: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
    except OSError as error:
        raise CliError(f"cannot read {filename}: {error.strerror}") from error
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise CliError(f"{filename} is not valid YAML: {error}") from error
    bodies: list[dict[str, Any]] = []
    for doc in docs:
        items = (
            doc.get("items", []) if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        )
        for item in items:
            if not isinstance(item, dict) or item.get("kind") != "VideoJob":
                kind = item.get("kind") if isinstance(item, dict) else type(item).__name__
                raise CliError(
                    f"{filename}: submit creates VideoJobs, found kind {kind!r}; "
                    "apply other objects with kubectl apply"
                )
            bodies.append(item)
    if not bodies:
        raise CliError(f"{filename} holds no VideoJob")
    return bodies


def _validate(body: dict[str, Any]) -> VideoJob:
    """Check a job locally before sending it, with errors that name the field."""
    try:
        VideoJobSpec.model_validate(body.get("spec") or {})
        return VideoJob.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if not where.startswith(("spec", "metadata")):
            where = f"spec.{where}" if where else "spec"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise CliError(f"invalid job: {where}: {first['msg']}{more}") from error


# -- list, show, stats --------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    now = time.time()
    jobs = _jobs(cluster.list(JOBS))
    if args.queue:
        queues = [_queue(cluster.get(QUEUES, args.queue))]
    else:
        queues = sorted(_queues(cluster.list(QUEUES)), key=lambda q: q.metadata.name)
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
            done.sort(key=lambda j: j.status.completion_time or _epoch())
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
    for job in sorted(
        jobs, key=lambda j: (j.metadata.creation_timestamp or _epoch(), j.metadata.name)
    ):
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
    job = _job(raw)
    now = time.time()
    estimate: JobEstimate | None = None
    if job.status.phase is None or job.status.phase in PENDING_PHASES:
        try:
            queue = _queue(cluster.get(QUEUES, job.spec.queue_name))
        except CliError:
            queue = None  # the job says QueueMissing itself
        if queue is not None:
            estimates = _estimate(queue, _jobs(cluster.list(JOBS)), now)
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
        ("Stage", _stage(status.stage, status.progress)),
        ("Message", status.message),
        ("Input", spec.input.url),
        ("Output", spec.output.url if spec.output else None),
        ("Memory", status.effective_memory or spec.resources.memory),
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
    if status.conditions:
        out.write("Conditions:\n")
        table(
            ["  TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
            [
                [
                    f"  {c.type}",
                    c.status.value,
                    c.reason,
                    duration(now - c.last_transition_time.timestamp()),
                    c.message,
                ]
                for c in status.conditions
            ],
            out,
        )
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


def cmd_stats(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    now = time.time()
    if args.queue:
        queues = [_queue(cluster.get(QUEUES, args.queue))]
    else:
        queues = sorted(_queues(cluster.list(QUEUES)), key=lambda q: q.metadata.name)
    jobs = _jobs(cluster.list(JOBS))
    stats = [_queue_stats(q, jobs) for q in queues]
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
    if queue.status.conditions:
        out.write("Conditions:\n")
        table(
            ["  TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
            [
                [
                    f"  {c.type}",
                    c.status.value,
                    c.reason,
                    duration(now - c.last_transition_time.timestamp()),
                    c.message,
                ]
                for c in queue.status.conditions
            ],
            out,
        )
    return 0


def _queue_stats(queue: VideoQueue, jobs: Sequence[VideoJob]) -> dict[str, Any]:
    """Counts and statistics from the queue's status; counts and means computed from the jobs
    when the operator has not written them (yet)."""
    status = queue.status
    mine = [j for j in jobs if j.spec.queue_name == queue.metadata.name]
    phases = Counter(j.status.phase or JobPhase.PENDING for j in mine)
    written = status.observed_generation is not None
    names = (
        "pending",
        "waiting",
        "admitted",
        "running",
        "backoff",
        "succeeded",
        "failed",
        "cancelled",
        "rejected",
    )
    counts = {n: getattr(status, n) if written else phases[JobPhase(n.capitalize())] for n in names}
    stats: dict[str, Any] = {
        "name": queue.metadata.name,
        "state": queue.spec.state.value,
        "health": status.health.value if status.health else None,
        "concurrency": queue.spec.concurrency,
        "effectiveConcurrency": status.effective_concurrency,
        "memory": status.memory.summary
        if status.memory and status.memory.summary
        else f"{format_bytes(_reserved(mine))}/{queue.spec.memory.budget}",
        "jobs": counts,
    }
    if status.statistics is not None:
        st = status.statistics
        stats.update(
            statisticsSource="the queue's status: jobs finished in the last "
            + duration(st.window_seconds),
            meanWaitSeconds=st.mean_wait_seconds,
            meanRunSeconds=st.mean_run_seconds,
            successRate=st.success_rate,
            throughputPerMinute=st.throughput_per_minute,
            byType=[t.to_dict() for t in st.by_type],
        )
        for entry in stats["byType"]:
            for key in ("successRate", "meanWaitSeconds", "meanRunSeconds"):
                entry.setdefault(key, None)
        return stats
    finished = [j for j in mine if j.status.phase in (JobPhase.SUCCEEDED, JobPhase.FAILED)]
    waits = [j.status.wait_seconds for j in finished if j.status.wait_seconds is not None]
    runs = [
        j.status.run_seconds
        for j in finished
        if j.status.phase == JobPhase.SUCCEEDED and j.status.run_seconds is not None
    ]
    succeeded = sum(1 for j in finished if j.status.phase == JobPhase.SUCCEEDED)
    stats.update(
        statisticsSource=f"the {len(finished)} finished jobs still present",
        meanWaitSeconds=sum(waits) / len(waits) if waits else None,
        meanRunSeconds=sum(runs) / len(runs) if runs else None,
        successRate=succeeded / len(finished) if finished else None,
        throughputPerMinute=None,
        byType=[],
    )
    return stats


def _reserved(jobs: Sequence[VideoJob]) -> int:
    return sum(
        parse_quantity(j.status.effective_memory)
        for j in jobs
        if j.status.phase in BUSY_PHASES and j.status.effective_memory
    )


# -- pause, resume, drain, retry, cancel -------------------------------------------------


def cmd_set_state(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    state: QueueState = args.state
    cluster.get(QUEUES, args.queue)
    patched = cluster.merge_patch(QUEUES, args.queue, {"spec": {"state": state.value}})
    if args.output != "table":
        dump(patched, args.output, out)
    else:
        out.write(f"videoqueue.videoqueue.dev/{args.queue} is {state.value}\n")
    return 0


def cmd_retry(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    job = _job(cluster.get(JOBS, args.job))
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
    job = _job(cluster.get(JOBS, args.job))
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


# -- batch ----------------------------------------------------------------------------------


def cmd_batch(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    batches: list[dict[str, Any]]
    if args.queue and not args.name:
        queue = _queue(cluster.get(QUEUES, args.queue))
        if queue.status.batches:
            # The operator keeps the queue's unfinished batches in its status.
            batches = [{**b.to_dict(), "source": "queue status"} for b in queue.status.batches]
        else:  # an operator that does not write them, or only finished batches left
            batches = _batches(_jobs(cluster.list(JOBS, label_selector=BATCH_LABEL)), args.queue)
    else:
        selector = f"{BATCH_LABEL}={args.name}" if args.name else BATCH_LABEL
        batches = _batches(_jobs(cluster.list(JOBS, label_selector=selector)), args.queue)
        if args.name and not batches:
            raise CliError(
                f"no VideoJobs labelled {BATCH_LABEL}={args.name} in namespace "
                f"{cluster.namespace!r}"
            )
    if args.output != "table":
        dump(batches[0] if args.name else batches, args.output, out)
        return 0
    if not batches:
        out.write(f"No batches in namespace {cluster.namespace}.\n")
        return 0
    table(
        ["NAME", "TOTAL", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "DONE"],
        [
            [
                b["name"],
                b["total"],
                b["pending"],
                b["running"],
                b["succeeded"],
                b["failed"],
                _percent((b["succeeded"] + b["failed"]) / b["total"] if b["total"] else None),
            ]
            for b in batches
        ],
        out,
    )
    return 0


def _batches(jobs: Sequence[VideoJob], queue: str | None) -> list[dict[str, Any]]:
    """Batch progress counted from the jobs, in the shape of the queue's status.batches."""
    found: dict[str, dict[str, Any]] = {}
    for job in sorted(jobs, key=lambda j: j.metadata.creation_timestamp or _epoch()):
        name = job.metadata.labels.get(BATCH_LABEL)
        if not name or (queue and job.spec.queue_name != queue):
            continue
        entry = found.setdefault(
            name,
            {
                "name": name,
                "total": 0,
                "pending": 0,
                "running": 0,
                "succeeded": 0,
                "failed": 0,
                "source": "jobs",
            },
        )
        phase = job.status.phase or JobPhase.PENDING
        entry["total"] += 1
        if phase in BUSY_PHASES:
            entry["running"] += 1
        elif phase == JobPhase.SUCCEEDED:
            entry["succeeded"] += 1
        elif phase in FAILED_PHASES:
            entry["failed"] += 1
        else:
            entry["pending"] += 1
    return list(found.values())


# -- watch ----------------------------------------------------------------------------------


def cmd_watch(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    kind, _, name = args.target.rpartition("/")
    kind = kind.lower()
    if kind in ("", "vj", "videojob", "videojobs"):
        return _watch_job(cluster, name, args.timeout, args.output, out)
    if kind in ("vq", "videoqueue", "videoqueues", "queue"):
        return _watch_queue(cluster, name, args.timeout, args.output, out)
    raise CliError(f"watch {args.target!r}: expected NAME, vj/NAME or vq/NAME", 2)


def _watch_job(cluster: Cluster, name: str, timeout: float | None, fmt: str, out: TextIO) -> int:
    cluster.get(JOBS, name)
    last: tuple[object, ...] | None = None
    for raw in cluster.follow(JOBS, name, timeout=timeout):
        job = _job(raw)
        s = job.status
        phase = s.phase or JobPhase.PENDING
        seen = (phase, s.attempt, s.stage, s.progress, s.message)
        if seen != last:
            last = seen
            if fmt == "table":
                parts = [_clock(), f"{name}", phase.value]
                if s.attempt:
                    parts.append(f"attempt {s.attempt}")
                if s.stage or s.progress is not None:
                    parts.append(_stage(s.stage, s.progress))
                if s.message:
                    parts.append(s.message)
                out.write("  ".join(str(p) for p in parts) + "\n")
            else:
                _dump_line({"time": _clock(), "name": name, **s.to_dict()}, fmt, out)
            out.flush()
        if phase.is_terminal:
            return 0 if phase == JobPhase.SUCCEEDED else 1
    return 1  # pragma: no cover - follow() only ends by raising


def _watch_queue(cluster: Cluster, name: str, timeout: float | None, fmt: str, out: TextIO) -> int:
    cluster.get(QUEUES, name)
    last: tuple[object, ...] | None = None
    for raw in cluster.follow(QUEUES, name, timeout=timeout):
        queue = _queue(raw)
        s = queue.status
        busy = s.pending + s.waiting + s.admitted + s.running + s.backoff
        seen = (
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
        if seen != last:
            last = seen
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
        if s.observed_generation == queue.metadata.generation and busy == 0:
            return 0
    return 1  # pragma: no cover


def _dump_line(data: dict[str, Any], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(data, default=str) + "\n")
    else:
        out.write("---\n")
        dump(data, fmt, out)


# -- helpers ---------------------------------------------------------------------------------


def _estimate(queue: VideoQueue, jobs: Sequence[VideoJob], now: float) -> list[JobEstimate]:
    statistics = queue.status.statistics.to_dict() if queue.status.statistics else None
    return estimate_queue(
        queue,
        jobs,
        now,
        run_times_from(statistics, jobs),
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


def _job(raw: dict[str, Any]) -> VideoJob:
    try:
        return VideoJob.model_validate(raw)
    except ValidationError as error:
        name = raw.get("metadata", {}).get("name")
        raise CliError(f"cannot read VideoJob {name!r}: {error}") from error


def _queue(raw: dict[str, Any]) -> VideoQueue:
    try:
        return VideoQueue.model_validate(raw)
    except ValidationError as error:
        name = raw.get("metadata", {}).get("name")
        raise CliError(f"cannot read VideoQueue {name!r}: {error}") from error


def _jobs(raws: Sequence[dict[str, Any]]) -> list[VideoJob]:
    return [_job(raw) for raw in raws]


def _queues(raws: Sequence[dict[str, Any]]) -> list[VideoQueue]:
    return [_queue(raw) for raw in raws]


def _phase_line(phase: str, attempt: int, max_attempts: int | None) -> str:
    if not attempt:
        return phase
    of = f" of {max_attempts}" if max_attempts else ""
    return f"{phase} (attempt {attempt}{of})"


def _stage(stage: str | None, progress: int | None) -> str:
    return " ".join(p for p in (stage or "", f"{progress}%" if progress is not None else "") if p)


def _when(moment: datetime.datetime | None, now: float) -> str | None:
    if moment is None:
        return None
    return f"{iso(moment.timestamp())} ({relative(moment.timestamp(), now)})"


def _parse(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _seconds(value: float | None) -> str | None:
    return None if value is None else duration(value)


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:.0f}%"


def _clock() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S")


def _epoch() -> datetime.datetime:
    return datetime.datetime.fromtimestamp(0, datetime.UTC)
