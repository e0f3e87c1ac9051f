"""How a benchmark records a run: the command, when, the machine, its settings and its
figures, as one JSON file next to the benchmark (committed with RESULTS.md)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def settings_value(value: Any) -> Any:
    """An argparse value as JSON can hold it."""
    if isinstance(value, Path):
        return str(value)
    return sorted(value) if isinstance(value, set) else value


def write_results(
    out: Path, module: str, argv: list[str], args: argparse.Namespace, **figures: Any
) -> None:
    """Write the run's record to `out`: `python -m module argv...`, the date, the machine
    (cores, Python, load average after the run: a loaded machine makes timings noisy), the
    settings and `figures`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": " ".join([f"python -m {module}", *argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {k: settings_value(v) for k, v in vars(args).items()},
        **figures,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
