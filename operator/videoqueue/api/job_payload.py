"""Bounds on what a VideoJob hands its worker: the operator passes the whole spec to the worker
as JSON in one environment variable, which holds at most MAX_JOB_PAYLOAD_BYTES
(videoqueue.scheduling.worker_pod). Every spec field is bounded so that any job the API server
accepts fits; tests/unit/api/test_payload_bounds.py builds the largest job these bounds allow
and checks. The bounds here are what is left for the URLs and spec.params once the other
fields (names, dependsOn, numbers) take their most."""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import WithJsonSchema

from videoqueue.api.common import PRESERVE_UNKNOWN_FIELDS, CelRule, cel_rules

MAX_URL_BYTES: Final = 4096
"""input.url and output.url, in UTF-8 bytes (presigned object-store URLs fit easily)."""
# Control characters, '"' and '\' are never part of a URL (RFC 3986 wants them
# percent-encoded) and would grow when the URL is written as JSON.
URL_FORBIDDEN_CHARACTERS: Final = r'[\x00-\x1F\x7F"\\]'

MAX_PARAMS: Final = 32
"""Entries in spec.params."""
PARAM_KEY_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,63}$"
MAX_PARAM_STRING_LENGTH: Final = 128
"""Characters of a string param."""
MAX_PARAM_LIST_ITEMS: Final = 8
"""Items of a list param."""
MAX_PARAM_LIST_STRING_LENGTH: Final = 16
"""Characters of a string in a list param."""
# Tab, newline and carriage return are allowed in string params; other control characters are
# not (JSON writes each as six bytes).
PARAM_STRING_PATTERN: Final = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F]*$"

PARAMS_LIMITS = (
    f"at most {MAX_PARAMS} entries, each keyed by 1 to 63 letters, digits, '_', '-' or '.' and "
    f"holding a number, a boolean, a string of at most {MAX_PARAM_STRING_LENGTH} characters or "
    f"a list of at most {MAX_PARAM_LIST_ITEMS} numbers, booleans or strings of at most "
    f"{MAX_PARAM_LIST_STRING_LENGTH} characters (no nested objects)"
)


def url_rules(field: str) -> dict[str, Any]:
    return cel_rules(
        CelRule(
            rule=f"size(bytes(self)) <= {MAX_URL_BYTES}",
            message=(
                f"{field} must be at most {MAX_URL_BYTES} bytes (UTF-8) so that the job fits "
                "in its worker pod; shorten it"
            ),
        ),
        CelRule(
            rule=f"!self.matches(r'{URL_FORBIDDEN_CHARACTERS}')",
            message=(
                f"{field} must not contain control characters, '\"' or '\\'; "
                "percent-encode them (%22, %5C)"
            ),
        ),
    )


# CEL cannot see inside spec.params by its declared type (its values may be of any type, which a
# structural schema cannot declare), but `dyn` reaches the map at run time: its keys and size.
# Should a later Kubernetes hide it, `has` turns false and the rule lets the job through (the
# operator still checks the payload's size); it never refuses every job.
PARAMS_KEYS_AND_SIZE = CelRule(
    rule=(
        "!has(dyn(self).params) || "
        f"(size(dyn(self).params) <= {MAX_PARAMS} && "
        f"dyn(self).params.all(k, k.matches(r'{PARAM_KEY_PATTERN}')))"
    ),
    message=(
        f"spec.params must have {PARAMS_LIMITS}, so that the job fits in its worker pod; put "
        "large inputs behind spec.input.url (or a URL in a param)"
    ),
    field_path=".params",
)


def _scalar_only(max_length: int) -> dict[str, Any]:
    # A node without a type: whatever JSON value; maxLength and pattern apply to strings,
    # maxItems and maxProperties to lists and objects (0: only [] and {}).
    return {
        **PRESERVE_UNKNOWN_FIELDS,
        "maxLength": max_length,
        "pattern": PARAM_STRING_PATTERN,
        "maxItems": 0,
        "maxProperties": 0,
    }


PARAMS_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "maxProperties": MAX_PARAMS,
    "additionalProperties": {
        **_scalar_only(MAX_PARAM_STRING_LENGTH),
        "maxItems": MAX_PARAM_LIST_ITEMS,
        "items": _scalar_only(MAX_PARAM_LIST_STRING_LENGTH),
    },
}
Params = Annotated[dict[str, Any], WithJsonSchema(PARAMS_SCHEMA)]
"""Type-specific parameters. The model takes any map (the operator reads what the API server
stored, even under an older schema); the CRD holds the bounds."""
