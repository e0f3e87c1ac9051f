"""A queue's spec.storage.s3 on a real control plane: its worker pods get the settings as env
and the credentials Secret as a read-only volume (never its keys), and a job with s3:// URLs
in a queue without storage is Rejected with a condition and Event that say what to set."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from kubernetes import client

from tests.integration.objects import condition, create, make_job, make_queue, wait_job
from videoqueue.api.storage import (
    ENV_S3_ADDRESSING_STYLE,
    ENV_S3_CREDENTIALS_DIR,
    ENV_S3_ENDPOINT,
    ENV_S3_REGION,
    S3_CREDENTIALS_MOUNT,
)
from videoqueue.envtest import poll
from videoqueue.scheduling.storage import S3_CREDENTIALS_VOLUME

pytestmark = pytest.mark.integration

SECRET_KEY = "not-shown-anywhere-0123456789"


def s3_job(name: str) -> dict[str, Any]:
    job = make_job(name)
    job["spec"]["input"] = {"url": "s3://media/in/clip.mp4"}
    job["spec"]["output"] = {"url": "s3://media/out/"}
    return job


def worker_pods(core: Any, namespace: str, job: str) -> list[Any]:
    pods: list[Any] = core.list_namespaced_pod(
        namespace, label_selector=f"videoqueue.dev/job={job}"
    ).items
    return pods


def test_queue_with_s3_storage_gives_its_workers_env_and_the_secret(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="media-s3"),
            string_data={"accessKeyId": "VQTESTKEY", "secretAccessKey": SECRET_KEY},
        ),
    )
    storage = {
        "s3": {
            "endpoint": "http://seaweedfs.storage:8333",
            "region": "eu-west-3",
            "secretRef": {"name": "media-s3"},
        }
    }
    create(custom, namespace, "videoqueues", make_queue(storage=storage))
    create(custom, namespace, "videojobs", s3_job("s3-job"))

    pods = poll(lambda: worker_pods(core, namespace, "s3-job"), timeout=60, what="a worker pod")
    pod = pods[0]
    worker = next(c for c in pod.spec.containers if c.name == "worker")
    env = {e.name: e.value for e in worker.env}
    assert env[ENV_S3_ENDPOINT] == "http://seaweedfs.storage:8333"
    assert env[ENV_S3_REGION] == "eu-west-3"
    assert env[ENV_S3_ADDRESSING_STYLE] == "path"
    assert env[ENV_S3_CREDENTIALS_DIR] == S3_CREDENTIALS_MOUNT
    volume = next(v for v in pod.spec.volumes if v.name == S3_CREDENTIALS_VOLUME)
    assert volume.secret.secret_name == "media-s3"
    mount = next(m for m in worker.volume_mounts if m.name == S3_CREDENTIALS_VOLUME)
    assert mount.mount_path == S3_CREDENTIALS_MOUNT
    assert mount.read_only is True
    # The pod as stored names the Secret; its keys are nowhere in it.
    assert SECRET_KEY not in str(core.api_client.sanitize_for_serialization(pod))

    done = wait_job(custom, namespace, "s3-job", "Complete")
    assert SECRET_KEY not in str(done)


def test_s3_job_in_a_queue_without_storage_is_rejected(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    create(custom, namespace, "videojobs", s3_job("s3-job"))
    # A file:// job in the same queue runs: the queue itself is fine.
    create(custom, namespace, "videojobs", make_job("local-job"))

    job = wait_job(custom, namespace, "s3-job", "Rejected")
    rejected = condition(job, "Rejected")
    assert rejected is not None
    assert rejected["reason"] == "StorageNotConfigured"
    assert "spec.input.url and spec.output.url are s3:// URLs" in rejected["message"]
    assert "queue work has no spec.storage.s3" in rejected["message"]
    assert job["status"]["phase"] == "Rejected"
    events = poll(
        lambda: [
            e
            for e in core.list_namespaced_event(namespace).items
            if e.involved_object.name == "s3-job" and e.reason == "Rejected"
        ],
        timeout=30,
        what="a Rejected Event on the job",
    )
    assert "spec.storage.s3" in events[0].message

    wait_job(custom, namespace, "local-job", "Complete")
    assert worker_pods(core, namespace, "s3-job") == []  # only the other job ran
