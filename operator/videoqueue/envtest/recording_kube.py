"""An in-process stand-in for the API server's write verbs, for driving the controller's
cycles without a cluster (unit tests of the loop, `benchmarks/pending_cycles.py`): writes are
answered as the API server would (the object back with a new resourceVersion) and counted.
Behaviour against a real API server is what tests/integration covers."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from videoqueue.controller.kube_helpers import Resource


class RecordingKube:
    """Answers writes like an API server would (the object back, a new resourceVersion)."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects
        self.calls: Counter[str] = Counter()
        self.version = 1000

    async def patch(
        self, resource: Resource, namespace: str, name: str, patch: Any, subresource: str = ""
    ) -> dict[str, Any] | None:
        self.calls[f"patch {resource.plural}/{subresource}"] += 1
        body = self.objects.get(f"{namespace}/{name}")
        if body is None:
            return None
        updated = copy.deepcopy(body)
        for key, value in patch.get("status", {}).items():
            updated.setdefault("status", {})[key] = value
        self.version += 1
        updated["metadata"]["resourceVersion"] = str(self.version)
        self.objects[f"{namespace}/{name}"] = updated
        return updated

    async def create(self, resource: Resource, namespace: str, body: Any) -> tuple[Any, bool]:
        self.calls[f"create {resource.plural}"] += 1
        created = copy.deepcopy(body)
        created["metadata"].setdefault("namespace", namespace)
        created["metadata"]["uid"] = f"uid-{created['metadata']['name']}"
        created["metadata"]["resourceVersion"] = "1"
        return created, True

    async def post_event(self, involved: Any, **_: Any) -> None:
        self.calls["event"] += 1

    async def get(self, *_: Any) -> None:
        return None
