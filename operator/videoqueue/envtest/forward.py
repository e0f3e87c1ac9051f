"""The API server on a real node's pod network: a TCP relay from the node's bridge address to
the API server on 127.0.0.1.

The `kubernetes` Service's endpoint cannot be 127.0.0.1 (the API refuses loopback endpoint
addresses) and the API server listens on loopback only, so envtest makes the endpoint the
first real node's bridge address, where this relay listens. Pods still connect to the
Service's ClusterIP (10.96.0.1:443, what the kubelet puts in KUBERNETES_SERVICE_HOST/PORT);
kube-proxy's rules turn it into this endpoint. TLS passes through untouched: the API server's
certificate names 10.96.0.1.

Usage: python -m videoqueue.envtest.forward LISTEN_HOST:PORT TARGET_HOST:PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

_CHUNK = 1 << 16


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # a half-close reaches the other side as one


async def _relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(
        _pipe(client_reader, server_writer),
        _pipe(server_reader, client_writer),
        return_exceptions=True,
    )
    for writer in (client_writer, server_writer):
        writer.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    server = await asyncio.start_server(
        lambda r, w: _relay(r, w, target), listen[0], listen[1], reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit(__doc__)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(_address(argv[0]), _address(argv[1])))


if __name__ == "__main__":
    main(sys.argv[1:])
