"""Pieces both kinds share: the model base, CEL rules, conditions and object metadata."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "ApiModel",
    "CelRule",
    "Condition",
    "ConditionStatus",
    "ObjectMeta",
    "find_condition",
    "is_condition_true",
    "put_condition",
    "set_condition",
]


GROUP = "videoqueue.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Object names end up in label values (pods carry their queue and job), which allow 63
# characters; batch/v1 Job limits its names the same way for the same reason.
NAME_MAX_LENGTH = 63
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
MAX_CONDITIONS = 16


class ApiModel(BaseModel):
    """Base of every spec and status model: camelCase on the wire, snake_case in Python.

    Unknown fields are ignored rather than rejected so an operator one version behind the
    installed CRDs still reads objects; the API server's pruning keeps them out otherwise.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
        extra="ignore",
    )

    def to_dict(self) -> dict[str, Any]:
        """The object as Kubernetes JSON: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry. The message names the field and the fix."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None
    message_expression: str | None = None
    """CEL that builds the message, e.g. to show the value sent (the API server prints the
    schema's type, not the value, in front of a CEL rule's message); `message` is the
    fallback."""

    def to_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.message_expression is not None:
            entry["messageExpression"] = self.message_expression
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        if self.reason is not None:
            entry["reason"] = self.reason
        return entry


def cel_rules(*rules: CelRule) -> dict[str, Any]:
    """`json_schema_extra` that attaches CEL rules to a model or a field."""
    return {"x-kubernetes-validations": [r.to_schema() for r in rules]}


def cel_quantity(expr: str) -> str:
    """CEL for the quantity in an int-or-string field (`string()` accepts both)."""
    return f"quantity(string({expr}))"


def cel_is_quantity(expr: str) -> str:
    return f"isQuantity(string({expr}))"


def cel_string_list(values: Iterable[str]) -> str:
    """A CEL list literal of the strings, e.g. `['probe', 'clip']`."""
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


PRESERVE_UNKNOWN_FIELDS: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}
CONDITION_LIST: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


class ConditionStatus(StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One aspect of the object's state, as Kubernetes API conventions describe conditions."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)
    """Condition type in CamelCase, e.g. Complete or Ready."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(min_length=1, max_length=1024, pattern=REASON_PATTERN)
    """Machine-readable CamelCase reason for the last transition."""
    message: str = Field(default="", max_length=4096)
    """Human-readable details: what happened and what to do about it."""
    last_transition_time: AwareDatetime
    """When status last changed (not when the condition was last written)."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the condition was computed from."""


def find_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_condition_true(conditions: Iterable[Condition], type_: str) -> bool:
    found = find_condition(conditions, type_)
    return found is not None and found.status == ConditionStatus.TRUE


def set_condition(conditions: Sequence[Condition], condition: Condition) -> list[Condition]:
    """Return `conditions` with `condition` put in place of the one of the same type.

    The old lastTransitionTime is kept when the status does not change, so it keeps meaning
    "since when" rather than "last written" (and an unchanged condition costs no write).
    """
    result: list[Condition] = []
    replaced = False
    for existing in conditions:
        if existing.type != condition.type:
            result.append(existing)
            continue
        replaced = True
        if existing.status == condition.status:
            condition = condition.model_copy(
                update={"last_transition_time": existing.last_transition_time}
            )
        result.append(condition)
    if not replaced:
        result.append(condition)
    return result


def put_condition(
    conditions: Sequence[Condition],
    type_: str,
    holds: bool,
    reason: str,
    message: str,
    *,
    now: datetime.datetime,
    generation: int | None,
) -> list[Condition]:
    """`set_condition` for the usual True/False condition observed at `now`."""
    return set_condition(
        conditions,
        Condition(
            type=type_,
            status=ConditionStatus.TRUE if holds else ConditionStatus.FALSE,
            reason=reason,
            message=message,
            last_transition_time=now,
            observed_generation=generation,
        ),
    )


class ObjectMeta(ApiModel):
    """The parts of metadata the operator reads; everything else is carried through."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: AwareDatetime | None = None
    deletion_timestamp: AwareDatetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ApiObject(ApiModel):
    """What a VideoQueue and a VideoJob object share: apiVersion, kind and metadata. Each kind
    sets its kind and adds its spec and status (in that order, as the API server writes them)."""

    api_version: str = API_VERSION
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
