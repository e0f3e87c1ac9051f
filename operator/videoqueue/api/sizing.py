"""Learned memory sizing: the queue's settings (`spec.memory.sizing`, `spec.memory.learned`)
and the bounded summary of past peaks it keeps in its status (`status.sizing`). The rules
are in `videoqueue.scheduling.sizing`; docs/queues.md, "Memory sizing", explains them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from videoqueue.api.common import ApiModel
from videoqueue.api.quantity import PositiveQuantity, parse_quantity

__all__ = [
    "MAX_SIZING_KEYS",
    "MAX_SIZING_PEAKS",
    "SIZING_KEY_MAX_LENGTH",
    "LearnedSizing",
    "MemorySizing",
    "SizingSummary",
]

MAX_SIZING_KEYS = 32
"""Keys a queue's status.sizing keeps; the one updated longest ago makes room for a new one."""
MAX_SIZING_PEAKS = 32
"""Peaks kept per key (the newest): the percentile is taken over them."""
SIZING_KEY_MAX_LENGTH = 128


class MemorySizing(StrEnum):
    """Where a job that does not set resources.memory gets its memory from."""

    STATIC = "Static"
    LEARNED = "Learned"


class LearnedSizing(ApiModel):
    """How memory is learned from past peaks (with sizing: Learned): the percentile of the
    last peaks of the job's sizing key times headroom, rounded up to a whole Mi, never below
    floor nor above max, once the key has minObservations."""

    percentile: int = Field(default=95, ge=50, le=100)
    """Which percentile of the kept peaks (nearest rank; 100 is the largest)."""
    headroom: float = Field(default=1.2, ge=1.0, le=4.0)
    """Factor over the percentile, for what the past did not show."""
    min_observations: int = Field(default=10, ge=1, le=1000)
    """Observed attempts of a key before its jobs are sized from them (until then they get
    the default)."""
    floor: PositiveQuantity = "32Mi"
    """Least memory a learned size gives (a guard against nonsense peaks; the stock worker
    alone peaks at 37-40 MiB); must not exceed memory.max."""

    @property
    def floor_bytes(self) -> int:
        return parse_quantity(self.floor)


class SizingSummary(ApiModel):
    """What the queue learned about one sizing key (job type and the params that drive its
    memory, e.g. transcode/720p)."""

    key: str = Field(max_length=SIZING_KEY_MAX_LENGTH)
    """The sizing key."""
    observations: int = Field(default=0, ge=0)
    """Attempts observed ever (each finished job's attempts with a peak)."""
    peaks_mi: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list, max_length=MAX_SIZING_PEAKS
    )
    """The last peaks in Mi (rounded up), oldest first; an OOM-killed attempt's limit counts
    as its peak (a lower bound of what it needed)."""
