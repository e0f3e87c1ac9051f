"""One attempt of one job, from the pod's environment to the termination message.

Stages: downloading (http(s) and s3:// inputs only) → processing → uploading. Progress is one
number for the whole attempt: each stage owns a share of 0..100 and reports within it. Temporary
files live in a directory of their own under the work dir, removed on every way out
(success, failure, SIGTERM).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from videoqueue.api.job import VideoJobSpec
from videoqueue.api.progress import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_PROGRESS_STREAM,
    ENV_HEARTBEAT_SECONDS,
    ENV_PROGRESS_STREAM,
    ENV_REDIS_CA_FILE,
    ENV_REDIS_PASSWORD,
    ENV_REDIS_URL,
)
from videoqueue.api.worker import (
    DEFAULT_DOWNLOAD_TIMEOUT_SECONDS,
    DEFAULT_FILE_ROOTS,
    ENV_ALLOWED_HOSTS,
    ENV_DOWNLOAD_TIMEOUT_SECONDS,
    ENV_FILE_ROOTS,
)
from videoqueue_worker import hls, jobs, media, transfer
from videoqueue_worker.cgroup import peak_memory_bytes
from videoqueue_worker.errors import ExitCode, WorkerError, invalid
from videoqueue_worker.params import HlsParams, ProbeParams, ThumbnailParams, parse_params
from videoqueue_worker.reporter import JobRef, RedisSettings, RedisSink, Reporter
from videoqueue_worker.result import encode, error_message, media_summary, stream_summaries
from videoqueue_worker.s3 import S3Settings
from videoqueue_worker.sandbox import AllowedHosts, Sandbox

log = logging.getLogger("videoqueue_worker")

# The names match videoqueue.controller.pods (the worker must not import the controller).
ENV_JOB: Final = "VIDEOQUEUE_JOB"
ENV_RESULT_PATH: Final = "VIDEOQUEUE_RESULT_PATH"
ENV_WORK_DIR: Final = "VIDEOQUEUE_WORK_DIR"
ENV_MAX_INPUT_BYTES: Final = "VIDEOQUEUE_MAX_INPUT_BYTES"
DEFAULT_RESULT_PATH: Final = "/dev/termination-log"
DEFAULT_MAX_INPUT_BYTES: Final = 20 * 1024**3

# Shares of the attempt's 0..100 progress.
DOWNLOAD_SHARE: Final = 10
UPLOAD_SHARE: Final = 10
LOCAL_SAVE_SHARE: Final = 1
IMAGE_FACTS: Final = ("size", "width", "height", "videoCodec")


class JobPayload(BaseModel):
    """VIDEOQUEUE_JOB as the operator writes it (videoqueue.controller.pods)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: str
    kind: str
    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)
    uid: str = Field(min_length=1)
    attempt: int = Field(ge=1)
    spec: VideoJobSpec


@dataclass(frozen=True)
class Settings:
    job: JobPayload
    work_dir: Path
    max_input_bytes: int
    redis: RedisSettings | None
    heartbeat_seconds: float
    sandbox: Sandbox


def result_path(env: Mapping[str, str]) -> Path:
    return Path(env.get(ENV_RESULT_PATH) or DEFAULT_RESULT_PATH)


def _positive_number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if value <= 0:
        raise WorkerError(f"must be a positive number, got {raw!r}", field=name, invalid=True)
    return value


def _string_list(env: Mapping[str, str], name: str, example: str) -> list[str] | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise WorkerError(
            f"must be a JSON list of strings, e.g. {example}, got {raw!r}", field=name, invalid=True
        )
    return value


def load_sandbox(env: Mapping[str, str]) -> Sandbox:
    """The queue's sandbox from the environment the operator sets (videoqueue.api.worker)."""
    roots = _string_list(env, ENV_FILE_ROOTS, '["/media"]')
    try:
        file_roots = Sandbox.roots(list(DEFAULT_FILE_ROOTS) if roots is None else roots)
    except ValueError as exc:
        raise WorkerError(
            f"{exc}; file roots are absolute directories", field=ENV_FILE_ROOTS, invalid=True
        ) from None
    hosts = _string_list(env, ENV_ALLOWED_HOSTS, '["media.internal", "10.0.0.0/8"]') or []
    try:
        allowed = AllowedHosts.parse(hosts)
    except ValueError as exc:
        raise WorkerError(str(exc), field=ENV_ALLOWED_HOSTS, invalid=True) from None
    return Sandbox(
        file_roots=file_roots,
        allowed_hosts=allowed,
        transfer_timeout_seconds=_positive_number(
            env, ENV_DOWNLOAD_TIMEOUT_SECONDS, float(DEFAULT_DOWNLOAD_TIMEOUT_SECONDS)
        ),
        s3=S3Settings.from_env(env),
    )


def load_settings(env: Mapping[str, str]) -> Settings:
    raw = env.get(ENV_JOB)
    if not raw:
        raise WorkerError(
            "is not set; the worker runs the job the operator puts there as JSON",
            field=ENV_JOB,
            invalid=True,
        )
    try:
        job = JobPayload.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise WorkerError(
            f"{first['msg']} at {loc} (is it the JSON the operator wrote?)",
            field=ENV_JOB,
            invalid=True,
        ) from None
    url = env.get(ENV_REDIS_URL) or None
    redis: RedisSettings | None = None
    if url is not None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise WorkerError(
                "must be a redis:// or rediss:// (TLS) URL", field=ENV_REDIS_URL, invalid=True
            )
        ca_file = env.get(ENV_REDIS_CA_FILE) or None
        if ca_file is not None and not url.startswith("rediss://"):
            raise WorkerError(
                f"is set, so {ENV_REDIS_URL} must be a rediss:// (TLS) URL",
                field=ENV_REDIS_CA_FILE,
                invalid=True,
            )
        redis = RedisSettings(
            url=url,
            password=env.get(ENV_REDIS_PASSWORD) or None,
            stream=env.get(ENV_PROGRESS_STREAM) or DEFAULT_PROGRESS_STREAM,
            ca_file=ca_file,
        )
    return Settings(
        job=job,
        work_dir=Path(env.get(ENV_WORK_DIR) or tempfile.gettempdir()),
        max_input_bytes=int(
            _positive_number(env, ENV_MAX_INPUT_BYTES, float(DEFAULT_MAX_INPUT_BYTES))
        ),
        redis=redis,
        heartbeat_seconds=_positive_number(env, ENV_HEARTBEAT_SECONDS, DEFAULT_HEARTBEAT_SECONDS),
        sandbox=load_sandbox(env),
    )


class Terminated(BaseException):
    """SIGTERM arrived (the pod is being deleted). A BaseException, so no `except
    Exception` on the way swallows it."""


class Attempt:
    """Runs one job with one reporter; `run()` returns the result dict or raises."""

    def __init__(self, settings: Settings, reporter: Reporter, scratch: Path) -> None:
        self.settings = settings
        self.job = settings.job
        self.reporter = reporter
        self.scratch = scratch
        self._cleanup: list[Path] = []

    def _share(self, start: int, share: int, fraction: float) -> None:
        self.reporter.progress(start + share * fraction)

    def run(self) -> dict[str, Any]:
        spec = self.job.spec
        params = parse_params(spec.type, spec.params)
        sandbox = self.settings.sandbox
        source = transfer.parse_location(
            spec.input.url, field="spec.input.url", allowed=transfer.INPUT_SCHEMES, sandbox=sandbox
        )
        output = None
        if spec.output is not None:
            output = transfer.parse_location(
                spec.output.url,
                field="spec.output.url",
                allowed=transfer.OUTPUT_SCHEMES,
                sandbox=sandbox,
            )
            transfer.check_reachable(output)  # before hours of work, not after
        elif not isinstance(params, ProbeParams):
            raise invalid(
                "spec.output.url",
                f"a {spec.type} job writes a file: set spec.output.url to a file:// path, "
                "an s3://bucket/key URL or an http(s) URL that accepts PUT",
            )
        if output is not None:
            jobs.check_output_kind(params, output.is_directory, output.scheme)

        download_share = 0 if source.is_local else DOWNLOAD_SHARE
        upload_share = 0
        if output is not None:
            upload_share = LOCAL_SAVE_SHARE if output.is_local else UPLOAD_SHARE
        work_start, work_share = download_share, 100 - download_share - upload_share

        if not source.is_local:
            self.reporter.stage("downloading")
        local_input = transfer.fetch(
            source,
            self.scratch / "input",
            max_bytes=self.settings.max_input_bytes,
            on_progress=lambda done, total: self._share(
                0, download_share, done / total if total else 0
            ),
        )
        self.reporter.stage("processing")
        info = media.probe(local_input)
        if (name := media.indirect_format(info)) is not None:
            raise invalid(
                "spec.input.url",
                f"the input is a {name} playlist or description, which makes ffmpeg open "
                "other files or addresses; give the media file itself",
            )
        if isinstance(params, ProbeParams):
            return self._probe(info, output, upload_share)

        assert output is not None
        if isinstance(params, HlsParams):  # a directory tree, not one file
            return hls.package(
                params, info, local_input, output, scratch=self.scratch, reporter=self.reporter,
                on_work=lambda f: self._share(work_start, work_share, f),
                on_publish=lambda f: self._share(100 - upload_share, upload_share, f),
            )  # fmt: skip
        extension = jobs.output_extension(params)
        series = jobs.is_series(params)
        target = output.child(f"{self.job.name}.{extension}") if output.is_directory else output
        dest = self.scratch / f"frame.{extension}" if series else self._work_file(target)
        plan = jobs.plan(params, info, local_input, dest)
        try:
            if dest in self._cleanup:
                transfer.create_partial(dest)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkerError(f"cannot create {dest}: {exc.strerror}") from None
        try:
            media.run_ffmpeg(
                plan.args,
                expected_seconds=plan.expected_seconds,
                on_fraction=lambda f: self._share(work_start, work_share, f),
            )
        except WorkerError:
            # Asked only now: listing encoders up front would cost every job start-up time.
            have = media.encoders()
            for field_name, encoder in jobs.needs_encoders(params).items():
                if encoder not in have:
                    raise invalid(field_name, f"this ffmpeg has no {encoder} encoder") from None
            raise

        self.reporter.stage("uploading")
        upload_start = 100 - upload_share
        result: dict[str, Any] = {"type": spec.type}
        if not series:
            self._deliver(dest, target, upload_start, upload_share, 0, 1)
            result["output"] = transfer.redact(target.url)
            summary = media_summary(media.probe(target.path or dest))
            if isinstance(params, ThumbnailParams):  # a still image: no duration or rates
                summary = {k: v for k, v in summary.items() if k in IMAGE_FACTS}
            return result | summary
        frames = sorted(self.scratch.glob(f"frame-*.{extension}"))
        if not frames:
            raise WorkerError("ffmpeg wrote no frames (is the input shorter than one frame?)")
        first = media_summary(media.probe(frames[0]))
        urls = []
        for index, frame in enumerate(frames):
            where = output.child(f"{self.job.name}-{index + 1:04d}.{extension}")
            self._deliver(frame, where, upload_start, upload_share, index, len(frames))
            urls.append(transfer.redact(where.url))
        result |= {"count": len(frames), "outputs": urls}
        return result | {k: v for k, v in first.items() if k in IMAGE_FACTS}

    def _work_file(self, target: transfer.Location) -> Path:
        # A local output is written next to its final name and renamed into place: no copy of
        # a large file, and readers never see half of it.
        if target.path is not None:
            partial = transfer.partial_path(target.path)
            self._cleanup.append(partial)
            return partial
        return self.scratch / "output"

    def _deliver(
        self,
        path: Path,
        where: transfer.Location,
        start: int,
        share: int,
        index: int,
        count: int,
    ) -> None:
        if where.path is not None and path.parent == where.path.parent:
            transfer.put_in_place(path, where)
            self._share(start, share, (index + 1) / count)
            return
        transfer.deliver(
            path,
            where,
            on_progress=lambda done, total: self._share(
                start, share, (index + (done / total if total else 1)) / count
            ),
        )

    def _probe(
        self,
        info: dict[str, Any],
        output: transfer.Location | None,
        upload_share: int,
    ) -> dict[str, Any]:
        self._share(0, 100 - upload_share, 1.0)
        result: dict[str, Any] = {"type": "probe"}
        if output is not None:
            self.reporter.stage("uploading")
            target = output.child(f"{self.job.name}.json") if output.is_directory else output
            report = self.scratch / "probe.json"
            report.write_text(json.dumps(info, indent=1))
            transfer.deliver(
                report,
                target,
                on_progress=lambda done, total: self._share(
                    100 - upload_share, upload_share, done / total if total else 1
                ),
            )
            result["output"] = transfer.redact(target.url)
        result |= media_summary(info)
        result["streams"] = stream_summaries(info)
        return result

    def cleanup(self) -> None:
        for path in self._cleanup:
            path.unlink(missing_ok=True)


def _write_result(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        # Still visible in the pod's log; the exit code tells success from failure.
        log.error("cannot write the result to %s (%s); result: %s", path, exc, text)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    out = result_path(env)
    try:
        settings = load_settings(env)
    except WorkerError as exc:
        log.error("%s", exc)
        _write_result(out, error_message(str(exc)))
        return exc.exit_code

    job = settings.job
    ref = JobRef(namespace=job.namespace, name=job.name, uid=job.uid, attempt=job.attempt)
    sink = RedisSink(settings.redis) if settings.redis else None
    started = time.monotonic()
    with Reporter(ref, sink, heartbeat_seconds=settings.heartbeat_seconds) as reporter:
        scratch = Path(tempfile.mkdtemp(prefix=f"vq-{job.name}-", dir=settings.work_dir))
        attempt = Attempt(settings, reporter, scratch)
        code = ExitCode.OK
        try:
            result = attempt.run()
            result["seconds"] = round(time.monotonic() - started, 3)
            # Read last: the peak only grows, and what the operator sizes by is the whole
            # attempt's (ffmpeg's children and the page cache count against the limit too).
            if (peak := peak_memory_bytes()) is not None:
                result["peakMemoryBytes"] = peak
            text = encode(result)
            reporter.done("done", succeeded=True)
        except WorkerError as exc:
            code, text = exc.exit_code, error_message(str(exc))
            reporter.done(text, succeeded=False)
        except Terminated:
            code, text = ExitCode.INTERRUPTED, "stopped by SIGTERM before the work was done"
            reporter.done(text, succeeded=False)
        except Exception as exc:  # a bug: still say so in the job's status
            log.exception("unexpected failure")
            code, text = (
                ExitCode.FAILED,
                error_message(f"worker error: {type(exc).__name__}: {exc}"),
            )
            reporter.done(text, succeeded=False)
        finally:
            attempt.cleanup()
            shutil.rmtree(scratch, ignore_errors=True)
    (log.info if code == ExitCode.OK else log.error)("%s/%s: %s", job.namespace, job.name, text)
    _write_result(out, text)
    return int(code)
