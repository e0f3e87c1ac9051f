"""Per-type settings of a queue (`spec.types`, `videoqueue.api.queue_types`), resolved for a
job: its worker pod template, its default memory, its attempt deadline and its attempts.

Precedence, for each setting: the job's own, else its type's, else the queue's.

    memory     job resources.memory     > types.<t>.memory.defaultRequest > memory.defaultRequest
    deadline   job activeDeadlineSeconds > types.<t>.activeDeadlineSeconds > activeDeadlineSeconds
    attempts   job maxAttempts          > types.<t>.maxAttempts           > retry.maxAttempts
    template   spec.template with types.<t>.template merged over it (`merge_template`)

Pure functions of the API models: no I/O, no clock.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from videoqueue.api import VideoJob, VideoQueue
from videoqueue.api.queue_types import QueueTypeSettings

__all__ = [
    "NAMED_LISTS",
    "TemplateError",
    "active_deadline_seconds",
    "max_attempts",
    "merge_template",
    "template_source",
    "template_to_read",
    "type_deadline_seconds",
    "type_default_memory",
    "type_default_memory_source",
    "type_max_attempts",
    "type_settings",
    "worker_template",
]


class TemplateError(ValueError):
    """The queue's spec.template (or a type's template patch over it) cannot make a worker
    pod: the queue's owner must fix it, and no job it applies to can be admitted until then
    (the jobs are not at fault)."""


NAMED_LISTS: Final = frozenset(
    {("spec", "containers"), ("spec", "initContainers"), ("spec", "volumes")}
)
"""The lists of a pod template a type's patch merges element by element by name (as a
strategic merge patch does); every other list in the patch replaces the template's."""


def type_settings(queue: VideoQueue, job_type: str | None) -> QueueTypeSettings | None:
    """The queue's spec.types entry for `job_type`; None when it has none."""
    types = queue.spec.types
    return None if job_type is None or types is None else types.get(job_type)


def template_source(job_type: str | None, queue: VideoQueue) -> str:
    """Where the worker pod template of `job_type` comes from, as a user reads it in a
    message: `spec.template`, or `spec.template with spec.types.<t>.template over it`."""
    settings = type_settings(queue, job_type)
    if settings is None or settings.template is None:
        return "spec.template"
    return f"spec.template with spec.types.{job_type}.template merged over it"


def worker_template(queue: VideoQueue, job_type: str | None) -> dict[str, Any]:
    """The pod template (metadata and spec) of the queue's worker pods for jobs of
    `job_type`: the queue's spec.template with the type's template patch merged over it
    (`merge_template`), or the queue's template when the type has none. Always a new dict.

    Raises TemplateError when the type's patch cannot be merged (a merged list that is not a
    list of objects with a name), naming the field under spec.types.<type>.template.
    """
    template = template_to_read(queue, job_type)
    return copy.deepcopy(template) if template is queue.spec.template else template


def template_to_read(queue: VideoQueue, job_type: str | None) -> dict[str, Any]:
    """`worker_template` for reading only (never to be changed): the queue's own template,
    not a copy, when the type has no patch (every assessment of a waiting job reads it;
    copying it was a tenth of the cost of assessing a queue of waiting jobs). Raises as
    `worker_template` does."""
    base = queue.spec.template
    settings = type_settings(queue, job_type)
    if settings is None or settings.template is None:
        return base
    return merge_template(base, settings.template, where=f"spec.types.{job_type}.template")


def merge_template(
    base: Mapping[str, Any], patch: Mapping[str, Any], *, where: str = "patch"
) -> dict[str, Any]:
    """`patch` merged over `base`, both pod templates (metadata and spec); neither is
    modified. Objects merge key by key as in a JSON merge patch (RFC 7386: a null deletes the
    key, any other non-object value replaces); the lists in NAMED_LISTS (spec.containers,
    spec.initContainers, spec.volumes) merge element by element by `name`: a patch element
    is merged into the template's element of the same name, or appended when there is none;
    every other list replaces the template's. `where` names the patch in errors."""
    return _merge_object(base, patch, (), where)


def _merge_object(
    base: Mapping[str, Any], patch: Mapping[str, Any], path: tuple[str, ...], where: str
) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in patch.items():
        at = (*path, key)
        if value is None:
            merged.pop(key, None)
        elif at in NAMED_LISTS:
            merged[key] = _merge_named(merged.get(key), value, at, where)
        elif isinstance(value, Mapping):
            current = merged.get(key)
            merged[key] = _merge_object(
                current if isinstance(current, Mapping) else {}, value, at, where
            )
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_named(base: Any, patch: Any, path: tuple[str, ...], where: str) -> list[Any]:
    field = f"{where}.{'.'.join(path)}"
    if not isinstance(patch, list):
        raise TemplateError(
            f"{field} must be a list of objects with a name (they merge by name into the "
            "queue's spec.template); write it as a list"
        )
    merged: list[Any] = copy.deepcopy(base) if isinstance(base, list) else []
    for index, element in enumerate(patch):
        name = element.get("name") if isinstance(element, Mapping) else None
        if not isinstance(name, str) or not name:
            raise TemplateError(
                f"{field}[{index}] has no name: elements of {'.'.join(path)} merge by name "
                "into the queue's spec.template (a new name is appended); give it the name "
                "of the element to change, or a new one"
            )
        position = next(
            (
                i
                for i, existing in enumerate(merged)
                if isinstance(existing, Mapping) and existing.get("name") == name
            ),
            None,
        )
        if position is None:
            merged.append(_merge_object({}, element, (), where))
        else:
            merged[position] = _merge_object(merged[position], element, (), where)
    return merged


def type_default_memory(queue: VideoQueue, job_type: str | None) -> int:
    """Memory in bytes of a job of `job_type` that does not set spec.resources.memory: its
    type's memory.defaultRequest, else the queue's memory.defaultRequest."""
    return type_default_memory_source(queue, job_type)[0]


def type_default_memory_source(queue: VideoQueue, job_type: str | None) -> tuple[int, str]:
    """`type_default_memory` and the field it came from, for status.memorySource."""
    settings = type_settings(queue, job_type)
    memory = settings.memory if settings is not None else None
    if memory is not None and (default := memory.default_request_bytes) is not None:
        return default, f"spec.types.{job_type}.memory.defaultRequest"
    return queue.spec.memory.default_request_bytes, "spec.memory.defaultRequest"


def type_deadline_seconds(queue: VideoQueue, job_type: str | None) -> int | None:
    """Time limit of one attempt of a job of `job_type` that sets none: its type's
    activeDeadlineSeconds, else the queue's; None for no limit."""
    settings = type_settings(queue, job_type)
    if settings is not None and settings.active_deadline_seconds is not None:
        return settings.active_deadline_seconds
    return queue.spec.active_deadline_seconds


def type_max_attempts(queue: VideoQueue, job_type: str | None) -> int:
    """Attempts a job of `job_type` gets that sets none: its type's maxAttempts, else the
    queue's retry.maxAttempts."""
    settings = type_settings(queue, job_type)
    if settings is not None and settings.max_attempts is not None:
        return settings.max_attempts
    return queue.spec.retry.max_attempts


def active_deadline_seconds(job: VideoJob, queue: VideoQueue | None) -> int | None:
    """Time limit of one attempt of `job`: its spec.activeDeadlineSeconds, else its type's
    in `queue`, else the queue's; None for no limit (or no queue)."""
    if job.spec.active_deadline_seconds is not None:
        return job.spec.active_deadline_seconds
    return None if queue is None else type_deadline_seconds(queue, job.spec.type)


def max_attempts(job: VideoJob, queue: VideoQueue | None) -> int:
    """Attempts `job` gets in total: its spec.maxAttempts, else its type's in `queue`, else
    the queue's retry.maxAttempts; 1 without a queue."""
    if job.spec.max_attempts is not None:
        return job.spec.max_attempts
    return 1 if queue is None else type_max_attempts(queue, job.spec.type)
