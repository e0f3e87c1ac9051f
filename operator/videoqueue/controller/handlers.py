"""kopf glue: watch events feed the controller's index; nothing here decides or writes.

Only `on.event` handlers are used: they need no finalizers and no progress annotations, so
watching costs no API writes (kopf's per-object state annotations would cost one or two
writes per job).

Peering (several replicas, one acting; see `videoqueue.__main__`): kopf pauses a replica
that is outranked by closing its watch streams, and re-lists everything when it resumes.
The controller's scheduler loops are ours, not kopf's, so pausing the streams alone would
leave them acting on an index that no longer changes. So when kopf pauses, the controller
is stopped and dropped (its index would miss deletions that happen while paused), and
when kopf resumes, a new one is built from the re-listing. kopf announces both only in its
log (there is no API for it), so `PeeringSwitch` listens to kopf's peering logger.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from videoqueue.api import GROUP, VERSION
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.pods import LABEL_JOB
from videoqueue.controller.runtime import Controller

logger = logging.getLogger(__name__)

_controller: Controller | None = None
_kube: KubeClient | None = None
# Queues this replica has announced it schedules, since it last became active.
_announced: set[str] = set()
_background: set[asyncio.Task[Any]] = set()

# What kopf 1.45 logs from this logger when it pauses or resumes an operator for peering
# (kopf/_core/engines/peering.py, process_peering_event). The two-replica integration test
# (tests/integration/test_operator_resilience.py) fails if a kopf upgrade changes them.
KOPF_PEERING_LOGGER = "kopf._core.engines.peering"
KOPF_PAUSING = ("Pausing operations in favour of", "Pausing all operators, including self")
KOPF_RESUMING = ("Resuming operations after the pause",)


def controller() -> Controller:
    """The acting controller (None while kopf has this replica paused raises)."""
    if _controller is None:
        raise RuntimeError("the operator has not started or stands by")
    return _controller


class PeeringSwitch(logging.Handler):
    """Stops the controller when kopf pauses this replica and starts a fresh one when kopf
    resumes it, on the log records kopf writes at exactly those transitions."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(level=logging.INFO)
        self.loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(KOPF_PAUSING):
            self.loop.call_soon_threadsafe(_pause)
        elif message.startswith(KOPF_RESUMING):
            self.loop.call_soon_threadsafe(_resume)


def _pause() -> None:
    global _controller
    stopping, _controller = _controller, None
    _announced.clear()
    if stopping is not None:
        logger.info("standing by: another replica acts; scheduler loops stopped")
        _spawn(stopping.stop())


def _resume() -> None:
    global _controller
    if _controller is None and _kube is not None:
        _controller = Controller(_kube)
    logger.info("acting: this replica now schedules (kopf re-lists every object)")


def _spawn(coroutine: Any) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _controller, _kube
    # kopf would post an Event for every handler log line; ours are posted on transitions.
    settings.posting.enabled = False
    # Coalesce bursts of events per object briefly; the scheduler loop coalesces further.
    settings.batching.batch_window = 0.05
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Peering keep-alives carry no annotations and no per-object state: kopf's peering
    # writes are one PATCH per replica per lifetime (settings.peering.lifetime).
    _kube = await KubeClient.from_kubeconfig()
    _controller = Controller(_kube)
    if not settings.peering.standalone:
        peering_logger = logging.getLogger(KOPF_PEERING_LOGGER)
        peering_logger.addHandler(PeeringSwitch(asyncio.get_running_loop()))
        if peering_logger.getEffectiveLevel() > logging.INFO:
            peering_logger.setLevel(logging.INFO)  # the switch needs kopf's INFO records
    logger.info("videoqueue controller started")


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    global _controller
    stopping, _controller = _controller, None
    if stopping is not None:
        await stopping.stop()
    if _kube is not None:
        await _kube.close()


def _deleted(event: kopf.RawEvent) -> bool:
    return event.get("type") == "DELETED"


@kopf.on.event(GROUP, VERSION, "videoqueues")
async def queue_event(event: kopf.RawEvent, **_: Any) -> None:
    active = _controller
    if active is None:
        return  # paused: kopf re-lists everything when it resumes
    body: dict[str, Any] = dict(event["object"])
    meta = body["metadata"]
    key = f"{meta['namespace']}/{meta['name']}"
    if key not in _announced and not _deleted(event):
        _announced.add(key)
        logger.info("scheduling queue %s on this replica", key)
    active.observe_queue(body, deleted=_deleted(event))


@kopf.on.event(GROUP, VERSION, "videojobs")
async def job_event(event: kopf.RawEvent, **_: Any) -> None:
    if (active := _controller) is not None:
        active.observe_job(dict(event["object"]), deleted=_deleted(event))


@kopf.on.event("", "v1", "pods", labels={LABEL_JOB: kopf.PRESENT})
async def pod_event(event: kopf.RawEvent, **_: Any) -> None:
    if (active := _controller) is not None:
        active.observe_pod(dict(event["object"]), deleted=_deleted(event))
