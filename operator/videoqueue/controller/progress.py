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

This module is the Redis side (`ProgressChannel`); the per-job state it feeds is in
`progress_board`, and how the operator reaches Redis in `progress_settings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from videoqueue.api import VideoJob
from videoqueue.api.progress import PROGRESS_STREAM_MAXLEN, ProgressEvent, parse_event
from videoqueue.controller.progress_settings import ProgressSettings
from videoqueue.scheduling.progress_board import ProgressBoard, ProgressReport

logger = logging.getLogger(__name__)

# Entries read per XREADGROUP, and how long one blocks (the loop also claims and trims).
READ_BATCH: Final = 1000
READ_BLOCK_MS: Final = 1000
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

    def released(self, job: VideoJob) -> ProgressReport | None:
        """The job's latest values released for writing (`scheduling.progress_board`)."""
        return self.board.released(f"{job.metadata.namespace}/{job.metadata.name}")

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
