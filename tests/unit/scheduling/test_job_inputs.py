"""A job's input taken from a dependency's output (spec.input.fromJob): resolved once its
dependencies have succeeded, recorded in status.resolvedInput, handed to every attempt's worker
as spec.input.url; the job is rejected (InputNotResolved) when the output cannot be its input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from videoqueue.api import JobPhase, ResolvedInput, VideoJob, find_condition
from videoqueue.envtest.builders import T0, WORKER, MakeJob, MakePod, MakeQueue, at
from videoqueue.scheduling.inputs import SourceJob, Unresolved, resolve_input
from videoqueue.scheduling.jobs import assess_job
from videoqueue.scheduling.worker_pod import ENV_JOB, build_worker_pod

NOW = at(120)
SUCCEEDED = JobPhase.SUCCEEDED
MP4 = "s3://media/work/encode.mp4"


def queue(*, s3: bool = True) -> MakeQueue:
    made = MakeQueue("work", "media").uid("queue-uid").template(WORKER)
    return made.s3_storage("media-s3") if s3 else made


def thumbs(index: int | None = None, type_: str = "thumbnail") -> MakeJob:
    job = MakeJob("thumbs", "media").uid("uid-thumbs").generation(1).created(T0).type(type_)
    return job.from_job("encode", index).output("s3://media/out/thumbs/")


def source(**result: Any) -> SourceJob:
    return SourceJob("encode", found=True, result=result)


@pytest.mark.parametrize(
    ("result", "index", "url"),
    [
        pytest.param({"type": "transcode", "output": MP4}, None, MP4, id="single-output"),
        pytest.param({"output": MP4}, 0, MP4, id="single-output-index-0"),
        pytest.param({"outputs": ["/m/a.jpg"]}, None, "/m/a.jpg", id="series-of-one"),
        pytest.param({"outputs": ["/m/a.jpg", "/m/b.jpg"]}, 1, "/m/b.jpg", id="series-index"),
    ],
)
def test_the_dependency_output_becomes_the_input(
    result: dict[str, Any], index: int | None, url: str
) -> None:
    resolved = resolve_input(thumbs(index).model().spec, source(**result), NOW)

    assert resolved == ResolvedInput(
        from_job="encode", output_index=index, url=url, resolved_time=NOW
    )


@pytest.mark.parametrize(
    ("found", "result", "index", "words"),
    [
        pytest.param(False, None, None, "encode no longer exists", id="deleted"),
        pytest.param(True, {"type": "probe"}, None, "a probe job writes no file", id="probe"),
        pytest.param(True, None, None, "without an output URL", id="no-result"),
        pytest.param(
            True, {"outputs": ["/a", "/b"]}, None, "outputIndex (0 to 1)", id="several-unpicked"
        ),
        pytest.param(True, {"outputs": ["/a"]}, 3, "wrote 1 output (0 to 0)", id="index-past"),
        pytest.param(True, {"output": 7}, None, "not a URL", id="not-a-string"),
        pytest.param(
            True, {"output": "ftp://host/a.mp4"}, None, "not what the stock worker", id="scheme"
        ),
        pytest.param(True, {"output": "/a\nb"}, None, "control characters", id="control-char"),
        pytest.param(True, {"output": "/" + "a" * 5000}, None, "4096 bytes", id="too-long"),
    ],
)
def test_outputs_that_cannot_be_an_input(
    found: bool, result: dict[str, Any] | None, index: int | None, words: str
) -> None:
    spec = thumbs(index).model().spec

    resolved = resolve_input(spec, SourceJob("encode", found=found, result=result), NOW)

    assert isinstance(resolved, Unresolved)
    assert words in resolved.message
    assert "encode" in resolved.message
    assert len(resolved.message) <= 1024  # it becomes status.message


def test_a_custom_type_may_read_any_scheme() -> None:
    spec = thumbs(type_="scene-detect").model().spec

    resolved = resolve_input(spec, source(output="gs://b/a.mp4"), NOW)

    assert isinstance(resolved, ResolvedInput)


def test_a_job_with_an_input_url_resolves_nothing() -> None:
    spec = MakeJob("clip").model().spec

    assert resolve_input(spec, source(output=MP4), NOW) is None


def assess(job: MakeJob, found: bool = True, **result: Any) -> Any:
    return assess_job(
        job.model(),
        [],
        queue().model(),
        NOW,
        dependencies={"encode": SUCCEEDED if found else None},
        source=SourceJob("encode", found=found, result=result),
    )


def test_resolved_when_the_dependencies_succeed_and_the_job_waits_for_admission() -> None:
    assessment = assess(thumbs(), output=MP4)

    assert assessment.status.phase == JobPhase.PENDING
    assert assessment.view is not None
    assert assessment.status.resolved_input == ResolvedInput(
        from_job="encode", url=MP4, resolved_time=NOW
    )


def test_not_resolved_while_a_dependency_runs() -> None:
    job = thumbs().model()

    assessment = assess_job(
        job, [], queue().model(), NOW, dependencies={"encode": JobPhase.RUNNING}, source=None
    )

    assert assessment.status.phase == JobPhase.WAITING
    assert assessment.status.resolved_input is None


def test_an_output_that_cannot_be_read_rejects_the_job_naming_the_dependency() -> None:
    assessment = assess(thumbs(), type="probe")

    status = assessment.status
    assert (status.phase, assessment.terminal) == (JobPhase.REJECTED, True)
    rejected = find_condition(status.conditions, "Rejected")
    assert rejected is not None
    assert (rejected.reason, "encode" in rejected.message) == ("InputNotResolved", True)
    assert [(n.type, n.reason) for n in assessment.notices] == [("Warning", "Rejected")]


def test_an_s3_output_needs_the_queue_storage() -> None:
    job = thumbs().output("/media/out/")

    assessment = assess_job(
        job.model(),
        [],
        queue(s3=False).model(),
        NOW,
        dependencies={"encode": SUCCEEDED},
        source=source(output=MP4),
    )

    rejected = find_condition(assessment.status.conditions, "Rejected")
    assert rejected is not None
    assert rejected.reason == "StorageNotConfigured"
    assert "the output of spec.input.fromJob (encode) is an s3:// URL" in rejected.message


def test_once_resolved_the_input_stays_although_the_dependency_is_gone() -> None:
    first = assess(thumbs(), output=MP4)
    job = thumbs().status(first.status)

    again = assess_job(job.model(), [], queue().model(), at(600), dependencies={}, source=None)

    assert again.status.resolved_input == first.status.resolved_input
    assert again.status.phase == JobPhase.PENDING


def payload(pod: dict[str, Any]) -> dict[str, Any]:
    (worker,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    value: dict[str, Any] = json.loads(env[ENV_JOB])
    return value


def test_the_worker_reads_the_resolved_url_as_its_input() -> None:
    resolved = assess(thumbs(1), outputs=["/m/a.jpg", MP4]).status
    job = thumbs(1).status(resolved)

    pod = MakePod(job, queue(), attempt=1, memory=2**30).obj()

    assert payload(pod)["spec"]["input"] == {"url": MP4}
    # The worker's own model reads it (it knows nothing of fromJob).
    VideoJob.model_validate({"metadata": {"name": "w"}, "spec": payload(pod)["spec"]})


def test_the_admitting_cycle_passes_the_url_it_just_resolved() -> None:
    job = thumbs().model()

    pod = build_worker_pod(
        job.to_dict(), queue().obj(), attempt=1, memory_bytes=2**30, input_url=MP4
    )

    assert payload(pod)["spec"]["input"] == {"url": MP4}


def test_an_unresolved_input_builds_no_pod() -> None:
    with pytest.raises(ValueError, match=r"not resolved yet \(status.resolvedInput\)"):
        build_worker_pod(thumbs().obj(), queue().obj(), attempt=1, memory_bytes=2**30)
