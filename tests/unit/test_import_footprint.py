"""What a replica's process imports: the Redis client only with the progress channel on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO / "operator")},
    )
    return set(done.stdout.split())


def test_the_controller_does_not_import_redis_until_the_progress_channel_is_made() -> None:
    controller = imported_after("import videoqueue.__main__, videoqueue.controller.handlers")
    assert "kopf" in controller  # the probe saw the controller's imports
    assert "redis" not in controller

    channel = imported_after("import videoqueue.controller.progress")
    assert "redis" in channel
