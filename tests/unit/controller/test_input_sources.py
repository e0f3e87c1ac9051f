"""What the index tells a cycle about a job's spec.input.fromJob (`JobFacts.source`): the
dependency's result while the input is unresolved, that it is missing, and nothing once the
input is resolved (the dependency may be gone by then)."""

from __future__ import annotations

from typing import Any

from videoqueue.controller.index import Index
from videoqueue.envtest.builders import MakeJob, MakeQueue
from videoqueue.scheduling.cycle import JobFacts
from videoqueue.scheduling.inputs import SourceJob

NS = "media"
RESULT = {"type": "transcode", "output": "s3://media/out/encode.mp4"}


def body(job: MakeJob, version: str = "10") -> dict[str, Any]:
    return job.uid(f"uid-{job.obj()['metadata']['name']}").resource_version(version).obj()


def facts_of(index: Index, name: str) -> JobFacts:
    entry = index.queues[f"{NS}/work"]
    view = index.view_of(entry, 0.0, limit=100)
    return next(f for f in view.changed if f.key == f"{NS}/{name}")


def index_with(*jobs: MakeJob) -> Index:
    index = Index(clock=lambda: 0.0)
    index.observe_queue(MakeQueue("work", NS).uid("q").resource_version("1").obj(), deleted=False)
    for job in jobs:
        index.observe_job(body(job), deleted=False)
    return index


def test_the_source_result_while_unresolved() -> None:
    encode = MakeJob("encode", NS).finished("Succeeded").status(phase="Succeeded", result=RESULT)
    thumbs = MakeJob("thumbs", NS).from_job("encode")

    facts = facts_of(index_with(encode, thumbs), "thumbs")

    assert facts.source == SourceJob("encode", found=True, result=RESULT)


def test_a_missing_source_is_told_as_missing() -> None:
    facts = facts_of(index_with(MakeJob("thumbs", NS).from_job("encode")), "thumbs")

    assert facts.source == SourceJob("encode", found=False)


def test_nothing_once_resolved_or_for_a_url_input() -> None:
    resolved = {"fromJob": "encode", "url": "s3://media/out/encode.mp4"}
    thumbs = MakeJob("thumbs", NS).from_job("encode").status(resolvedInput=resolved)
    clip = MakeJob("clip", NS)

    assert facts_of(index_with(thumbs), "thumbs").source is None
    assert facts_of(index_with(clip), "clip").source is None
