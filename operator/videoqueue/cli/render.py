"""Output for people (kubectl-style tables, durations) and for scripts (JSON, YAML)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

from videoqueue.api import Condition

OUTPUT_FORMATS = ("table", "json", "yaml")


def dump(data: Any, fmt: str, out: TextIO) -> None:
    """`data` as JSON or YAML, keys in the order given."""
    if fmt == "json":
        out.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        out.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO) -> None:
    """Columns separated by three spaces, as `kubectl get` prints them; None shows as <none>."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for line in [list(headers), *cells]:
        out.write("   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")


def _cell(value: object) -> str:
    return "<none>" if value is None or value == "" else str(value)


def duration(seconds: float) -> str:
    """Like kubectl's ages: 45s, 3m20s, 2h5m, 3d4h."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def relative(moment: float | None, now: float) -> str:
    """'now', 'in 2m30s' or '3m ago'."""
    if moment is None:
        return ""
    delta = moment - now
    if abs(delta) < 1:
        return "now"
    return f"in {duration(delta)}" if delta > 0 else f"{duration(-delta)} ago"


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    stamp = datetime.datetime.fromtimestamp(moment, datetime.UTC).replace(microsecond=0)
    return stamp.isoformat().replace("+00:00", "Z")


def age(timestamp: str | None, now: float) -> str:
    """The age of an RFC 3339 timestamp, as kubectl shows it."""
    if not timestamp:
        return ""
    moment = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    return duration(now - moment)


def stage(name: str | None, progress: int | None) -> str:
    """A job's stage and progress: 'encode 40%', 'encode', '40%' or ''."""
    return " ".join(p for p in (name or "", f"{progress}%" if progress is not None else "") if p)


def conditions_table(conditions: Sequence[Condition], now: float, out: TextIO) -> None:
    """An object's conditions under a "Conditions:" heading, indented; nothing without any."""
    if not conditions:
        return
    out.write("Conditions:\n")
    table(
        ["  TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
        [
            [
                f"  {c.type}",
                c.status.value,
                c.reason,
                duration(now - c.last_transition_time.timestamp()),
                c.message,
            ]
            for c in conditions
        ],
        out,
    )
