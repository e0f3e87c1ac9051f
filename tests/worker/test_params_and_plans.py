"""Params models and the ffmpeg argument lists they become (pure: nothing is run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tests.worker.harness  # noqa: F401  # puts worker-image on sys.path
from videoqueue_worker import jobs
from videoqueue_worker.errors import ExitCode, WorkerError
from videoqueue_worker.params import (
    PRESETS,
    ClipParams,
    ThumbnailParams,
    TranscodeParams,
    parse_params,
)
from videoqueue_worker.result import MAX_RESULT_BYTES, encode

INFO: dict[str, Any] = {
    "format": {"duration": "10.0"},
    "streams": [{"codec_type": "video"}, {"codec_type": "audio"}],
}
SRC, DEST = Path("/in/a b;rm -rf.mp4"), Path("/out/o.mp4")


def _plan(job_type: str, params: dict[str, Any]) -> jobs.Plan:
    return jobs.plan(parse_params(job_type, params), INFO, SRC, DEST)


def test_every_preset_is_valid_and_uses_an_offered_codec() -> None:
    for name in PRESETS:
        params = parse_params("transcode", {"preset": name})
        assert isinstance(params, TranscodeParams)
        args = jobs.plan(params, INFO, SRC, DEST).args
        assert args[args.index("-c:v") + 1] in ("libx264", "libx265", "libvpx-vp9", "libsvtav1")


def test_arguments_are_a_list_with_paths_as_single_items() -> None:
    # The argument list goes straight to exec: a path with spaces or shell syntax is one item.
    args = _plan("transcode", {"preset": "h264-720p"}).args
    assert all(isinstance(a, str) for a in args)
    assert args[args.index("-i") + 1] == str(SRC)
    assert args[-1] == str(DEST)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"preset": "h264-720p"}, ["-crf", "23", "-vf", "scale=-2:720"], id="preset"),
        pytest.param(
            {"preset": "h264-720p", "crf": 18, "width": 640},
            ["-crf", "18", "-vf", "scale=640:-2"],
            id="explicit-wins",
        ),
        pytest.param(
            {"videoCodec": "vp9", "crf": 31},
            ["-b:v", "0", "-crf", "31", "-c:a", "libopus"],
            id="vp9-constant-quality",
        ),
        pytest.param({"videoCodec": "h264", "videoBitrate": "2M"}, ["-b:v", "2M"], id="bitrate"),
        pytest.param(
            {"videoCodec": "h265", "speed": "fastest"}, ["-preset", "veryfast"], id="speed"
        ),
        pytest.param({"videoCodec": "h264", "audioCodec": "none"}, ["-an"], id="no-audio"),
    ],
)
def test_transcode_arguments(params: dict[str, Any], expected: list[str]) -> None:
    args = _plan("transcode", params).args
    joined = " ".join(args)
    assert " ".join(expected) in joined, joined


def test_defaults_follow_the_codec() -> None:
    vp9 = parse_params("transcode", {"videoCodec": "vp9"})
    assert isinstance(vp9, TranscodeParams)
    assert (vp9.effective_container, vp9.effective_audio_codec) == ("webm", "opus")
    h265 = parse_params("transcode", {"preset": "h264-1080p", "videoCodec": "h265"})
    assert isinstance(h265, TranscodeParams)
    assert h265.effective_crf is None  # a preset's CRF belongs to its own codec's scale
    swapped = parse_params("transcode", {"preset": "vp9-720p", "videoCodec": "h264"})
    assert isinstance(swapped, TranscodeParams)
    assert (swapped.effective_container, swapped.effective_size) == ("mp4", (None, 720))


def test_clip_accepts_copy_alias_and_computes_length() -> None:
    clip = parse_params("clip", {"start": 2, "end": 5.5, "copy": False})
    assert isinstance(clip, ClipParams)
    assert (clip.copy_streams, clip.length) == (False, 3.5)
    plan = _plan("clip", {"start": 8, "duration": 5})
    assert plan.expected_seconds == pytest.approx(2.0)  # cut short at the input's end


def test_sprite_grid() -> None:
    params = parse_params("thumbnail", {"count": 7, "sprite": True, "columns": 3})
    assert isinstance(params, ThumbnailParams)
    vf = jobs.plan(params, INFO, SRC, DEST).args
    assert "tile=3x3" in vf[vf.index("-vf") + 1]


def test_params_error_names_the_field_and_counts_the_rest() -> None:
    with pytest.raises(WorkerError) as caught:
        parse_params("transcode", {"preset": "h264-720p", "crf": -1, "fps": 0})
    error = caught.value
    assert error.exit_code == ExitCode.INVALID
    assert error.field == "spec.params.crf"
    assert str(error).startswith("spec.params.crf: Input should be greater than or equal to 0")
    assert "(1 more problem in spec.params)" in str(error)


def test_result_is_cut_to_the_termination_message_limit() -> None:
    result = {
        "type": "thumbnail",
        "outputs": [f"file:///out/frame-{i:04d}.jpg" for i in range(400)],
    }
    text = encode(result)
    assert len(text.encode()) <= MAX_RESULT_BYTES
    assert '"truncated":true' in text
    assert encode({"type": "probe"}) == '{"type":"probe"}'
