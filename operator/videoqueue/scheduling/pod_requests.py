"""What a pod requests of each resource, as Kubernetes computes a pod's effective request
(the figure kube-scheduler fits into a node and a queue's `spec.budgets` counts):

    max(sum of the regular containers and of the sidecar init containers,
        for each other init container: its own + the sidecar init containers started before it)

(sidecar init containers have `restartPolicy: Always`; see `videoqueue.scheduling.memory` for
memory, which admission counts from limits the same way). A container's request for a
resource is its `resources.requests`, else its `resources.limits` (the API server defaults a
request to the limit when only the limit is set), else 0.

Units: CPU in millicores, every other resource in whole units (bytes for byte-sized ones),
rounded up (`videoqueue.api.resource_units`). A value that is not a quantity counts 0: the
API server refuses such a pod, so nothing of it is ever at stake.

Pure: works on a pod template (a queue's `spec.template`) or a pod alike, both of which have
the pod spec under `spec`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from videoqueue.api import resource_units

__all__ = ["container_request", "pod_requests", "requested_resources"]


def container_request(container: Mapping[str, Any], resource: str) -> int:
    """`container`'s request for `resource`: its request, else its limit, else 0."""
    resources: Mapping[str, Any] = container.get("resources") or {}
    for kind in ("requests", "limits"):
        value = (resources.get(kind) or {}).get(resource)
        if value is not None:
            try:
                return max(0, resource_units(resource, value))
            except (TypeError, ValueError):
                return 0
    return 0


def _containers(template: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    spec: Mapping[str, Any] = template.get("spec") or {}
    return list(spec.get("containers") or []), list(spec.get("initContainers") or [])


def pod_requests(template: Mapping[str, Any], resources: Iterable[str]) -> dict[str, int]:
    """The effective request of the pods built from `template` for each of `resources`
    (see the module docstring), in the operator's units."""
    containers, init_containers = _containers(template)
    result: dict[str, int] = {}
    for resource in resources:
        running = sum(container_request(c, resource) for c in containers)
        init_peak = 0
        started = 0  # sidecar init containers started so far; they keep running
        for container in init_containers:
            request = container_request(container, resource)
            if container.get("restartPolicy") == "Always":
                started += request
            else:
                init_peak = max(init_peak, started + request)
        result[resource] = max(running + started, init_peak)
    return result


def requested_resources(template: Mapping[str, Any]) -> list[str]:
    """Every resource some container of `template` requests or limits, memory aside (the
    queue counts memory separately), sorted."""
    containers, init_containers = _containers(template)
    names: set[str] = set()
    for container in (*containers, *init_containers):
        resources: Mapping[str, Any] = container.get("resources") or {}
        for kind in ("requests", "limits"):
            names.update(resources.get(kind) or {})
    names.discard("memory")
    return sorted(names)
