"""Running ffmpeg and ffprobe: argument lists (never a shell), progress from `-progress`.

ffmpeg writes `key=value` blocks to the progress pipe about twice a second, each ending in
`progress=continue` (or `progress=end`); `out_time_us` against the expected output duration
gives the fraction done.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Final

from videoqueue_worker.errors import WorkerError

FFMPEG: Final = os.environ.get("VIDEOQUEUE_FFMPEG", "ffmpeg")
FFPROBE: Final = os.environ.get("VIDEOQUEUE_FFPROBE", "ffprobe")
STDERR_TAIL_LINES: Final = 8
PROBE_TIMEOUT_SECONDS: Final = 120.0
# ffmpeg and ffprobe open only local files for an input: a playlist or SDP file cannot make
# them reach the network behind the worker's sandbox (transfer.py checks what the worker
# itself fetches). Demuxers that open further files named inside the input are refused.
INPUT_PROTOCOLS: Final = ("-protocol_whitelist", "file")
INDIRECT_FORMATS: Final = frozenset({"hls", "concat", "dash", "sdp", "rtsp", "rtp"})


def probe(path: Path) -> dict[str, Any]:
    """ffprobe's JSON of a media file: format and streams."""
    command = [
        FFPROBE,
        *("-v", "error", "-print_format", "json", "-show_format", "-show_streams"),
        *INPUT_PROTOCOLS,
        "--",
        str(path),
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS, check=False
        )
    except FileNotFoundError:
        raise WorkerError(f"{FFPROBE} is not installed") from None
    except subprocess.TimeoutExpired:
        raise WorkerError(f"ffprobe took longer than {PROBE_TIMEOUT_SECONDS:.0f}s") from None
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-1:] or ["no details"]
        raise WorkerError(f"the input is not media ffprobe can read: {detail[0]}")
    data: dict[str, Any] = json.loads(done.stdout or "{}")
    return data


def indirect_format(info: dict[str, Any]) -> str | None:
    """The name of the input's format when it is a playlist or session description that
    makes ffmpeg open other files (HLS, concat, DASH, SDP), else None."""
    names = str((info.get("format") or {}).get("format_name") or "").split(",")
    return next((name for name in names if name in INDIRECT_FORMATS), None)


def duration_of(info: dict[str, Any]) -> float | None:
    """Duration in seconds from ffprobe JSON: the container's, else the longest stream's."""
    candidates = [info.get("format", {}).get("duration")]
    candidates += [s.get("duration") for s in info.get("streams", [])]
    values = []
    for value in candidates:
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            continue
    positive = [v for v in values if v > 0]
    return positive[0] if positive else None


def has_stream(info: dict[str, Any], codec_type: str) -> bool:
    return any(s.get("codec_type") == codec_type for s in info.get("streams", []))


_encoders: set[str] | None = None


def encoders() -> set[str]:
    """Names of the encoders this ffmpeg has (asked once per process)."""
    global _encoders
    if _encoders is None:
        done = subprocess.run(
            [FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
        )
        names = set()
        for line in done.stdout.splitlines():
            fields = line.split()
            # Lines look like " V....D libx264  description"; the header ends with "------".
            if len(fields) >= 2 and len(fields[0]) == 6 and fields[0][0] in "VAS":
                names.add(fields[1])
        _encoders = names
    return _encoders


def run_ffmpeg(
    args: Sequence[str],
    *,
    expected_seconds: float | None,
    on_fraction: Callable[[float], None],
    cwd: Path | None = None,
) -> None:
    """Run `ffmpeg <args>` (in directory `cwd` if given) reporting progress as a fraction
    0..1 of `expected_seconds` of output. Raises WorkerError with the end of ffmpeg's own
    error output when it fails."""
    command = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats"]
    command += ["-progress", "pipe:1"]
    for arg in args:  # every input is opened with INPUT_PROTOCOLS only
        command += [*INPUT_PROTOCOLS, arg] if arg == "-i" else [arg]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=cwd,
        )
    except FileNotFoundError:
        raise WorkerError(f"{FFMPEG} is not installed") from None
    assert process.stdout is not None
    assert process.stderr is not None
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    reader = threading.Thread(target=_collect, args=(process.stderr, tail), daemon=True)
    reader.start()
    try:
        for line in process.stdout:
            key, _, value = line.strip().partition("=")
            if key == "out_time_us" and expected_seconds:
                try:
                    seconds = int(value) / 1e6
                except ValueError:
                    continue  # "N/A" before the first frame is out
                on_fraction(min(1.0, max(0.0, seconds / expected_seconds)))
        code = process.wait()
    except BaseException:  # SIGTERM (Terminated) included: never leave ffmpeg behind
        _stop(process)
        raise
    finally:
        reader.join(5)
        process.stdout.close()
        process.stderr.close()
    if code != 0:
        detail = " | ".join(line for line in tail if line) or f"exit code {code}"
        raise WorkerError(f"ffmpeg failed: {detail}")
    on_fraction(1.0)


def _collect(stream: IO[str], tail: collections.deque[str]) -> None:
    for line in stream:
        tail.append(line.strip())


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # ffmpeg's own clean stop
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
