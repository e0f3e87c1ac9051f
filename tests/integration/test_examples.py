"""Every manifest in examples/ applies cleanly; the local ones run to completion on KWOK."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.objects import is_true, wait_job
from videoqueue.envtest import ClusterBase

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    "manifest",
    sorted(p.relative_to(EXAMPLES) for p in EXAMPLES.rglob("*.yaml")),
    ids=str,
)
def test_example_applies_cleanly(
    cluster: ClusterBase, crds: None, namespace: str, manifest: Path
) -> None:
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(EXAMPLES / manifest)
    )
    assert "(server dry run)" in result.stdout


def test_local_examples_run_to_completion(
    cluster: ClusterBase, operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "local"))

    for name in ("breaking-news", "news-thumbnail", "promo-1080p", "archive-scan"):
        done = wait_job(custom, namespace, name, "Complete", timeout=120)
        assert done["status"]["result"]["output"] == "file:///media/out/result.mp4"
    too_big = wait_job(custom, namespace, "too-big", "Rejected")
    assert is_true(too_big, "Failed")
