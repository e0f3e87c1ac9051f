"""Progress reporting: stage, progress and heartbeat events to a Redis stream.

Publishing runs on a thread of its own so the work never waits for Redis: `stage()` and
`progress()` only queue an event. While Redis is unreachable, events wait in a bounded queue
(oldest progress dropped first), errors are logged at most once per interval, and the
connection is retried; nothing here can fail the job.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from videoqueue.api.progress import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_PROGRESS_STREAM,
    MAX_PROGRESS_MESSAGE_LENGTH,
    PROGRESS_STREAM_MAXLEN,
    ProgressEvent,
    ProgressKind,
)

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

MAX_PENDING_EVENTS = 512
ERROR_LOG_INTERVAL_SECONDS = 30.0
RETRY_SECONDS = 2.0
REDIS_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class RedisSettings:
    url: str
    password: str | None = None
    stream: str = DEFAULT_PROGRESS_STREAM
    ca_file: str | None = None
    """CA bundle for a rediss:// server with a private CA; the system's CAs otherwise."""


@dataclass(frozen=True)
class JobRef:
    namespace: str
    name: str
    uid: str
    attempt: int


class Sink:
    """Where events go. `add` raises on failure; the reporter retries."""

    def add(self, fields: dict[str, str]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class RedisSink(Sink):
    """XADDs to the stream. The client is made on first use, on the reporter's thread, so
    importing redis (a noticeable part of start-up) overlaps with the work."""

    def __init__(self, settings: RedisSettings) -> None:
        self._settings = settings
        self._client: redis.Redis | None = None

    def _connect(self) -> redis.Redis:
        if self._client is None:
            import redis

            tls = {"ssl_ca_certs": self._settings.ca_file} if self._settings.ca_file else {}
            self._client = redis.Redis.from_url(
                self._settings.url,
                password=self._settings.password,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                health_check_interval=30,
                **tls,
            )
        return self._client

    def add(self, fields: dict[str, str]) -> None:
        self._connect().xadd(
            self._settings.stream,
            fields,  # type: ignore[arg-type]  # redis' stub wants a broader dict type
            maxlen=PROGRESS_STREAM_MAXLEN,
            approximate=True,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class Reporter:
    """Publishes one attempt's events. Use as a context manager: on exit it sends what is
    still queued (for at most `flush_seconds`) and stops its thread."""

    def __init__(
        self,
        job: JobRef,
        sink: Sink | None,
        *,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        flush_seconds: float = 3.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._job = job
        self._sink = sink
        self._heartbeat = heartbeat_seconds
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._stage: str | None = None
        self._progress = 0
        self._pending: collections.deque[ProgressEvent] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._finished = False  # DONE is queued: no heartbeat may follow it
        self._thread: threading.Thread | None = None
        self._last_error_log = -ERROR_LOG_INTERVAL_SECONDS
        self.sent = 0
        self.failures = 0

    @property
    def current_progress(self) -> int:
        return self._progress

    def __enter__(self) -> Reporter:
        if self._sink is not None:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- what the work calls ---------------------------------------------------------------

    def stage(self, stage: str, message: str | None = None) -> None:
        self._stage = stage
        self._emit(ProgressKind.STAGE, message)

    def progress(self, percent: float) -> None:
        """Report percent done; values below the last one are ignored (never go back)."""
        value = max(0, min(100, int(percent)))
        if value <= self._progress:
            return
        self._progress = value
        self._emit(ProgressKind.PROGRESS, None)

    def done(self, message: str | None, *, succeeded: bool) -> None:
        if succeeded:
            self._progress = 100
        self._emit(ProgressKind.DONE, message)

    # --- internals ---------------------------------------------------------------------------

    def _event(self, kind: ProgressKind, message: str | None) -> ProgressEvent:
        if message is not None and len(message) > MAX_PROGRESS_MESSAGE_LENGTH:
            message = message[: MAX_PROGRESS_MESSAGE_LENGTH - 3] + "..."
        return ProgressEvent(
            namespace=self._job.namespace,
            job=self._job.name,
            uid=self._job.uid,
            attempt=self._job.attempt,
            kind=kind,
            stage=self._stage,
            progress=self._progress,
            message=message,
            ts=self._clock(),
        )

    def _emit(self, kind: ProgressKind, message: str | None) -> None:
        if self._sink is None:
            return
        event = self._event(kind, message)
        with self._cond:
            if len(self._pending) >= MAX_PENDING_EVENTS:
                self._drop_one()
            self._pending.append(event)
            self._finished = self._finished or kind == ProgressKind.DONE
            self._cond.notify()

    def _drop_one(self) -> None:
        # Keep stage changes and the final event; an older progress value is superseded.
        for i, event in enumerate(self._pending):
            if event.kind in (ProgressKind.PROGRESS, ProgressKind.HEARTBEAT):
                del self._pending[i]
                return
        self._pending.popleft()

    def _run(self) -> None:
        assert self._sink is not None
        # Heartbeats keep their own beat, whatever else is sent, so a consumer may watch
        # for them alone.
        next_heartbeat = self._clock() + self._heartbeat
        while True:
            with self._cond:
                if not self._pending and not self._closing:
                    self._cond.wait(max(0.0, next_heartbeat - self._clock()))
                if self._closing and not self._pending:
                    return
                if not (self._closing or self._finished) and self._clock() >= next_heartbeat:
                    # One waiting heartbeat says it all; an outage must not queue up more.
                    for stale in [e for e in self._pending if e.kind == ProgressKind.HEARTBEAT]:
                        self._pending.remove(stale)
                    self._pending.append(self._event(ProgressKind.HEARTBEAT, None))
                    next_heartbeat = self._clock() + self._heartbeat
                if not self._pending:
                    continue
                event = self._pending[0]
            try:
                self._sink.add(event.to_fields())
            except Exception as exc:  # any Redis or network failure: never fatal
                self.failures += 1
                self._log_error(exc)
                if self._closing:
                    return  # do not hold up the exit for an unreachable Redis
                with self._cond:
                    self._cond.wait(RETRY_SECONDS)
                continue
            with self._cond:
                if self._pending and self._pending[0] is event:
                    self._pending.popleft()
            self.sent += 1

    def _log_error(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL_SECONDS:
            self._last_error_log = now
            log.warning(
                "progress: cannot publish to Redis (%s: %s); the job goes on, retrying",
                type(exc).__name__,
                exc,
            )

    def close(self) -> None:
        if self._thread is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(self._flush_seconds)
        self._thread = None
        if self._sink is not None:
            self._sink.close()
