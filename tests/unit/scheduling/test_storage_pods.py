"""A queue's spec.storage.s3 in its worker pods: the env the worker reads, the Secret as a
read-only volume of the worker container only, and no credentials anywhere in the pod."""

from __future__ import annotations

from typing import Any

import pytest

from videoqueue.api import VideoJob
from videoqueue.api.storage import (
    ENV_S3_ADDRESSING_STYLE,
    ENV_S3_CREDENTIALS_DIR,
    ENV_S3_ENDPOINT,
    ENV_S3_REGION,
    S3_CREDENTIALS_MOUNT,
    is_s3_url,
)
from videoqueue.envtest.builders import WORKER, MakeJob, MakePod, MakeQueue, container
from videoqueue.scheduling.storage import S3_CREDENTIALS_VOLUME, storage_refusal

NAMESPACE = "media"
S3_ENV = (ENV_S3_ENDPOINT, ENV_S3_REGION, ENV_S3_ADDRESSING_STYLE, ENV_S3_CREDENTIALS_DIR)


def s3_queue(**fields: Any) -> MakeQueue:
    queue = MakeQueue("work", NAMESPACE).uid("queue-uid").template(WORKER)
    return queue.s3_storage("media-s3", **fields)


def s3_job() -> MakeJob:
    job = MakeJob("clip", NAMESPACE).uid("uid-clip").generation(1).input("s3://media/in.mp4")
    return job.output("s3://media/out/").params(codec="h264")


def build(queue: MakeQueue, job: MakeJob | None = None) -> dict[str, Any]:
    return MakePod(job or s3_job(), queue, attempt=1, memory=2**30).obj()


def worker_of(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "worker")


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_storage_settings_reach_the_worker_as_env() -> None:
    pod = build(s3_queue(endpoint="http://seaweedfs.storage:8333/", region="eu-west-3"))

    env = env_of(worker_of(pod))
    assert env[ENV_S3_ENDPOINT] == "http://seaweedfs.storage:8333"  # trailing '/' dropped
    assert env[ENV_S3_REGION] == "eu-west-3"
    assert env[ENV_S3_ADDRESSING_STYLE] == "path"
    assert env[ENV_S3_CREDENTIALS_DIR] == S3_CREDENTIALS_MOUNT


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {}, {ENV_S3_REGION: "us-east-1", ENV_S3_ADDRESSING_STYLE: "path"}, id="defaults"
        ),
        pytest.param(
            {"addressingStyle": "Virtual"}, {ENV_S3_ADDRESSING_STYLE: "virtual"}, id="virtual"
        ),
    ],
)  # fmt: skip
def test_defaults_and_addressing_style(fields: dict[str, Any], expected: dict[str, str]) -> None:
    env = env_of(worker_of(build(s3_queue(**fields))))

    assert expected.items() <= env.items()
    assert ENV_S3_ENDPOINT not in env  # unset: AWS S3 of the region


def test_secret_is_a_read_only_volume_of_the_worker_only() -> None:
    queue = s3_queue(endpoint="http://s3:8333").sidecar("64Mi")
    pod = build(queue)

    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[S3_CREDENTIALS_VOLUME]["secret"] == {"secretName": "media-s3", "optional": False}
    mounts = worker_of(pod)["volumeMounts"]
    assert {"name": S3_CREDENTIALS_VOLUME, "mountPath": S3_CREDENTIALS_MOUNT, "readOnly": True} in (
        mounts
    )
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] != "worker")
    assert not sidecar.get("volumeMounts")


def test_template_volumes_and_mounts_are_kept_and_a_clash_replaced() -> None:
    worker = container(
        "worker",
        volumeMounts=[
            {"name": "media", "mountPath": "/media"},
            {"name": "stale", "mountPath": S3_CREDENTIALS_MOUNT},
        ],
    )
    queue = s3_queue().template(
        worker,
        volumes=[
            {"name": "media", "emptyDir": {}},
            {"name": S3_CREDENTIALS_VOLUME, "emptyDir": {}},
        ],
    )
    pod = build(queue)

    volumes = pod["spec"]["volumes"]
    assert [v["name"] for v in volumes] == ["media", S3_CREDENTIALS_VOLUME]
    assert volumes[1]["secret"]["secretName"] == "media-s3"
    assert [m["name"] for m in worker_of(pod)["volumeMounts"]] == ["media", S3_CREDENTIALS_VOLUME]


def test_a_queue_without_storage_adds_nothing() -> None:
    queue = MakeQueue("work", NAMESPACE).uid("queue-uid").template(WORKER)
    job = MakeJob("clip", NAMESPACE).uid("uid-clip").generation(1).params(codec="h264")
    pod = build(queue, job.output("file:///media/out/"))

    assert not set(S3_ENV) & env_of(worker_of(pod)).keys()
    assert "volumes" not in pod["spec"]
    assert "volumeMounts" not in worker_of(pod)


def test_no_credentials_in_the_pod() -> None:
    """The pod names the Secret; the keys are only in the Secret (the kubelet mounts it)."""
    pod = build(s3_queue(endpoint="http://s3:8333"))

    text = repr(pod)
    assert "accessKeyId" not in text
    assert "secretAccessKey" not in text
    s3_env = [e for e in worker_of(pod)["env"] if e["name"].startswith("VIDEOQUEUE_S3")]
    assert s3_env
    assert all("valueFrom" not in e for e in s3_env)


@pytest.mark.parametrize(
    ("input_url", "output_url", "refused_fields"),
    [
        pytest.param("s3://media/in.mp4", None, "spec.input.url is an s3:// URL", id="input"),
        pytest.param("/media/in.mp4", "S3://media/out/", "spec.output.url is", id="any-case"),
        pytest.param(
            "s3://media/in.mp4", "s3://media/out/",
            "spec.input.url and spec.output.url are s3:// URLs", id="both",
        ),
        pytest.param("https://cdn.example/in.mp4", "/media/out/", None, id="none"),
    ],
)  # fmt: skip
def test_storage_refusal_names_the_fields(
    input_url: str, output_url: str | None, refused_fields: str | None
) -> None:
    job = MakeJob("clip", NAMESPACE).input(input_url)
    if output_url is not None:
        job = job.output(output_url)
    spec = VideoJob.model_validate(job.obj()).spec

    refusal = storage_refusal(spec, None, "work")

    if refused_fields is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert refused_fields in refusal
        assert "queue work has no spec.storage.s3" in refusal
        with_storage = s3_queue().model().spec.storage
        assert storage_refusal(spec, with_storage, "work") is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [("s3://b/k", True), ("S3://b/k", True), ("s3:/b/k", False), ("https://s3.example/b", False)],
)
def test_is_s3_url(url: str, expected: bool) -> None:
    assert is_s3_url(url) is expected
