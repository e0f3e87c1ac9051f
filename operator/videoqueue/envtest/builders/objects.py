"""What the builders share: the times and values unit tests assume, small helpers, and the
base of the VideoQueue and VideoJob builders (metadata, raw spec fields)."""

from __future__ import annotations

import copy
import datetime
from typing import Any, Self

from videoqueue.api import API_VERSION

GiB = 1024**3

# When unit tests' objects were created and their pods ran, unless a test says otherwise.
T0 = datetime.datetime(2026, 1, 1, 10, 0, tzinfo=datetime.UTC)
POD_STARTED = "2026-01-01T10:00:00Z"
POD_FINISHED = "2026-01-01T10:02:30Z"

WORKER: dict[str, Any] = {"name": "worker", "image": "videoqueue/worker:test"}
EVICTION_MESSAGE = "The node was low on resource: memory. Threshold quantity: 100Mi."

Time = datetime.datetime | str


def iso(at: Time) -> str:
    return at if isinstance(at, str) else at.isoformat()


def at(seconds: float) -> datetime.datetime:
    """`seconds` after T0."""
    return T0 + datetime.timedelta(seconds=seconds)


def condition(type_: str, status: str, reason: str, at: Time = T0) -> dict[str, Any]:
    """A condition as stored in a status."""
    return {"type": type_, "status": status, "reason": reason, "lastTransitionTime": iso(at)}


def container(name: str, memory: str | None = None, **fields: Any) -> dict[str, Any]:
    """A template container named and imaged `name`; `memory` is its limit (a sidecar needs
    one: the whole pod counts against the queue's budget)."""
    body: dict[str, Any] = {"name": name, "image": name}
    if memory is not None:
        body["resources"] = {"limits": {"memory": memory}}
    return body | fields


def present(**fields: Any) -> dict[str, Any]:
    """`fields` without the ones that are None (left out: the API's or the queue's default)."""
    return {k: v for k, v in fields.items() if v is not None}


def backoff_fields(
    initial_seconds: int | None, factor: float | None, max_seconds: int | None
) -> dict[str, Any]:
    """A `backoff` body (queue or job) of the fields given."""
    return present(initialSeconds=initial_seconds, factor=factor, maxSeconds=max_seconds)


class Made:
    """What every builder holds: the object it builds, reached by `set` and copied by `obj`."""

    _obj: dict[str, Any]

    @property
    def name(self) -> str:
        name: str = self._obj["metadata"]["name"]
        return name

    def set(self, path: str, value: Any) -> Self:
        """Set the field at the dotted `path` (e.g. "spec.memory.max"), creating its parents:
        for fields without a method, and for values the API server should refuse."""
        *parents, leaf = path.split(".")
        node = self._obj
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
        return self

    # Metadata the API server fills in: unit tests set it, integration tests leave it out.
    def uid(self, uid: str) -> Self:
        return self.set("metadata.uid", uid)

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)


class MakeObject(Made):
    """What VideoQueue and VideoJob builders share: metadata, raw spec fields and status."""

    def __init__(self, kind: str, name: str, namespace: str | None) -> None:
        metadata: dict[str, Any] = {"name": name}
        if namespace is not None:
            metadata["namespace"] = namespace
        self._obj = {
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": metadata,
            "spec": {},
        }

    @property
    def _spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self._obj["spec"]
        return spec

    def spec(self, **fields: Any) -> Self:
        """Raw spec fields, camelCase as in a manifest; each replaces the field it names."""
        self._spec.update(copy.deepcopy(fields))
        return self

    # More metadata the API server fills in.
    def generation(self, generation: int) -> Self:
        return self.set("metadata.generation", generation)

    def resource_version(self, version: str) -> Self:
        return self.set("metadata.resourceVersion", version)

    def created(self, at: Time) -> Self:
        return self.set("metadata.creationTimestamp", iso(at))

    def labels(self, **labels: str) -> Self:
        return self.set("metadata.labels", labels)

    def annotations(self, **annotations: str) -> Self:
        return self.set("metadata.annotations", annotations)

    def finalizers(self, *names: str) -> Self:
        return self.set("metadata.finalizers", list(names))

    def deleted(self, at: Time = T0) -> Self:
        """Being deleted (a deletionTimestamp), held back by its finalizers."""
        return self.set("metadata.deletionTimestamp", iso(at))
