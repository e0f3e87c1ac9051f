"""The Argo CD health checks against the sample objects in gitops/argocd/, in Argo CD's own
test layout (health_test.yaml next to health.lua), run by a real Lua 5.1 interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.gitops.argocd import HEALTH_DIR, health

CASES = [
    pytest.param(kind, case, id=f"{kind}-{Path(case['inputPath']).stem}")
    for kind in ("VideoJob", "VideoQueue")
    for case in yaml.safe_load((HEALTH_DIR / kind / "health_test.yaml").read_text())["tests"]
]


@pytest.mark.parametrize(("kind", "case"), CASES)
def test_health_of_sample_object(kind: str, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((HEALTH_DIR / kind / case["inputPath"]).read_text())
    assert obj["kind"] == kind
    assert health(kind, obj) == case["healthStatus"]


@pytest.mark.parametrize("kind", ["VideoJob", "VideoQueue"])
def test_every_sample_is_covered_by_a_case(kind: str) -> None:
    cases = yaml.safe_load((HEALTH_DIR / kind / "health_test.yaml").read_text())["tests"]
    listed = {Path(c["inputPath"]).name for c in cases}
    on_disk = {p.name for p in (HEALTH_DIR / kind / "testdata").glob("*.yaml")}
    assert listed == on_disk


def test_the_argocd_config_map_carries_the_same_scripts() -> None:
    config = yaml.safe_load((HEALTH_DIR.parent / "argocd-cm.yaml").read_text())
    assert config["metadata"]["name"] == "argocd-cm"
    for kind in ("VideoJob", "VideoQueue"):
        key = f"resource.customizations.health.videoqueue.dev_{kind}"
        assert config["data"][key] == (HEALTH_DIR / kind / "health.lua").read_text(), (
            f"{key} differs from {kind}/health.lua: copy the script into argocd-cm.yaml"
        )


def test_a_job_without_status_is_progressing_not_an_error() -> None:
    assert health("VideoJob", {"metadata": {"name": "x"}, "spec": {}})["status"] == "Progressing"
