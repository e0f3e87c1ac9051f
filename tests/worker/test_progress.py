"""Progress over a real Redis stream: stages, monotonic progress ending at 100, heartbeats,
and a worker that keeps working while Redis is down."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import redis

from tests.integration.redis_server import RedisServer, TlsFiles
from tests.worker.harness import frequent_progress, read_events, run_worker, start_worker
from videoqueue.api.progress import (
    DEFAULT_PROGRESS_STREAM,
    ProgressEvent,
    ProgressKind,
    parse_event,
)
from videoqueue.envtest.operator_process import free_port
from videoqueue.envtest.pki import create_pki
from videoqueue.envtest.wait import poll
from videoqueue.envtest.worker import job_payload, make_media, redis_server


def _events(
    url: str, stream: str = DEFAULT_PROGRESS_STREAM, password: str | None = None
) -> list[ProgressEvent]:
    client = redis.Redis.from_url(url, password=password)
    try:
        return read_events(client, stream)
    finally:
        client.close()


@pytest.fixture(scope="module")
def long_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Long enough at 640x360 that ffmpeg reports progress several times.
    return make_media(tmp_path_factory.mktemp("long") / "long.mp4", seconds=12, size="640x360")


def test_event_round_trip_through_stream_fields() -> None:
    event = ProgressEvent(
        namespace="ns",
        job="j",
        uid="u-1",
        attempt=2,
        kind=ProgressKind.PROGRESS,
        stage="processing",
        progress=42,
        ts=1700000000.25,
    )
    fields = event.to_fields()
    assert fields["kind"] == "progress"
    assert "message" not in fields  # unset fields are left out, not written empty
    as_redis_returns: dict[bytes | str, bytes | str] = {
        k.encode(): v.encode() for k, v in fields.items()
    }
    assert ProgressEvent.from_fields(as_redis_returns) == event
    assert parse_event({b"kind": b"progress"}) is None  # not an event: skipped, not raised


def test_progress_is_published_monotonic_and_ends_at_100(
    long_media: Path, tmp_path: Path, redis_url: str
) -> None:
    payload = job_payload(
        "transcode",
        f"file://{long_media}",
        f"file://{tmp_path}/out.mp4",
        {"videoCodec": "h264", "speed": "medium", "audioCodec": "aac"},
        name="progress-job",
        namespace="media",
        uid="uid-77",
        attempt=3,
    )
    env = {"VIDEOQUEUE_REDIS_URL": redis_url, **frequent_progress(tmp_path)}
    run = run_worker(payload, tmp_path, env)
    assert run.code == 0, run.log

    events = _events(redis_url)
    assert {(e.namespace, e.job, e.uid, e.attempt) for e in events} == {
        ("media", "progress-job", "uid-77", 3)
    }
    stages = [e.stage for e in events if e.kind == ProgressKind.STAGE]
    assert stages == ["processing", "uploading"]
    progress_events = [e for e in events if e.kind == ProgressKind.PROGRESS]
    values = [e.progress for e in progress_events if e.progress is not None]
    assert len(values) == len(progress_events), f"progress events without a value: {events}"
    assert len(values) >= 3, f"too few progress events to show progress: {values}"
    assert values == sorted(values), f"progress went backwards: {values}"
    assert all(0 <= v <= 100 for v in values)
    assert events[-1].kind == ProgressKind.DONE
    assert events[-1].progress == 100
    timestamps = [e.ts for e in events]
    assert timestamps == sorted(timestamps)


def test_heartbeats_keep_their_beat_and_stream_key_is_configurable(
    long_media: Path, tmp_path: Path, redis_url: str
) -> None:
    payload = job_payload(
        "transcode",
        f"file://{long_media}",
        f"file://{tmp_path}/out.mp4",
        {"videoCodec": "h264", "speed": "medium"},
    )
    env = {
        "VIDEOQUEUE_REDIS_URL": redis_url,
        "VIDEOQUEUE_PROGRESS_STREAM": "custom:progress",
        "VIDEOQUEUE_HEARTBEAT_SECONDS": "0.3",
    }
    run = run_worker(payload, tmp_path, env)
    assert run.code == 0, run.log
    assert _events(redis_url) == []  # nothing on the default key
    events = _events(redis_url, "custom:progress")
    beats = [e.ts for e in events if e.kind == ProgressKind.HEARTBEAT]
    assert len(beats) >= 3, f"{len(beats)} heartbeats in a {run.seconds:.1f}s run"
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert max(gaps) < 1.5, f"heartbeat gaps {gaps}"


def test_worker_finishes_while_redis_is_down(media: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    payload = job_payload(
        "transcode", f"file://{media}", f"file://{tmp_path}/o.mp4", {"preset": "h264-480p"}
    )
    down = run_worker(payload, tmp_path, {"VIDEOQUEUE_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    assert down.code == 0, down.log
    assert down.result["videoCodec"] == "h264"
    assert "cannot publish to Redis" in down.log
    # Errors are rate-limited: one warning, not one per event.
    assert down.log.count("cannot publish to Redis") == 1


def test_publishing_resumes_when_redis_comes_back(long_media: Path, tmp_path: Path) -> None:
    port = free_port()
    payload = job_payload(
        "transcode",
        f"file://{long_media}",
        f"file://{tmp_path}/o.mp4",
        {"videoCodec": "h264", "speed": "medium"},
    )
    env = {
        "VIDEOQUEUE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "VIDEOQUEUE_HEARTBEAT_SECONDS": "0.3",
    }
    worker = start_worker(payload, tmp_path, env)
    try:
        # ffmpeg's partial output shows the work is under way while Redis is still down.
        poll(
            lambda: list(tmp_path.glob(".o.mp4.*.partial")),
            timeout=30,
            what="the worker to start ffmpeg",
        )
        assert worker.poll() is None, "the job finished before Redis came back; make it longer"
        with redis_server(port) as url:
            seen = poll(lambda: _events(url), timeout=30, what="events after Redis came back")
            assert seen[0].kind in (
                ProgressKind.STAGE,
                ProgressKind.PROGRESS,
                ProgressKind.HEARTBEAT,
            )
            worker.wait(120)
            events = _events(url)
        assert worker.returncode == 0
        assert events[-1].kind == ProgressKind.DONE
        assert events[-1].progress == 100
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        assert worker.stdout is not None
        worker.stdout.close()


def test_no_redis_url_means_no_publishing(media: Path, tmp_path: Path) -> None:
    payload = job_payload("probe", f"file://{media}")
    run = run_worker(payload, tmp_path)
    assert run.code == 0
    assert "Redis" not in run.log


def test_password_from_the_environment(media: Path, tmp_path: Path) -> None:
    with redis_server(password="s3cret-from-a-secret") as url:
        env = {"VIDEOQUEUE_REDIS_URL": url, "VIDEOQUEUE_REDIS_PASSWORD": "s3cret-from-a-secret"}
        run = run_worker(job_payload("probe", f"file://{media}"), tmp_path, env)
        events = _events(url, password="s3cret-from-a-secret")
    assert run.code == 0, run.log
    assert [e.kind for e in events] == [
        ProgressKind.STAGE,
        ProgressKind.PROGRESS,
        ProgressKind.DONE,
    ]
    assert "s3cret" not in run.log


def test_tls_with_a_private_ca(media: Path, tmp_path: Path) -> None:
    pki = create_pki(tmp_path / "pki")  # a CA and a serving certificate for 127.0.0.1
    tls = TlsFiles(cert=pki.apiserver.cert, key=pki.apiserver.key, ca=pki.ca.cert)
    payload = job_payload("probe", f"file://{media}")
    with RedisServer(tmp_path / "redis", tls=tls) as server:
        assert server.url.startswith("rediss://")
        env = {"VIDEOQUEUE_REDIS_URL": server.url, "VIDEOQUEUE_REDIS_CA_FILE": str(pki.ca.cert)}
        trusting = run_worker(payload, tmp_path / "a", env)
        # Without the CA the certificate cannot be verified: no events, but the job runs.
        untrusting = run_worker(payload, tmp_path / "b", {"VIDEOQUEUE_REDIS_URL": server.url})
        with server.client() as client:
            events = read_events(client, DEFAULT_PROGRESS_STREAM)
    assert trusting.code == 0, trusting.log
    assert [e.kind for e in events][-1] == ProgressKind.DONE
    assert len(events) == 3  # stage, progress and done of the trusting run only
    assert untrusting.code == 0, untrusting.log
    assert "cannot publish to Redis" in untrusting.log


def test_ca_file_needs_a_tls_url(media: Path, tmp_path: Path, redis_url: str) -> None:
    env = {"VIDEOQUEUE_REDIS_URL": redis_url, "VIDEOQUEUE_REDIS_CA_FILE": "/etc/ca.pem"}
    run = run_worker(job_payload("probe", f"file://{media}"), tmp_path, env)
    assert run.code == 2
    assert run.message.startswith("VIDEOQUEUE_REDIS_CA_FILE: is set, so VIDEOQUEUE_REDIS_URL must")
