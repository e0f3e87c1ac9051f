"""An hls job on the real node: the worker image's ffmpeg makes an adaptive-bitrate package
in a real pod under a memory limit the kernel enforces, into the host directory the pod
mounts, where the test reads the playlists and probes the renditions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.objects import REAL_NODE, WORKER_UID, real_queue, video_job
from tests.integration.objects import create, wait_job
from tests.worker.harness import ffprobe, stream
from videoqueue.envtest.images import ImportedImage
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.worker import make_media

pytestmark = pytest.mark.e2e


def playlist_entries(path: Path) -> list[str]:
    """The URIs a playlist names (its non-tag lines)."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    assert lines[0] == "#EXTM3U", path
    return [line for line in lines if line and not line.startswith("#")]


def test_hls_ladder_on_the_real_node(
    operator: OperatorProcess,
    worker_image: ImportedImage,
    custom: Any,
    namespace: str,
    media: Path,
) -> None:
    make_media(media / "in.mp4", seconds=4, size="640x360")
    create(custom, namespace, "videoqueues", real_queue(worker_image.tag, media))
    params = {"ladder": "small", "segmentSeconds": 2, "speed": "fastest"}
    job = video_job("ladder", "hls", "in.mp4", output="pkg/", memory="1Gi", params=params)
    create(custom, namespace, "videojobs", job)

    done = wait_job(custom, namespace, "ladder", "Complete", timeout=240)

    (attempt,) = done["status"]["attempts"]
    assert (attempt["reason"], attempt["node"]) == ("Completed", REAL_NODE)
    result = done["status"]["result"]
    assert result["output"] == "file:///media/pkg/master.m3u8"
    package = media / "pkg"
    renditions = playlist_entries(package / "master.m3u8")
    # The small ladder is 480/360/240: 480 is above the 360p input and never made.
    assert renditions == ["360p/index.m3u8", "240p/index.m3u8"]
    assert [d["height"] for d in result["dropped"]] == [480]
    for playlist, height in zip(renditions, (360, 240), strict=True):
        segments = playlist_entries(package / playlist)
        assert len(segments) == 2  # 4 s in 2 s segments
        first = package / Path(playlist).parent / segments[0]
        assert first.stat().st_uid == WORKER_UID  # written by the pod's non-root user
        assert stream(ffprobe(first), "video")["height"] == height
    assert not [p for p in package.iterdir() if p.name.startswith(".")], "staging left behind"
