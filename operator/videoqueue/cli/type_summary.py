"""What `kubectl videoqueue stats QUEUE` shows per job type: the settings in force for the type
(spec.types over the queue's, resolved by the operator's own `videoqueue.scheduling.job_types`)
and its usage among the queue's jobs, with reserved memory counted as the operator counts it
(`videoqueue.scheduling.queue_status.reserved_memory`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from videoqueue.api import JobPhase, VideoJob, VideoQueue, memory_quantity
from videoqueue.scheduling.job_types import (
    TemplateError,
    type_deadline_seconds,
    type_default_memory,
    type_max_attempts,
    worker_template,
)
from videoqueue.scheduling.queue_status import RESERVING_PHASES, reserved_memory
from videoqueue.scheduling.worker_pod import worker_container

NOT_ADMITTED = frozenset({JobPhase.PENDING, JobPhase.WAITING, JobPhase.BACKOFF})
"""Unfinished jobs not yet admitted, counted as pending per type (as batches count them)."""


def type_summaries(queue: VideoQueue, jobs: Sequence[VideoJob]) -> list[dict[str, Any]]:
    """One entry per type the queue declares (spec.types, in its order), then per other type
    among its unfinished jobs (by name): `declared`, the worker `image` when the type's patch
    changes it (else None: the queue's), the worker's `cpu` request, `defaultMemory`,
    `activeDeadlineSeconds`, `maxAttempts`, and `running` (admitted or running), `pending`
    (Pending, Waiting, Backoff) and `reserved` memory; `templateError` when the type's
    template cannot make a pod. `jobs` may hold other queues' jobs."""
    mine = [job for job in jobs if job.spec.queue_name == queue.metadata.name]
    declared = list(queue.spec.types or {})
    seen = {
        job.spec.type
        for job in mine
        if not (job.status.phase is not None and job.status.phase.is_terminal)
    }
    names = declared + sorted(seen - set(declared))
    queue_image = _worker(queue.spec.template).get("image")
    summaries = []
    for name in names:
        statuses = [job.status for job in mine if job.spec.type == name]
        phases = [status.phase or JobPhase.PENDING for status in statuses]
        summary: dict[str, Any] = {
            "type": name,
            "declared": name in declared,
            "image": None,
            "cpu": None,
            "defaultMemory": memory_quantity(type_default_memory(queue, name)),
            "activeDeadlineSeconds": type_deadline_seconds(queue, name),
            "maxAttempts": type_max_attempts(queue, name),
            "running": sum(1 for phase in phases if phase in RESERVING_PHASES),
            "pending": sum(1 for phase in phases if phase in NOT_ADMITTED),
            "reserved": memory_quantity(reserved_memory(queue, [(name, s) for s in statuses])),
            "templateError": None,
        }
        try:
            worker = _worker(worker_template(queue, name))
        except TemplateError as error:
            summary["templateError"] = str(error)
        else:
            image = worker.get("image")
            summary["image"] = image if image != queue_image else None
            summary["cpu"] = ((worker.get("resources") or {}).get("requests") or {}).get("cpu")
        summaries.append(summary)
    return summaries


def _worker(template: dict[str, Any]) -> dict[str, Any]:
    containers = [
        c for c in (template.get("spec") or {}).get("containers") or [] if isinstance(c, dict)
    ]
    return worker_container(containers) if containers else {}
