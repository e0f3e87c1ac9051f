"""Memory at the API edge: the models' byte accessors read the stored quantities and write
bytes back in the stored format (`format_bytes`), so the core never parses a quantity."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import videoqueue.controller
import videoqueue.scheduling
from videoqueue.api import (
    AttemptRecord,
    JobResources,
    QueueMemoryStatus,
    VideoJobStatus,
    container_memory_limit,
    format_bytes,
    memory_quantity,
)

Ki, Mi, Gi = 1024, 1024**2, 1024**3


def test_effective_memory_bytes_reads_the_stored_quantity() -> None:
    status = VideoJobStatus.model_validate({"effectiveMemory": "1.5Gi"})
    assert status.effective_memory_bytes == 3 * Gi // 2
    assert VideoJobStatus().effective_memory_bytes is None


def test_effective_memory_bytes_reads_an_integer_on_the_wire() -> None:
    # int-or-string: a YAML integer is kept as its string.
    status = VideoJobStatus.model_validate({"effectiveMemory": 1048576})
    assert status.effective_memory == "1048576"
    assert status.effective_memory_bytes == Mi


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        pytest.param(128 * Mi, "128Mi", id="binary"),
        pytest.param(4 * 10**9, "4G", id="decimal"),
        pytest.param(3 * Gi // 2, "1536Mi", id="fraction-of-a-gibibyte"),
        pytest.param(1000 * Ki + 1, "1024001", id="plain-bytes"),
        pytest.param(0, "0", id="zero"),
    ],
)
def test_setting_bytes_stores_what_format_bytes_writes(value: int, stored: str) -> None:
    status = VideoJobStatus()
    status.effective_memory_bytes = value
    assert status.effective_memory == stored == format_bytes(value)
    assert status.to_dict()["effectiveMemory"] == stored
    record = AttemptRecord(attempt=1)
    record.memory_bytes = value
    record.peak_memory_bytes = value
    assert record.to_dict() == {"attempt": 1, "memory": stored, "peakMemory": stored}


@given(st.integers(min_value=0, max_value=2**70))
def test_bytes_round_trip_through_the_stored_quantity(value: int) -> None:
    status = VideoJobStatus()
    status.effective_memory_bytes = value
    assert status.effective_memory_bytes == value
    # What is stored is valid for the schema too: the object reads back the same.
    again = VideoJobStatus.model_validate(status.to_dict())
    assert again.effective_memory == status.effective_memory


def test_setting_none_unsets() -> None:
    status = VideoJobStatus(effective_memory="1Gi")
    status.effective_memory_bytes = None
    assert status.effective_memory is None
    assert "effectiveMemory" not in status.to_dict()
    record = AttemptRecord(attempt=2, memory="1Gi", peak_memory="512Mi")
    record.memory_bytes = None
    record.peak_memory_bytes = None
    assert record.to_dict() == {"attempt": 2}


def test_a_negative_size_is_refused_rather_than_stored() -> None:
    status = VideoJobStatus()
    with pytest.raises(ValueError, match="cannot be negative"):
        status.effective_memory_bytes = -1
    assert status.effective_memory is None
    with pytest.raises(ValueError, match="cannot be negative"):
        memory_quantity(-Mi)


def test_attempt_record_accessors() -> None:
    record = AttemptRecord.model_validate({"attempt": 1, "memory": "2Gi", "peakMemory": "700Mi"})
    assert record.memory_bytes == 2 * Gi
    assert record.peak_memory_bytes == 700 * Mi
    assert AttemptRecord(attempt=1).memory_bytes is None
    assert AttemptRecord(attempt=1).peak_memory_bytes is None


def test_requested_memory_bytes() -> None:
    assert JobResources.model_validate({"memory": "512Mi"}).memory_bytes == 512 * Mi
    assert JobResources().memory_bytes is None


def test_queue_memory_status_of_bytes() -> None:
    memory = QueueMemoryStatus.of(reserved=3 * Gi, budget=8 * Gi)
    assert memory.to_dict() == {"reserved": "3Gi", "budget": "8Gi", "summary": "3Gi/8Gi"}
    assert (memory.reserved_bytes, memory.budget_bytes) == (3 * Gi, 8 * Gi)
    empty = QueueMemoryStatus.of(reserved=0, budget=Gi)
    assert empty.to_dict() == {"reserved": "0", "budget": "1Gi", "summary": "0/1Gi"}
    assert QueueMemoryStatus().reserved_bytes is None


def test_a_malformed_quantity_never_gets_in_through_the_models() -> None:
    # What the API server refuses by its schema pattern, the models refuse too, so a stored
    # quantity read from an object always parses.
    with pytest.raises(ValidationError):
        VideoJobStatus.model_validate({"effectiveMemory": "lots"})
    with pytest.raises(ValidationError):
        AttemptRecord.model_validate({"attempt": 1, "memory": "-1Gi"})


@pytest.mark.parametrize(
    ("model", "field", "read", "wire_name"),
    [
        pytest.param(
            VideoJobStatus(),
            "effective_memory",
            lambda m: m.effective_memory_bytes,
            "status.effectiveMemory",
            id="effective-memory",
        ),
        pytest.param(
            AttemptRecord(attempt=1),
            "memory",
            lambda m: m.memory_bytes,
            "status.attempts[].memory",
            id="attempt-memory",
        ),
        pytest.param(
            AttemptRecord(attempt=1),
            "peak_memory",
            lambda m: m.peak_memory_bytes,
            "status.attempts[].peakMemory",
            id="attempt-peak-memory",
        ),
        pytest.param(
            JobResources(),
            "memory",
            lambda m: m.memory_bytes,
            "spec.resources.memory",
            id="requested-memory",
        ),
        pytest.param(
            QueueMemoryStatus(),
            "reserved",
            lambda m: m.reserved_bytes,
            "status.memory.reserved",
            id="queue-reserved",
        ),
    ],
)
def test_a_malformed_quantity_assigned_in_python_raises_naming_the_field(
    model: Any, field: str, read: Callable[[Any], int | None], wire_name: str
) -> None:
    # Assignment is not validated, so a bad value can be set in Python; reading it raises
    # ValueError as parse_quantity did before the accessors, now with the field's name.
    model = model.model_copy()
    setattr(model, field, "lots")
    with pytest.raises(ValueError, match=rf"^{re.escape(wire_name)}: 'lots' is not a Kubernetes"):
        read(model)


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        pytest.param({"name": "c", "resources": {"limits": {"memory": "64Mi"}}}, 64 * Mi, id="set"),
        pytest.param({"name": "c", "resources": {"limits": {"memory": 1000}}}, 1000, id="integer"),
        pytest.param({"name": "c", "resources": {"limits": {"cpu": "1"}}}, None, id="cpu-only"),
        pytest.param({"name": "c", "resources": {}}, None, id="no-limits"),
        pytest.param({"name": "c"}, None, id="no-resources"),
    ],
)
def test_container_memory_limit(container: dict[str, Any], expected: int | None) -> None:
    assert container_memory_limit(container) == expected


def test_container_memory_limit_that_is_not_a_quantity() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        container_memory_limit({"resources": {"limits": {"memory": "lots"}}})
    with pytest.raises(TypeError):
        container_memory_limit({"resources": {"limits": {"memory": True}}})


@pytest.mark.parametrize("package", [videoqueue.scheduling, videoqueue.controller])
def test_the_core_and_the_controller_never_parse_quantities(package: ModuleType) -> None:
    # Memory is bytes inside: quantities are read by the API models' accessors (above), not
    # by the scheduling core or the controller.
    root = Path(package.__file__ or "").parent
    offenders = [
        f"{path.relative_to(root.parent)}:{node.lineno}"
        for path in sorted(root.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if (isinstance(node, ast.Name) and node.id == "parse_quantity")
        or (isinstance(node, ast.Attribute) and node.attr == "parse_quantity")
        or (isinstance(node, ast.alias) and node.name == "parse_quantity")
    ]
    assert offenders == []
