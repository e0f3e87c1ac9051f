"""VideoJobs and VideoQueues as the plugin reads them: API dicts parsed into the operator's
models (a body that does not parse is a `CliError` naming the object), and the annotation
the plugin sets on jobs (the batch label is the API's, `videoqueue.api.BATCH_LABEL`)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from videoqueue.api import VideoJob, VideoQueue
from videoqueue.cli.cluster import CliError

CI_RUN_ANNOTATION = "videoqueue.dev/ci-run-url"
"""The URL of the CI run that created the job; `show` prints it."""

Model = TypeVar("Model", VideoJob, VideoQueue)

EPOCH = datetime.datetime.fromtimestamp(0, datetime.UTC)
"""Sorts objects without a creationTimestamp (not yet created) first."""


def read_job(raw: dict[str, Any]) -> VideoJob:
    return _parse(VideoJob, raw)


def read_queue(raw: dict[str, Any]) -> VideoQueue:
    return _parse(VideoQueue, raw)


def read_jobs(raws: Sequence[dict[str, Any]]) -> list[VideoJob]:
    return [read_job(raw) for raw in raws]


def read_queues(raws: Sequence[dict[str, Any]]) -> list[VideoQueue]:
    """The queues by name."""
    return sorted((read_queue(raw) for raw in raws), key=lambda q: q.metadata.name)


def created(job: VideoJob) -> datetime.datetime:
    return job.metadata.creation_timestamp or EPOCH


def _parse(model: type[Model], raw: dict[str, Any]) -> Model:
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        name = raw.get("metadata", {}).get("name")
        raise CliError(f"cannot read {model.__name__} {name!r}: {error}") from error
