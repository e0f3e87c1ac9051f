"""spec.input.fromJob on the real control plane: the apply-time rules (CRD schema and CEL,
client- and server-side apply), the example pipeline on KWOK handing the transcode's output to
the jobs after it, and the outputs that cannot be an input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.objects import (
    condition,
    create,
    get_job,
    make_job,
    make_queue,
    timestamp,
    wait_job,
)
from videoqueue.envtest import ClusterBase, poll
from videoqueue.envtest.builders import MakeJob
from videoqueue.envtest.kwok import MESSAGE
from videoqueue.scheduling.worker_pod import ENV_JOB, worker_pod_name

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRANSCODED = "s3://media/out/upload-4711/upload-4711-720p.mp4"


def kubectl_apply(
    cluster: ClusterBase, namespace: str, body: dict[str, Any], *, server_side: bool
) -> subprocess.CompletedProcess[str]:
    args = ["apply", "-n", namespace, "-f", "-"]
    if server_side:
        args.insert(1, "--server-side")
    return cluster.kubectl(*args, input=json.dumps(body), check=False)


@pytest.mark.parametrize("server_side", [False, True], ids=["client-side", "server-side"])
@pytest.mark.parametrize(
    ("spec", "words"),
    [
        pytest.param(
            {"input": {"url": "/media/in.mp4", "fromJob": "encode"}, "dependsOn": ["encode"]},
            "spec.input needs exactly one of url",
            id="url-and-from-job",
        ),
        pytest.param({"input": {}}, "spec.input needs exactly one of url", id="neither"),
        pytest.param(
            {"input": {"fromJob": "encode"}},
            "spec.input.fromJob must also be listed in spec.dependsOn",
            id="from-job-without-depends-on",
        ),
        pytest.param(
            {"input": {"fromJob": "encode"}, "dependsOn": ["probe"]},
            "spec.input.fromJob must also be listed in spec.dependsOn",
            id="from-job-not-in-depends-on",
        ),
        pytest.param(
            {"input": {"url": "/media/in.mp4", "outputIndex": 1}},
            "spec.input.outputIndex picks one of the outputs of spec.input.fromJob",
            id="output-index-without-from-job",
        ),
        pytest.param(
            {"input": {"fromJob": "Encode!"}, "dependsOn": ["encode"]},
            "spec.input.fromJob",
            id="from-job-not-a-name",
        ),
    ],
)
def test_input_rules_at_apply_time(
    cluster: ClusterBase,
    crds: None,
    namespace: str,
    spec: dict[str, Any],
    words: str,
    server_side: bool,
) -> None:
    job = MakeJob("thumbs").type("thumbnail").spec(**spec).obj()

    result = kubectl_apply(cluster, namespace, job, server_side=server_side)

    assert result.returncode != 0
    assert words in result.stderr


@pytest.mark.parametrize("server_side", [False, True], ids=["client-side", "server-side"])
def test_a_job_reading_a_dependency_output_is_accepted_as_written(
    cluster: ClusterBase, crds: None, namespace: str, server_side: bool
) -> None:
    job = MakeJob("thumbs").type("thumbnail").from_job("encode", 2).obj()
    # Proves the command can fail: the same job without the dependency is refused.
    refused = MakeJob("thumbs").type("thumbnail").spec(input={"fromJob": "encode"}).obj()
    assert kubectl_apply(cluster, namespace, refused, server_side=server_side).returncode != 0

    result = kubectl_apply(cluster, namespace, job, server_side=server_side)

    assert result.returncode == 0, result.stderr
    stored = json.loads(
        cluster.kubectl("get", "-n", namespace, "vj", "thumbs", "-o", "json").stdout
    )
    assert stored["spec"]["input"] == {"fromJob": "encode", "outputIndex": 2}  # no url default


def worker_payload(core: Any, namespace: str, job: str) -> dict[str, Any]:
    """The job as its first attempt's worker pod is handed it (env VIDEOQUEUE_JOB)."""
    name = worker_pod_name(job, 1)

    def read() -> dict[str, Any] | None:
        pods = core.list_namespaced_pod(namespace, field_selector=f"metadata.name={name}")
        if not pods.items:
            return None
        (worker,) = pods.items[0].spec.containers
        env = {e.name: e.value for e in worker.env or []}
        payload: dict[str, Any] = json.loads(env[ENV_JOB])
        return payload

    found: dict[str, Any] = poll(read, timeout=60, what=f"the worker pod {name}")
    return found


def test_example_pipeline_hands_the_transcode_output_on(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    secret, queue_doc, *jobs = yaml.safe_load_all((EXAMPLES / "pipeline.yaml").read_text())
    core.create_namespaced_secret(namespace, secret)
    storage = queue_doc["spec"]["storage"]
    queue = make_queue(queue_doc["metadata"]["name"], concurrency=3, run_for="2s")
    create(custom, namespace, "videoqueues", queue | {"spec": queue["spec"] | {"storage": storage}})
    transcode, thumb, audio = jobs
    # The KWOK worker of the transcode reports the URL a real one would have written.
    annotations = transcode["metadata"].setdefault("annotations", {})
    annotations[MESSAGE] = json.dumps({"type": "transcode", "output": TRANSCODED})
    # Created in reverse, so that only dependencies, not creation order, can explain the order.
    for job in reversed(jobs):
        create(custom, namespace, "videojobs", job)
    names = [job["metadata"]["name"] for job in jobs]

    done = {name: wait_job(custom, namespace, name, "Complete") for name in names}

    first = done[names[0]]
    for after in (done[names[1]], done[names[2]]):
        assert after["status"]["resolvedInput"]["url"] == TRANSCODED
        assert after["status"]["resolvedInput"]["fromJob"] == names[0]
        admitted = timestamp(after["status"]["admittedTime"])
        assert admitted >= timestamp(first["status"]["completionTime"])
        payload = worker_payload(core, namespace, after["metadata"]["name"])
        assert payload["spec"]["input"] == {"url": TRANSCODED}
    assert "resolvedInput" not in first["status"]
    assert worker_payload(core, namespace, names[0])["spec"]["input"] == transcode["spec"]["input"]
    # No intermediate URL written twice: the later jobs name the transcode only.
    assert "url" not in thumb["spec"]["input"]
    assert "url" not in audio["spec"]["input"]


def events_for(core: Any, namespace: str, name: str) -> list[Any]:
    return [
        e for e in core.list_namespaced_event(namespace).items if e.involved_object.name == name
    ]


def rejected_events(core: Any, namespace: str, name: str) -> list[Any]:
    def found() -> list[Any] | None:
        events = [e for e in events_for(core, namespace, name) if e.reason == "Rejected"]
        return events or None

    events: list[Any] = poll(found, timeout=30, what=f"the Rejected Event of {name}")
    return events


def test_outputs_that_cannot_be_an_input_reject_the_job(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(concurrency=4))
    # A probe without spec.output writes nothing; the other writes to S3, which this queue
    # (no spec.storage.s3) cannot read; the third writes two frames, one is asked for.
    outcomes = {
        "probe": {"type": "probe", "duration": 12.5},
        "to-s3": {"type": "transcode", "output": "s3://media/out/a.mp4"},
        "frames": {"type": "thumbnail", "outputs": ["/media/f-1.jpg", "/media/f-2.jpg"]},
    }
    for name, result in outcomes.items():
        create(
            custom,
            namespace,
            "videojobs",
            make_job(name, annotations={MESSAGE: json.dumps(result)}),
        )
    readers = {
        "after-probe": ("probe", None),
        "after-s3": ("to-s3", None),
        "frame-9": ("frames", 9),
        "frame-1": ("frames", 1),
    }
    for name, (source, index) in readers.items():
        create(custom, namespace, "videojobs", MakeJob(name).from_job(source, index).obj())

    expected = {
        "after-probe": ("InputNotResolved", "dependency probe succeeded without an output URL"),
        "after-s3": ("StorageNotConfigured", "the output of spec.input.fromJob (to-s3)"),
        "frame-9": ("InputNotResolved", "outputIndex is 9 but dependency frames wrote 2"),
    }
    for name, (reason, words) in expected.items():
        rejected = wait_job(custom, namespace, name, "Rejected")
        found = condition(rejected, "Rejected")
        assert found is not None
        assert (found["reason"], words in found["message"]) == (reason, True), found
        assert rejected["status"]["phase"] == "Rejected"
        assert rejected["status"].get("attempt", 0) == 0  # it never ran
        warnings = rejected_events(core, namespace, name)
        assert words in warnings[0].message
    # The one that could read its input ran with it.
    ran = wait_job(custom, namespace, "frame-1", "Complete")
    assert ran["status"]["resolvedInput"]["url"] == "/media/f-2.jpg"
    assert get_job(custom, namespace, "frames")["status"]["phase"] == "Succeeded"
