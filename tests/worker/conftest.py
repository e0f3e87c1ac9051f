"""Worker tests: the real worker process, real ffmpeg/ffprobe, real Redis; no cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from videoqueue.envtest.worker import make_media, redis_server


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of 320x240 H.264 video with an AAC tone, generated once per session."""
    return make_media(tmp_path_factory.mktemp("media") / "input.mp4")


@pytest.fixture(scope="session")
def silent_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_media(tmp_path_factory.mktemp("media") / "silent.mp4", audio=False)


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url
