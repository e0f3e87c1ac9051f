"""spec.budgets: what the pydantic validators accept and refuse (the CEL rules say the same at
`kubectl apply`; tests/integration/test_queue_budgets.py checks them on a real API server)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from videoqueue.api import (
    QueueBudgetStatus,
    VideoQueueSpec,
    budget_units,
    format_resource,
    resource_units,
)
from videoqueue.api.crds import VIDEO_QUEUE, openapi_schema


def spec(budgets: dict[str, Any]) -> VideoQueueSpec:
    return VideoQueueSpec.model_validate({"memory": {"budget": "8Gi"}, "budgets": budgets})


@pytest.mark.parametrize(
    "budgets",
    [
        pytest.param({"cpu": "8"}, id="cpu"),
        pytest.param({"cpu": "500m"}, id="millicores"),
        pytest.param({"cpu": 2, "nvidia.com/gpu": 1}, id="integers"),
        pytest.param({"example.com/fpga": "2", "amd.com/gpu": "1k"}, id="extended"),
        pytest.param({f"example.com/r{i}": "1" for i in range(8)}, id="eight"),
    ],
)
def test_accepted(budgets: dict[str, Any]) -> None:
    assert spec(budgets).budgets == {k: str(v) for k, v in budgets.items()}


@pytest.mark.parametrize(
    ("budgets", "expected"),
    [
        pytest.param({"memory": "8Gi"}, "spec.memory.budget", id="memory"),
        pytest.param({"pods": "3"}, "cannot be budgeted", id="pods"),
        pytest.param({"ephemeral-storage": "1Gi"}, "cannot be budgeted", id="ephemeral"),
        pytest.param({"hugepages-2Mi": "1Gi"}, "cannot be budgeted", id="hugepages"),
        pytest.param({"kubernetes.io/thing": "1"}, "cannot be budgeted", id="k8s-domain"),
        pytest.param({"Example.com/gpu": "1"}, "domain prefix", id="bad-name"),
        pytest.param({"nvidia.com/gpu": "1.5"}, "whole number", id="fractional"),
        pytest.param({"nvidia.com/gpu": "500m"}, "whole number", id="milli-gpu"),
        pytest.param({"cpu": "0"}, "positive", id="zero"),
        pytest.param({"cpu": "-1"}, "positive", id="negative"),
        pytest.param({"cpu": "1u"}, "positive", id="micro"),
        pytest.param({f"example.com/r{i}": "1" for i in range(9)}, "at most 8", id="nine"),
    ],
)
def test_refused(budgets: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        spec(budgets)


def test_units_and_formatting() -> None:
    assert budget_units({"cpu": "1500m", "nvidia.com/gpu": "2"}) == {
        "cpu": 1500,
        "nvidia.com/gpu": 2,
    }
    assert resource_units("cpu", "2") == 2000
    assert [format_resource("cpu", n) for n in (500, 2000, 2500)] == ["500m", "2", "2500m"]
    assert format_resource("nvidia.com/gpu", 3) == "3"
    status = QueueBudgetStatus.of("cpu", reserved=1500, budget=4000)
    assert status.to_dict() == {"resource": "cpu", "reserved": "1500m", "budget": "4"}


def test_every_rule_is_in_the_crd() -> None:
    schema = openapi_schema(VIDEO_QUEUE)
    budgets = schema["properties"]["spec"]["properties"]["budgets"]
    assert budgets["maxProperties"] == 8
    rules = [r["message"] for r in budgets["x-kubernetes-validations"]]
    assert any("spec.memory.budget" in m for m in rules)
    assert any("whole number" in m for m in rules)
    assert budgets["additionalProperties"]["x-kubernetes-validations"]
