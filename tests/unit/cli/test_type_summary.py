"""`kubectl videoqueue stats QUEUE` per job type: the settings in force (spec.types over the
queue's) and the usage, reserved memory counted per type's worker pod as the operator does."""

from __future__ import annotations

import argparse
import io
from typing import Any, cast

from videoqueue.cli.queues import cmd_stats
from videoqueue.cli.type_summary import type_summaries
from videoqueue.envtest.builders import WORKER, MakeJob, MakeQueue, container

GPU = {
    "spec": {
        "containers": [
            {"name": "worker", "image": "worker:gpu", "resources": {"requests": {"cpu": "4"}}},
            container("gpu-exporter", "256Mi"),
        ],
        "nodeSelector": {"accelerator": "nvidia"},
    }
}


def media_queue() -> MakeQueue:
    return (
        MakeQueue("work", "media")
        .default_request("1Gi")
        .deadline(3600)
        .retry(3)
        .template(WORKER)
        .job_type("transcode", template=GPU, default_request="2Gi", deadline=600, max_attempts=2)
        .job_type("probe", default_request="64Mi")
    )


def jobs() -> list[MakeJob]:
    return [
        MakeJob("t1", "media").type("transcode").running(memory="2Gi"),
        MakeJob("t2", "media").type("transcode").admitted(memory="3Gi"),
        MakeJob("t3", "media").type("transcode").pending(),
        MakeJob("p1", "media").type("probe").running(memory="64Mi"),
        MakeJob("p2", "media").type("probe").finished("Succeeded"),
        MakeJob("c1", "media").type("clip").pending(phase="Backoff"),
        MakeJob("other", "media", queue="elsewhere").type("transcode").running(),
    ]


def test_each_type_shows_its_settings_and_usage() -> None:
    summaries = type_summaries(media_queue().model(), [j.model() for j in jobs()])

    rows = [
        (
            s["type"],
            s["declared"],
            s["image"],
            s["cpu"],
            s["defaultMemory"],
            s["activeDeadlineSeconds"],
            s["maxAttempts"],
            s["running"],
            s["pending"],
            s["reserved"],
        )
        for s in summaries
    ]
    assert rows == [
        # two busy transcodes, each with its 256Mi exporter: 2Gi + 3Gi + 2 x 256Mi
        ("transcode", True, "worker:gpu", "4", "2Gi", 600, 2, 2, 1, "5632Mi"),
        ("probe", True, None, None, "64Mi", 3600, 3, 1, 0, "64Mi"),
        ("clip", False, None, None, "1Gi", 3600, 3, 0, 1, "0"),
    ]
    assert all(s["templateError"] is None for s in summaries)


def test_a_type_whose_template_cannot_be_merged_says_so() -> None:
    queue = media_queue().job_type("thumbnail", template={"spec": {"containers": [{}]}})

    (thumbnail,) = [s for s in type_summaries(queue.model(), []) if s["type"] == "thumbnail"]

    assert (
        "spec.types.thumbnail.template.spec.containers[0] has no name"
        in (thumbnail["templateError"])
    )


class Objects:
    """Stands in for the cluster: the queue and the jobs."""

    namespace = "media"

    def __init__(self, queue: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        self.queue, self.jobs = queue, jobs

    def get(self, resource: Any, name: str) -> dict[str, Any]:
        return self.queue

    def list(self, resource: Any, **_: Any) -> list[dict[str, Any]]:
        return self.jobs


def test_stats_of_a_queue_prints_the_types_table() -> None:
    cluster = Objects(media_queue().obj(), [j.obj() for j in jobs()])
    out = io.StringIO()

    code = cmd_stats(argparse.Namespace(queue="work", output="table"), cast(Any, cluster), out)

    assert code == 0
    lines = out.getvalue().splitlines()
    start = lines.index("Types (settings: the job's own win, then the type's, then the queue's):")
    table = [line.split() for line in lines[start + 1 : start + 5]]
    assert table == [
        [
            "TYPE",
            "IMAGE",
            "CPU",
            "MEMORY",
            "DEADLINE",
            "ATTEMPTS",
            "RUNNING",
            "PENDING",
            "RESERVED",
        ],
        ["transcode", "worker:gpu", "4", "2Gi", "10m", "2", "2", "1", "5632Mi"],
        ["probe", "-", "-", "64Mi", "1h", "3", "1", "0", "64Mi"],
        ["clip", "(queue)", "-", "-", "1Gi", "1h", "3", "0", "1", "0"],
    ]
