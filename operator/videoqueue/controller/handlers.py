"""kopf glue: watch events feed the controller's index; nothing here decides or writes.

Only `on.event` handlers are used: they need no finalizers and no progress annotations, so
watching costs no API writes (kopf's per-object state annotations would cost one or two
writes per job).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from videoqueue.api import GROUP, VERSION
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.pods import LABEL_JOB
from videoqueue.controller.runtime import Controller

logger = logging.getLogger(__name__)

_controller: Controller | None = None


def controller() -> Controller:
    if _controller is None:
        raise RuntimeError("the operator has not started")
    return _controller


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _controller
    # kopf would post an Event for every handler log line; ours are posted on transitions.
    settings.posting.enabled = False
    # Coalesce bursts of events per object briefly; the scheduler loop coalesces further.
    settings.batching.batch_window = 0.05
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    kube = await KubeClient.from_kubeconfig()
    _controller = Controller(kube)
    logger.info("videoqueue controller started")


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    if _controller is not None:
        await _controller.stop()
        await _controller.kube.close()


def _deleted(event: kopf.RawEvent) -> bool:
    return event.get("type") == "DELETED"


@kopf.on.event(GROUP, VERSION, "videoqueues")
async def queue_event(event: kopf.RawEvent, **_: Any) -> None:
    controller().observe_queue(dict(event["object"]), deleted=_deleted(event))


@kopf.on.event(GROUP, VERSION, "videojobs")
async def job_event(event: kopf.RawEvent, **_: Any) -> None:
    controller().observe_job(dict(event["object"]), deleted=_deleted(event))


@kopf.on.event("", "v1", "pods", labels={LABEL_JOB: kopf.PRESENT})
async def pod_event(event: kopf.RawEvent, **_: Any) -> None:
    controller().observe_pod(dict(event["object"]), deleted=_deleted(event))
