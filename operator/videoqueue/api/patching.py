"""JSON merge patches of status: write only what changed, nothing when nothing did."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from videoqueue.api.common import ApiModel


def status_patch(current: Mapping[str, Any], desired: ApiModel) -> dict[str, Any] | None:
    """A JSON merge patch (RFC 7386) turning `current`, the status as stored, into `desired`,
    or None when they already agree (no write).

    Works for any status model (VideoQueueStatus, VideoJobStatus). Nested objects are diffed
    key by key, so a nested field that became unset is removed (`null`) rather than left
    behind; lists such as `conditions` are replaced whole, as merge patches do. Top-level keys
    the model does not declare are left alone: they are not this model's to remove.
    """
    owned = {field.alias or name for name, field in type(desired).model_fields.items()}
    patch = merge_patch({k: v for k, v in current.items() if k in owned}, desired.to_dict())
    return patch or None


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `current` into `desired`; empty when equal.

    Keys missing from `desired` become `null`, so `desired` must not itself hold `null`
    values (a merge patch cannot set a value to null; `ApiModel.to_dict` leaves them out).
    """
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = current.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif key not in current or old != value:
            patch[key] = value
    patch.update({key: None for key in current if key not in desired})
    return patch
