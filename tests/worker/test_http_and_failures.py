"""HTTP input and output against a local server, and every way a job can be wrong: a clear
message naming the field, a non-zero exit, and no temporary files left behind."""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.worker.harness import ffprobe, run_worker, start_worker, stream
from videoqueue.envtest.wait import poll
from videoqueue.envtest.worker import WORKER_PYTHONPATH, job_payload


class _Handler(http.server.SimpleHTTPRequestHandler):
    """GET serves files from `directory`; PUT stores the body under `uploads`; /redirect-*
    answers with a redirect to the rest of the path."""

    uploads: dict[str, bytes]

    def do_GET(self) -> None:
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect/"))
            self.end_headers()
            return
        super().do_GET()

    def do_PUT(self) -> None:
        if self.path.startswith("/forbidden"):
            self.send_error(403, "Forbidden")
            return
        length = int(self.headers["Content-Length"])
        self.uploads[self.path] = self.rfile.read(length)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server(media: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    uploads: dict[str, bytes] = {}
    handler = functools.partial(_Handler, directory=str(media.parent))
    _Handler.uploads = uploads
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", uploads
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_input_and_put_output(
    media: Path, tmp_path: Path, http_server: tuple[str, dict[str, bytes]]
) -> None:
    base, uploads = http_server
    payload = job_payload(
        "transcode",
        f"{base}/{media.name}",
        f"{base}/results/out.mp4?X-Signature=secret",
        {"preset": "h264-480p"},
    )
    run = run_worker(payload, tmp_path)
    assert run.code == 0, run.log
    assert list(uploads) == ["/results/out.mp4?X-Signature=secret"]
    uploaded = tmp_path / "uploaded.mp4"
    uploaded.write_bytes(uploads["/results/out.mp4?X-Signature=secret"])
    assert stream(ffprobe(uploaded), "video")["height"] == 480
    # Presigned credentials never reach the job's status.
    assert run.result["output"] == f"{base}/results/out.mp4"
    assert "secret" not in run.message
    assert run.result["size"] == uploaded.stat().st_size
    assert list((tmp_path / "work").iterdir()) == []


def test_download_over_the_size_limit_fails(
    media: Path, tmp_path: Path, http_server: tuple[str, dict[str, bytes]]
) -> None:
    base, uploads = http_server
    payload = job_payload(
        "transcode", f"{base}/{media.name}", f"{base}/o.mp4", {"preset": "h264-480p"}
    )
    run = run_worker(payload, tmp_path, {"VIDEOQUEUE_MAX_INPUT_BYTES": "1000"})
    assert run.code == 1
    assert "over the limit of 1000" in run.message
    assert "VIDEOQUEUE_MAX_INPUT_BYTES" in run.message
    assert uploads == {}
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize(
    ("path", "code", "expected"),
    [
        pytest.param("/missing.mp4", 1, "HTTP 404", id="not-found"),
        pytest.param(
            "/redirect/file:///etc/passwd",
            2,
            "spec.input.url: redirected to file:///etc/passwd, which is not http(s)",
            id="redirect-to-file",
        ),
    ],
)
def test_http_input_failures(
    tmp_path: Path,
    http_server: tuple[str, dict[str, bytes]],
    path: str,
    code: int,
    expected: str,
) -> None:
    base, _ = http_server
    run = run_worker(job_payload("probe", base + path), tmp_path)
    assert run.code == code
    assert expected in run.message
    assert list((tmp_path / "work").iterdir()) == []


def test_rejected_upload_fails_clearly(
    media: Path, tmp_path: Path, http_server: tuple[str, dict[str, bytes]]
) -> None:
    base, _ = http_server
    run = run_worker(
        job_payload("audio", f"file://{media}", f"{base}/forbidden/a.m4a?sig=x"), tmp_path
    )
    assert run.code == 1
    assert run.message == f"uploading to {base}/forbidden/a.m4a: HTTP 403 Forbidden"


@pytest.mark.parametrize(
    ("job_type", "output", "params", "field", "words"),
    [
        pytest.param(
            "transcode", "o.mp4", {"preset": "h264-4k"}, "spec.params.preset", "h264-720p",
            id="unknown-preset",
        ),
        pytest.param(
            "transcode", "o.mp4", {"videoCodec": "h264", "crf": 55}, "spec.params",
            "crf 55 is out of range for h264 (0..51)", id="crf-range-per-codec",
        ),
        pytest.param(
            "transcode", "o.mp4", {"videoCodec": "h264", "width": 333}, "spec.params",
            "width must be even", id="odd-width",
        ),
        pytest.param(
            "transcode", "o.mp4", {"videoCodec": "h264", "container": "webm"}, "spec.params",
            "container webm cannot hold h264 video", id="codec-container-mismatch",
        ),
        pytest.param(
            "transcode", "o.mp4", {"videoCodec": "mpeg2"}, "spec.params.videoCodec",
            "'h264', 'h265', 'vp9' or 'av1'", id="codec-not-offered",
        ),
        pytest.param(
            "transcode", "o.mp4", {"preset": "h264-480p", "bitrate": "1M"},
            "spec.params.bitrate", "unknown parameter", id="typo",
        ),
        pytest.param(
            "transcode", None, {"preset": "h264-480p"}, "spec.output.url",
            "set spec.output.url", id="no-output",
        ),
        pytest.param(
            "clip", "c.mp4", {"start": 5, "end": 2}, "spec.params",
            "end (2.0) must be after start (5.0)", id="clip-backwards",
        ),
        pytest.param(
            "clip", "c.mp4", {"start": 30, "duration": 2}, "spec.params.start",
            "past the end of the input", id="clip-past-end",
        ),
        pytest.param(
            "thumbnail", "t.jpg", {"count": 4}, "spec.output.url",
            "end the URL with '/'", id="series-needs-directory",
        ),
        pytest.param(
            "thumbnail", "t.jpg", {"at": 99}, "spec.params.at",
            "past the end of the input", id="thumbnail-past-end",
        ),
        pytest.param(
            "audio", "a.m4a", {"codec": "opus", "sampleRate": 44100}, "spec.params",
            "opus takes sampleRate", id="opus-rate",
        ),
        pytest.param(
            "stabilize", "o.mp4", {}, "spec.type", "custom image", id="unknown-type",
        ),
    ],
)  # fmt: skip
def test_bad_input_fails_with_the_field_and_the_fix(
    media: Path,
    tmp_path: Path,
    job_type: str,
    output: str | None,
    params: dict[str, Any],
    field: str,
    words: str,
) -> None:
    out = None if output is None else f"file://{tmp_path}/out/{output}"
    run = run_worker(job_payload(job_type, f"file://{media}", out, params), tmp_path)
    assert run.code == 2, run.log
    assert run.message.startswith(f"{field}: "), run.message
    assert words in run.message
    assert not (tmp_path / "out").exists()
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        pytest.param(
            "s3://bucket/in.mp4", "s3:// URLs need the queue's spec.storage.s3", id="s3-no-storage"
        ),
        pytest.param("gs://bucket/in.mp4", "scheme 'gs' is not supported", id="gs"),
        pytest.param("ftp://host/in.mp4", "scheme 'ftp' is not supported", id="ftp"),
        pytest.param("in.mp4", "scheme '(none)' is not supported", id="relative-path"),
        pytest.param("file://server/in.mp4", "not host 'server'", id="file-with-host"),
    ],
)
def test_only_allowed_url_schemes(tmp_path: Path, url: str, words: str) -> None:
    run = run_worker(job_payload("probe", url), tmp_path)
    assert run.code == 2
    assert run.message.startswith("spec.input.url: ")
    assert words in run.message


def test_input_that_is_not_media(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    run = run_worker(job_payload("probe", f"file://{junk}"), tmp_path)
    assert run.code == 1
    assert run.message.startswith("the input is not media ffprobe can read")


def test_audio_of_a_silent_video(silent_media: Path, tmp_path: Path) -> None:
    run = run_worker(
        job_payload("audio", f"file://{silent_media}", f"file://{tmp_path}/a/"), tmp_path
    )
    assert run.code == 2
    assert run.message == "spec.input.url: the input has no audio stream to extract"


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        pytest.param("", "VIDEOQUEUE_JOB: is not set", id="unset"),
        pytest.param("{not json", "VIDEOQUEUE_JOB: Invalid JSON", id="not-json"),
        pytest.param(
            json.dumps({"apiVersion": "v", "kind": "VideoJob", "name": "x"}),
            "VIDEOQUEUE_JOB: Field required at namespace",
            id="missing-fields",
        ),
    ],
)
def test_bad_payload(tmp_path: Path, payload: str, words: str) -> None:
    run = run_worker(payload, tmp_path)
    assert run.code == 2
    assert run.message.startswith(words), run.message


def test_sigterm_stops_ffmpeg_and_cleans_up(media: Path, tmp_path: Path) -> None:
    # A long lavfi-sized job over HTTP would need a server; a slow AV1 encode of a file is
    # enough to catch the worker mid-work.
    out = tmp_path / "out"
    payload = job_payload(
        "transcode", f"file://{media}", f"file://{out}/", {"videoCodec": "av1", "speed": "slow"}
    )
    worker = start_worker(payload, tmp_path)
    try:
        poll(lambda: list(out.glob(".*.partial")), timeout=60, what="ffmpeg to start writing")
        worker.send_signal(signal.SIGTERM)
        log, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 143, log
    assert (tmp_path / "termination-log").read_text() == (
        "stopped by SIGTERM before the work was done"
    )
    assert list(out.iterdir()) == []
    assert list((tmp_path / "work").iterdir()) == []
    ffmpeg_left = subprocess.run(
        ["pgrep", "-f", str(out)], capture_output=True, text=True, check=False
    ).stdout
    assert ffmpeg_left == ""


def test_worker_imports_only_the_wire_contract() -> None:
    code = (
        "import sys, videoqueue_worker.runner, videoqueue_worker.reporter;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes')"
        " or m.startswith('videoqueue.controller')];"
        "print(','.join(bad))"
    )
    env = os.environ | {"PYTHONPATH": WORKER_PYTHONPATH}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""
