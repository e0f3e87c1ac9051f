"""s3:// in and out on the real node: a SeaweedFS S3 gateway listening on the pod bridge's host
address only, a queue whose spec.storage.s3 points at it with a Secret, and a worker pod that
downloads, transcodes and uploads with the keys from the mounted Secret; then the example
pipeline (transcode -> thumbnail + audio, spec.input.fromJob) with real ffmpeg on S3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.objects import real_queue, video_job
from tests.integration.objects import create, wait_job
from tests.worker.harness import ffprobe, stream
from videoqueue.envtest.images import ImportedImage
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.s3_server import S3Server
from videoqueue.envtest.worker import make_media

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def s3_on_pod_network(node_ip: str) -> Iterator[S3Server]:
    with S3Server(host=node_ip) as server:
        yield server


def create_s3_secret(core: Any, namespace: str, s3: S3Server, name: str) -> None:
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            string_data={
                "accessKeyId": s3.admin.access_key_id,
                "secretAccessKey": s3.admin.secret_access_key,
            },
        ),
    )


def test_transcode_from_s3_to_s3(
    operator: OperatorProcess,
    worker_image: ImportedImage,
    s3_on_pod_network: S3Server,
    custom: Any,
    core: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    s3 = s3_on_pod_network
    s3.create_bucket("media")
    source = make_media(tmp_path / "in.mp4", seconds=4)
    s3.client().upload_file(str(source), "media", f"{namespace}/in.mp4")
    create_s3_secret(core, namespace, s3, "media-s3")
    storage = {"s3": {"endpoint": s3.endpoint, "secretRef": {"name": "media-s3"}}}
    create(custom, namespace, "videoqueues", real_queue(worker_image.tag, None, storage=storage))
    create(
        custom,
        namespace,
        "videojobs",
        video_job(
            "s3-transcode",
            "transcode",
            f"s3://media/{namespace}/in.mp4",
            output=f"s3://media/{namespace}/out/",
            params={"preset": "h264-480p"},
        ),
    )

    done = wait_job(custom, namespace, "s3-transcode", "Complete", timeout=300)

    key = f"{namespace}/out/s3-transcode.mp4"
    assert done["status"]["result"]["output"] == f"s3://media/{key}"
    out = tmp_path / "out.mp4"
    s3.client().download_file("media", key, str(out))
    assert stream(ffprobe(out), "video")["height"] == 480
    assert s3.admin.secret_access_key not in str(done)


def test_example_pipeline_on_s3(
    operator: OperatorProcess,
    worker_image: ImportedImage,
    s3_on_pod_network: S3Server,
    custom: Any,
    core: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    """examples/pipeline.yaml as it is, but for the store's address and keys, the queue's
    real-node template and a bucket of its own: the thumbnail and the audio read the
    transcode's output through spec.input.fromJob."""
    s3 = s3_on_pod_network
    s3.create_bucket("pipeline")
    prefix = f"s3://pipeline/{namespace}/"
    text = (EXAMPLES / "pipeline.yaml").read_text().replace("s3://media/", prefix)
    secret, queue_doc, *jobs = yaml.safe_load_all(text)
    # An 8 s clip: the example's thumbnail is taken 5 s in.
    source = make_media(tmp_path / "in.mp4", seconds=8)
    in_url = jobs[0]["spec"]["input"]["url"]
    s3.client().upload_file(str(source), "pipeline", in_url.removeprefix("s3://pipeline/"))
    create_s3_secret(core, namespace, s3, secret["metadata"]["name"])
    storage = queue_doc["spec"]["storage"]
    storage["s3"]["endpoint"] = s3.endpoint
    queue = real_queue(worker_image.tag, None, name=queue_doc["metadata"]["name"], storage=storage)
    create(custom, namespace, "videoqueues", queue)
    for job in jobs:
        create(custom, namespace, "videojobs", job)
    transcode, thumb, audio = (job["metadata"]["name"] for job in jobs)

    done = {
        name: wait_job(custom, namespace, name, "Complete", timeout=300)
        for name in (transcode, thumb, audio)
    }

    out = f"{prefix}out/upload-4711/"
    encoded = done[transcode]["status"]["result"]["output"]
    assert encoded == f"{out}{transcode}.mp4"
    for name in (thumb, audio):
        assert done[name]["status"]["resolvedInput"]["url"] == encoded
    assert done[thumb]["status"]["result"]["output"] == f"{out}{thumb}.jpg"
    assert done[audio]["status"]["result"]["output"] == f"{out}{audio}.m4a"
    facts = {}
    for name in (transcode, thumb, audio):
        url = done[name]["status"]["result"]["output"]
        local = tmp_path / url.rpartition("/")[2]
        s3.client().download_file("pipeline", url.removeprefix("s3://pipeline/"), str(local))
        facts[name] = ffprobe(local)
    assert stream(facts[transcode], "video")["height"] == 720
    assert stream(facts[thumb], "video")["codec_name"] == "mjpeg"
    assert [s["codec_type"] for s in facts[audio]["streams"]] == ["audio"]
    assert stream(facts[audio], "audio")["codec_name"] == "aac"
    assert 7 < float(facts[audio]["format"]["duration"]) < 9
    assert s3.admin.secret_access_key not in json.dumps(done)
