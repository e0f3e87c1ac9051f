"""The progress wire contract between a worker and the operator: one Redis stream entry.

A worker XADDs `ProgressEvent.to_fields()` to the stream (default `videoqueue:progress`,
MAXLEN ~ 100000); the operator reads entries back with `ProgressEvent.from_fields(...)`.
Redis stream fields are flat strings, so every field is one string (absent fields are left
out rather than written as empty strings, which would read back as a value).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from pydantic import Field, ValidationError

from videoqueue.api.common import ApiModel

DEFAULT_PROGRESS_STREAM: Final = "videoqueue:progress"
"""The stream key when VIDEOQUEUE_PROGRESS_STREAM is unset."""
PROGRESS_STREAM_MAXLEN: Final = 100_000
"""Workers add entries with XADD MAXLEN ~ this, so the stream stays bounded."""
DEFAULT_HEARTBEAT_SECONDS: Final = 5.0
"""A running worker sends a heartbeat at least this often (VIDEOQUEUE_HEARTBEAT_SECONDS)."""
MAX_PROGRESS_MESSAGE_LENGTH: Final = 1024

# The environment the operator gives a worker pod for the progress channel.
ENV_REDIS_URL: Final = "VIDEOQUEUE_REDIS_URL"
"""redis://host:port/db, or rediss:// for TLS. Unset: the worker publishes no progress."""
ENV_REDIS_PASSWORD: Final = "VIDEOQUEUE_REDIS_PASSWORD"
"""Optional; in a cluster it comes from a Secret (valueFrom.secretKeyRef)."""
ENV_REDIS_CA_FILE: Final = "VIDEOQUEUE_REDIS_CA_FILE"
"""Optional: a PEM CA bundle (mounted into the pod) to verify a rediss:// server with."""
ENV_PROGRESS_STREAM: Final = "VIDEOQUEUE_PROGRESS_STREAM"
ENV_HEARTBEAT_SECONDS: Final = "VIDEOQUEUE_HEARTBEAT_SECONDS"


class ProgressKind(StrEnum):
    """What a progress event reports."""

    STAGE = "stage"
    """The worker entered a new stage (downloading, processing, uploading, ...)."""
    PROGRESS = "progress"
    """How far the current work is, 0..100."""
    HEARTBEAT = "heartbeat"
    """The worker is alive; sent at least every heartbeat interval."""
    DONE = "done"
    """The worker finished (message says how); no more events for this attempt."""


class ProgressEvent(ApiModel):
    """One event from a worker about one attempt of one job."""

    namespace: str = Field(min_length=1, max_length=253)
    """Namespace of the VideoJob."""
    job: str = Field(min_length=1, max_length=253)
    """Name of the VideoJob."""
    uid: str = Field(min_length=1, max_length=128)
    """metadata.uid of the VideoJob (tells a recreated job of the same name apart)."""
    attempt: int = Field(ge=1)
    """The attempt (worker pod serial number) the event belongs to."""
    kind: ProgressKind
    stage: str | None = Field(default=None, max_length=63)
    """The current stage, e.g. downloading, processing, uploading."""
    progress: int | None = Field(default=None, ge=0, le=100)
    """Percent done of the whole attempt, 0..100."""
    message: str | None = Field(default=None, max_length=MAX_PROGRESS_MESSAGE_LENGTH)
    """A short human-readable note."""
    ts: float
    """Unix seconds at the worker when the event was made."""

    def to_fields(self) -> dict[str, str]:
        """The event as Redis stream fields (camelCase names, unset fields left out)."""
        fields: dict[str, str] = {}
        for key, value in self.model_dump(mode="json", by_alias=True, exclude_none=True).items():
            fields[key] = repr(value) if isinstance(value, float) else str(value)
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[bytes | str, bytes | str]) -> ProgressEvent:
        """Read a stream entry as Redis returns it (bytes or str keys and values).

        Raises `ValueError` (pydantic's ValidationError) naming the bad field when the entry
        is not a valid event; a consumer should acknowledge and skip such entries.
        """
        decoded: dict[str, str] = {}
        for key, value in fields.items():
            k = key.decode() if isinstance(key, bytes) else key
            decoded[k] = value.decode() if isinstance(value, bytes) else value
        return cls.model_validate(decoded)


def parse_event(fields: Mapping[bytes | str, bytes | str]) -> ProgressEvent | None:
    """`ProgressEvent.from_fields`, or None when the entry is not a valid event."""
    try:
        return ProgressEvent.from_fields(fields)
    except (ValidationError, UnicodeDecodeError):
        return None
