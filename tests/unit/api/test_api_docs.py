"""docs/api.md is generated from the API models and kept in step with them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from videoqueue.api import VideoJobSpec, VideoQueueSpec
from videoqueue.api.docs import main, render

REPO = Path(__file__).resolve().parents[3]


def test_committed_reference_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--check", "--out", str(REPO / "docs" / "api.md")])
    assert code == 0, (
        "docs/api.md is stale: run `make docs` (python -m videoqueue.api.docs)\n"
        + capsys.readouterr().out
    )


def test_check_fails_with_a_diff_when_the_file_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "api.md"
    assert main(["--out", str(out)]) == 0
    assert main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("Most jobs admitted or running at once.", "Old text."))
    capsys.readouterr()
    assert main(["--check", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "-| `concurrency` | integer, ≥ 1, ≤ 10000 | `4` | Old text. |" in captured.out
    assert "make docs" in captured.err


@pytest.mark.parametrize(
    ("model", "kind"), [(VideoQueueSpec, "VideoQueue"), (VideoJobSpec, "VideoJob")], ids=str
)
def test_every_spec_field_is_documented_with_its_description(
    model: type[BaseModel], kind: str
) -> None:
    text = render()
    section = text.split(f"### {kind}.spec\n", 1)[1].split("\n### ", 1)[0]
    for name, field in model.model_fields.items():
        alias = field.alias or name
        row = next((line for line in section.splitlines() if line.startswith(f"| `{alias}`")), None)
        assert row is not None, f"{kind}.spec.{alias} is missing from the reference"
        assert " ".join((field.description or "").split())[:40] in row.replace("\\|", "|")


def test_rules_are_listed_with_their_messages() -> None:
    text = render()
    assert "spec.queueName is immutable: delete and recreate the job" in text
    assert "- spec.memory.max must not exceed spec.memory.budget" in text
