"""Byte units and second formatting for the messages a person reads (bytes are written
with `videoqueue.api.format_bytes`)."""

from __future__ import annotations

from typing import Final

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB
TiB: Final = 1024 * GiB


def format_seconds(value: float) -> str:
    return f"{value:g}s"
