"""The params of each job type: one pydantic model per type, camelCase on the wire.

Unknown params are rejected (a typo such as `crf: 18` spelled `cfr` would otherwise be
silently ignored). Only codecs and containers Debian's ffmpeg ships are offered.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from videoqueue_worker.errors import WorkerError, invalid

VideoCodec = Literal["h264", "h265", "vp9", "av1"]
AudioCodec = Literal["aac", "opus", "mp3", "flac"]
Container = Literal["mp4", "mkv", "webm", "mov"]
Speed = Literal["fastest", "fast", "medium", "slow"]
BITRATE_PATTERN = r"^[1-9][0-9]*(\.[0-9]+)?[kKM]?$"
RENDITION_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
MAX_RENDITIONS = 8

# Which encoder implements each codec in Debian's ffmpeg, and its quality scale (CRF).
VIDEO_ENCODERS: dict[str, str] = {
    "h264": "libx264",
    "h265": "libx265",
    "vp9": "libvpx-vp9",
    "av1": "libsvtav1",
}
AUDIO_ENCODERS: dict[str, str] = {
    "aac": "aac",
    "opus": "libopus",
    "mp3": "libmp3lame",
    "flac": "flac",
}
MAX_CRF: dict[str, int] = {"h264": 51, "h265": 51, "vp9": 63, "av1": 63}
# What each container can hold (as ffmpeg's muxers accept them).
CONTAINER_VIDEO: dict[str, frozenset[str]] = {
    "mp4": frozenset({"h264", "h265", "vp9", "av1"}),
    "mov": frozenset({"h264", "h265"}),
    "mkv": frozenset({"h264", "h265", "vp9", "av1"}),
    "webm": frozenset({"vp9", "av1"}),
}
CONTAINER_AUDIO: dict[str, frozenset[str]] = {
    "mp4": frozenset({"aac", "opus", "mp3", "flac"}),
    "mov": frozenset({"aac", "mp3"}),
    "mkv": frozenset({"aac", "opus", "mp3", "flac"}),
    "webm": frozenset({"opus"}),
}
CONTAINER_FORMAT: dict[str, str] = {"mp4": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm"}


class Params(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class TranscodePreset(BaseModel):
    video_codec: VideoCodec
    audio_codec: AudioCodec
    height: int
    crf: int
    container: Container


PRESETS: dict[str, TranscodePreset] = {
    "h264-480p": TranscodePreset(
        video_codec="h264", audio_codec="aac", height=480, crf=23, container="mp4"
    ),
    "h264-720p": TranscodePreset(
        video_codec="h264", audio_codec="aac", height=720, crf=23, container="mp4"
    ),
    "h264-1080p": TranscodePreset(
        video_codec="h264", audio_codec="aac", height=1080, crf=22, container="mp4"
    ),
    "h265-1080p": TranscodePreset(
        video_codec="h265", audio_codec="aac", height=1080, crf=26, container="mp4"
    ),
    "vp9-720p": TranscodePreset(
        video_codec="vp9", audio_codec="opus", height=720, crf=33, container="webm"
    ),
    "av1-720p": TranscodePreset(
        video_codec="av1", audio_codec="opus", height=720, crf=35, container="webm"
    ),
}
PresetName = Literal["h264-480p", "h264-720p", "h264-1080p", "h265-1080p", "vp9-720p", "av1-720p"]


def _even(name: str, value: int | None) -> None:
    # 4:2:0 chroma subsampling (what every preset writes) needs even dimensions.
    if value is not None and value % 2:
        raise ValueError(f"{name} must be even for 4:2:0 video, got {value}")


class TranscodeParams(Params):
    """Re-encode video (and audio). A preset fills in what is not given explicitly."""

    preset: PresetName | None = None
    video_codec: VideoCodec | None = None
    audio_codec: AudioCodec | Literal["copy", "none"] | None = None
    width: int | None = Field(default=None, ge=16, le=7680)
    """Output width; with height unset, height follows the aspect ratio."""
    height: int | None = Field(default=None, ge=16, le=4320)
    """Output height; with width unset, width follows the aspect ratio."""
    crf: int | None = Field(default=None, ge=0, le=63)
    """Constant quality (lower is better): 0..51 for h264/h265, 0..63 for vp9/av1."""
    video_bitrate: str | None = Field(default=None, pattern=BITRATE_PATTERN)
    """Average video bit rate such as 2500k or 4M, instead of crf."""
    audio_bitrate: str = Field(default="128k", pattern=BITRATE_PATTERN)
    fps: float | None = Field(default=None, gt=0, le=240)
    container: Container | None = None
    speed: Speed = "medium"
    """Encoder speed against compression efficiency."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _even("width", self.width)
        _even("height", self.height)
        if self.crf is not None and self.video_bitrate is not None:
            raise ValueError("set crf or videoBitrate, not both")
        if self.preset is None and self.video_codec is None:
            raise ValueError(f"set a preset ({', '.join(PRESETS)}) or videoCodec")
        crf = self.effective_crf
        if crf is not None and crf > MAX_CRF[self.effective_video_codec]:
            raise ValueError(
                f"crf {crf} is out of range for {self.effective_video_codec} "
                f"(0..{MAX_CRF[self.effective_video_codec]})"
            )
        container = self.effective_container
        if self.effective_video_codec not in CONTAINER_VIDEO[container]:
            raise ValueError(
                f"container {container} cannot hold {self.effective_video_codec} video; use "
                f"one of {', '.join(sorted(c for c, v in CONTAINER_VIDEO.items() if self.effective_video_codec in v))}"  # noqa: E501
            )
        audio = self.effective_audio_codec
        if audio not in ("copy", "none") and audio not in CONTAINER_AUDIO[container]:
            raise ValueError(
                f"container {container} cannot hold {audio} audio; use audioCodec "
                f"{' or '.join(sorted(CONTAINER_AUDIO[container]))}"
            )
        return self

    @property
    def _preset(self) -> TranscodePreset | None:
        return PRESETS[self.preset] if self.preset else None

    @property
    def effective_video_codec(self) -> str:
        if self.video_codec is not None:
            return self.video_codec
        assert self._preset is not None  # the validator requires one of the two
        return self._preset.video_codec

    @property
    def effective_audio_codec(self) -> str:
        if self.audio_codec is not None:
            return self.audio_codec
        if self._preset is not None:
            return self._preset.audio_codec
        return "opus" if self.effective_container == "webm" else "aac"

    @property
    def effective_container(self) -> str:
        if self.container is not None:
            return self.container
        if self._preset and self.video_codec in (None, self._preset.video_codec):
            return self._preset.container
        return "webm" if self.effective_video_codec == "vp9" else "mp4"

    @property
    def effective_crf(self) -> int | None:
        if self.crf is not None or self.video_bitrate is not None:
            return self.crf
        if self._preset and self.video_codec in (None, self._preset.video_codec):
            return self._preset.crf
        return None  # the encoder's own default quality

    @property
    def effective_size(self) -> tuple[int | None, int | None]:
        if self.width is not None or self.height is not None:
            return self.width, self.height
        return None, self._preset.height if self._preset else None


class ThumbnailParams(Params):
    """Still images: one frame at a time offset, N frames spread over the video, or a sprite
    sheet of N frames."""

    at: float | None = Field(default=None, ge=0)
    """Seconds into the video of the single frame; default: 10 % of the duration."""
    count: int = Field(default=1, ge=1, le=400)
    """Number of frames, spread evenly over the video."""
    sprite: bool = False
    """Tile the frames into one image (a sprite sheet) instead of one file each."""
    columns: int = Field(default=5, ge=1, le=20)
    """Frames per row of a sprite sheet."""
    width: int = Field(default=320, ge=16, le=3840)
    """Width of each frame; the height follows the aspect ratio."""
    format: Literal["jpeg", "png"] = "jpeg"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.at is not None and self.count > 1:
            raise ValueError("at picks one frame; leave it out when count is more than 1")
        if self.sprite and self.count < 2:
            raise ValueError("a sprite needs count of at least 2")
        return self

    @property
    def extension(self) -> str:
        return "jpg" if self.format == "jpeg" else "png"


class AudioParams(Params):
    """The audio track on its own, copied or re-encoded."""

    codec: AudioCodec | Literal["copy"] = "aac"
    bitrate: str = Field(default="128k", pattern=BITRATE_PATTERN)
    sample_rate: Literal[8000, 16000, 22050, 24000, 32000, 44100, 48000] | None = None
    channels: int | None = Field(default=None, ge=1, le=8)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.codec == "opus" and self.sample_rate not in (None, 8000, 16000, 24000, 48000):
            raise ValueError("opus takes sampleRate 8000, 16000, 24000 or 48000")
        return self

    @property
    def format(self) -> tuple[str, str]:
        """ffmpeg muxer and file extension."""
        return {
            "aac": ("ipod", "m4a"),
            "opus": ("ogg", "opus"),
            "mp3": ("mp3", "mp3"),
            "flac": ("flac", "flac"),
            "copy": ("matroska", "mka"),
        }[self.codec]


class ClipParams(Params):
    """A segment of the input. `copy` keeps the streams as they are (fast, cuts at the
    keyframe at or before `start`); otherwise the segment is re-encoded (H.264/AAC) and cut
    exactly."""

    start: float = Field(ge=0)
    """Seconds from the beginning."""
    end: float | None = Field(default=None, gt=0)
    duration: float | None = Field(default=None, gt=0)
    copy_streams: bool = Field(default=True, alias="copy")
    container: Container = "mp4"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.end is None) == (self.duration is None):
            raise ValueError("set exactly one of end and duration")
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        if not self.copy_streams and "h264" not in CONTAINER_VIDEO[self.container]:
            raise ValueError(f"a re-encoded clip is H.264, which {self.container} cannot hold")
        return self

    @property
    def length(self) -> float:
        return self.duration if self.duration is not None else (self.end or 0) - self.start


class Rendition(Params):
    """One rung of an HLS ladder: H.264 at this height (width follows the aspect ratio)."""

    height: int = Field(ge=64, le=4320)
    video_bitrate: str = Field(pattern=BITRATE_PATTERN)
    """Average video bit rate such as 2800k or 5M; the peak is held to 1.07x of it."""
    name: str | None = Field(default=None, pattern=RENDITION_NAME_PATTERN)
    """Its directory in the package; default `<height>p`."""

    @field_validator("height")
    @classmethod
    def _even_height(cls, height: int) -> int:
        if height % 2:  # 4:2:0 chroma subsampling needs even dimensions
            raise ValueError("must be even for 4:2:0 video")
        return height

    @property
    def effective_name(self) -> str:
        return self.name or f"{self.height}p"


def _rung(height: int, bitrate: str) -> Rendition:
    return Rendition(height=height, video_bitrate=bitrate)


LADDERS: dict[str, tuple[Rendition, ...]] = {
    "standard": (
        _rung(1080, "5000k"),
        _rung(720, "2800k"),
        _rung(480, "1400k"),
        _rung(360, "800k"),
    ),
    "small": (_rung(480, "1400k"), _rung(360, "800k"), _rung(240, "400k")),
}
LadderName = Literal["standard", "small"]


class HlsParams(Params):
    """An adaptive-bitrate HLS package: H.264/AAC renditions from a ladder, cut into
    segments of segmentSeconds, with a master playlist."""

    ladder: LadderName | None = None
    """A named ladder: standard (1080/720/480/360, the default) or small (480/360/240)."""
    renditions: list[Rendition] | None = Field(
        default=None, min_length=1, max_length=MAX_RENDITIONS
    )
    """The rungs, instead of a named ladder."""
    segment_seconds: float = Field(default=6, ge=1, le=30)
    audio_bitrate: str = Field(default="128k", pattern=BITRATE_PATTERN)
    speed: Speed = "medium"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.ladder is not None and self.renditions is not None:
            raise ValueError("set ladder or renditions, not both")
        names = [r.effective_name for r in self.rungs]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                f"renditions must have distinct names (each is a directory); {', '.join(twice)} "
                "appears more than once: give each a name"
            )
        return self

    @property
    def rungs(self) -> tuple[Rendition, ...]:
        """The ladder asked for, highest first."""
        chosen = (
            self.renditions if self.renditions is not None else LADDERS[self.ladder or "standard"]
        )
        return tuple(sorted(chosen, key=lambda r: -r.height))


class ProbeParams(Params):
    """Metadata only; the full ffprobe JSON goes to output.url when one is set."""


PARAMS_MODELS: dict[str, type[Params]] = {
    "probe": ProbeParams,
    "transcode": TranscodeParams,
    "thumbnail": ThumbnailParams,
    "audio": AudioParams,
    "clip": ClipParams,
    "hls": HlsParams,
}


def parse_params(job_type: str, params: dict[str, Any]) -> Params:
    """The validated params of a job, or a WorkerError naming the first bad field."""
    model = PARAMS_MODELS.get(job_type)
    if model is None:
        raise invalid(
            "spec.type",
            f"this worker runs {', '.join(PARAMS_MODELS)}, not {job_type!r}; "
            "use one of those or a custom image for a custom type",
        )
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise params_error(exc) from None


def params_error(exc: ValidationError) -> WorkerError:
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    field = f"spec.params.{loc}" if loc else "spec.params"
    message: str = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown parameter; check its spelling against the job type's params"
    elif "input" in first and first["type"] not in ("missing",) and loc:
        message = f"{message} (got {first['input']!r})"
    more = exc.error_count() - 1
    if more:
        message += f" ({more} more problem{'s' if more > 1 else ''} in spec.params)"
    return invalid(field, message)
