"""Where a VideoJob's media comes from (spec.input: a URL, or the output of a job it depends
on) and where it goes (spec.output), and the input the operator resolved (status.resolvedInput).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Self

from pydantic import AwareDatetime, ConfigDict, Field, StringConstraints, model_validator

from videoqueue.api.common import (
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    ApiModel,
    CelRule,
    cel_rules,
)
from videoqueue.api.job_payload import MAX_URL_BYTES, url_rules

__all__ = [
    "JobInput",
    "JobOutput",
    "ResolvedInput",
]

ObjectName = Annotated[str, StringConstraints(max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN)]

MAX_OUTPUT_INDEX: Final = 9_999
"""Highest spec.input.outputIndex."""

URL_OR_FROM_JOB = CelRule(
    rule="has(self.url) != has(self.fromJob)",
    message=(
        "spec.input needs exactly one of url (where the media is) and fromJob (the name of a "
        "job in spec.dependsOn whose output is the input); set one and remove the other"
    ),
)
OUTPUT_INDEX_NEEDS_FROM_JOB = CelRule(
    rule="!has(self.outputIndex) || has(self.fromJob)",
    message=(
        "spec.input.outputIndex picks one of the outputs of spec.input.fromJob; set fromJob "
        "or remove outputIndex"
    ),
    field_path=".outputIndex",
)
FROM_JOB_IN_DEPENDS_ON = CelRule(
    rule=(
        "!has(self.input.fromJob) || (has(self.dependsOn) && self.input.fromJob in self.dependsOn)"
    ),
    message=(
        "spec.input.fromJob must also be listed in spec.dependsOn (the job starts only after "
        "the one whose output it reads has succeeded); add it to dependsOn"
    ),
    field_path=".input.fromJob",
)


def _url_schema(schema: dict[str, Any]) -> None:
    # "" stands for unset in Python (every reader, the worker's too, reads a str: the operator
    # puts the resolved URL there before a worker sees the job); on the wire the field is
    # simply absent, so the CRD must not default it.
    schema.pop("default", None)
    schema["minLength"] = 1
    schema.update(url_rules("spec.input.url"))


class JobInput(ApiModel):
    """Where the source media is: a URL, or the output of a job this one depends on."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(URL_OR_FROM_JOB, OUTPUT_INDEX_NEEDS_FROM_JOB)
    )

    url: str = Field(default="", max_length=MAX_URL_BYTES, json_schema_extra=_url_schema)
    """URL or path of the input the worker reads, e.g. https://media.example/in.mp4 or
    /media/in.mp4 or s3://media/in.mp4. The stock types read an absolute path, file://,
    http(s):// or s3://bucket/key (with the queue's spec.storage.s3); a custom type's image
    may read other schemes. At most 4096 bytes. Exactly one of url and fromJob."""
    from_job: ObjectName | None = None
    """Name of a job in spec.dependsOn whose output is this job's input: once it succeeded,
    the URL in its status.result.output (or one of status.result.outputs, see outputIndex)
    becomes the input, recorded in status.resolvedInput. The URL must pass the same rules
    as spec.input.url (scheme, the queue's storage). Exactly one of url and fromJob."""
    output_index: int | None = Field(default=None, ge=0, le=MAX_OUTPUT_INDEX)
    """Which output of fromJob to read when it wrote several (status.result.outputs, from
    0, e.g. the frames of a thumbnail series); unset: its only output."""

    @model_validator(mode="after")
    def _url_or_from_job(self) -> Self:
        if bool(self.url) == (self.from_job is not None):
            raise ValueError(URL_OR_FROM_JOB.message)
        if self.output_index is not None and self.from_job is None:
            raise ValueError(OUTPUT_INDEX_NEEDS_FROM_JOB.message)
        return self


class JobOutput(ApiModel):
    """Where results go."""

    url: str = Field(
        min_length=1, max_length=MAX_URL_BYTES, json_schema_extra=url_rules("spec.output.url")
    )
    """URL or path prefix the worker writes to (a trailing '/' names a directory or prefix).
    The stock types write to an absolute path, file://, http(s):// (PUT) or s3://bucket/key
    (with the queue's spec.storage.s3); a custom type's image may write to other schemes. At
    most 4096 bytes."""


class ResolvedInput(ApiModel):
    """The input the operator took from spec.input.fromJob when it admitted the job."""

    from_job: str = Field(max_length=NAME_MAX_LENGTH)
    """The dependency it came from."""
    output_index: int | None = Field(default=None, ge=0, le=MAX_OUTPUT_INDEX)
    """Which of its outputs, when it wrote several."""
    url: str = Field(max_length=MAX_URL_BYTES)
    """The URL handed to the worker as its input (from the dependency's status.result)."""
    resolved_time: AwareDatetime | None = None
    """When it was resolved; every attempt of the job reads this same URL."""
