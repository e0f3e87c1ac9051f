"""The pure parts of the operator's API client (`videoqueue.controller.kube`): the types of
the objects and patches it sends, `Resource` (where objects live) and the resources the
operator uses, what `create` returns, the client's settings and retry arithmetic, and the
Events it posts. No I/O.
"""

from __future__ import annotations

import contextlib
import email.utils
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

from videoqueue.api.common import GROUP, VERSION

Obj = dict[str, Any]
ObjList = list[Obj]
PatchBody = Mapping[str, Any] | Sequence[Mapping[str, Any]]
PatchType = Literal["merge", "json", "strategic"]
EventType = Literal["Normal", "Warning"]
PropagationPolicy = Literal["Background", "Foreground", "Orphan"]

PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}
# Overload and transient failures of the API server or a proxy in front of it.
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})

EVENT_MESSAGE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Resource:
    """An API resource: where its objects live on the API server."""

    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The URL path of the collection (no name) or of one object or its subresource.

        A namespaced resource without a namespace is the all-namespaces collection.
        """
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None:
            if not self.namespaced:
                raise ValueError(f"{self.plural} are cluster-scoped; got namespace {namespace!r}")
            root += f"/namespaces/{quote(namespace, safe='')}"
        elif self.namespaced and name is not None:
            raise ValueError(f"{self.plural} are namespaced; a name needs a namespace")
        path = f"{root}/{self.plural}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
        if subresource is not None:
            if name is None:
                raise ValueError("a subresource needs an object name")
            path += f"/{subresource}"
        return path


PODS = Resource("", "v1", "pods")
EVENTS = Resource("", "v1", "events")
SECRETS = Resource("", "v1", "secrets")  # only the ones queues name for signing (get)
VIDEOJOBS = Resource(GROUP, VERSION, "videojobs")
VIDEOQUEUES = Resource(GROUP, VERSION, "videoqueues")
LEASES = Resource("coordination.k8s.io", "v1", "leases")


class CreateResult(NamedTuple):
    """What `KubeClient.create` returns; unpacks as `obj, created = await kube.create(...)`."""

    obj: Obj
    created: bool  # False: the object already existed (409 AlreadyExists) and was read back


@dataclass(frozen=True, slots=True)
class ClientSettings:
    # Sized for parallel pod creates and status patches; HTTP/1.1 needs one connection per
    # request in flight.
    connection_limit: int = 64
    # Writes get most of the pool but never all of it, so reads (GETs after a 409, LISTs)
    # are not starved by a burst of writes.
    write_concurrency: int = 48
    request_timeout: float = 30.0
    connect_timeout: float = 5.0
    max_attempts: int = 6
    backoff_base: float = 0.2
    backoff_cap: float = 5.0
    retry_after_cap: float = 30.0
    # None: "videoqueue-operator/<version>". Replicas add their identity, so the API server's
    # audit log tells their writes apart.
    user_agent: str | None = None


# -- pure helpers ---------------------------------------------------------------------------


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with "equal jitter": half fixed so a retry never comes back
    at once, half random so clients that failed together do not retry together."""
    ceiling = min(cap, base * 2.0**attempt)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def status_class(status: int | None) -> str:
    """The counter label of a response: "2xx".."5xx", or "error" when none arrived."""
    return "error" if status is None else f"{status // 100}xx"


def resource_label(resource: Resource, subresource: str | None) -> str:
    """The counter label of a request's resource: the plural, with any subresource."""
    return f"{resource.plural}/{subresource}" if subresource else resource.plural


def truncate_utf8(text: str, limit: int) -> str:
    """Cut `text` to at most `limit` bytes of UTF-8 (so also `limit` characters) without
    splitting a character; the API server measures Event messages in bytes."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", errors="ignore") + "..."


def build_event(
    involved: Mapping[str, Any],
    *,
    type_: EventType,
    reason: str,
    message: str,
    component: str,
    instance: str,
    now: datetime,
    suffix: str,
) -> Obj:
    """A core/v1 Event about `involved`, in its namespace ("default" for cluster objects).

    The name is fixed here (object name + `suffix`) rather than left to generateName, so a
    retried POST cannot record the same Event twice.
    """
    meta = involved.get("metadata") or {}
    name = str(meta.get("name", ""))
    namespace = meta.get("namespace") or "default"
    suffix = f".{suffix}"
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    reference = {
        "apiVersion": involved.get("apiVersion"),
        "kind": involved.get("kind"),
        "name": name,
        "namespace": meta.get("namespace"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name[: 253 - len(suffix)] + suffix, "namespace": namespace},
        "involvedObject": {k: v for k, v in reference.items() if v is not None},
        "type": type_,
        "reason": reason,
        "message": truncate_utf8(message, EVENT_MESSAGE_LIMIT),
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
