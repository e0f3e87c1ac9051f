"""The progress channel against a real redis-server: consumer group, acknowledgements,
taking over a dead replica's entries, authentication, TLS with a private CA, a bounded
stream length, and an outage with reconnection.

No Kubernetes here: the channel's releases go to a recorder instead of a controller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import redis

from videoqueue.api.progress import PROGRESS_STREAM_MAXLEN, ProgressEvent, ProgressKind
from videoqueue.controller.progress import ProgressChannel
from videoqueue.controller.progress_settings import ProgressSettings
from videoqueue.envtest.pki import create_pki

from .redis_server import RedisServer, TlsFiles

pytestmark = pytest.mark.integration

STREAM = "test:progress"
UID = "3a1f2b4c-0000-4000-8000-000000000001"


def event(
    job: str, *, progress: int | None = None, attempt: int = 1, **values: object
) -> dict[str, str]:
    return ProgressEvent(
        namespace="media",
        job=job,
        uid=UID,
        attempt=attempt,
        kind=ProgressKind.PROGRESS if progress is not None else ProgressKind.HEARTBEAT,
        progress=progress,
        ts=time.time(),
        **values,  # type: ignore[arg-type]
    ).to_fields()


async def until(check: Callable[[], object], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


class Releases:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def __call__(self, keys: Sequence[str]) -> None:
        self.keys.extend(keys)


@pytest.fixture
async def channel(redis_server: RedisServer) -> AsyncIterator[tuple[ProgressChannel, Releases]]:
    releases = Releases()
    settings = ProgressSettings(
        url=redis_server.url,
        stream=STREAM,
        consumer="replica-a",
        job_interval=0.2,
        claim_idle_seconds=0.5,
    )
    progress = ProgressChannel(settings, on_release=releases)
    progress.start()
    try:
        await until(lambda: progress.connected_since, within=10, what="the channel to connect")
        yield progress, releases
    finally:
        await progress.stop()


async def test_events_are_read_acknowledged_and_released(
    channel: tuple[ProgressChannel, Releases], redis_server: RedisServer
) -> None:
    progress, releases = channel
    with redis_server.client() as r:
        for percent in (10, 50, 70):
            r.xadd(STREAM, event("clip", progress=percent, stage="processing"))
        await until(lambda: progress.events == 3, within=10, what="three events")
        await until(lambda: "media/clip" in releases.keys, within=5, what="a release")

        def released() -> tuple[str | None, int | None] | None:
            report = progress.board.released("media/clip")
            return None if report is None else (report.stage, report.progress)

        await until(lambda: released() == ("processing", 70), within=5, what="the latest values")
        pending = r.xpending(STREAM, progress.settings.group)
        assert pending["pending"] == 0


async def test_bad_entries_are_acknowledged_and_skipped(
    channel: tuple[ProgressChannel, Releases], redis_server: RedisServer
) -> None:
    progress, _ = channel
    with redis_server.client() as r:
        r.xadd(STREAM, {"namespace": "media", "job": "clip", "kind": "nonsense"})
        r.xadd(STREAM, event("clip", progress=5))
        await until(lambda: progress.events == 1, within=10, what="the good event")
        await until(lambda: progress.bad_entries == 1, within=5, what="the bad entry")
        await until(
            lambda: r.xpending(STREAM, progress.settings.group)["pending"] == 0,
            within=5,
            what="both acknowledged",
        )


async def test_entries_a_dead_replica_read_are_claimed(
    channel: tuple[ProgressChannel, Releases], redis_server: RedisServer
) -> None:
    progress, releases = channel
    group = progress.settings.group
    with redis_server.client() as r:
        # Another replica reads an entry and dies before acknowledging it: the live one has
        # it already delivered to the other, so only a claim brings it back.
        await until(lambda: r.exists(STREAM) and r.xinfo_groups(STREAM), within=5, what="the group")
        r.xadd(STREAM, event("orphan", progress=33))
        taken = r.xreadgroup(group, "replica-dead", {STREAM: ">"}, count=10)
        if not taken:  # the live replica was faster; hand it to the dead one instead
            entry_id = r.xrange(STREAM)[-1][0]
            r.xclaim(STREAM, group, "replica-dead", 0, [entry_id])
        else:
            entry_id = taken[0][1][0][0]
        await until(
            lambda: progress.board.released("media/orphan") is not None,
            within=20,
            what="the orphaned entry to be claimed and released",
        )
        assert "media/orphan" in releases.keys
        pending = r.xpending_range(STREAM, group, "-", "+", 10)
        assert entry_id not in [p["message_id"] for p in pending]


async def test_a_redis_outage_pauses_the_channel_and_it_resumes(
    channel: tuple[ProgressChannel, Releases], redis_server: RedisServer
) -> None:
    progress, _ = channel
    with redis_server.client() as r:
        r.xadd(STREAM, event("clip", progress=10))
        await until(lambda: progress.events == 1, within=10, what="the first event")
    redis_server.stop()
    await until(lambda: progress.connected_since is None, within=15, what="the outage noticed")
    redis_server.start()  # empty: no stream, no group
    await until(lambda: progress.connected_since, within=30, what="the channel to reconnect")
    with redis_server.client() as r:
        r.xadd(STREAM, event("clip", progress=60))
    await until(lambda: progress.events == 2, within=10, what="an event after the outage")

    def released_progress() -> int | None:
        released = progress.board.released("media/clip")
        return None if released is None else released.progress

    await until(lambda: released_progress() == 60, within=5, what="progress 60 released")


async def test_a_password_protected_redis(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", password="pa55") as server:
        releases = Releases()
        wrong = ProgressChannel(
            ProgressSettings(url=server.url, password="wrong", stream=STREAM, consumer="x")
        )
        right = ProgressChannel(
            ProgressSettings(
                url=server.url, password="pa55", stream=STREAM, consumer="y", job_interval=0.1
            ),
            on_release=releases,
        )
        wrong.start()
        right.start()
        try:
            await until(lambda: right.connected_since, within=10, what="the right password")
            with server.client() as r:
                r.xadd(STREAM, event("clip", progress=1))
            await until(lambda: releases.keys, within=10, what="a release")
            assert wrong.connected_since is None
        finally:
            await wrong.stop()
            await right.stop()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, password="nope").ping()


async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    pki = create_pki(tmp_path / "pki")  # a CA and a serving certificate for 127.0.0.1
    tls = TlsFiles(cert=pki.apiserver.cert, key=pki.apiserver.key, ca=pki.ca.cert)
    with RedisServer(tmp_path / "redis", tls=tls) as server:
        assert server.url.startswith("rediss://")
        releases = Releases()
        trusting = ProgressChannel(
            ProgressSettings(
                url=server.url,
                ca_file=str(pki.ca.cert),
                stream=STREAM,
                consumer="a",
                job_interval=0.1,
            ),
            on_release=releases,
        )
        # Without the CA the server's certificate cannot be verified: no connection.
        untrusting = ProgressChannel(ProgressSettings(url=server.url, stream=STREAM, consumer="b"))
        trusting.start()
        untrusting.start()
        try:
            await until(lambda: trusting.connected_since, within=10, what="a TLS connection")
            with server.client() as r:
                r.xadd(STREAM, event("clip", progress=12))
            await until(lambda: releases.keys, within=10, what="a release over TLS")
            assert untrusting.connected_since is None
        finally:
            await trusting.stop()
            await untrusting.stop()


async def test_the_stream_is_kept_bounded(redis_server: RedisServer) -> None:
    # A writer that does not bound its XADDs: the consumer trims the stream itself.
    with redis_server.client() as r:
        pipe = r.pipeline(transaction=False)
        for i in range(PROGRESS_STREAM_MAXLEN + 30_000):
            pipe.xadd(STREAM, {"n": str(i)})
        pipe.execute()
        assert r.xlen(STREAM) > PROGRESS_STREAM_MAXLEN + 20_000
        progress = ProgressChannel(ProgressSettings(url=redis_server.url, stream=STREAM))
        progress.start()
        try:
            # Approximate trimming keeps whole radix-tree nodes: a little over the bound.
            await until(
                lambda: r.xlen(STREAM) <= PROGRESS_STREAM_MAXLEN * 1.01,
                within=30,
                what="the stream trimmed",
            )
        finally:
            await progress.stop()
