"""What a newcomer's `make dev` applies does real work: the inputs it generates, the queue of
examples/dev/ and its jobs (as `python -m videoqueue.envtest.dev` prepares them), on the
real node; every output is where the README says, and ffprobe reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.objects import create, wait_job
from tests.worker.harness import ffprobe, stream
from videoqueue.envtest.dev import SAMPLE_INPUTS, load, make_samples, real_node_queue
from videoqueue.envtest.images import ImportedImage
from videoqueue.envtest.operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dev"


def test_make_dev_samples_produce_real_files(
    operator: OperatorProcess,
    worker_image: ImportedImage,
    custom: Any,
    namespace: str,
    media: Path,
) -> None:
    inputs = make_samples(media)
    assert [p.name for p in inputs] == list(SAMPLE_INPUTS)
    (queue,) = load(EXAMPLES / "queue.yaml")
    create(custom, namespace, "videoqueues", real_node_queue(queue, media, worker_image.tag))
    jobs = load(EXAMPLES / "jobs.yaml")
    for job in jobs:
        create(custom, namespace, "videojobs", job)

    done = {}
    for job in jobs:
        name = job["metadata"]["name"]
        outcome = "Rejected" if name == "too-big" else "Complete"
        done[name] = wait_job(custom, namespace, name, outcome, timeout=300)

    out = media / "out"
    assert stream(ffprobe(out / "news-480p.mp4"), "video")["height"] == 480
    assert stream(ffprobe(out / "news.jpg"), "video")["width"] == 320
    assert stream(ffprobe(out / "news-audio.opus"), "audio")["codec_name"] == "opus"
    assert float(ffprobe(out / "promo-teaser.mp4")["format"]["duration"]) == pytest.approx(
        4.0, abs=0.15
    )
    assert stream(ffprobe(out / "promo-480p.mp4"), "video")["height"] == 480
    assert '"streams"' in (out / "news-probe.json").read_text()
    # The job given too little memory was OOM-killed by the kernel, then had enough.
    reasons = [a["reason"] for a in done["promo-squeezed"]["status"]["attempts"]]
    assert reasons[0] == "OOMKilled"
    assert reasons[-1] == "Completed"
