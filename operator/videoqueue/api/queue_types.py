"""Per-type settings of a VideoQueue (`spec.types`): a pod template patch, default memory,
deadline and attempts for the jobs of one type, with the CEL rules the API server checks
them by. How a type's template patch is merged over the queue's template, and how job, type
and queue settings resolve, is `videoqueue.scheduling.job_types` (and docs/queues.md).

Precedence, for each setting: the job's own (spec.resources.memory, spec.activeDeadlineSeconds,
spec.maxAttempts), else its type's here, else the queue's (spec.memory.defaultRequest,
spec.activeDeadlineSeconds, spec.retry.maxAttempts).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from videoqueue.api.common import (
    PRESERVE_UNKNOWN_FIELDS,
    ApiModel,
    CelRule,
    cel_is_quantity,
    cel_quantity,
)
from videoqueue.api.quantity import PositiveQuantity, parse_quantity

__all__ = [
    "MAX_QUEUE_TYPES",
    "QueueTypeMemory",
    "QueueTypeSettings",
    "check_type_defaults",
]

MAX_QUEUE_TYPES = 16
"""Entries in spec.types."""

# The same pattern as VideoJob spec.type (videoqueue.api.job.JOB_TYPE_PATTERN; not imported:
# job.py imports the queue's policies, and a type key must match exactly what jobs may say).
TYPE_KEY_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"

TYPE_KEYS = CelRule(
    rule=f"self.all(t, t.matches(r'{TYPE_KEY_PATTERN}'))",
    message=(
        "spec.types keys must be job types as VideoJob spec.type spells them: a lowercase "
        "letter, then up to 62 lowercase letters, digits or '-' (e.g. transcode, probe, "
        "my-encoder); rename the entry"
    ),
)

# The limit a type's default must fit: spec.memory.max, else spec.memory.budget.
_QUEUE_LIMIT = "(has(self.memory.max) ? self.memory.max : self.memory.budget)"


def _default_too_large(t: str) -> str:
    """CEL: the type `t`'s defaultRequest is a quantity larger than the queue's limit."""
    default = f"self.types[{t}].memory.defaultRequest"
    return (
        f"has(self.types[{t}].memory) && has({default}) && "
        f"{cel_is_quantity(default)} && {cel_is_quantity(_QUEUE_LIMIT)} && "
        f"{cel_quantity(default)}.compareTo({cel_quantity(_QUEUE_LIMIT)}) > 0"
    )


TYPE_DEFAULT_REQUEST_WITHIN_MAX = CelRule(
    rule=f"!has(self.types) || !self.types.exists(t, {_default_too_large('t')})",
    message=(
        "spec.types.<type>.memory.defaultRequest must not exceed spec.memory.max (spec.memory."
        "budget when max is unset): jobs of that type without resources.memory would all be "
        "rejected; lower it or raise spec.memory.max"
    ),
    message_expression=(
        f"'spec.types.' + self.types.filter(t, {_default_too_large('t')})[0] + "
        "'.memory.defaultRequest must not exceed spec.memory.max (spec.memory.budget when max "
        "is unset): jobs of that type without resources.memory would all be rejected; lower it "
        "or raise spec.memory.max'"
    ),
    field_path=".types",
)


class QueueTypeMemory(ApiModel):
    """Memory of the type's jobs."""

    default_request: PositiveQuantity | None = None
    """Memory of a job of this type that does not set resources.memory; the queue's
    memory.defaultRequest if unset. At most the queue's memory.max (budget when unset)."""

    @property
    def default_request_bytes(self) -> int | None:
        return None if self.default_request is None else parse_quantity(self.default_request)


class QueueTypeSettings(ApiModel):
    """Settings for the queue's jobs of one type. Each unset one falls back to the queue's;
    each one a job sets itself wins over both (job > type > queue)."""

    template: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={**PRESERVE_UNKNOWN_FIELDS, "x-kubernetes-embedded-resource": False},
    )
    """A patch over the queue's spec.template (metadata and spec) for this type's worker
    pods. Objects merge key by key (JSON merge patch: null deletes a key); the lists
    spec.containers, spec.initContainers and spec.volumes merge element by element by name
    (an element with a new name is appended); every other list (tolerations, env, ...)
    replaces the template's. E.g. another image, more CPU, a nodeSelector and tolerations
    for GPU nodes."""
    memory: QueueTypeMemory | None = None
    """Default memory of the type's jobs."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Time limit of one attempt for the type's jobs that do not set their own; the queue's
    activeDeadlineSeconds if unset."""
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    """Attempts a job of this type gets in total unless it sets spec.maxAttempts; the
    queue's retry.maxAttempts if unset."""


def check_type_defaults(types: Mapping[str, QueueTypeSettings], queue_limit: int) -> None:
    """The pydantic side of TYPE_DEFAULT_REQUEST_WITHIN_MAX: raises ValueError naming the
    first type whose memory.defaultRequest exceeds `queue_limit` (the queue's memory.max,
    budget when unset), for objects that never went through the API server."""
    for name, settings in types.items():
        default = settings.memory.default_request_bytes if settings.memory else None
        if default is not None and default > queue_limit:
            raise ValueError(TYPE_DEFAULT_REQUEST_WITHIN_MAX.message.replace("<type>", name, 1))
