"""A pod's effective request per resource, as Kubernetes computes it (`pod_requests`)."""

from __future__ import annotations

from typing import Any

import pytest

from videoqueue.scheduling.pod_requests import container_request, pod_requests, requested_resources

GPU = "example.com/gpu"


def c(name: str, *, requests: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    limits = fields.pop("limits", None)
    resources = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    return {"name": name, "resources": resources, **fields}


def template(*containers: dict[str, Any], init: list[dict[str, Any]] | None = None) -> Any:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = init
    return {"spec": spec}


@pytest.mark.parametrize(
    ("container", "resource", "expected"),
    [
        pytest.param(c("w", requests={"cpu": "500m"}), "cpu", 500, id="cpu-millicores"),
        pytest.param(c("w", requests={"cpu": "1.5"}), "cpu", 1500, id="cpu-fraction"),
        pytest.param(c("w", requests={"cpu": 2}), "cpu", 2000, id="cpu-integer"),
        pytest.param(c("w", requests={"cpu": "0.0001"}), "cpu", 1, id="cpu-rounded-up"),
        pytest.param(c("w", limits={GPU: "1"}), GPU, 1, id="limit-only-is-the-request"),
        pytest.param(
            c("w", requests={"cpu": "250m"}, limits={"cpu": "2"}), "cpu", 250, id="request-wins"
        ),
        pytest.param(c("w"), "cpu", 0, id="nothing"),
        pytest.param(c("w", requests={"cpu": "lots"}), "cpu", 0, id="not-a-quantity"),
        pytest.param(c("w", requests={"ephemeral-storage": "1Ki"}), "ephemeral-storage", 1024),
    ],
)
def test_container_request(container: dict[str, Any], resource: str, expected: int) -> None:
    assert container_request(container, resource) == expected


def test_regular_containers_add_up() -> None:
    pod = template(
        c("worker", requests={"cpu": "500m"}, limits={GPU: 1}),
        c("proxy", requests={"cpu": "100m"}),
    )

    assert pod_requests(pod, ["cpu", GPU, "example.com/fpga"]) == {
        "cpu": 600,
        GPU: 1,
        "example.com/fpga": 0,
    }


def test_an_init_container_counts_only_while_it_runs_alone() -> None:
    small_init = template(c("worker", requests={"cpu": "1"}), init=[c("i", requests={"cpu": "2"})])
    big_init = template(c("worker", requests={"cpu": "1"}), init=[c("i", requests={"cpu": "3"})])

    assert pod_requests(small_init, ["cpu"]) == {"cpu": 2000}  # max(1, 2)
    assert pod_requests(big_init, ["cpu"]) == {"cpu": 3000}


def test_sidecars_run_beside_the_workers_and_beside_later_init_containers() -> None:
    pod = template(
        c("worker", requests={"cpu": "1"}),
        init=[
            c("first", requests={"cpu": "500m"}),  # alone: 500m
            c("mesh", requests={"cpu": "250m"}, restartPolicy="Always"),
            c("warmup", requests={"cpu": "1500m"}),  # beside mesh: 1750m
        ],
    )

    # max(worker + mesh = 1250m, first 500m, warmup + mesh 1750m)
    assert pod_requests(pod, ["cpu"]) == {"cpu": 1750}


def test_the_same_rule_reads_a_pod_and_its_template() -> None:
    pod = {
        "metadata": {"name": "w-a1"},
        "spec": template(c("worker", requests={"cpu": "500m", "memory": "1Gi"}))["spec"],
    }

    assert pod_requests(pod, ["cpu"]) == {"cpu": 500}
    assert requested_resources(pod) == ["cpu"]  # memory is counted apart
