"""s3:// input and output against a real S3 server (SeaweedFS's weed on loopback): the whole
worker process as a pod runs it, credentials from files as the mounted Secret gives them.

Covers: input and output, multipart uploads over the threshold, progress of both transfers,
retries of transient errors inside the attempt, and the errors a user must be able to act on
(missing bucket, missing key, refused credentials, a queue without storage), none of which
may show the credentials.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.worker.harness import WorkerRun, ffprobe, read_events, run_worker, stream
from videoqueue.api.progress import DEFAULT_PROGRESS_STREAM, ProgressKind
from videoqueue.api.storage import (
    ENV_S3_ADDRESSING_STYLE,
    ENV_S3_CREDENTIALS_DIR,
    ENV_S3_ENDPOINT,
    ENV_S3_MULTIPART_THRESHOLD_BYTES,
    ENV_S3_REGION,
)
from videoqueue.envtest.s3_server import Credentials, S3Server
from videoqueue.envtest.worker import job_payload, make_media

MIB = 1 << 20
THRESHOLD = 5 * MIB


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"media-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(name)
    return name


@pytest.fixture(scope="module")
def big_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Over the 5 MiB multipart threshold as it is, so a stream-copy clip of it is too."""
    path = make_media(tmp_path_factory.mktemp("big") / "big.mp4", seconds=8, size="1920x1080")
    assert path.stat().st_size > 2 * THRESHOLD, path.stat().st_size
    return path


def storage_env(
    s3: S3Server,
    secret_dir: Path,
    credentials: Credentials | None = None,
    *,
    endpoint: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The env the operator gives a worker of a queue with spec.storage.s3, and the Secret's
    files where the kubelet would mount them."""
    (credentials or s3.admin).write_secret_dir(secret_dir)
    return {
        ENV_S3_ENDPOINT: endpoint or s3.endpoint,
        ENV_S3_REGION: "us-east-1",
        ENV_S3_ADDRESSING_STYLE: "path",
        ENV_S3_CREDENTIALS_DIR: str(secret_dir),
        **(extra or {}),
    }


def assert_no_secrets(run: WorkerRun, *credentials: Credentials) -> None:
    for keys in credentials:
        assert keys.secret_access_key not in run.message
        assert keys.secret_access_key not in run.log


def put(s3: S3Server, bucket: str, key: str, path: Path) -> None:
    s3.client().upload_file(str(path), bucket, key)


def get(s3: S3Server, bucket: str, key: str, dest: Path) -> Path:
    s3.client().download_file(bucket, key, str(dest))
    return dest


def test_s3_input_and_output(s3: S3Server, bucket: str, media: Path, tmp_path: Path) -> None:
    put(s3, bucket, "in/clip.mp4", media)
    payload = job_payload(
        "transcode",
        f"s3://{bucket}/in/clip.mp4",
        f"s3://{bucket}/out/",
        {"preset": "h264-480p"},
        name="s3-job",
    )

    run = run_worker(payload, tmp_path, storage_env(s3, tmp_path / "secret"))

    assert run.code == 0, run.log
    assert run.result["output"] == f"s3://{bucket}/out/s3-job.mp4"
    out = get(s3, bucket, "out/s3-job.mp4", tmp_path / "out.mp4")
    assert stream(ffprobe(out), "video")["height"] == 480
    assert run.result["size"] == out.stat().st_size
    assert list((tmp_path / "work").iterdir()) == []
    assert_no_secrets(run, s3.admin)


def test_multipart_upload_over_the_threshold(
    s3: S3Server, bucket: str, big_media: Path, tmp_path: Path
) -> None:
    payload = job_payload(
        "clip", f"file://{big_media}", f"s3://{bucket}/clips/whole.mp4", {"start": 0, "end": 8}
    )
    env = storage_env(
        s3, tmp_path / "secret", extra={ENV_S3_MULTIPART_THRESHOLD_BYTES: str(THRESHOLD)}
    )

    run = run_worker(payload, tmp_path, env)

    assert run.code == 0, run.log
    head = s3.client().head_object(Bucket=bucket, Key="clips/whole.mp4")
    size = head["ContentLength"]
    assert size > 2 * THRESHOLD
    # A multipart object's ETag is the digest of its parts' digests, then '-' and their count.
    parts = -(-size // THRESHOLD)
    assert head["ETag"].strip('"').endswith(f"-{parts}"), head["ETag"]
    assert ffprobe(get(s3, bucket, "clips/whole.mp4", tmp_path / "whole.mp4"))["format"]
    uploads = s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []  # completed, nothing left half-done


def test_a_small_output_is_one_put(s3: S3Server, bucket: str, media: Path, tmp_path: Path) -> None:
    """The contrast to the multipart case: below the threshold the ETag is a plain digest."""
    payload = job_payload("probe", f"file://{media}", f"s3://{bucket}/probe.json")

    run = run_worker(payload, tmp_path, storage_env(s3, tmp_path / "secret"))

    assert run.code == 0, run.log
    head = s3.client().head_object(Bucket=bucket, Key="probe.json")
    assert "-" not in head["ETag"]
    report = json.loads(get(s3, bucket, "probe.json", tmp_path / "probe.json").read_text())
    assert report["format"]["duration"]


def test_progress_of_download_and_upload(
    s3: S3Server, bucket: str, big_media: Path, tmp_path: Path, redis_url: str
) -> None:
    put(s3, bucket, "big.mp4", big_media)
    payload = job_payload(
        "clip", f"s3://{bucket}/big.mp4", f"s3://{bucket}/copy.mp4", {"start": 0, "end": 8}
    )
    env = storage_env(
        s3,
        tmp_path / "secret",
        extra={
            "VIDEOQUEUE_REDIS_URL": redis_url,
            ENV_S3_MULTIPART_THRESHOLD_BYTES: str(THRESHOLD),
        },
    )

    run = run_worker(payload, tmp_path, env)

    assert run.code == 0, run.log
    events = read_events(redis.Redis.from_url(redis_url), DEFAULT_PROGRESS_STREAM)
    stages = [e.stage for e in events if e.kind == ProgressKind.STAGE]
    assert stages == ["downloading", "processing", "uploading"]
    values = [
        e.progress for e in events if e.kind == ProgressKind.PROGRESS and e.progress is not None
    ]
    assert values == sorted(values), f"progress went backwards: {values}"
    # The download owns 0..10 and the upload 90..100: both report within their share.
    download = [v for v in values if 0 < v <= 10]
    upload = [v for v in values if 90 < v <= 100]
    assert len(download) >= 2, values
    assert len(upload) >= 2, values
    assert events[-1].kind == ProgressKind.DONE


@pytest.mark.parametrize("direction", ["input", "output"])
def test_missing_bucket_is_the_jobs_mistake(
    s3: S3Server, media: Path, tmp_path: Path, direction: str
) -> None:
    missing = f"nobucket-{uuid.uuid4().hex[:8]}"
    if direction == "input":
        payload = job_payload("probe", f"s3://{missing}/in.mp4")
    else:
        payload = job_payload("probe", f"file://{media}", f"s3://{missing}/probe.json")

    run = run_worker(payload, tmp_path, storage_env(s3, tmp_path / "secret"))

    assert run.code == 2, run.log  # invalid: retrying cannot help
    assert f"spec.{direction}.url" in run.message
    assert f"bucket {missing} does not exist" in run.message
    assert list((tmp_path / "work").iterdir()) == []


def test_missing_key_fails_the_attempt(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    run = run_worker(
        job_payload("probe", f"s3://{bucket}/nothing/here.mp4"),
        tmp_path,
        storage_env(s3, tmp_path / "secret"),
    )

    assert run.code == 1, run.log  # the producer may still write it: retried
    assert f"no object with key nothing/here.mp4 in bucket {bucket}" in run.message


@pytest.mark.parametrize(
    ("keys", "code"),
    [
        pytest.param("wrong-secret", "SignatureDoesNotMatch", id="wrong-secret"),
        pytest.param("unknown-key", "InvalidAccessKeyId", id="unknown-key-id"),
    ],
)
def test_refused_credentials_name_bucket_and_key_not_the_secret(
    s3: S3Server, bucket: str, media: Path, tmp_path: Path, keys: str, code: str
) -> None:
    put(s3, bucket, "in.mp4", media)
    wrong = Credentials(
        access_key_id=s3.admin.access_key_id if keys == "wrong-secret" else "VQUNKNOWNKEY000",
        secret_access_key="not-" + s3.admin.secret_access_key[4:],
    )

    run = run_worker(
        job_payload("probe", f"s3://{bucket}/in.mp4"),
        tmp_path,
        storage_env(s3, tmp_path / "secret", wrong),
    )

    assert run.code == 1, run.log
    assert f"access denied to bucket {bucket}, key in.mp4 ({code}" in run.message
    assert "spec.storage.s3.secretRef" in run.message
    assert_no_secrets(run, wrong, s3.admin)


def test_read_only_credentials_cannot_write(
    s3: S3Server, bucket: str, media: Path, tmp_path: Path
) -> None:
    put(s3, bucket, "in.mp4", media)
    payload = job_payload("probe", f"s3://{bucket}/in.mp4", f"s3://{bucket}/out/p.json")

    run = run_worker(payload, tmp_path, storage_env(s3, tmp_path / "secret", s3.reader))

    assert run.code == 1, run.log
    assert run.message.count("access denied") == 1
    assert f"uploading to s3://{bucket}/out/p.json" in run.message
    assert_no_secrets(run, s3.reader)


def test_s3_url_in_a_queue_without_storage(bucket: str, tmp_path: Path) -> None:
    run = run_worker(job_payload("probe", f"s3://{bucket}/in.mp4"), tmp_path)

    assert run.code == 2
    assert "spec.input.url" in run.message
    assert "spec.storage.s3" in run.message


def test_secret_without_a_key(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    env = storage_env(s3, tmp_path / "secret")
    (tmp_path / "secret" / "secretAccessKey").unlink()

    run = run_worker(job_payload("probe", f"s3://{bucket}/in.mp4"), tmp_path, env)

    assert run.code == 2
    assert "has no key secretAccessKey" in run.message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("s3://UPPER/in.mp4", "is not an S3 bucket name", id="bucket-name"),
        pytest.param("s3://media", "needs a key after the bucket", id="no-key"),
        pytest.param("s3://media/dir/", "names a prefix", id="prefix-as-input"),
    ],
)
def test_malformed_s3_input(s3: S3Server, tmp_path: Path, url: str, expected: str) -> None:
    run = run_worker(job_payload("probe", url), tmp_path, storage_env(s3, tmp_path / "secret"))

    assert run.code == 2, run.log
    assert "spec.input.url" in run.message
    assert expected in run.message


def test_input_over_the_size_limit_is_refused_before_downloading(
    s3: S3Server, bucket: str, media: Path, tmp_path: Path
) -> None:
    put(s3, bucket, "in.mp4", media)
    env = storage_env(s3, tmp_path / "secret", extra={"VIDEOQUEUE_MAX_INPUT_BYTES": "1000"})

    run = run_worker(job_payload("probe", f"s3://{bucket}/in.mp4"), tmp_path, env)

    assert run.code == 1
    assert f"input s3://{bucket}/in.mp4 is {media.stat().st_size} bytes" in run.message
    assert list((tmp_path / "work").iterdir()) == []


# --- Transient errors: a proxy in front of the server that answers 503 SlowDown first ------


class _FlakyProxy(http.server.BaseHTTPRequestHandler):
    """Forwards every request to the S3 server, except that the first `failures` requests
    get 503 SlowDown (S3's "reduce your request rate"), as a busy store answers."""

    upstream: tuple[str, int]
    failures: int
    seen: list[str]
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            self.seen.append(f"{self.command} {self.path}")
            fail = len(self.seen) <= self.failures
        if fail:
            error = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            # The Host header stays the proxy's: it is what the client signed.
            connection.request(self.command, self.path, body, dict(self.headers))
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _handle  # noqa: N815 - http.server names

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def flaky_proxy(s3: S3Server) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type(
        "Handler",
        (_FlakyProxy,),
        {"upstream": (s3.host, s3.port), "failures": 2, "seen": seen},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_transient_errors_are_retried_inside_the_attempt(
    s3: S3Server, bucket: str, media: Path, tmp_path: Path, flaky_proxy: tuple[str, list[str]]
) -> None:
    endpoint, seen = flaky_proxy
    put(s3, bucket, "in.mp4", media)
    env = storage_env(s3, tmp_path / "secret", endpoint=endpoint)

    run = run_worker(job_payload("probe", f"s3://{bucket}/in.mp4"), tmp_path, env)

    assert run.code == 0, run.log
    # The first request was answered 503 twice and then went through: one attempt, no retry
    # by the queue.
    assert seen[:3] == [seen[0]] * 3, seen
    assert run.result["duration"] > 0


def test_hls_package_to_an_s3_prefix(
    s3: S3Server, bucket: str, media: Path, tmp_path: Path
) -> None:
    """An hls job's package lands under an S3 prefix: playlists and segments with the content
    types players expect, the master playlist naming renditions that are all there, and
    what an earlier run left under a rendition's prefix is gone."""
    s3.client().put_object(Bucket=bucket, Key="pkg/240p/seg_09999.ts", Body=b"stale")
    s3.client().put_object(Bucket=bucket, Key="pkg/notes.txt", Body=b"not ours")
    params = {"renditions": [{"height": 240, "videoBitrate": "300k"}], "segmentSeconds": 1}
    payload = job_payload("hls", f"file://{media}", f"s3://{bucket}/pkg/", params, name="ladder")

    run = run_worker(payload, tmp_path, storage_env(s3, tmp_path / "secret"))

    assert run.code == 0, run.log
    assert run.result["output"] == f"s3://{bucket}/pkg/master.m3u8"
    client = s3.client()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "pkg/240p/seg_09999.ts" not in keys  # stale segment of an earlier run
    assert "pkg/notes.txt" in keys  # not the package's: left alone
    master = client.get_object(Bucket=bucket, Key="pkg/master.m3u8")
    assert master["ContentType"] == "application/vnd.apple.mpegurl"
    named = [line for line in master["Body"].read().decode().splitlines() if line.endswith(".m3u8")]
    assert named == ["240p/index.m3u8"]
    playlist = client.get_object(Bucket=bucket, Key="pkg/240p/index.m3u8")["Body"].read().decode()
    segments = [line for line in playlist.splitlines() if line.endswith(".ts")]
    assert segments
    assert {f"pkg/240p/{s}" for s in segments} <= keys
    first = get(s3, bucket, f"pkg/240p/{segments[0]}", tmp_path / "first.ts")
    assert stream(ffprobe(first), "video")["height"] == 240
    head = client.head_object(Bucket=bucket, Key=f"pkg/240p/{segments[0]}")
    assert head["ContentType"] == "video/mp2t"
    assert (
        run.result["size"]
        == sum(
            o["Size"] for o in client.list_objects_v2(Bucket=bucket, Prefix="pkg/240p/")["Contents"]
        )
        + master["ContentLength"]
    )
    assert list((tmp_path / "work").iterdir()) == []
    assert_no_secrets(run, s3.admin)
