"""The result the worker hands back: compact JSON in the termination message (≤ 4096 bytes,
Kubernetes' limit per container)."""

from __future__ import annotations

import json
from typing import Any, Final

MAX_RESULT_BYTES: Final = 4096


def _number(value: Any, kind: type[int] | type[float]) -> int | float | None:
    try:
        number = kind(float(value)) if kind is int else round(float(value), 3)
    except (TypeError, ValueError):
        return None
    return number


def _rate(value: Any) -> float | None:
    # ffprobe writes frame rates as fractions such as "30000/1001".
    if not isinstance(value, str) or "/" not in value:
        return None
    num, _, den = value.partition("/")
    try:
        return round(int(num) / int(den), 3) if int(den) else None
    except ValueError:
        return None


def _first(info: dict[str, Any], codec_type: str) -> dict[str, Any] | None:
    return next((s for s in info.get("streams", []) if s.get("codec_type") == codec_type), None)


def media_summary(info: dict[str, Any]) -> dict[str, Any]:
    """The facts about a media file a job's result carries, from ffprobe JSON."""
    fmt = info.get("format", {})
    summary: dict[str, Any] = {
        "formatName": fmt.get("format_name"),
        "duration": _number(fmt.get("duration"), float),
        "size": _number(fmt.get("size"), int),
        "bitRate": _number(fmt.get("bit_rate"), int),
    }
    video = _first(info, "video")
    if video is not None:
        summary |= {
            "width": video.get("width"),
            "height": video.get("height"),
            "videoCodec": video.get("codec_name"),
            "frameRate": _rate(video.get("avg_frame_rate")),
        }
    audio = _first(info, "audio")
    if audio is not None:
        summary |= {
            "audioCodec": audio.get("codec_name"),
            "sampleRate": _number(audio.get("sample_rate"), int),
            "channels": audio.get("channels"),
        }
    return {k: v for k, v in summary.items() if v is not None}


def stream_summaries(info: dict[str, Any]) -> list[dict[str, Any]]:
    """One small entry per stream, for a probe's result."""
    streams = []
    for s in info.get("streams", []):
        entry = {
            "index": s.get("index"),
            "type": s.get("codec_type"),
            "codec": s.get("codec_name"),
            "profile": s.get("profile"),
            "width": s.get("width"),
            "height": s.get("height"),
            "pixFmt": s.get("pix_fmt"),
            "frameRate": _rate(s.get("avg_frame_rate")),
            "sampleRate": _number(s.get("sample_rate"), int),
            "channels": s.get("channels"),
            "duration": _number(s.get("duration"), float),
            "bitRate": _number(s.get("bit_rate"), int),
            "language": (s.get("tags") or {}).get("language"),
        }
        streams.append({k: v for k, v in entry.items() if v not in (None, "", "unknown")})
    return streams


def encode(result: dict[str, Any]) -> str:
    """Compact JSON of at most MAX_RESULT_BYTES: lists are shortened (and the result marked
    `truncated`) until it fits."""
    result = dict(result)
    while True:
        text = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) <= MAX_RESULT_BYTES:
            return text
        lists = [k for k, v in result.items() if isinstance(v, list) and v]
        if not lists:
            break
        longest = max(lists, key=lambda k: len(json.dumps(result[k])))
        result[longest] = result[longest][: len(result[longest]) // 2]
        result["truncated"] = True
    kept = {k: result[k] for k in ("type", "output") if k in result}
    return json.dumps(kept | {"truncated": True}, separators=(",", ":"))[:MAX_RESULT_BYTES]


def error_message(text: str) -> str:
    """A failure message cut to fit the termination message."""
    data = text.encode()
    if len(data) <= MAX_RESULT_BYTES:
        return text
    return data[: MAX_RESULT_BYTES - 3].decode(errors="ignore") + "..."
