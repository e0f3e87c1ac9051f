"""Any VideoJob the CRD schema accepts fits in the environment variable that hands it to its
worker: the largest job the schema's bounds allow is built and serialized as the operator does.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from videoqueue.api import VideoJob
from videoqueue.api.crds import VIDEO_JOB, crd_manifest
from videoqueue.api.job import JOB_NAME_LENGTH
from videoqueue.api.job_payload import MAX_URL_BYTES, PARAMS_KEYS_AND_SIZE
from videoqueue.api.schema import Schema
from videoqueue.scheduling.worker_pod import MAX_JOB_PAYLOAD_BYTES, _job_payload

# The widest a character gets in the payload's JSON (UTF-8, ensure_ascii=False): four bytes for
# one outside the Basic Multilingual Plane. Control characters (six bytes as \u00XX) are refused
# by the schema; '"', '\\' and newline take two.
WIDE = "\U0001f3ac"
LONGEST_FLOAT = -2.2250738585072014e-308  # 24 characters as JSON, the most a double takes
LONGEST_INT = -(2**63)  # the API server keeps integers as int64
INT64_MAX = 2**63 - 1
LONGEST_DATETIME = datetime.datetime(
    2030, 12, 31, 23, 59, 59, 999999, tzinfo=datetime.timezone(-datetime.timedelta(hours=23))
)


def spec_schema() -> Schema:
    root: Schema = crd_manifest(VIDEO_JOB)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec: Schema = root["properties"]["spec"]
    return spec


def rules_of(node: Schema) -> list[str]:
    return [rule["rule"] for rule in node.get("x-kubernetes-validations", [])]


def name(index: int, length: int) -> str:
    """A distinct DNS name of exactly `length` characters."""
    return f"{index:04d}".rjust(length, "a")


def worst_param_value(params: Schema) -> Any:
    """The value of one params entry that takes the most bytes as JSON."""
    value = params["additionalProperties"]
    item = value["items"]
    assert value["maxProperties"] == 0, "no nested objects"
    assert item["maxProperties"] == 0, "no nested objects"
    assert item["maxItems"] == 0, "no nested lists"
    widest_item = max(
        [WIDE * item["maxLength"], LONGEST_FLOAT, LONGEST_INT],
        key=lambda v: len(json.dumps(v, ensure_ascii=False).encode()),
    )
    candidates = [WIDE * value["maxLength"], LONGEST_FLOAT, [widest_item] * value["maxItems"]]
    return max(candidates, key=lambda v: len(json.dumps(v, ensure_ascii=False).encode()))


def largest_spec(spec: Schema) -> dict[str, Any]:
    """The spec with every field at the most its schema allows, in the widest characters the
    field's pattern lets through."""
    props = spec["properties"]
    params = props["params"]
    assert PARAMS_KEYS_AND_SIZE.rule in rules_of(spec)
    key_length = 63  # PARAM_KEY_PATTERN, checked by the rule just asserted
    for url in ("input", "output"):
        # ASCII within the byte limit: a URL refuses '"', '\\' and control characters.
        assert f"size(bytes(self)) <= {MAX_URL_BYTES}" in rules_of(props[url]["properties"]["url"])
    return {
        "queueName": name(0, props["queueName"]["maxLength"]),
        "priority": props["priority"]["maximum"],
        "type": "a" * props["type"]["maxLength"],
        "input": {"url": "/" + "a" * (MAX_URL_BYTES - 1)},
        "output": {"url": "/" + "b" * (MAX_URL_BYTES - 1)},
        "params": {
            f"{i:02d}".rjust(key_length, "k"): worst_param_value(params)
            for i in range(params["maxProperties"])
        },
        # The quantity pattern is ASCII digits and suffixes.
        "resources": {"memory": "1" * props["resources"]["properties"]["memory"]["maxLength"]},
        "maxAttempts": props["maxAttempts"]["maximum"],
        "backoff": {
            "initialSeconds": props["backoff"]["properties"]["initialSeconds"]["maximum"],
            "factor": 1.0000000000000002,  # the longest repr within 1..10
            "maxSeconds": props["backoff"]["properties"]["maxSeconds"]["maximum"],
        },
        "activeDeadlineSeconds": INT64_MAX,
        "progressDeadlineSeconds": props["progressDeadlineSeconds"]["maximum"],
        "startAfter": LONGEST_DATETIME.isoformat(),
        "dependsOn": [
            name(i, props["dependsOn"]["items"]["maxLength"])
            for i in range(props["dependsOn"]["maxItems"])
        ],
        "suspend": False,
        "cancel": False,
        "ttlSecondsAfterFinished": {"succeeded": INT64_MAX, "failed": INT64_MAX},
    }


def test_the_largest_job_the_schema_accepts_fits_in_the_worker_payload() -> None:
    spec = spec_schema()
    manifest = largest_spec(spec)
    assert manifest.keys() == spec["properties"].keys(), "a spec field without a worst case here"
    assert JOB_NAME_LENGTH.rule == "size(self.metadata.name) <= 63"
    job = VideoJob.model_validate(
        {"metadata": {"name": name(99, 63), "namespace": name(98, 63)}, "spec": manifest}
    )

    payload = _job_payload(job, namespace=name(98, 63), uid="0" * 36, attempt=INT64_MAX)

    size = len(payload.encode())
    assert size <= MAX_JOB_PAYLOAD_BYTES
    print(f"largest payload {size} of {MAX_JOB_PAYLOAD_BYTES} bytes")


def nine_more_params(spec: Schema, manifest: dict[str, Any]) -> None:
    worst = worst_param_value(spec["properties"]["params"])
    manifest["params"].update({f"more-{i}": worst for i in range(9)})


def urls_in_wide_characters(spec: Schema, manifest: dict[str, Any]) -> None:
    # As many characters as maxLength allows, were bytes not limited too.
    length = spec["properties"]["input"]["properties"]["url"]["maxLength"]
    manifest["input"]["url"] = manifest["output"]["url"] = "/" + WIDE * (length - 1)


@pytest.mark.parametrize(
    "loosen",
    [
        pytest.param(nine_more_params, id="41-params"),
        pytest.param(urls_in_wide_characters, id="urls-counted-in-characters"),
    ],
)
def test_the_check_fails_once_a_bound_is_loosened(loosen: Any) -> None:
    """The margin is not so large that a loosened bound would go unnoticed."""
    spec = spec_schema()
    manifest = largest_spec(spec)
    loosen(spec, manifest)
    job = VideoJob.model_validate({"metadata": {"name": "x"}, "spec": manifest})

    with pytest.raises(ValueError, match=r"put large inputs behind spec\.input\.url"):
        _job_payload(job, namespace=name(98, 63), uid="0" * 36, attempt=INT64_MAX)
