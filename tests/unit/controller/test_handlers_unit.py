"""What the kopf glue keeps of watched objects (cheap per-event work for scale)."""

from __future__ import annotations

from typing import Any, cast

import kopf

from videoqueue.controller.entries import slim
from videoqueue.controller.handlers import NoDiffBase
from videoqueue.envtest.builders import MakeJob


def job_body() -> dict[str, Any]:
    job = MakeJob("a", "ns", queue="q").resource_version("7").status(phase="Pending")
    # The API server's record of field owners: large, unread, and what slim() drops.
    managed = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    return job.set("metadata.managedFields", managed).obj()


def test_slim_drops_managed_fields_and_keeps_everything_else() -> None:
    raw = job_body()
    body = slim(raw)
    assert "managedFields" not in body["metadata"]
    assert body["metadata"] == {"name": "a", "namespace": "ns", "resourceVersion": "7"}
    assert body["spec"] == raw["spec"]
    assert body["status"] == raw["status"]
    assert "managedFields" in raw["metadata"]  # the event's own object is left alone


def test_slim_of_an_object_without_managed_fields_is_equal() -> None:
    raw = job_body()
    del raw["metadata"]["managedFields"]
    assert slim(raw) == raw


def test_no_diff_base_builds_and_stores_nothing() -> None:
    storage = NoDiffBase()
    body = kopf.Body(cast(kopf.RawBody, job_body()))
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=kopf.BodyEssence({"spec": {}}))
    assert not patch
