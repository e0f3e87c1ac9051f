"""Which watched objects belong to this process's shard (`--shard INDEX/COUNT`).

A simulation of sharding for measurement (docs/sharding.md), not high availability: each
process is told its shard, holds no Lease per shard and takes over nothing. It watches and
lists everything as a single operator does, and drops at the door (before the index) every
object of a queue it does not own, so it never schedules, counts or writes for it.

The owner of a queue ("namespace/name", `videoqueue.scheduling.sharding`) owns its jobs
(metadata.namespace + spec.queueName) and their worker pods (metadata.namespace + the
`videoqueue.dev/queue` label). The label holds the queue's name itself: a label value may
be shortened for names over 63 characters (`worker_pod.label_value`), but spec.queueName is
at most 63 characters of a DNS subdomain, so every queue that has pods has its exact name
there. A pod without the label (someone removed it) is kept by every shard: in a shard that
does not own its job it waits in the index for a job that never comes and is never acted
on, while the owner still sees it (a pod may be the only record of an admission).

Known limit of the simulation: a job's spec.dependsOn may name a job of another queue in
the namespace; when that queue belongs to another shard, the dependency looks missing here
and the job waits. Real sharding would keep the other shards' jobs' phases, read-only.
"""

from __future__ import annotations

from typing import Any

from videoqueue.scheduling.sharding import Shard, queue_key
from videoqueue.scheduling.worker_pod import LABEL_QUEUE


class ShardFilter:
    """Decides from a watch body (as kopf delivers it) whether this shard keeps the object."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard

    def wants(self, kind: str, body: dict[str, Any]) -> bool:
        """For `kind` "queue", "job" or "pod"; anything else (nodes) every shard keeps."""
        if kind == "queue":
            return self.wants_queue(body)
        if kind == "job":
            return self.wants_job(body)
        if kind == "pod":
            return self.wants_pod(body)
        return True

    def wants_queue(self, body: dict[str, Any]) -> bool:
        meta = body.get("metadata") or {}
        return self.shard.owns(queue_key(meta.get("namespace", ""), meta.get("name", "")))

    def wants_job(self, body: dict[str, Any]) -> bool:
        namespace = (body.get("metadata") or {}).get("namespace", "")
        queue = (body.get("spec") or {}).get("queueName") or ""
        return self.shard.owns(queue_key(namespace, queue))

    def wants_pod(self, body: dict[str, Any]) -> bool:
        meta = body.get("metadata") or {}
        queue = (meta.get("labels") or {}).get(LABEL_QUEUE)
        if queue is None:
            return True
        return self.shard.owns(queue_key(meta.get("namespace", ""), queue))

    def __repr__(self) -> str:
        return f"ShardFilter({self.shard})"
