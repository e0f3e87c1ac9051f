"""The progress channel: what workers report over a Redis stream, into job status.

Workers XADD `videoqueue.api.progress.ProgressEvent` entries (stage, progress, message,
heartbeats) to one stream. The acting replica reads them as one consumer of a consumer group
(XREADGROUP, then XACK), claims with XAUTOCLAIM the entries a dead replica read but never
acknowledged, and keeps only the latest values per job (`ProgressBoard`). Nothing is written
per event: the board releases a job's latest values at most once every `job_interval`
seconds per job and `writes_per_second` times a second overall, and each release costs at
most one status merge patch, written by the controller's own loop (`apply_progress`) together
with whatever else changed about the job. Heartbeats stay in memory; they feed stalled-worker
detection (`heard_at`) and never reach the API server.

Values are written only for the job's current attempt (matching uid and attempt number) while
it is admitted or running, never once it is finished.

Without Redis configured there is no channel: jobs run as ever (status from pods and
termination messages), with neither live progress nor stalled-worker detection. While Redis is
unreachable the consumer reconnects with backoff and stall detection pauses (a silent channel
says nothing about the workers); when it is back, the clock for every worker restarts then.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from videoqueue.api import JobPhase, VideoJob, VideoJobStatus
from videoqueue.api.progress import (
    DEFAULT_PROGRESS_STREAM,
    ENV_PROGRESS_STREAM,
    ENV_REDIS_PASSWORD,
    ENV_REDIS_URL,
    PROGRESS_STREAM_MAXLEN,
    ProgressEvent,
    parse_event,
)

logger = logging.getLogger(__name__)

ENV_REDIS_PASSWORD_FILE: Final = "VIDEOQUEUE_REDIS_PASSWORD_FILE"
ENV_REDIS_CA_FILE: Final = "VIDEOQUEUE_REDIS_CA_FILE"
DEFAULT_GROUP: Final = "videoqueue-operator"
DEFAULT_JOB_INTERVAL: Final = 5.0
DEFAULT_WRITES_PER_SECOND: Final = 20.0

# Entries read per XREADGROUP, and how long one blocks (the loop also claims and trims).
READ_BATCH: Final = 1000
READ_BLOCK_MS: Final = 1000
# Entries another consumer has held unacknowledged this long belong to a dead replica (a live
# one acknowledges each batch within moments of reading it).
CLAIM_IDLE_SECONDS: Final = 60.0
CLAIM_INTERVAL: Final = 15.0
# Below this many entries removed, an approximate XTRIM has caught up with the bound.
TRIM_BATCH_AT_LEAST: Final = 1000
# Consumers (replicas) gone this long with nothing pending are removed from the group.
FORGET_CONSUMER_MS: Final = 600_000
RECONNECT_MIN: Final = 0.5
RECONNECT_MAX: Final = 15.0
# A job not heard of for this long is dropped from memory (it finished or was deleted).
FORGET_JOB_SECONDS: Final = 3600.0
# Bad entries (a worker of another version, a stray writer) are logged at most this often.
BAD_ENTRY_LOG_INTERVAL: Final = 60.0


# --- Settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the job's namespace: where worker pods get the Redis password."""

    name: str
    key: str

    @classmethod
    def parse(cls, text: str) -> SecretKeyRef:
        name, sep, key = text.partition("/")
        if not sep or not name or not key or "/" in key:
            raise ValueError(
                f"--redis-password-secret {text!r}: expected NAME/KEY, the Secret (in each "
                "job's namespace) and the key holding the Redis password, e.g. redis/password"
            )
        return cls(name, key)


def default_consumer_name() -> str:
    """This replica's name in the consumer group: $POD_ID (the pod name, as for kopf's
    peering), else host and process id. A restarted container keeps its pod's name and so
    its own unacknowledged entries."""
    return os.environ.get("POD_ID") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class ProgressSettings:
    """How the operator reaches Redis, and what it tells worker pods."""

    url: str
    """redis://host:port/db or rediss://... (TLS); handed to workers as it is."""
    password: str | None = field(default=None, repr=False)
    password_secret: SecretKeyRef | None = None
    """Where workers read the password from (a Secret in each job's namespace)."""
    ca_file: str | None = None
    """CA bundle for a rediss:// server with a private CA (the operator's connection)."""
    stream: str = DEFAULT_PROGRESS_STREAM
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=default_consumer_name)
    job_interval: float = DEFAULT_JOB_INTERVAL
    """Seconds between two progress writes of one job, at least."""
    writes_per_second: float = DEFAULT_WRITES_PER_SECOND
    """Progress writes a second, all jobs together, at most."""
    claim_idle_seconds: float = CLAIM_IDLE_SECONDS
    """Entries another consumer has held unacknowledged this long are taken over."""

    def worker_env(self) -> list[dict[str, Any]]:
        """The env entries that tell a worker pod where to publish."""
        env: list[dict[str, Any]] = [
            {"name": ENV_REDIS_URL, "value": self.url},
            {"name": ENV_PROGRESS_STREAM, "value": self.stream},
        ]
        if self.password_secret is not None:
            # Optional: a missing Secret costs the job its live progress, never its run.
            ref = {
                "name": self.password_secret.name,
                "key": self.password_secret.key,
                "optional": True,
            }
            env.append({"name": ENV_REDIS_PASSWORD, "valueFrom": {"secretKeyRef": ref}})
        return env


def check_redis_url(url: str) -> str:
    """`url` if the operator can use it and hand it to workers; else ValueError saying why."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(
            f"--redis-url {url!r}: the scheme must be redis:// or rediss:// (TLS), "
            "e.g. redis://redis.media.svc:6379/0"
        )
    if not parts.hostname:
        raise ValueError(f"--redis-url {url!r}: no host; e.g. redis://redis.media.svc:6379/0")
    if parts.password:
        # The URL is copied into every worker pod's spec, readable by anyone who can get pods.
        raise ValueError(
            "--redis-url must not contain a password (it is copied into every worker pod's "
            f"spec); give it in ${ENV_REDIS_PASSWORD} or a file (--redis-password-file) and "
            "tell workers its Secret with --redis-password-secret NAME/KEY"
        )
    try:
        _ = parts.port
    except ValueError as e:
        raise ValueError(f"--redis-url {url!r}: bad port ({e})") from None
    return url


def settings_from_options(
    *,
    url: str | None,
    password_file: str | None,
    password_secret: str | None,
    ca_file: str | None,
    stream: str | None,
    job_interval: float = DEFAULT_JOB_INTERVAL,
    writes_per_second: float = DEFAULT_WRITES_PER_SECOND,
    environ: Mapping[str, str] | None = None,
) -> ProgressSettings | None:
    """The progress settings from command-line options, each falling back to its env var;
    None when no Redis URL is given (no progress channel). Raises ValueError naming the
    option and the fix."""
    env = os.environ if environ is None else environ
    url = url or env.get(ENV_REDIS_URL) or None
    if url is None:
        for option, value in (
            ("--redis-password-file", password_file),
            ("--redis-password-secret", password_secret),
        ):
            if value:
                raise ValueError(f"{option} needs --redis-url (or ${ENV_REDIS_URL})")
        return None
    check_redis_url(url)
    password = env.get(ENV_REDIS_PASSWORD) or None
    password_file = password_file or env.get(ENV_REDIS_PASSWORD_FILE) or None
    if password_file is not None:
        if password is not None:
            raise ValueError(
                f"the Redis password is given twice, in ${ENV_REDIS_PASSWORD} and in "
                f"--redis-password-file (or ${ENV_REDIS_PASSWORD_FILE}); keep one"
            )
        try:
            # A mounted Secret's file; a trailing newline is an editor's, not the password's.
            password = Path(password_file).read_text().rstrip("\r\n") or None
        except OSError as e:
            raise ValueError(
                f"--redis-password-file {password_file}: cannot read it ({e})"
            ) from None
    ca_file = ca_file or env.get(ENV_REDIS_CA_FILE) or None
    if ca_file is not None and not Path(ca_file).is_file():
        raise ValueError(f"--redis-ca-file {ca_file}: no such file")
    if job_interval <= 0 or writes_per_second <= 0:
        raise ValueError(
            "--progress-interval and --progress-writes-per-second must be positive numbers"
        )
    return ProgressSettings(
        url=url,
        password=password,
        password_secret=SecretKeyRef.parse(password_secret) if password_secret else None,
        ca_file=ca_file,
        stream=stream or env.get(ENV_PROGRESS_STREAM) or DEFAULT_PROGRESS_STREAM,
        job_interval=job_interval,
        writes_per_second=writes_per_second,
    )


# --- The board: latest values per job, released at a bounded rate --------------------------


@dataclass(frozen=True)
class ProgressReport:
    """The values of one attempt that are ready to be written."""

    uid: str
    attempt: int
    stage: str | None
    progress: int | None
    message: str | None


@dataclass
class _Latest:
    uid: str
    attempt: int
    ts: float
    heard_at: float
    stage: str | None = None
    progress: int | None = None
    message: str | None = None
    released: ProgressReport | None = None
    released_at: float | None = None

    def report(self) -> ProgressReport:
        return ProgressReport(self.uid, self.attempt, self.stage, self.progress, self.message)


class ProgressBoard:
    """The latest progress of every job, and when each may be written next.

    Pure: the time is passed in. `add` takes events in any order (a worker's newer event
    wins by its timestamp, a newer attempt or another uid replaces an older one); `take_due`
    says which jobs to write now, at most one per job every `job_interval` seconds and, over
    all jobs, `writes_per_second` a second (a token bucket holding one second's worth), the
    jobs that have waited longest first.
    """

    def __init__(self, *, job_interval: float, writes_per_second: float) -> None:
        self.job_interval = job_interval
        self.rate = writes_per_second
        self.burst = max(1.0, writes_per_second)
        self._tokens = self.burst
        self._filled_at: float | None = None
        self._jobs: dict[str, _Latest] = {}
        # Jobs whose latest values differ from their released ones, oldest change first.
        self._pending: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, event: ProgressEvent, now: float) -> None:
        key = f"{event.namespace}/{event.job}"
        latest = self._jobs.get(key)
        if latest is not None and latest.uid == event.uid:
            if event.attempt < latest.attempt:
                return  # a late event of an attempt that is over
            if event.attempt == latest.attempt and event.ts < latest.ts:
                return  # older than what we have (entries claimed from a dead replica)
        elif latest is not None and event.ts < latest.ts:
            return  # another uid: the job was re-created; the newer worker wins
        if latest is None or latest.uid != event.uid or latest.attempt != event.attempt:
            latest = self._jobs[key] = _Latest(event.uid, event.attempt, event.ts, now)
        latest.ts = event.ts
        latest.heard_at = now
        if event.stage is not None:
            latest.stage = event.stage
        if event.progress is not None:
            latest.progress = event.progress
        if event.message is not None:
            latest.message = event.message
        if latest.released != latest.report():
            self._pending.setdefault(key, None)
        else:
            self._pending.pop(key, None)

    def _fill(self, now: float) -> None:
        if self._filled_at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._filled_at) * self.rate)
        self._filled_at = now

    def take_due(self, now: float) -> list[str]:
        """The jobs whose latest values are to be written now; they count as released."""
        self._fill(now)
        due: list[str] = []
        for key in list(self._pending):
            if self._tokens < 1:
                break
            latest = self._jobs[key]
            if latest.released_at is not None and now - latest.released_at < self.job_interval:
                continue
            latest.released = latest.report()
            latest.released_at = now
            self._tokens -= 1
            del self._pending[key]
            due.append(key)
        return due

    def next_due(self, now: float) -> float | None:
        """When `take_due` may next return something; None while nothing is pending."""
        if not self._pending:
            return None
        self._fill(now)
        token_at = now if self._tokens >= 1 else now + (1 - self._tokens) / self.rate
        earliest = min(
            now if (at := self._jobs[key].released_at) is None else max(now, at + self.job_interval)
            for key in self._pending
        )
        return max(token_at, earliest)

    def released(self, key: str) -> ProgressReport | None:
        """The values of `key` ("namespace/name") released for writing, if any."""
        latest = self._jobs.get(key)
        return None if latest is None else latest.released

    def heard_at(self, key: str, uid: str, attempt: int) -> float | None:
        """When the last event of this attempt arrived (the time passed to `add`)."""
        latest = self._jobs.get(key)
        if latest is None or latest.uid != uid or latest.attempt != attempt:
            return None
        return latest.heard_at

    def forget_older_than(self, moment: float) -> int:
        """Drop jobs not heard of since `moment`; returns how many."""
        old = [key for key, latest in self._jobs.items() if latest.heard_at < moment]
        for key in old:
            del self._jobs[key]
            self._pending.pop(key, None)
        return len(old)


# --- Writing into status -------------------------------------------------------------------


def apply_progress(
    job: VideoJob, status: VideoJobStatus, report: ProgressReport | None
) -> VideoJobStatus:
    """`status` (as assessed) with the released progress of the job's current attempt, or
    `status` itself when the report is of another job or attempt or the attempt is not under
    way (finished jobs keep what their worker's pod said)."""
    if (
        report is None
        or report.uid != job.metadata.uid
        or report.attempt != status.attempt
        or status.phase not in (JobPhase.ADMITTED, JobPhase.RUNNING)
    ):
        return status
    values = {
        "stage": report.stage if report.stage is not None else status.stage,
        "progress": report.progress if report.progress is not None else status.progress,
        "message": report.message if report.message is not None else status.message,
    }
    if all(getattr(status, name) == value for name, value in values.items()):
        return status
    return status.model_copy(update=values)


# --- The channel: Redis I/O ----------------------------------------------------------------


class ProgressChannel:
    """Consumes the progress stream into a `ProgressBoard` and calls `on_release` with the
    keys ("namespace/name") of jobs whose progress is due to be written.

    `start` runs two tasks until `stop`: the consumer (connect, create the group, read,
    acknowledge, claim, trim; reconnect with backoff on any Redis error) and the releaser.
    """

    def __init__(
        self,
        settings: ProgressSettings,
        *,
        clock: Callable[[], float] = time.time,
        on_release: Callable[[Sequence[str]], None] | None = None,
        accepts: Callable[[ProgressEvent], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.on_release = on_release
        # Which events concern a job the controller has (by uid, and not finished): the rest
        # would take their share of the write budget and memory for nothing.
        self.accepts = accepts
        self.board = ProgressBoard(
            job_interval=settings.job_interval, writes_per_second=settings.writes_per_second
        )
        self.connected_since: float | None = None
        """Since when the consumer has been reading (its clock); None while disconnected."""
        self.events = 0
        self.ignored = 0
        self.bad_entries = 0
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._bad_logged_at = 0.0

    # -- what the controller asks ---------------------------------------------------------

    @property
    def worker_env(self) -> list[dict[str, Any]]:
        return self.settings.worker_env()

    def apply(self, job: VideoJob, status: VideoJobStatus) -> VideoJobStatus:
        key = f"{job.metadata.namespace}/{job.metadata.name}"
        return apply_progress(job, status, self.board.released(key))

    def heard_at(self, job: VideoJob, attempt: int) -> datetime.datetime | None:
        """When the worker of `attempt` was last known alive: its last event, or the channel's
        (re)connection if that is later (nothing could be heard before). None while the channel
        is down: a silent channel says nothing about the workers, so stall detection pauses."""
        if self.connected_since is None:
            return None
        key = f"{job.metadata.namespace}/{job.metadata.name}"
        heard = self.board.heard_at(key, job.metadata.uid or "", attempt) or 0.0
        return datetime.datetime.fromtimestamp(max(self.connected_since, heard), datetime.UTC)

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._consume(), name="progress consumer"),
            asyncio.create_task(self._release(), name="progress releaser"),
        ]

    async def stop(self) -> None:
        """Stop reading: the loops finish their step (a read blocks at most a second) and
        close the connection. They are cancelled only if they do not, since redis-py's
        asyncio client can lose a cancellation that lands inside a command and hang."""
        tasks, self._tasks = self._tasks, []
        self._stopping.set()
        self._changed.set()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=READ_BLOCK_MS / 1000 + 5)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
        self._stopping.clear()
        self.connected_since = None

    def _client(self) -> aioredis.Redis:
        options: dict[str, Any] = {
            "password": self.settings.password,
            "socket_connect_timeout": 5,
            "socket_timeout": READ_BLOCK_MS / 1000 + 5,
            "client_name": f"videoqueue-operator-{self.settings.consumer}"[:64].replace(" ", "-"),
        }
        if self.settings.ca_file is not None:
            options["ssl_ca_certs"] = self.settings.ca_file
        client: aioredis.Redis = aioredis.Redis.from_url(self.settings.url, **options)
        return client

    async def _consume(self) -> None:
        delay = RECONNECT_MIN
        while not self._stopping.is_set():
            client = self._client()
            try:
                await self._ensure_group(client)
                self.connected_since = self.clock()
                logger.info(
                    "progress: reading stream %s as %s in group %s",
                    self.settings.stream,
                    self.settings.consumer,
                    self.settings.group,
                )
                delay = RECONNECT_MIN
                await self._read(client)
            except (RedisError, OSError) as e:
                if self.connected_since is not None:
                    logger.warning(
                        "progress: lost Redis (%s); live progress and stall detection pause "
                        "until it is back",
                        e,
                    )
                else:
                    logger.warning("progress: cannot reach Redis (%s); retrying in %.1fs", e, delay)
                self.connected_since = None
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, RECONNECT_MAX)

    async def _ensure_group(self, client: aioredis.Redis) -> None:
        # From the start of the stream: after a Redis restart without persistence, the first
        # entries come before the group does and must not be skipped.
        try:
            await client.xgroup_create(
                self.settings.stream, self.settings.group, "0", mkstream=True
            )
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def _read(self, client: aioredis.Redis) -> None:
        stream, group, consumer = self.settings.stream, self.settings.group, self.settings.consumer
        claimed_at = 0.0
        while not self._stopping.is_set():
            interval = min(CLAIM_INTERVAL, self.settings.claim_idle_seconds)
            if self.clock() - claimed_at >= interval:
                await self._claim(client)
                await self._trim(client)
                claimed_at = self.clock()
            try:
                reply = await client.xreadgroup(
                    group, consumer, {stream: ">"}, count=READ_BATCH, block=READ_BLOCK_MS
                )
            except ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                # The stream or the group was deleted (e.g. Redis restarted empty).
                await self._ensure_group(client)
                continue
            # RESP2 replies: [(stream, [(id, fields), ...])], or nothing after the block.
            for _name, entries in cast(list[tuple[Any, Sequence[Any]]], reply or []):
                await self._take(client, entries)

    async def _take(self, client: aioredis.Redis, entries: Sequence[Any]) -> None:
        now = self.clock()
        ids: list[Any] = []
        added = False
        for entry_id, fields in entries:
            ids.append(entry_id)
            if not fields:
                continue  # trimmed away while pending
            event = parse_event(fields)
            if event is None:
                self._bad_entry(entry_id, fields)
                continue
            self.events += 1
            if self.accepts is not None and not self.accepts(event):
                self.ignored += 1
                continue
            self.board.add(event, now)
            added = True
        if ids:
            await client.xack(self.settings.stream, self.settings.group, *ids)
        if added:
            self._changed.set()

    def _bad_entry(self, entry_id: Any, fields: Mapping[Any, Any]) -> None:
        self.bad_entries += 1
        now = self.clock()
        if now - self._bad_logged_at >= BAD_ENTRY_LOG_INTERVAL:
            self._bad_logged_at = now
            logger.warning(
                "progress: skipping stream entries that are not progress events (%d so far; "
                "e.g. %s with fields %s)",
                self.bad_entries,
                entry_id,
                sorted(str(k) for k in fields)[:10],
            )

    async def _trim(self, client: aioredis.Redis) -> None:
        """Workers bound the stream as they add (XADD MAXLEN ~); this bounds it if one does
        not. An approximate trim removes at most 100 radix-tree nodes (10,000 entries by
        default) per call, so a long stream takes a few calls."""
        for _ in range(100):
            removed = await client.xtrim(
                self.settings.stream, maxlen=PROGRESS_STREAM_MAXLEN, approximate=True
            )
            if removed < TRIM_BATCH_AT_LEAST:
                break

    async def _claim(self, client: aioredis.Redis) -> None:
        """Take over what dead replicas read but never acknowledged, and forget them."""
        stream, group, consumer = self.settings.stream, self.settings.group, self.settings.consumer
        start: Any = "0-0"
        for _ in range(100):  # at most 100 batches per round; the next round goes on
            reply = await client.xautoclaim(
                stream,
                group,
                consumer,
                int(self.settings.claim_idle_seconds * 1000),
                start_id=start,
                count=READ_BATCH,
            )
            start, entries = reply[0], cast(Sequence[Any], reply[1])
            if entries:
                logger.info("progress: claimed %d entries of a departed replica", len(entries))
                await self._take(client, entries)
            if start in (b"0-0", "0-0"):
                break
        for info in await client.xinfo_consumers(stream, group):
            name = info.get("name")
            name = name.decode() if isinstance(name, bytes) else name
            idle = int(info.get("idle", 0))
            gone = info.get("pending") == 0 and idle >= FORGET_CONSUMER_MS
            if isinstance(name, str) and name != consumer and gone:
                await client.xgroup_delconsumer(stream, group, name)

    async def _release(self) -> None:
        forgot_at = self.clock()
        while not self._stopping.is_set():
            now = self.clock()
            keys = self.board.take_due(now)
            if keys and self.on_release is not None:
                self.on_release(keys)
            if now - forgot_at >= 60:
                self.board.forget_older_than(now - FORGET_JOB_SECONDS)
                forgot_at = now
            due = self.board.next_due(self.clock())
            timeout = 1.0 if due is None else min(1.0, max(0.02, due - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
            self._changed.clear()
