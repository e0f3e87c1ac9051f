"""Kubernetes memory quantities: parsing to bytes, formatting back, and the pydantic types.

The API keeps quantities as the strings users wrote (so `2Gi` stays `2Gi` on a round trip).
Inside the operator memory is bytes (int), and the conversion happens here, at the API edge:
the models have byte accessors (`VideoJobStatus.effective_memory_bytes`,
`AttemptRecord.memory_bytes`, `QueueMemory.budget_bytes`, ...) that read with
`parse_quantity` and write with `memory_quantity`, and `container_memory_limit` reads a
pod container's limit. The scheduling core and the controller call none of the parsers;
`format_bytes` is theirs for messages a person reads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import ROUND_UP, Context, Decimal, InvalidOperation
from typing import Annotated, Any, Self, overload

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

__all__ = [
    "POSITIVE_QUANTITY_MESSAGE",
    "QUANTITY_PATTERN",
    "PositiveQuantity",
    "Quantity",
    "container_memory_limit",
    "format_bytes",
    "memory_quantity",
    "parse_quantity",
]


# The full Kubernetes grammar (sign, milli/micro/nano, exponents), for `parse_quantity`.
_QUANTITY_RE = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)

# What the API accepts for memory: no sign, no sub-byte suffixes (`512m` is a classic typo for
# `512Mi` and means half a byte) and no negative exponents. Written for both Go RE2 and Python.
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[kMGTPE]|[eE]\+?[0-9]+)?$"

POSITIVE_QUANTITY_MESSAGE = (
    "must be a positive memory quantity in bytes such as 512Mi, 2Gi or 1.5G "
    "(binary Ki/Mi/Gi/Ti or decimal k/M/G/T suffixes; not m, which means thousandths)"
)

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# Far beyond any real memory size; keeps a hostile `1e999999999` from allocating a huge int.
_MAX_EXPONENT = 60
# Enough digits that no quantity a person writes is rounded before the final ceiling.
_CONTEXT = Context(prec=120)


def parse_quantity(value: str | int, *, per_unit: int = 1) -> int:
    """Return a Kubernetes quantity in whole units (bytes, for memory), rounded up.

    Rounding up (away from zero) matches what Kubernetes does when it turns a quantity into
    an integer, so `0.5` is 1 byte, never 0. `per_unit` counts in smaller units: 1000 gives
    thousandths (CPU millicores: `500m` is 500, `2` is 2000).
    """
    if isinstance(value, bool):  # bool is an int subclass; True is not a memory size
        raise TypeError(f"quantity must be a string or an integer, not {value!r}")
    if isinstance(value, int):
        return value * per_unit
    match = _QUANTITY_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (examples: 512Mi, 2Gi, 1.5G)")
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["number"])
    except InvalidOperation as e:  # pragma: no cover - the regex admits only valid decimals
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from e
    if suffix in _BINARY:
        scale = Decimal(1024) ** _BINARY[suffix]
    else:
        exponent = _DECIMAL[suffix] if suffix in _DECIMAL else int(suffix[1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise ValueError(f"{value!r} is out of range for a quantity")
        scale = Decimal(10) ** exponent
    exact = _CONTEXT.multiply(_CONTEXT.multiply(number, scale), Decimal(per_unit))
    return int(exact.to_integral_value(rounding=ROUND_UP, context=_CONTEXT))


def format_bytes(value: int) -> str:
    """Write a byte count as the shortest exact quantity; a binary suffix wins a tie.

    `parse_quantity(format_bytes(n)) == n` for every integer n, and 4G stays 4G rather than
    3906250Ki.
    """
    if value < 0:
        return "-" + format_bytes(-value)
    if value == 0:
        return "0"
    binary = [(s, 1024**p) for s, p in sorted(_BINARY.items(), key=lambda kv: -kv[1])]
    decimal = [(s, 10 ** _DECIMAL[s]) for s in ("E", "P", "T", "G", "M", "k")]
    candidates = [
        f"{value // unit}{suffix}" for suffix, unit in binary + decimal if value % unit == 0
    ]
    return min([*candidates, str(value)], key=len)


def memory_quantity(value: int) -> str:
    """`value` bytes as the quantity the API stores (in status fields) and Kubernetes reads
    (in a pod's resources): the shortest exact form, `format_bytes`. A negative size, which
    no memory field can hold, raises ValueError."""
    if value < 0:
        raise ValueError(f"a memory size cannot be negative: {value} bytes")
    return format_bytes(value)


def stored_bytes(value: str | int | None, field: str) -> int | None:
    """A quantity field of a model in bytes, None when unset: the byte accessors' reader.

    A value that is not a quantity raises what `parse_quantity` raises, with `field` (the wire
    name) in front of its message. The models and the CRD schema refuse such a value on the
    way in, so only one assigned in Python without validation gets here."""
    if value is None:
        return None
    try:
        return parse_quantity(value)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{field}: {e}") from None


class QuantityBytes(property):
    """A model's read-write byte accessor of an optional quantity field `attribute`: reads it
    with `stored_bytes` (None when unset; `wire_name` names the field in an error), and
    stores a byte count as `memory_quantity` writes it (None unsets the field).

        memory_bytes = QuantityBytes("memory", "status.attempts[].memory")

    A property (which pydantic leaves out of the fields and calls on assignment), typed as
    `int | None` for mypy."""

    def __init__(self, attribute: str, wire_name: str) -> None:
        def read(model: Any) -> int | None:
            return stored_bytes(getattr(model, attribute), wire_name)

        def write(model: Any, value: int | None) -> None:
            setattr(model, attribute, None if value is None else memory_quantity(value))

        super().__init__(read, write)

    @overload
    def __get__(self, instance: None, owner: type | None = None, /) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None, /) -> int | None: ...
    def __get__(self, instance: object, owner: type | None = None, /) -> Any:
        return super().__get__(instance, owner)

    def __set__(self, instance: object, value: int | None, /) -> None:
        super().__set__(instance, value)


def container_memory_limit(container: Mapping[str, Any]) -> int | None:
    """A core/v1 container's resources.limits.memory in bytes, None when it has none. A limit
    that is not a quantity raises ValueError (TypeError for one that is neither a string nor
    an integer)."""
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return None if limit is None else parse_quantity(limit)


def _int_to_string(value: Any) -> Any:
    # int-or-string fields may arrive as YAML integers; keep one Python type (str).
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_pattern(value: str) -> str:
    if not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(POSITIVE_QUANTITY_MESSAGE)
    return value


def _check_positive(value: str) -> str:
    if parse_quantity(value) <= 0:
        raise ValueError(POSITIVE_QUANTITY_MESSAGE)
    return value


MAX_QUANTITY_LENGTH = 64
"""Characters of a quantity string; far more than any real memory size needs."""


def _quantity_schema(*, positive: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
        "maxLength": MAX_QUANTITY_LENGTH,
    }
    if not positive:
        # Status fields, written by the operator: the pattern is enough.
        schema["pattern"] = QUANTITY_PATTERN
        return schema
    # What users set. One CEL rule rather than pattern plus rule: the pattern's error shows a
    # regular expression, and a CEL error on an int-or-string field shows `Invalid value: ""`
    # (the API server prints the schema's type there, which int-or-string lacks), so the
    # message itself must say what was sent. The pattern cannot say "not zero"; CEL can.
    schema["x-kubernetes-validations"] = [
        {
            "rule": f"string(self).matches(r'{QUANTITY_PATTERN}') && "
            "isQuantity(string(self)) && "
            "quantity(string(self)).isGreaterThan(quantity('0'))",
            "message": POSITIVE_QUANTITY_MESSAGE,
            "messageExpression": f"'{POSITIVE_QUANTITY_MESSAGE}, not \"' + string(self) + '\"'",
        }
    ]
    return schema


Quantity = Annotated[
    str,
    BeforeValidator(_int_to_string),
    AfterValidator(_check_pattern),
    WithJsonSchema(_quantity_schema(positive=False)),
]
"""A memory quantity that may be zero (status fields the operator writes)."""

PositiveQuantity = Annotated[
    str,
    BeforeValidator(_int_to_string),
    AfterValidator(_check_pattern),
    AfterValidator(_check_positive),
    WithJsonSchema(_quantity_schema(positive=True)),
]
"""A memory quantity a user sets: must be more than zero bytes."""
