"""Byte and second formatting for the messages a person reads in status and Events."""

from __future__ import annotations

from typing import Final

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB
TiB: Final = 1024 * GiB

_SUFFIXES: Final = (("Ti", TiB), ("Gi", GiB), ("Mi", MiB), ("Ki", KiB))


def format_memory(value: int) -> str:
    """Bytes as a Kubernetes quantity with the largest binary suffix that is exact.

    Exact on purpose: "needs 8Gi but the max is 8Gi" would be a puzzle when the job actually
    needs one byte more, so 8Gi + 1 byte prints as plain bytes.
    """
    for suffix, size in _SUFFIXES:
        if value and value % size == 0:
            return f"{value // size}{suffix}"
    return str(value)


def format_seconds(value: float) -> str:
    return f"{value:g}s"
