"""The progress channel's pure parts: settings, the board's coalescing and rate limits, and
how released progress goes into a job's status."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest

from tests.unit.scheduling.test_pods import clip, work_queue, worker_of
from videoqueue.api import JobPhase, VideoJob, VideoJobStatus
from videoqueue.api.progress import ProgressEvent, ProgressKind
from videoqueue.controller.progress_settings import (
    ProgressSettings,
    SecretKeyRef,
    settings_from_options,
)
from videoqueue.scheduling.progress_board import ProgressBoard, ProgressReport, apply_progress
from videoqueue.scheduling.worker_pod import build_worker_pod

UID = "0b6a4c1e-1111-4222-8333-944455556666"


def event(
    job: str = "clip",
    *,
    attempt: int = 1,
    uid: str = UID,
    kind: ProgressKind = ProgressKind.PROGRESS,
    ts: float = 100.0,
    **values: Any,
) -> ProgressEvent:
    return ProgressEvent(
        namespace="media", job=job, uid=uid, attempt=attempt, kind=kind, ts=ts, **values
    )


def board(job_interval: float = 5.0, writes_per_second: float = 100.0) -> ProgressBoard:
    return ProgressBoard(job_interval=job_interval, writes_per_second=writes_per_second)


# --- settings ------------------------------------------------------------------------------


def options(**given: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "url": None,
        "password_file": None,
        "password_secret": None,
        "ca_file": None,
        "stream": None,
        "environ": {},
    }
    return {**base, **given}


def test_no_url_means_no_channel() -> None:
    assert settings_from_options(**options()) is None


def test_url_and_password_come_from_the_environment() -> None:
    settings = settings_from_options(
        **options(
            environ={
                "VIDEOQUEUE_REDIS_URL": "rediss://redis.media.svc:6380/2",
                "VIDEOQUEUE_REDIS_PASSWORD": "s3cret",
                "VIDEOQUEUE_PROGRESS_STREAM": "vq:events",
            }
        )
    )
    assert settings is not None
    assert (settings.url, settings.password, settings.stream) == (
        "rediss://redis.media.svc:6380/2",
        "s3cret",
        "vq:events",
    )
    assert "s3cret" not in repr(settings)


def test_password_from_a_mounted_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    settings = settings_from_options(
        **options(url="redis://127.0.0.1:6379/0", password_file=str(secret))
    )
    assert settings is not None
    assert settings.password == "from-file"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        pytest.param({"url": "http://redis:6379"}, "redis:// or rediss://", id="scheme"),
        pytest.param({"url": "redis://"}, "no host", id="no-host"),
        pytest.param({"url": "redis://:pw@redis:6379"}, "must not contain a password", id="pw"),
        pytest.param({"url": "redis://redis:99999"}, "bad port", id="port"),
        pytest.param({"password_secret": "redis/password"}, "needs --redis-url", id="no-url"),
        pytest.param(
            {"url": "redis://r:6379", "password_secret": "redis"}, "NAME/KEY", id="secret-ref"
        ),
        pytest.param(
            {"url": "redis://r:6379", "password_file": "/nonexistent/pw"},
            "--redis-password-file /nonexistent/pw: cannot read it",
            id="password-file",
        ),
        pytest.param(
            {"url": "redis://r:6379", "ca_file": "/nonexistent/ca.pem"},
            "--redis-ca-file",
            id="ca-file",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_option(given: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        settings_from_options(**options(**given))


def test_password_given_twice_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("a")
    with pytest.raises(ValueError, match="given twice"):
        settings_from_options(
            **options(
                url="redis://r:6379",
                password_file=str(secret),
                environ={"VIDEOQUEUE_REDIS_PASSWORD": "b"},
            )
        )


def test_worker_env_names_url_stream_and_the_password_secret() -> None:
    settings = ProgressSettings(
        url="rediss://redis:6380/0",
        password="never-in-a-pod",
        password_secret=SecretKeyRef("redis", "password"),
        stream="vq:events",
    )
    env = settings.worker_env()
    assert env == [
        {"name": "VIDEOQUEUE_REDIS_URL", "value": "rediss://redis:6380/0"},
        {"name": "VIDEOQUEUE_PROGRESS_STREAM", "value": "vq:events"},
        {
            "name": "VIDEOQUEUE_REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password", "optional": True}},
        },
    ]
    assert "never-in-a-pod" not in str(env)


# --- the board -----------------------------------------------------------------------------


def test_latest_values_win_and_are_released_once() -> None:
    b = board()
    b.add(event(kind=ProgressKind.STAGE, stage="downloading", ts=1), now=10)
    b.add(event(progress=20, ts=2), now=10)
    b.add(event(progress=40, message="40% of 12s", ts=3), now=10)
    assert b.take_due(10) == ["media/clip"]
    assert b.released("media/clip") == ProgressReport(UID, 1, "downloading", 40, "40% of 12s")
    assert b.take_due(11) == []


def test_a_job_is_released_at_most_once_per_interval() -> None:
    b = board(job_interval=5)
    b.add(event(progress=10, ts=1), now=0)
    assert b.take_due(0) == ["media/clip"]
    b.add(event(progress=20, ts=2), now=1)
    assert b.take_due(1) == []
    assert b.next_due(1) == 5
    assert b.take_due(5) == ["media/clip"]
    released = b.released("media/clip")
    assert released is not None
    assert released.progress == 20


def test_heartbeats_alone_release_nothing_but_are_heard() -> None:
    b = board()
    b.add(event(progress=10, ts=1), now=0)
    b.take_due(0)
    b.add(event(kind=ProgressKind.HEARTBEAT, ts=2), now=7)
    assert b.take_due(7) == []
    assert b.next_due(7) is None
    assert b.heard_at("media/clip", UID, 1) == 7
    assert b.heard_at("media/clip", UID, 2) is None
    assert b.heard_at("media/clip", "other-uid", 1) is None


def test_older_events_and_older_attempts_are_ignored() -> None:
    b = board()
    b.add(event(attempt=2, progress=50, ts=20), now=0)
    b.add(event(attempt=1, progress=90, ts=30), now=1)  # the previous worker, late
    b.add(event(attempt=2, progress=30, ts=10), now=2)  # claimed late from a dead replica
    b.take_due(2)
    assert b.released("media/clip") == ProgressReport(UID, 2, None, 50, None)
    assert b.heard_at("media/clip", UID, 2) == 0


def test_a_new_attempt_starts_from_nothing() -> None:
    b = board()
    b.add(event(attempt=1, kind=ProgressKind.STAGE, stage="uploading", progress=90), now=0)
    b.add(event(attempt=2, progress=5, ts=200), now=1)
    b.take_due(1)
    assert b.released("media/clip") == ProgressReport(UID, 2, None, 5, None)


def test_the_global_cap_holds_with_many_jobs() -> None:
    b = board(job_interval=1, writes_per_second=10)
    for i in range(1000):
        b.add(event(f"job-{i}", progress=1), now=0)
    released = 0
    now = 0.0
    while now < 10:
        released += len(b.take_due(now))
        now += 0.05
    # 10 a second for 10 seconds, plus the bucket's first second.
    assert 95 <= released <= 110


def test_the_longest_waiting_job_goes_first() -> None:
    b = board(writes_per_second=1)
    b.add(event("first", progress=1), now=0)
    b.add(event("second", progress=1), now=0)
    assert b.take_due(0) == ["media/first"]
    b.add(event("first", progress=2, ts=101), now=0.5)
    assert b.take_due(1) == ["media/second"]


def test_forgotten_jobs_leave_memory() -> None:
    b = board()
    b.add(event("old"), now=0)
    b.add(event("new"), now=100)
    assert b.forget_older_than(50) == 1
    assert len(b) == 1
    assert b.released("media/old") is None


# --- into status ---------------------------------------------------------------------------


def job(uid: str = UID, **status: Any) -> VideoJob:
    return VideoJob.model_validate(
        {
            "metadata": {"name": "clip", "namespace": "media", "uid": uid},
            "spec": {"queueName": "work", "type": "probe", "input": {"url": "file:///a.mp4"}},
            "status": status,
        }
    )


REPORT = ProgressReport(UID, 2, "processing", 42, "frame 420")


@pytest.mark.parametrize(
    ("phase", "attempt", "uid", "applied"),
    [
        pytest.param(JobPhase.RUNNING, 2, UID, True, id="running-current-attempt"),
        pytest.param(JobPhase.ADMITTED, 2, UID, True, id="admitted-current-attempt"),
        pytest.param(JobPhase.RUNNING, 3, UID, False, id="other-attempt"),
        pytest.param(JobPhase.RUNNING, 2, "recreated", False, id="other-uid"),
        pytest.param(JobPhase.SUCCEEDED, 2, UID, False, id="terminal"),
        pytest.param(JobPhase.BACKOFF, 2, UID, False, id="between-attempts"),
    ],
)
def test_progress_goes_only_into_the_current_attempt_under_way(
    phase: JobPhase, attempt: int, uid: str, applied: bool
) -> None:
    status = VideoJobStatus(phase=phase, attempt=attempt, message="admitted")
    result = apply_progress(job(uid), status, REPORT)
    if applied:
        assert (result.stage, result.progress, result.message) == ("processing", 42, "frame 420")
    else:
        assert result is status


def test_unchanged_progress_returns_the_same_status() -> None:
    status = VideoJobStatus(
        phase=JobPhase.RUNNING,
        attempt=2,
        stage="processing",
        progress=42,
        message="frame 420",
        start_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    )
    assert apply_progress(job(), status, REPORT) is status


# --- into worker pods ----------------------------------------------------------------------


def test_worker_pods_get_the_channel_env_over_the_templates() -> None:
    template = {
        "spec": {
            "containers": [
                {
                    "name": "worker",
                    "image": "videoqueue/worker:1",
                    "env": [
                        {"name": "VIDEOQUEUE_REDIS_URL", "value": "redis://stale:6379"},
                        {"name": "TZ", "value": "UTC"},
                    ],
                }
            ]
        }
    }
    settings = ProgressSettings(
        url="redis://redis.media.svc:6379/0", password_secret=SecretKeyRef("redis", "pw")
    )
    pod = build_worker_pod(
        clip().obj(),
        work_queue().template_body(template).obj(),
        attempt=1,
        memory_bytes=2**30,
        env=settings.worker_env(),
    )
    env = worker_of(pod)["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), names
    by_name = {e["name"]: e for e in env}
    assert by_name["TZ"]["value"] == "UTC"
    assert by_name["VIDEOQUEUE_REDIS_URL"]["value"] == "redis://redis.media.svc:6379/0"
    assert by_name["VIDEOQUEUE_PROGRESS_STREAM"]["value"] == "videoqueue:progress"
    assert by_name["VIDEOQUEUE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "redis"
    assert "VIDEOQUEUE_JOB" in by_name


# --- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(["--redis-url", "http://redis:6379"], "redis:// or rediss://", id="scheme"),
        pytest.param(
            ["--redis-url", "redis://r:6379", "--redis-password-secret", "nokey"],
            "expected NAME/KEY",
            id="secret",
        ),
        pytest.param(["--redis-password-secret", "redis/pw"], "needs --redis-url", id="no-url"),
        pytest.param(
            ["--redis-url", "redis://r:6379", "--progress-interval", "0"],
            "--progress-interval",
            id="interval",
        ),
    ],
)
def test_the_operator_refuses_bad_redis_options_at_startup(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from videoqueue.__main__ import main

    monkeypatch.delenv("VIDEOQUEUE_REDIS_URL", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["--standalone", *args])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err
