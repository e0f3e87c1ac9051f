"""The hls job type: one ffmpeg run turns the input into an adaptive-bitrate HLS package.

Layout of the package under the output directory:

    master.m3u8                 one EXT-X-STREAM-INF per rendition
    <rendition>/index.m3u8      a VOD media playlist
    <rendition>/seg_00000.ts    MPEG-TS segments (H.264 + AAC, muxed)

One run decodes the input once and splits it into one scaled H.264 encode per rung, so the
usual `out_time` progress covers the whole ladder. Keyframes are forced at every multiple of
segmentSeconds (and scene-cut keyframes are off), so every rendition cuts at the same times
and a player can switch between them at any segment boundary.

The package is made in a staging directory inside the output directory and moved into
place at the end: rendition directories first, master.m3u8 last, so a reader who finds the
master playlist finds everything it names. `publish_tree` is the one place that knows how a
directory tree reaches its output location.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from videoqueue_worker import media, s3, transfer
from videoqueue_worker.errors import WorkerError, invalid
from videoqueue_worker.jobs import TREE_OUTPUT_SCHEMES, X26X_PRESET, need_video
from videoqueue_worker.params import HlsParams
from videoqueue_worker.reporter import Reporter

MASTER: Final = "master.m3u8"
# What S3 serves the package's objects as (players and CDNs go by it).
CONTENT_TYPES: Final = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t"}
MEDIA_PLAYLIST: Final = "index.m3u8"
SEGMENT_PATTERN: Final = "seg_%05d.ts"
ENCODERS: Final = ("libx264", "aac")
PEAK_FACTOR: Final = 1.07
"""maxrate against the average bit rate: tight enough for BANDWIDTH to mean something."""
BUFFER_FACTOR: Final = 1.5
_BITRATE: Final = re.compile(r"^([0-9.]+)([kKM]?)$")
_ATTRIBUTE: Final = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')

Fraction = Callable[[float], None]


@dataclass(frozen=True)
class Rung:
    """A rendition as it is made: the asked rung, fitted to the input."""

    name: str
    height: int
    video_bitrate: str
    capped_from: int | None = None
    """The height asked for, when the input was too small for every rung."""


@dataclass(frozen=True)
class Ladder:
    rungs: tuple[Rung, ...]
    dropped: tuple[dict[str, Any], ...]
    """Rungs above the input's height, left out (never upscaled)."""


def bits_per_second(bitrate: str) -> int:
    """'2800k' -> 2800000 (ffmpeg's meaning of k and M: 10^3 and 10^6)."""
    found = _BITRATE.match(bitrate)
    if found is None:
        raise ValueError(f"not a bit rate: {bitrate!r}")
    return round(float(found[1]) * {"": 1, "k": 1e3, "K": 1e3, "M": 1e6}[found[2]])


def _first_video(info: dict[str, Any]) -> dict[str, Any] | None:
    streams: list[dict[str, Any]] = info.get("streams", [])
    return next((s for s in streams if s.get("codec_type") == "video"), None)


def display_height(info: dict[str, Any]) -> int | None:
    """The height of the first video stream as shown: a phone video stored landscape with a
    90° rotation is portrait, and ffmpeg rotates it before scaling."""
    video = _first_video(info)
    if video is None or not video.get("height"):
        return None
    rotation = 0.0
    for side in video.get("side_data_list") or []:
        if "rotation" in side:
            rotation = float(side["rotation"])
    rotation = float((video.get("tags") or {}).get("rotate", rotation))
    quarter_turned = round(rotation / 90) % 2 == 1
    return int(video["width"] if quarter_turned else video["height"])


def fit_ladder(params: HlsParams, input_height: int) -> Ladder:
    """The rungs at or below the input's height. When the input is smaller than every rung,
    the lowest rung is made at the input's own height (rounded down to even)."""
    kept: list[Rung] = []
    dropped: list[dict[str, Any]] = []
    for rung in params.rungs:
        if rung.height <= input_height:
            kept.append(Rung(rung.effective_name, rung.height, rung.video_bitrate))
        else:
            dropped.append(
                {
                    "name": rung.effective_name,
                    "height": rung.height,
                    "reason": f"above the input's height ({input_height}); never upscaled",
                }
            )
    if not kept:
        lowest = params.rungs[-1]
        height = max(2, input_height - input_height % 2)
        name = lowest.name or f"{height}p"
        kept.append(Rung(name, height, lowest.video_bitrate, capped_from=lowest.height))
        dropped.pop()
    return Ladder(tuple(kept), tuple(dropped))


def frame_rate(info: dict[str, Any]) -> float | None:
    video = _first_video(info) or {}
    num, _, den = str(video.get("avg_frame_rate") or "").partition("/")
    try:
        rate = int(num) / int(den)
    except (ValueError, ZeroDivisionError):
        return None
    return rate if rate > 0 else None


def plan_package(
    params: HlsParams, ladder: Ladder, info: dict[str, Any], source: Path
) -> list[str]:
    """ffmpeg's arguments, with paths relative to the package directory (its working
    directory): a '%' in the output's own path cannot be mistaken for a pattern."""
    audio = media.has_stream(info, "audio")
    count = len(ladder.rungs)
    graph = f"[0:v:0]split={count}" + "".join(f"[s{i}]" for i in range(count))
    for i, rung in enumerate(ladder.rungs):
        graph += f";[s{i}]scale=-2:{rung.height},format=yuv420p[v{i}]"
    args = ["-i", str(source), "-filter_complex", graph]
    for i in range(count):
        args += ["-map", f"[v{i}]"] + (["-map", "0:a:0"] if audio else [])
    seconds = params.segment_seconds
    args += ["-c:v", "libx264", "-preset", X26X_PRESET[params.speed], "-sc_threshold", "0"]
    args += ["-force_key_frames", f"expr:gte(t,n_forced*{seconds:g})"]
    if (rate := frame_rate(info)) is not None:
        args += ["-g", str(max(1, math.ceil(rate * seconds)))]
    for i, rung in enumerate(ladder.rungs):
        average = bits_per_second(rung.video_bitrate)
        args += [f"-b:v:{i}", str(average)]
        args += [f"-maxrate:v:{i}", str(round(average * PEAK_FACTOR))]
        args += [f"-bufsize:v:{i}", str(round(average * BUFFER_FACTOR))]
    if audio:
        args += ["-c:a", "aac", "-b:a", params.audio_bitrate]
    streams = " ".join(
        f"v:{i}" + (f",a:{i}" if audio else "") + f",name:{rung.name}"
        for i, rung in enumerate(ladder.rungs)
    )
    args += ["-f", "hls", "-hls_time", f"{seconds:g}", "-hls_playlist_type", "vod"]
    args += ["-hls_flags", "independent_segments", "-hls_segment_type", "mpegts"]
    args += ["-hls_segment_filename", f"%v/{SEGMENT_PATTERN}", "-master_pl_name", MASTER]
    args += ["-var_stream_map", streams, "-y", f"%v/{MEDIA_PLAYLIST}"]
    return args


# -- reading the package back ------------------------------------------------------------


def parse_master(text: str) -> list[dict[str, str]]:
    """The variants of a master playlist: EXT-X-STREAM-INF attributes plus `URI`."""
    variants: list[dict[str, str]] = []
    pending: dict[str, str] | None = None
    for line in (raw.strip() for raw in text.splitlines()):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attributes = line.partition(":")[2]
            pending = {k: v.strip('"') for k, v in _ATTRIBUTE.findall(attributes)}
        elif line and not line.startswith("#") and pending is not None:
            variants.append(pending | {"URI": line})
            pending = None
    return variants


def segment_durations(text: str) -> list[float]:
    """The EXTINF durations of a media playlist, in order."""
    return [
        float(line.partition(":")[2].partition(",")[0])
        for line in text.splitlines()
        if line.startswith("#EXTINF:")
    ]


def describe(package: Path, ladder: Ladder) -> list[dict[str, Any]]:
    """Per rendition what the package holds, read from the playlists ffmpeg wrote."""
    variants = {v["URI"]: v for v in parse_master((package / MASTER).read_text())}
    renditions = []
    for rung in ladder.rungs:
        playlist = f"{rung.name}/{MEDIA_PLAYLIST}"
        variant = variants.get(playlist)
        if variant is None:
            raise WorkerError(f"ffmpeg wrote no {playlist} into {MASTER}")
        durations = segment_durations((package / playlist).read_text())
        width, _, height = variant.get("RESOLUTION", "").partition("x")
        entry: dict[str, Any] = {
            "name": rung.name,
            "width": int(width) if width else None,
            "height": int(height) if height else rung.height,
            "videoBitrate": rung.video_bitrate,
            "bandwidth": int(variant["BANDWIDTH"]) if "BANDWIDTH" in variant else None,
            "codecs": variant.get("CODECS"),
            "segments": len(durations),
            "duration": round(sum(durations), 3),
            "playlist": playlist,
        }
        if rung.capped_from is not None:
            entry["cappedFrom"] = rung.capped_from
        renditions.append({k: v for k, v in entry.items() if v is not None})
    return renditions


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# -- output --------------------------------------------------------------------------------


def staging_dir(output: transfer.Location, scratch: Path) -> Path:
    """Where ffmpeg writes the package: inside a local output directory (same file system,
    so publishing is a few renames), else in the attempt's scratch space."""
    if output.path is None:
        staging = scratch / "package"
        staging.mkdir()
        return staging
    try:
        output.path.mkdir(parents=True, exist_ok=True)
        output.sandbox.still_inside(output.path, field=output.field)
        staging = output.path / f".hls.{secrets.token_hex(6)}.partial"
        staging.mkdir()
    except (FileExistsError, NotADirectoryError):
        raise invalid(
            output.field,
            f"{output.path} (or a directory above it) is a file; an hls package needs a directory",
        ) from None
    except OSError as exc:
        raise WorkerError(f"cannot create {output.path}: {exc.strerror or exc}") from None
    return staging


def publish_tree(local_dir: Path, output: transfer.Location, on_progress: Fraction) -> None:
    """Put the tree under local_dir at the output directory or S3 prefix: each top-level
    directory replaces the one of its name (no stale segments of an earlier run stay mixed
    in), then each top-level file (the master playlist last); other entries of the output
    are left alone."""
    if output.scheme == "s3" and output.s3 is not None:
        _publish_to_s3(local_dir, output, on_progress)
        return
    if output.scheme not in TREE_OUTPUT_SCHEMES or output.path is None:
        schemes = " or ".join(f"{s}://" for s in TREE_OUTPUT_SCHEMES)
        raise invalid(output.field, f"a directory tree is written to {schemes} only")
    target = output.path
    try:
        target.mkdir(parents=True, exist_ok=True)
        if local_dir.parent != target:  # made elsewhere: copy next to the target first
            staged = target / f".hls.{secrets.token_hex(6)}.partial"
            shutil.copytree(local_dir, staged)
            local_dir = staged
        entries = sorted(local_dir.iterdir(), key=lambda p: (not p.is_dir(), p.name))
        output.sandbox.still_inside(target, field=output.field)
        for done, entry in enumerate(entries, 1):
            _replace(entry, target / entry.name, output.field)
            on_progress(done / len(entries))
    except OSError as exc:
        raise WorkerError(f"writing {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)


def _publish_to_s3(local_dir: Path, output: transfer.Location, on_progress: Fraction) -> None:
    """Upload the package under the output prefix: every rendition's segments and playlist
    first and the master playlist last, so a player that finds the master finds all it
    names; then the objects an earlier run left under those renditions' prefixes and the new
    run did not write are deleted. Progress is by bytes."""
    assert output.s3 is not None
    assert output.sandbox.s3 is not None  # parse_location refuses s3:// without settings
    settings, prefix = output.sandbox.s3, output.s3
    files = sorted(
        (path for path in local_dir.rglob("*") if path.is_file()),
        key=lambda path: (path.parent == local_dir, path.suffix == ".m3u8", str(path)),
    )
    total = sum(path.stat().st_size for path in files) or 1
    sent = [0]  # bytes of the files already uploaded

    def progress(done: int, _size: int | None) -> None:
        on_progress((sent[0] + done) / total)

    for path in files:
        relative = path.relative_to(local_dir).as_posix()
        target = s3.S3Object(prefix.bucket, prefix.key + relative)
        size = path.stat().st_size
        s3.upload(
            settings, path, target, field=output.field,
            timeout_seconds=output.sandbox.transfer_timeout_seconds, on_progress=progress,
            content_type=CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
        )  # fmt: skip
        sent[0] += size
    renditions = {p.relative_to(local_dir).parts[0] for p in files if p.parent != local_dir}
    written = {prefix.key + p.relative_to(local_dir).as_posix() for p in files}
    s3.delete_stale(
        settings, prefix.bucket, [f"{prefix.key}{name}/" for name in sorted(renditions)],
        keep=written, field=output.field,
    )  # fmt: skip
    on_progress(1.0)


def _replace(entry: Path, destination: Path, field: str) -> None:
    if not entry.is_dir():
        entry.replace(destination)  # a rename replaces a symlink, never writes through it
        return
    old: Path | None = None
    if os.path.lexists(destination):
        if destination.is_symlink() or not destination.is_dir():
            raise invalid(field, f"{destination} exists and is not a directory; remove it")
        old = destination.with_name(f".{destination.name}.{secrets.token_hex(6)}.old")
        destination.rename(old)
    entry.rename(destination)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- the job -------------------------------------------------------------------------------


def package(
    params: HlsParams,
    info: dict[str, Any],
    source: Path,
    output: transfer.Location,
    *,
    scratch: Path,
    reporter: Reporter,
    on_work: Fraction,
    on_publish: Fraction,
) -> dict[str, Any]:
    """Make the package and publish it; the job's result."""
    need_video(info)
    height = display_height(info)
    if height is None:
        raise invalid("spec.input.url", "the input's video stream has no known height")
    ladder = fit_ladder(params, height)
    staging = staging_dir(output, scratch)
    try:
        args = plan_package(params, ladder, info, source)
        duration = media.duration_of(info)
        try:
            media.run_ffmpeg(args, expected_seconds=duration, on_fraction=on_work, cwd=staging)
        except WorkerError:
            have = media.encoders()
            for encoder in ENCODERS:
                if encoder not in have:
                    raise invalid("spec.type", f"this ffmpeg has no {encoder} encoder") from None
            raise
        renditions = describe(staging, ladder)
        size = tree_bytes(staging)
        reporter.stage("uploading")
        publish_tree(staging, output, on_publish)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result: dict[str, Any] = {
        "type": "hls",
        "output": transfer.redact(output.child(MASTER).url),
        "segmentSeconds": params.segment_seconds,
        "renditions": renditions,
        "size": size,
        "dropped": list(ladder.dropped),
    }
    if duration is not None:
        result["duration"] = round(duration, 3)
    return result
