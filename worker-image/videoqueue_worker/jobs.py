"""What each job type runs: the ffmpeg arguments for its params, and its result.

`plan(...)` is pure: given validated params, the probed input and where to write, it returns
the ffmpeg arguments and the expected output duration (for progress), so the commands can be
read and tested without running anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from videoqueue_worker.errors import invalid
from videoqueue_worker.media import duration_of, has_stream
from videoqueue_worker.params import (
    AUDIO_ENCODERS,
    CONTAINER_FORMAT,
    VIDEO_ENCODERS,
    AudioParams,
    ClipParams,
    HlsParams,
    Params,
    ThumbnailParams,
    TranscodeParams,
)

# Encoder speed settings per codec for the `speed` param.
X26X_PRESET = {"fastest": "veryfast", "fast": "fast", "medium": "medium", "slow": "slow"}
VP9_CPU_USED = {"fastest": "5", "fast": "4", "medium": "2", "slow": "1"}
SVT_AV1_PRESET = {"fastest": "12", "fast": "10", "medium": "8", "slow": "5"}
EXTENSIONS = {"mp4": "mp4", "mov": "mov", "mkv": "mkv", "webm": "webm"}
TREE_OUTPUT_SCHEMES: Final = ("file", "s3")
"""Where a job that writes a directory tree (hls) can put it: `hls.publish_tree` writes these."""


@dataclass(frozen=True)
class Plan:
    """One ffmpeg run that makes the job's output."""

    args: list[str]
    expected_seconds: float | None
    """Output duration in seconds, for progress; None when unknown."""
    outputs: list[Path] = field(default_factory=list)
    """The files ffmpeg writes (a thumbnail series: filled in after the run)."""
    extension: str = ""
    pattern: Path | None = None
    """For a frame series: the image2 pattern ffmpeg numbers files by."""


def output_extension(params: Params) -> str:
    """The file extension of the job's (main) output."""
    if isinstance(params, TranscodeParams):
        return EXTENSIONS[params.effective_container]
    if isinstance(params, ThumbnailParams):
        return params.extension
    if isinstance(params, AudioParams):
        return params.format[1]
    if isinstance(params, ClipParams):
        return EXTENSIONS[params.container]
    return "json"


def needs_encoders(params: Params) -> dict[str, str]:
    """Encoders the job needs, by the params field that chose them."""
    if isinstance(params, TranscodeParams):
        wanted = {"spec.params.videoCodec": VIDEO_ENCODERS[params.effective_video_codec]}
        audio = params.effective_audio_codec
        if audio in AUDIO_ENCODERS:
            wanted["spec.params.audioCodec"] = AUDIO_ENCODERS[audio]
        return wanted
    if isinstance(params, AudioParams) and params.codec != "copy":
        return {"spec.params.codec": AUDIO_ENCODERS[params.codec]}
    return {}


def plan(params: Params, info: dict[str, Any], source: Path, dest: Path) -> Plan:
    duration = duration_of(info)
    if isinstance(params, TranscodeParams):
        return _transcode(params, info, duration, source, dest)
    if isinstance(params, ThumbnailParams):
        return _thumbnail(params, info, duration, source, dest)
    if isinstance(params, AudioParams):
        return _audio(params, info, duration, source, dest)
    if isinstance(params, ClipParams):
        return _clip(params, info, duration, source, dest)
    raise AssertionError(f"no plan for {type(params).__name__}")


def need_video(info: dict[str, Any]) -> None:
    if not has_stream(info, "video"):
        raise invalid("spec.input.url", "the input has no video stream")


def _scale(width: int | None, height: int | None) -> str | None:
    if width is None and height is None:
        return None
    # -2: keep the aspect ratio and round to an even number, as 4:2:0 video needs.
    return f"scale={width if width is not None else -2}:{height if height is not None else -2}"


def _transcode(
    p: TranscodeParams, info: dict[str, Any], duration: float | None, source: Path, dest: Path
) -> Plan:
    need_video(info)
    codec = p.effective_video_codec
    args = ["-i", str(source), "-map", "0:v:0", "-map", "0:a:0?"]
    args += ["-c:v", VIDEO_ENCODERS[codec], "-pix_fmt", "yuv420p"]
    crf = p.effective_crf
    if codec in ("h264", "h265"):
        args += ["-preset", X26X_PRESET[p.speed]]
        if codec == "h265":
            args += ["-x265-params", "log-level=error", "-tag:v", "hvc1"]
    elif codec == "vp9":
        args += ["-deadline", "good", "-cpu-used", VP9_CPU_USED[p.speed], "-row-mt", "1"]
        if crf is not None:
            args += ["-b:v", "0"]  # constant quality mode of libvpx
    else:
        args += ["-preset", SVT_AV1_PRESET[p.speed]]
    if crf is not None:
        args += ["-crf", str(crf)]
    if p.video_bitrate is not None:
        args += ["-b:v", p.video_bitrate]
    scale = _scale(*p.effective_size)
    if scale:
        args += ["-vf", scale]
    if p.fps is not None:
        args += ["-r", f"{p.fps:g}"]
    audio = p.effective_audio_codec
    if audio == "none":
        args += ["-an"]
    elif audio == "copy":
        args += ["-c:a", "copy"]
    else:
        args += ["-c:a", AUDIO_ENCODERS[audio]]
        if audio != "flac":
            args += ["-b:a", p.audio_bitrate]
    container = p.effective_container
    if container in ("mp4", "mov"):
        args += ["-movflags", "+faststart"]
    args += ["-f", CONTAINER_FORMAT[container], "-y", str(dest)]
    return Plan(args=args, expected_seconds=duration, outputs=[dest])


def _thumbnail(
    p: ThumbnailParams, info: dict[str, Any], duration: float | None, source: Path, dest: Path
) -> Plan:
    need_video(info)
    codec = ["-c:v", "mjpeg", "-q:v", "3"] if p.format == "jpeg" else ["-c:v", "png"]
    scale = f"scale={p.width}:-2"
    if p.count == 1:
        at = p.at if p.at is not None else (duration or 0) * 0.1
        if duration is not None and at >= duration:
            raise invalid(
                "spec.params.at",
                f"{at:g}s is past the end of the input ({duration:.2f}s); pick an earlier time",
            )
        args = ["-ss", f"{at:.3f}", "-i", str(source), "-frames:v", "1", "-vf", scale, *codec]
        args += ["-f", "image2", "-update", "1", "-y", str(dest)]
        return Plan(args=args, expected_seconds=None, outputs=[dest])
    if duration is None:
        raise invalid("spec.input.url", "the input has no known duration to spread frames over")
    rate = f"fps={p.count}/{duration:.3f}"
    if p.sprite:
        rows = math.ceil(p.count / p.columns)
        columns = min(p.columns, p.count)
        vf = f"{rate},{scale},tile={columns}x{rows}"
        args = ["-i", str(source), "-vf", vf, "-frames:v", "1", *codec]
        args += ["-f", "image2", "-update", "1", "-y", str(dest)]
        return Plan(args=args, expected_seconds=duration, outputs=[dest])
    pattern = dest.with_name(f"{dest.stem}-%04d.{p.extension}")
    args = ["-i", str(source), "-vf", f"{rate},{scale}", "-frames:v", str(p.count), *codec]
    args += ["-f", "image2", "-y", str(pattern)]
    return Plan(args=args, expected_seconds=duration, pattern=pattern, extension=p.extension)


def _audio(
    p: AudioParams, info: dict[str, Any], duration: float | None, source: Path, dest: Path
) -> Plan:
    if not has_stream(info, "audio"):
        raise invalid("spec.input.url", "the input has no audio stream to extract")
    muxer, _ = p.format
    args = ["-i", str(source), "-vn", "-sn", "-dn", "-map", "0:a:0"]
    if p.codec == "copy":
        args += ["-c:a", "copy"]
    else:
        args += ["-c:a", AUDIO_ENCODERS[p.codec]]
        if p.codec != "flac":
            args += ["-b:a", p.bitrate]
        if p.sample_rate is not None:
            args += ["-ar", str(p.sample_rate)]
        if p.channels is not None:
            args += ["-ac", str(p.channels)]
    args += ["-f", muxer, "-y", str(dest)]
    return Plan(args=args, expected_seconds=duration, outputs=[dest])


def _clip(
    p: ClipParams, info: dict[str, Any], duration: float | None, source: Path, dest: Path
) -> Plan:
    if duration is not None and p.start >= duration:
        raise invalid(
            "spec.params.start",
            f"{p.start:g}s is past the end of the input ({duration:.2f}s); pick an earlier start",
        )
    length = p.length
    if duration is not None:
        length = min(length, duration - p.start)
    args = ["-ss", f"{p.start:.3f}", "-i", str(source), "-t", f"{length:.3f}"]
    args += ["-map", "0:v?", "-map", "0:a?"]
    if p.copy_streams:
        args += ["-c", "copy", "-avoid_negative_ts", "make_zero"]
    else:
        args += ["-c:v", "libx264", "-preset", "medium", "-crf", "20", "-pix_fmt", "yuv420p"]
        args += ["-c:a", "aac", "-b:a", "160k"]
    if p.container in ("mp4", "mov"):
        args += ["-movflags", "+faststart"]
    args += ["-f", CONTAINER_FORMAT[p.container], "-y", str(dest)]
    return Plan(args=args, expected_seconds=length, outputs=[dest])


def is_series(params: Params) -> bool:
    """The job writes one file per frame (thumbnails, count > 1, no sprite)."""
    return isinstance(params, ThumbnailParams) and params.count > 1 and not params.sprite


def check_output_kind(params: Params, output_is_directory: bool, scheme: str = "file") -> None:
    """A series of thumbnails needs a directory (or prefix) URL to put its files under; an
    HLS package needs a directory on a scheme that can hold a tree."""
    if is_series(params) and not output_is_directory:
        raise invalid(
            "spec.output.url",
            "count > 1 writes one file per frame: end the URL with '/' to name a directory "
            "or prefix, or set spec.params.sprite to true for one image",
        )
    if isinstance(params, HlsParams):
        schemes = " or ".join(f"{s}://" for s in TREE_OUTPUT_SCHEMES)
        if scheme not in TREE_OUTPUT_SCHEMES:
            raise invalid(
                "spec.output.url",
                f"an hls job writes a directory of playlists and segments, which this worker "
                f"writes to {schemes} only, not {scheme}://",
            )
        if not output_is_directory:
            raise invalid(
                "spec.output.url",
                "an hls job writes a directory (master.m3u8, one directory per rendition): "
                "end the URL with '/'",
            )
