"""`kubectl videoqueue logs vj/NAME [--attempt N] [-f] [--tail N]`: a worker's log, read from
the attempt's pod through the API server (the kubelet serves it), as `kubectl logs` would.

The log lives only as long as the pod: worker pods are owned by their VideoJob and go with it
(the job's or queue's ttlSecondsAfterFinished deletes finished jobs), and a cluster may
garbage-collect terminated pods earlier. When the pod is gone the command says so, what is
still known about the attempt (`show`), and how to keep pods longer; it never prints an
empty log as if the worker had said nothing."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from videoqueue.api import VideoJob
from videoqueue.cli.cluster import JOBS, CliError, Cluster
from videoqueue.cli.objects import read_job
from videoqueue.scheduling.worker_pod import (
    ANNOTATION_WORKER_CONTAINER,
    WORKER_CONTAINER,
    worker_pod_name,
)

JOB_KINDS = ("", "vj", "videojob", "videojobs")


def cmd_logs(args: argparse.Namespace, cluster: Cluster, out: TextIO) -> int:
    kind, _, name = args.job.rpartition("/")
    if kind.lower() not in JOB_KINDS or not name:
        raise CliError(f"logs {args.job!r}: expected NAME or vj/NAME", 2)
    job = read_job(cluster.get(JOBS, name))
    attempt = _attempt(job, args.attempt)
    pod_name = _pod_name(job, attempt)
    core = client.CoreV1Api(cluster.api)
    pod = _read_pod(core, cluster.namespace, pod_name, job, attempt)
    annotations = (pod.metadata.annotations or {}) if pod.metadata else {}
    container = annotations.get(ANNOTATION_WORKER_CONTAINER, WORKER_CONTAINER)
    if not _started(pod, container):
        phase = pod.status.phase if pod.status else "unknown"
        raise CliError(
            f"the worker of attempt {attempt} of job {name!r} has not started yet (pod "
            f"{pod_name} is {phase}); follow the job with: kubectl videoqueue watch vj/{name}"
        )
    try:
        response = core.read_namespaced_pod_log(
            pod_name,
            cluster.namespace,
            container=container,
            follow=args.follow,
            tail_lines=args.tail,
            _preload_content=False,
        )
        for chunk in response.stream(4096, decode_content=True):
            out.write(chunk.decode(errors="replace"))
            out.flush()
    except ApiException as error:
        if error.status == 404:
            raise _gone(job, attempt, pod_name) from error
        raise CliError(f"cannot read the log of pod {pod_name}: {_reason(error)}") from error
    except urllib3.exceptions.HTTPError as error:
        raise CliError(f"reading the log of pod {pod_name} failed: {error}") from error
    return 0


def _attempt(job: VideoJob, wanted: int | None) -> int:
    """The attempt to show: `wanted`, else the job's latest."""
    name, latest = job.metadata.name, job.status.attempt
    if latest == 0:
        phase = job.status.phase.value if job.status.phase else "Pending"
        raise CliError(
            f"job {name!r} has not run yet (phase {phase}), so no worker has a log; follow it "
            f"with: kubectl videoqueue watch vj/{name}"
        )
    if wanted is None:
        return latest
    if not 1 <= wanted <= latest:
        runs = "attempt 1" if latest == 1 else f"attempts 1 to {latest}"
        raise CliError(f"job {name!r} has no attempt {wanted}; it has {runs}", 2)
    return wanted


def _pod_name(job: VideoJob, attempt: int) -> str:
    """The attempt's pod as the job's status recorded it, else its deterministic name."""
    record = next((a for a in job.status.attempts if a.attempt == attempt), None)
    if record is not None and record.pod:
        return record.pod
    return worker_pod_name(job.metadata.name, attempt)


def _read_pod(core: Any, namespace: str, pod_name: str, job: VideoJob, attempt: int) -> Any:
    try:
        pod = core.read_namespaced_pod(pod_name, namespace)
    except ApiException as error:
        if error.status == 404:
            raise _gone(job, attempt, pod_name) from error
        raise CliError(f"cannot read pod {pod_name}: {_reason(error)}") from error
    owners = pod.metadata.owner_references or []
    if job.metadata.uid and all(o.uid != job.metadata.uid for o in owners):
        # A pod of the same name left by an earlier job of this name (being deleted).
        raise _gone(job, attempt, pod_name)
    return pod


def _started(pod: Any, container: str) -> bool:
    """Whether `container` has run at all (running now or terminated): only then is there
    a log to read."""
    statuses = (pod.status.container_statuses or []) if pod.status else []
    for status in statuses:
        if status.name == container and status.state is not None:
            return status.state.running is not None or status.state.terminated is not None
    return False


def _gone(job: VideoJob, attempt: int, pod_name: str) -> CliError:
    name = job.metadata.name
    return CliError(
        f"the worker pod {pod_name} of attempt {attempt} of job {name!r} is gone, and its log "
        f"with it. Worker pods are deleted with their job (ttlSecondsAfterFinished of the job "
        f"or its queue deletes finished jobs), with a cancelled or preempted attempt, or by the "
        f"cluster's garbage collection of terminated pods. The attempt's outcome is still in: "
        f"kubectl videoqueue show {name}. To keep logs longer, raise ttlSecondsAfterFinished "
        f"(spec.ttlSecondsAfterFinished of the queue or job) or ship container logs to a log "
        f"store."
    )


def _reason(error: ApiException) -> str:
    return f"{error.status} {error.reason}: {(error.body or '').strip()[:300]}"
