"""`kubectl videoqueue submit`: jobs from flags or manifests, checked locally (fields,
namespace, queue) before the first one is created."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from videoqueue.api import API_VERSION, BATCH_LABEL, VideoJob, VideoJobSpec
from videoqueue.cli.cluster import JOBS, QUEUES, CliError, Cluster
from videoqueue.cli.objects import CI_RUN_ANNOTATION
from videoqueue.cli.render import dump


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
        bodies = read_manifests(args.filename)
    else:
        bodies = [job_from_flags(args)]
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
        queues.add(validate(body).spec.queue_name)
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


def job_from_flags(args: argparse.Namespace) -> dict[str, Any]:
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


def read_manifests(filename: str) -> list[dict[str, Any]]:
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


def validate(body: dict[str, Any]) -> VideoJob:
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
