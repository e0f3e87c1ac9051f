"""Each job type on real media: the output exists and ffprobe confirms what was asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.worker.harness import ffprobe, run_worker, stream
from videoqueue.envtest.worker import job_payload


def _ok(run: Any) -> dict[str, Any]:
    assert run.code == 0, f"worker failed ({run.code}): {run.message}\n{run.log}"
    result: dict[str, Any] = run.result
    return result


def _work_left(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "work").iterdir())


@pytest.mark.parametrize(
    ("params", "codec", "container", "size"),
    [
        pytest.param({"preset": "h264-480p"}, "h264", "mp4", (640, 480), id="h264-preset"),
        pytest.param(
            {"videoCodec": "h265", "height": 120, "crf": 30, "speed": "fastest"},
            "hevc",
            "mp4",
            (160, 120),
            id="h265-height-only",
        ),
        pytest.param(
            {"videoCodec": "vp9", "width": 160, "height": 96, "speed": "fastest"},
            "vp9",
            "webm",
            (160, 96),
            id="vp9-webm",
        ),
        pytest.param(
            {"videoCodec": "av1", "width": 160, "speed": "fastest", "audioCodec": "opus"},
            "av1",
            "mp4",
            (160, 120),
            id="av1",
        ),
    ],
)
def test_transcode(
    media: Path,
    tmp_path: Path,
    params: dict[str, Any],
    codec: str,
    container: str,
    size: tuple[int, int],
) -> None:
    out = tmp_path / "out"
    run = run_worker(
        job_payload("transcode", f"file://{media}", f"file://{out}/", params), tmp_path
    )
    result = _ok(run)
    written = out / f"job-1.{container}"
    assert result["output"] == f"file://{written}"
    info = ffprobe(written)
    video = stream(info, "video")
    assert video["codec_name"] == codec
    assert (video["width"], video["height"]) == size
    assert float(info["format"]["duration"]) == pytest.approx(3.0, abs=0.15)
    assert stream(info, "audio")["codec_name"] in ("aac", "opus")
    assert (result["videoCodec"], result["width"], result["height"]) == (codec, *size)
    assert result["size"] == written.stat().st_size
    assert not _work_left(tmp_path), "temporary files left behind"
    assert [p.name for p in out.iterdir()] == [written.name], "partial files left behind"


def test_transcode_bitrate_and_fps_without_audio(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.mkv"
    params = {
        "videoCodec": "h264",
        "videoBitrate": "300k",
        "fps": 10,
        "audioCodec": "none",
        "container": "mkv",
        "speed": "fastest",
    }
    _ok(run_worker(job_payload("transcode", str(media), f"file://{out}", params), tmp_path))
    info = ffprobe(out)
    assert [s["codec_type"] for s in info["streams"]] == ["video"]
    assert stream(info, "video")["avg_frame_rate"] == "10/1"
    assert info["format"]["format_name"] == "matroska,webm"


def test_probe(media: Path, tmp_path: Path) -> None:
    report = tmp_path / "probe.json"
    result = _ok(run_worker(job_payload("probe", f"file://{media}", f"file://{report}"), tmp_path))
    assert result["type"] == "probe"
    assert (result["width"], result["height"], result["videoCodec"]) == (320, 240, "h264")
    assert result["audioCodec"] == "aac"
    assert result["duration"] == pytest.approx(3.0, abs=0.1)
    assert [s["type"] for s in result["streams"]] == ["video", "audio"]
    assert ffprobe(media)["format"]["size"] == str(result["size"])
    full = report.read_text()
    assert '"streams"' in full  # the complete ffprobe report went to output.url


def test_thumbnail_single_frame(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "thumb.jpg"
    params = {"at": 1.5, "width": 160}
    _ok(run_worker(job_payload("thumbnail", f"file://{media}", f"file://{out}", params), tmp_path))
    video = stream(ffprobe(out), "video")
    assert (video["codec_name"], video["width"], video["height"]) == ("mjpeg", 160, 120)


def test_thumbnail_series(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    params = {"count": 3, "format": "png", "width": 64}
    result = _ok(
        run_worker(job_payload("thumbnail", f"file://{media}", f"file://{out}/", params), tmp_path)
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == ["job-1-0001.png", "job-1-0002.png", "job-1-0003.png"]
    assert result["count"] == 3
    assert result["outputs"] == [f"file://{out}/{n}" for n in names]
    assert stream(ffprobe(out / names[0]), "video")["codec_name"] == "png"


def test_thumbnail_sprite(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "sprite.jpg"
    params = {"count": 6, "sprite": True, "columns": 3, "width": 80}
    result = _ok(
        run_worker(job_payload("thumbnail", f"file://{media}", f"file://{out}", params), tmp_path)
    )
    video = stream(ffprobe(out), "video")
    assert (video["width"], video["height"]) == (240, 120)  # 3 x 2 tiles of 80x60
    assert (result["width"], result["height"]) == (240, 120)


@pytest.mark.parametrize(
    ("params", "codec", "extension"),
    [
        pytest.param({"codec": "aac", "bitrate": "64k"}, "aac", "m4a", id="aac"),
        pytest.param({"codec": "opus", "channels": 1}, "opus", "opus", id="opus-mono"),
        pytest.param({"codec": "mp3", "sampleRate": 44100}, "mp3", "mp3", id="mp3"),
        pytest.param({"codec": "flac"}, "flac", "flac", id="flac"),
        pytest.param({"codec": "copy"}, "aac", "mka", id="copy"),
    ],
)
def test_audio(
    media: Path, tmp_path: Path, params: dict[str, Any], codec: str, extension: str
) -> None:
    out = tmp_path / "audio"
    result = _ok(
        run_worker(job_payload("audio", f"file://{media}", f"file://{out}/", params), tmp_path)
    )
    info = ffprobe(out / f"job-1.{extension}")
    assert [s["codec_type"] for s in info["streams"]] == ["audio"]
    audio = stream(info, "audio")
    assert audio["codec_name"] == codec
    assert float(info["format"]["duration"]) == pytest.approx(3.0, abs=0.15)
    if "channels" in params:
        assert audio["channels"] == params["channels"]
    if "sampleRate" in params:
        assert audio["sample_rate"] == str(params["sampleRate"])
    assert result["audioCodec"] == codec


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # The input has a keyframe every second, so a stream copy from 1 s is exact too.
        pytest.param({"start": 1, "duration": 1.0}, 1.0, id="copy"),
        pytest.param({"start": 0.5, "end": 2.0, "copy": False}, 1.5, id="re-encoded"),
        pytest.param({"start": 2, "duration": 5}, 1.0, id="past-the-end-is-cut-short"),
    ],
)
def test_clip(media: Path, tmp_path: Path, params: dict[str, Any], expected: float) -> None:
    out = tmp_path / "clip.mp4"
    result = _ok(
        run_worker(job_payload("clip", f"file://{media}", f"file://{out}", params), tmp_path)
    )
    info = ffprobe(out)
    assert float(info["format"]["duration"]) == pytest.approx(expected, abs=0.1)
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
    assert result["duration"] == pytest.approx(expected, abs=0.1)


def test_result_fits_the_termination_message(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "many"
    params = {"count": 200, "width": 16}
    run = run_worker(
        job_payload("thumbnail", f"file://{media}", f"file://{out}/", params), tmp_path
    )
    result = _ok(run)
    assert len(run.message.encode()) <= 4096
    assert result["count"] == len(list(out.iterdir())) > 0
    assert result["truncated"] is True
    assert 0 < len(result["outputs"]) < result["count"]
