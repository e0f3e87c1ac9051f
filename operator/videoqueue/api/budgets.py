"""Budgets beyond memory: a VideoQueue's caps on the total CPU and extended resources
(`nvidia.com/gpu`, ...) its admitted and running worker pods request (`spec.budgets`), with
the CEL rules the API server checks them by, the status that reports them, and the units the
scheduler counts them in.

Memory has its own budget (`spec.memory.budget`, with per-job memory rules), so `memory` is
not a key here; neither are the other native resources (`ephemeral-storage`, `pods`,
`hugepages-*`), which workers do not compete for the way they do for CPU and devices.

Units inside the operator: CPU in millicores (`500m` is 500, `2` is 2000), every other
resource in whole units (`2` is 2; Kubernetes requires whole numbers of an extended resource).
Quantities are rounded up when converted, as Kubernetes rounds a request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from videoqueue.api.common import ApiModel, CelRule, cel_rules
from videoqueue.api.quantity import MAX_QUANTITY_LENGTH, parse_quantity

__all__ = [
    "CPU",
    "MAX_BUDGETS",
    "Budgets",
    "QueueBudgetStatus",
    "budget_units",
    "format_resource",
    "resource_units",
]

CPU: Final = "cpu"
MAX_BUDGETS: Final = 8

# Any quantity without a sign, milli included (`500m` CPU); no micro/nano, no negative exponent.
RESOURCE_QUANTITY_PATTERN: Final = (
    r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[mkMGTPE]|[eE]\+?[0-9]+)?$"
)
RESOURCE_QUANTITY_MESSAGE: Final = (
    "spec.budgets values must be positive quantities such as 8 or 500m for cpu (m: "
    "millicores) and whole numbers such as 2 for an extended resource"
)
# A domain-prefixed resource name, as Kubernetes writes extended resources.
EXTENDED_RESOURCE_PATTERN: Final = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_KUBERNETES_DOMAIN: Final = r"^([^/]*\.)?kubernetes\.io/"
MAX_RESOURCE_NAME_LENGTH: Final = 253

NO_MEMORY = CelRule(
    rule="!('memory' in self)",
    message=(
        "spec.budgets cannot hold memory: the queue's memory is budgeted by "
        "spec.memory.budget (with spec.memory.max and defaultRequest per job); remove the "
        "memory key and set spec.memory.budget instead"
    ),
)
CPU_OR_EXTENDED = CelRule(
    rule=(
        "self.all(k, k == 'cpu' || k == 'memory' || "
        f"(size(k) <= {MAX_RESOURCE_NAME_LENGTH} && "
        f"k.matches(r'{EXTENDED_RESOURCE_PATTERN}') && !k.matches(r'{_KUBERNETES_DOMAIN}')))"
    ),
    message=(
        "spec.budgets keys must be cpu or an extended resource name with a domain prefix "
        "(e.g. nvidia.com/gpu, example.com/fpga); ephemeral-storage, pods, hugepages and "
        "other kubernetes.io resources cannot be budgeted"
    ),
)
WHOLE_EXTENDED = CelRule(
    rule=(
        "self.all(k, k == 'cpu' || k == 'memory' || !isQuantity(string(self[k])) || "
        "quantity(string(self[k])).isInteger())"
    ),
    message=(
        "spec.budgets: an extended resource (e.g. nvidia.com/gpu) is counted in whole units, "
        "as Kubernetes requires of its requests; use a whole number such as 2"
    ),
)


def _int_to_string(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_quantity(value: str) -> str:
    if not re.fullmatch(RESOURCE_QUANTITY_PATTERN, value) or resource_units(CPU, value) <= 0:
        raise ValueError(f'{RESOURCE_QUANTITY_MESSAGE}, not "{value}"')
    return value


BudgetQuantity = Annotated[
    str,
    BeforeValidator(_int_to_string),
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "maxLength": MAX_QUANTITY_LENGTH,
            "x-kubernetes-validations": [
                {
                    "rule": f"string(self).matches(r'{RESOURCE_QUANTITY_PATTERN}') && "
                    "isQuantity(string(self)) && "
                    "quantity(string(self)).isGreaterThan(quantity('0'))",
                    "message": RESOURCE_QUANTITY_MESSAGE,
                    "messageExpression": (
                        f"'{RESOURCE_QUANTITY_MESSAGE}, not \"' + string(self) + '\"'"
                    ),
                }
            ],
        }
    ),
]
"""A budget: a positive quantity (CPU may be fractional, `500m`)."""


def _check_budgets(budgets: dict[str, str]) -> dict[str, str]:
    """The pydantic side of the CEL rules on spec.budgets (same messages)."""
    if "memory" in budgets:
        raise ValueError(NO_MEMORY.message)
    for name, value in budgets.items():
        if name == CPU:
            continue
        if (
            len(name) > MAX_RESOURCE_NAME_LENGTH
            or not re.fullmatch(EXTENDED_RESOURCE_PATTERN, name)
            or re.match(_KUBERNETES_DOMAIN, name)
        ):
            raise ValueError(f"{CPU_OR_EXTENDED.message}, not {name!r}")
        if resource_units(CPU, value) % 1000:
            raise ValueError(f"{WHOLE_EXTENDED.message}, not {name}: {value}")
    return budgets


Budgets = Annotated[
    dict[str, BudgetQuantity],
    Field(
        max_length=MAX_BUDGETS,
        json_schema_extra=cel_rules(NO_MEMORY, CPU_OR_EXTENDED, WHOLE_EXTENDED),
    ),
    AfterValidator(_check_budgets),
]
"""spec.budgets: resource name -> the most all admitted and running worker pods request."""


def resource_units(resource: str, value: str | int) -> int:
    """A quantity of `resource` in the operator's units: millicores for cpu, whole units
    (bytes, for byte-sized resources) for the rest; rounded up, as Kubernetes rounds."""
    return parse_quantity(value, per_unit=1000 if resource == CPU else 1)


def format_resource(resource: str, units: int) -> str:
    """`units` of `resource` as a person writes them: 500m or 2 for cpu, a count otherwise."""
    if resource == CPU:
        return str(units // 1000) if units % 1000 == 0 else f"{units}m"
    return str(units)


def budget_units(budgets: Mapping[str, str]) -> dict[str, int]:
    """spec.budgets in the operator's units (`resource_units`)."""
    return {name: resource_units(name, value) for name, value in budgets.items()}


class QueueBudgetStatus(ApiModel):
    """One budgeted resource: what admitted and running worker pods (and pods still stopping)
    request of it, and the budget."""

    resource: str = Field(max_length=MAX_RESOURCE_NAME_LENGTH)
    """cpu or the extended resource's name."""
    reserved: str = Field(max_length=MAX_QUANTITY_LENGTH)
    """Requested by admitted and running worker pods and pods still stopping, e.g. 3500m."""
    budget: str = Field(max_length=MAX_QUANTITY_LENGTH)
    """spec.budgets[resource] as last applied."""

    @classmethod
    def of(cls, resource: str, *, reserved: int, budget: int) -> QueueBudgetStatus:
        return cls(
            resource=resource,
            reserved=format_resource(resource, reserved),
            budget=format_resource(resource, budget),
        )
