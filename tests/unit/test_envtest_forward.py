"""The relay that puts the API server on the pod network (envtest/forward.py): bytes both
ways, a half-close passed on, a refused target closes the client's connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from videoqueue.envtest.forward import serve


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read()  # until the client's half-close
    writer.write(data.upper())
    await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def relay_to(target_port: int) -> AsyncIterator[int]:
    """A relay on a free loopback port to `target_port`; yields its port."""
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port: int = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    task = asyncio.create_task(serve(("127.0.0.1", port), ("127.0.0.1", target_port)))
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.01)
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_relay_passes_bytes_both_ways_and_the_half_close() -> None:
    target = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with target, relay_to(target.sockets[0].getsockname()[1]) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x" * 200_000 + b"end")
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
    assert answer == b"X" * 200_000 + b"END"


async def test_relay_closes_the_client_when_the_target_refuses() -> None:
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    refused_port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    async with relay_to(refused_port) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        writer.close()
