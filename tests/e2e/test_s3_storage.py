"""s3:// in and out on the real node: a SeaweedFS S3 gateway listening on the pod bridge's host
address only, a queue whose spec.storage.s3 points at it with a Secret, and a worker pod that
downloads, transcodes and uploads with the keys from the mounted Secret."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.objects import real_queue, video_job
from tests.integration.objects import create, wait_job
from tests.worker.harness import ffprobe, stream
from videoqueue.envtest.images import ImportedImage
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.s3_server import S3Server
from videoqueue.envtest.worker import make_media

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def s3_on_pod_network(node_ip: str) -> Iterator[S3Server]:
    with S3Server(host=node_ip) as server:
        yield server


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
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="media-s3"),
            string_data={
                "accessKeyId": s3.admin.access_key_id,
                "secretAccessKey": s3.admin.secret_access_key,
            },
        ),
    )
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
