"""The operator's HTTP server: /metrics (every metric of `videoqueue.controller.metrics`),
/healthz and /readyz.

It runs in the operator's event loop, so a scrape reads the index between two steps of the
scheduler loops (never half-way through one), and /healthz answering proves the loop is not
stuck.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from videoqueue.controller.metrics import REGISTRY, STATE, Activity


def make_app(activity: Callable[[], Activity]) -> web.Application:
    """/metrics (Prometheus text format), /healthz (liveness: the event loop answers) and
    /readyz (200 once the replica acts on a primed index or stands by; 503 while starting or
    priming)."""
    STATE.source = activity

    async def metrics(_: web.Request) -> web.Response:
        # The 0.0.4 text format: what every Prometheus reads (Debian's 2.42 included); the
        # names here are all plain, so the body is the same as the newer format's.
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        current = activity()
        return web.Response(text=f"{current.state}\n", status=200 if current.ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_server(host: str, port: int, activity: Callable[[], Activity]) -> web.AppRunner:
    """Serve `make_app` on host:port in the running loop; `await runner.cleanup()` stops it.
    Raises OSError when the address cannot be bound."""
    runner = web.AppRunner(make_app(activity), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
