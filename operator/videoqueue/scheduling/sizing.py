"""Learned memory sizing, pure: a job's sizing key, the bounded per-key summary of past peaks
kept in the queue's status (`status.sizing`), and the memory a job's next attempt gets.

Key (`sizing_key`). Chosen from measured peaks of the real worker (docs/queues.md, "Memory
sizing"; `benchmarks/worker_memory.py`): a transcode's memory is driven by its output height
and encoder (codec and speed: x264's lookahead at `medium` holds ~1.7x what `fastest` does at
1080p), hardly by its input's resolution; probe, thumbnail and audio stay within a few tens
of MiB whatever their params. So a transcode's key is `transcode/<height>p/<codec>/<speed>`
(height rounded up to 480, 720, 1080, 1440 or 2160; `source` when the output keeps the
input's height), an hls job's `hls/<speed>`, and any other type's the type itself.

Summary (`observe`). Per key: observations ever, and the last MAX_SIZING_PEAKS peaks in MiB
(rounded up), newest last; at most MAX_SIZING_KEYS keys, the key updated longest ago gives
way to a new one (the list is kept in order of last update, so that is its first). Each
finished job adds each of its attempts that has a peak (since its last manual retry: earlier
ones were fed when it finished before): a successful attempt's peak, and an OOM-killed one's
limit, which is only a lower bound of what it needed (it can only raise the estimate, which
is the safe side). Cost per finished job: O(attempts x MAX_SIZING_KEYS), bounded.

Exactly once. The summary is fed from the same fresh set of finished jobs as the queue's
statistics (`videoqueue.scheduling.statistics.fresh_finished`), in the same status write,
under the same watermark (`status.statistics.countedThrough`): a write that fails moves
neither, a restarted operator reads both back, and a job's TTL waits until it is counted.

Decision (`memory_decision`): spec.resources.memory if set; else the memory it grew to after
an OOM kill; else, with spec.memory.sizing Learned and at least learned.minObservations for
its key, the learned.percentile (nearest rank) of the key's kept peaks times
learned.headroom, rounded up to a whole MiB, within [learned.floor, memory.max]; else the
default. The source says which, in `status.memorySource`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from videoqueue.api import (
    MAX_SIZING_KEYS,
    MAX_SIZING_PEAKS,
    SIZING_KEY_MAX_LENGTH,
    MemorySizing,
    SizingSummary,
    VideoJobStatus,
    VideoQueue,
    format_bytes,
)

__all__ = [
    "SOURCE_GROWN",
    "SOURCE_REQUESTED",
    "LearnedMemory",
    "attempt_peaks",
    "learned_memory",
    "observe",
    "percentile",
    "sizing_key",
]

MIB = 1 << 20
SOURCE_REQUESTED = "spec.resources.memory"
SOURCE_GROWN = "grown after OOMKilled"
HEIGHT_BUCKETS = (480, 720, 1080, 1440, 2160)
_PRESET = re.compile(r"^(?P<codec>[a-z0-9]{1,16})-(?P<height>[0-9]{1,5})p$")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,24}")


def _height_bucket(height: int) -> str:
    bucket = next((b for b in HEIGHT_BUCKETS if height <= b), None)
    return f"{bucket}p" if bucket is not None else f"over{HEIGHT_BUCKETS[-1]}p"


def sizing_key(job_type: str, params: Mapping[str, Any] | None) -> str:
    """The key a job's peaks are learned under (see the module's docstring). Params are read
    as the job gives them; a preset (`h264-720p`) fills in codec and height not given."""
    p = params or {}
    speed = _token(p.get("speed"), "medium")
    if job_type == "transcode":
        preset = _PRESET.match(str(p.get("preset") or ""))
        codec = _token(p.get("videoCodec"), preset["codec"] if preset else "unknown")
        height = p.get("height")
        if not isinstance(height, int) and preset is not None and p.get("width") is None:
            height = int(preset["height"])
        size = _height_bucket(height) if isinstance(height, int) else "source"
        return f"transcode/{size}/{codec}/{speed}"
    if job_type == "hls":
        return f"hls/{speed}"
    return job_type[:SIZING_KEY_MAX_LENGTH]


def _token(value: Any, default: str) -> str:
    """A param's value as a part of a key: `default` when unset, `other` when it is not a
    short name (the worker rejects such jobs; the key must stay short all the same)."""
    if value is None or value == "":
        return default
    text = str(value)
    return text if _NAME.fullmatch(text) else "other"


def attempt_peaks(status: VideoJobStatus) -> tuple[int, ...]:
    """The peaks in MiB (rounded up) of the attempts of a finished job that has them, since
    its last manual retry (an OOM-killed attempt's peak is its limit)."""
    after = status.manual_retry.after_attempt if status.manual_retry is not None else 0
    return tuple(
        -(-peak // MIB)
        for record in status.attempts
        if record.attempt > after and (peak := record.peak_memory_bytes) is not None
    )


def observe(
    summary: Sequence[SizingSummary], observations: Iterable[tuple[str, Sequence[int]]]
) -> list[SizingSummary]:
    """`summary` with the (key, peaks in MiB) `observations` added, in order."""
    keys: dict[str, SizingSummary] = {s.key: s for s in summary}
    changed = False
    for key, peaks in observations:
        if not peaks:
            continue
        changed = True
        known = keys.pop(key, None)
        if known is None:
            known = SizingSummary(key=key)
            while len(keys) >= MAX_SIZING_KEYS:
                del keys[next(iter(keys))]  # the one updated longest ago
        keys[key] = SizingSummary(
            key=key,
            observations=known.observations + len(peaks),
            peaks_mi=[*known.peaks_mi, *peaks][-MAX_SIZING_PEAKS:],
        )
    return list(keys.values()) if changed else list(summary)


def percentile(values: Sequence[int], pct: int) -> int:
    """The `pct` percentile of `values` by nearest rank (100: the largest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class LearnedMemory:
    """What learned sizing says for a job: its memory and where it came from, or (`memory`
    None) a note for the default's source saying why it does not apply yet."""

    memory: int | None
    source: str


def learned_memory(queue: VideoQueue, key: str) -> LearnedMemory:
    """The learned size of a job of sizing `key` in `queue` (see the module's docstring)."""
    spec = queue.spec.memory
    if spec.sizing != MemorySizing.LEARNED:
        return LearnedMemory(None, "")
    learned = spec.learned
    found = next((s for s in queue.status.sizing if s.key == key), None)
    seen = found.observations if found is not None else 0
    if found is None or seen < learned.min_observations or not found.peaks_mi:
        return LearnedMemory(None, f" ({seen} of {learned.min_observations} observations of {key})")
    pct = percentile(found.peaks_mi, learned.percentile)
    raw = math.ceil(round(pct * learned.headroom, 6)) * MIB
    memory = min(max(raw, learned.floor_bytes), spec.max_bytes)
    n = len(found.peaks_mi)
    source = f"p{learned.percentile} of {n} past {key} jobs x {learned.headroom:g}"
    if memory > raw:
        source += f", raised to learned.floor {format_bytes(memory)}"
    elif memory < raw:
        source += f", capped at memory.max {format_bytes(memory)}"
    return LearnedMemory(memory, source[:256])


def sizes_changed(before: VideoQueue | None, after: VideoQueue | None) -> frozenset[str]:
    """The sizing keys whose learned size differs between two versions of a queue (its
    status.sizing or its spec.memory moved on): waiting jobs of those keys are sized again,
    since a job's memory is decided when it is assessed. Only a changed size counts, not a
    new observation that leaves it as it was, so a busy queue re-assesses rarely."""
    if before is None or after is None:
        return frozenset()
    keys = {s.key for s in before.status.sizing} | {s.key for s in after.status.sizing}
    return frozenset(
        key
        for key in keys
        if learned_memory(before, key).memory != learned_memory(after, key).memory
    )
