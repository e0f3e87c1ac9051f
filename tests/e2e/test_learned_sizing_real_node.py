"""Learned memory sizing on a real node (issue 19): the peaks the worker reads from its
container's memory cgroup (status.attempts[].peakMemory) size the next job of the same kind.

A queue with `sizing: Learned` and `minObservations: 3` runs three real thumbnail jobs that
name no memory (so they get the queue's defaultRequest); once the queue's status.sizing
holds their three peaks, a fourth: its memory is the 95th percentile of the three real
peaks (nearest rank: an observed peak) times the headroom, rounded up to a whole MiB and
never below the floor, and its status says where that came from; it succeeds with it."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.objects import REAL_NODE, real_queue, video_job
from tests.integration.objects import GROUP, VERSION, create, wait_job
from videoqueue.api import parse_quantity
from videoqueue.envtest import poll
from videoqueue.envtest.images import ImportedImage
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.worker import make_media

pytestmark = pytest.mark.e2e

Mi = 2**20
DEFAULT_REQUEST = "512Mi"  # what the first three get: far above a thumbnail's real peak
PERCENTILE, HEADROOM, MIN_OBSERVATIONS = 95, 1.2, 3
FLOOR = "32Mi"  # below a thumbnail worker's peak (about 50 MiB), so the percentile decides
THUMBNAIL = {"at": 1.0, "width": 160}


def learned_memory(peaks: list[int], *, percentile: int, headroom: float, floor: int) -> int:
    """What learned sizing gives: the nearest-rank percentile of the peaks (whole MiB, as
    status records them) times the headroom, rounded up to a whole MiB (of the product to
    float precision: 50 x 1.2 is 60, not 61), at least the floor."""
    ordered = sorted(-(-peak // Mi) for peak in peaks)
    observed = ordered[max(0, math.ceil(percentile / 100 * len(ordered)) - 1)]
    return max(floor, math.ceil(round(observed * headroom, 6)) * Mi)


def sizing_summary(custom: Any, namespace: str, key: str) -> dict[str, Any] | None:
    """The queue's status.sizing entry for `key`, once it has MIN_OBSERVATIONS."""
    queue = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "videoqueues", "work")
    found = [s for s in (queue.get("status") or {}).get("sizing") or [] if s["key"] == key]
    return found[0] if found and found[0]["observations"] >= MIN_OBSERVATIONS else None


def thumbnail(name: str) -> dict[str, Any]:
    return video_job(name, "thumbnail", "in.mp4", output=f"out/{name}.jpg", params=THUMBNAIL)


def test_the_fourth_job_is_sized_from_three_real_peaks(
    operator: OperatorProcess,
    worker_image: ImportedImage,
    custom: Any,
    namespace: str,
    media: Path,
) -> None:
    make_media(media / "in.mp4", seconds=2)
    queue = real_queue(worker_image.tag, media, default_request=DEFAULT_REQUEST, max_="1Gi")
    queue["spec"]["memory"] |= {
        "sizing": "Learned",
        "learned": {
            "percentile": PERCENTILE,
            "headroom": HEADROOM,
            "minObservations": MIN_OBSERVATIONS,
            "floor": FLOOR,
        },
    }
    create(custom, namespace, "videoqueues", queue)

    peaks = []
    for name in ("first", "second", "third"):
        create(custom, namespace, "videojobs", thumbnail(name))
        job = wait_job(custom, namespace, name, "Complete", timeout=180)
        (attempt,) = job["status"]["attempts"]
        # Too few observations yet: the queue's default, and the status says so.
        assert (attempt["node"], attempt["memory"]) == (REAL_NODE, DEFAULT_REQUEST), attempt
        assert job["status"]["memorySource"].startswith("spec.memory.defaultRequest"), job
        peaks.append(parse_quantity(attempt["peakMemory"]))
    print(f"\nreal thumbnail peaks: {[f'{p / Mi:.0f}Mi' for p in peaks]}")
    assert all(16 * Mi < p < parse_quantity(DEFAULT_REQUEST) for p in peaks), peaks
    # The queue learns from finished jobs in its next status write: the fourth job comes
    # once the queue's summary holds the three peaks.
    summary = poll(
        lambda: sizing_summary(custom, namespace, "thumbnail"),
        timeout=60,
        what="the queue's status.sizing to hold three thumbnail peaks",
    )
    assert sorted(summary["peaksMi"]) == sorted(p // Mi for p in peaks), (summary, peaks)

    create(custom, namespace, "videojobs", thumbnail("fourth"))
    job = wait_job(custom, namespace, "fourth", "Complete", timeout=180)

    expected = learned_memory(
        peaks, percentile=PERCENTILE, headroom=HEADROOM, floor=parse_quantity(FLOOR)
    )
    (attempt,) = job["status"]["attempts"]
    assert parse_quantity(attempt["memory"]) == expected, (attempt, peaks)
    assert parse_quantity(job["status"]["effectiveMemory"]) == expected
    source = job["status"]["memorySource"]
    print(f"fourth job: {attempt['memory']} ({source}); its peak {attempt['peakMemory']}")
    # e.g. "p95 of 3 past thumbnail jobs x 1.2"
    assert re.search(r"\bp95\b", source), source
    assert re.search(r"\b3\b", source), source
    assert "1.2" in source, source
    assert attempt["reason"] == "Completed"
    assert (media / "out" / "fourth.jpg").stat().st_size > 0
