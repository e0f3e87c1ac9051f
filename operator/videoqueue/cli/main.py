"""The `kubectl videoqueue` entry point: the argument parser and the dispatch to each command
(`submit`; `jobs`: list, show, retry, cancel; `logs`; `queues`: stats, pause/resume/drain,
batch; `watch`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from videoqueue.api import BATCH_LABEL, RETRY_ANNOTATION, QueueState
from videoqueue.cli.cluster import CliError, Cluster
from videoqueue.cli.jobs import cmd_cancel, cmd_list, cmd_retry, cmd_show
from videoqueue.cli.logs import cmd_logs
from videoqueue.cli.objects import CI_RUN_ANNOTATION
from videoqueue.cli.queues import cmd_batch, cmd_set_state, cmd_stats
from videoqueue.cli.render import OUTPUT_FORMATS
from videoqueue.cli.submit import cmd_submit
from videoqueue.cli.watch import cmd_watch

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
    submit.add_argument(
        "--type", help="spec.type: probe, transcode, thumbnail, audio, clip, hls, ..."
    )
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

    logs = add("logs", cmd_logs, "A job's worker log (its latest attempt, or --attempt N).")
    logs.add_argument("job", help="NAME or vj/NAME")
    logs.add_argument("--attempt", type=int, help="the attempt (default: the latest)")
    logs.add_argument("-f", "--follow", action="store_true", help="stream the log as it grows")
    logs.add_argument("--tail", type=int, help="only the last this many lines")

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
