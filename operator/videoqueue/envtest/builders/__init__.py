"""Fluent builders for VideoQueues, VideoJobs and worker pods, for the unit and integration
tests and the benchmarks, in the manner of Kueue's `MakeWorkload("a", "ns").Priority(3).Obj()`:

    queue = MakeQueue("work", "media").concurrency(2).budget("4Gi").template(WORKER)
    job = MakeJob("clip", queue="work").priority(7).memory("2Gi").admitted()
    pod = MakePod(job, queue).running().oom_killed()
    assess_job(job.model(), [pod.outcome()], queue.model(), now)

Defaults are the least the CRDs accept, so `obj()` can be applied to a real API server and
the server's defaults fill in the rest. Methods take the API's units (quantity strings,
seconds) and set one field each; `spec(...)` and `set(...)` reach any field, valid or not.
Methods change the builder and return it, so calls chain or stand as statements; `obj()`
returns a fresh copy, so a builder can be reused and its objects changed freely.

It imports only the API models and the pure scheduling core (whose `build_worker_pod` makes
MakePod's pods), never the tests, the controller or a client: an import-linter contract in
pyproject.toml keeps it so, and the benchmarks, which may not import the tests, use it too.
"""

from videoqueue.envtest.builders.jobs import MakeJob
from videoqueue.envtest.builders.objects import (
    EVICTION_MESSAGE,
    POD_FINISHED,
    POD_STARTED,
    T0,
    WORKER,
    GiB,
    Time,
    at,
    condition,
    container,
    iso,
)
from videoqueue.envtest.builders.pods import MakePod
from videoqueue.envtest.builders.queues import MakeQueue

__all__ = [
    "EVICTION_MESSAGE",
    "POD_FINISHED",
    "POD_STARTED",
    "T0",
    "WORKER",
    "GiB",
    "MakeJob",
    "MakePod",
    "MakeQueue",
    "Time",
    "at",
    "condition",
    "container",
    "iso",
]
