"""Turn pydantic's JSON Schema into a Kubernetes structural OpenAPI v3 schema.

Kubernetes wants every node self-contained (no `$ref`), optional fields simply absent
rather than `anyOf [..., null]`, OpenAPI 3.0's boolean `exclusiveMinimum`, and free-form
objects marked `x-kubernetes-preserve-unknown-fields` instead of `additionalProperties: true`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

Schema = dict[str, Any]

_REF_PREFIX = "#/$defs/"
# Keys whose values are lists to concatenate when a field's own schema meets its type's.
_MERGED_LISTS = ("x-kubernetes-validations",)


def structural_schema(model: type[BaseModel]) -> Schema:
    """The model's validation schema (camelCase names) in structural form."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Schema] = raw.pop("$defs", {})
    return _convert(raw, defs)


def _merge(base: Schema, override: Schema) -> Schema:
    # A field's own keys (description, default, field-level rules) win over its type's.
    merged = {**base, **override}
    for key in _MERGED_LISTS:
        if key in base and key in override:
            merged[key] = [*base[key], *override[key]]
    return merged


def _convert(node: Schema, defs: dict[str, Schema]) -> Schema:
    if "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith(_REF_PREFIX):
            raise ValueError(f"unexpected reference {ref!r}")
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _convert(_merge(defs[ref.removeprefix(_REF_PREFIX)], rest), defs)
    if "allOf" in node and len(node["allOf"]) == 1:  # older pydantic wraps refs with siblings
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return _convert(_merge(node["allOf"][0], rest), defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) < len(node["anyOf"]):
            # Optional[X]: absence already means "unset", so null is not needed on the wire.
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", ...) is None:
                del rest["default"]
            if len(branches) == 1:
                return _convert(_merge(branches[0], rest), defs)
            return _convert({**rest, "anyOf": branches}, defs)

    out: Schema = {}
    for key, value in node.items():
        if key == "title":
            continue  # pydantic's generated titles add noise and nothing Kubernetes uses
        if key == "description":
            out[key] = " ".join(value.split())  # docstrings wrap; kubectl explain re-wraps
        elif key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "anyOf":  # int-or-string branches
            out[key] = [_convert(b, defs) for b in value]
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _convert(value, defs)
            # False: pruning already drops unknown fields
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        else:
            out[key] = value
    if node.get("additionalProperties") is True and "type" not in out:
        out["type"] = "object"  # a free-form dict; a node that asks for no type keeps none
    _reject_unstructural(out)
    return out


def _reject_unstructural(node: Schema) -> None:
    # Fail at generation time rather than at `kubectl apply`.
    if "$ref" in node or "oneOf" in node or "allOf" in node:
        raise ValueError(f"schema node is not structural: {sorted(node)}")
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        raise ValueError(f"anyOf is only supported for int-or-string: {node}")
    if "type" not in node and not (
        node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise ValueError(f"schema node has no type: {node}")


def walk(node: Schema, visit: Callable[[Schema], None]) -> None:
    """Call `visit` on `node` and every schema below it (not on property-name maps)."""
    visit(node)
    for sub in node.get("properties", {}).values():
        walk(sub, visit)
    if isinstance(node.get("items"), dict):
        walk(node["items"], visit)
    if isinstance(node.get("additionalProperties"), dict):
        walk(node["additionalProperties"], visit)


def strip_defaults(node: Schema) -> Schema:
    """Remove every `default` under `node` (in place) and return it."""
    walk(node, lambda n: n.pop("default", None))
    return node
