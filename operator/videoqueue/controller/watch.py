"""The operator's own watch streams of VideoJobs and worker pods.

kopf's per-event machinery (a task and a cause per event, its own JSON decoding) was the
largest share of the operator's CPU under load (benchmarks/RESULTS.md, issue 17), and its
initial listing repeated the listing the controller is primed with. So jobs and pods are
watched here: each stream starts at the resourceVersion of the listing that primed the
controller (nothing between the two is missed or seen twice), parses each line once with
orjson, and hands the slimmed object to the controller. kopf still watches queues and nodes
(few events) and runs peering.

A stream ends normally every `WATCH_SECONDS` and is reopened from the last version it saw
(bookmarks keep that version fresh on a quiet stream). A failed connection or a refusal is
retried with capped backoff; a stream that keeps ending at once backs off too, so no loop
runs hot. A version the server no longer has (410 Gone: the stream was away longer than
etcd's compaction window) cannot be resumed: `on_expired` is called and the stream ends;
the caller primes a fresh controller from new listings, as at a takeover.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import orjson

from videoqueue.controller.entries import slim
from videoqueue.controller.kube import KubeApiError, KubeClient, KubeError
from videoqueue.controller.kube_helpers import Resource, backoff_delay

logger = logging.getLogger(__name__)

WATCH_SECONDS = 300
# A stream that ended sooner than this without an error counts as a failure (backs off).
SHORT_STREAM_SECONDS = 1.0
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0


class ExpiredError(Exception):
    """The stream's resourceVersion is gone from the server (410)."""


class WatchStream:
    """Follows one resource from `version`, calling `on_event(body, deleted)` per change."""

    def __init__(
        self,
        kube: KubeClient,
        resource: Resource,
        version: str,
        *,
        on_event: Callable[[dict[str, Any], bool], None],
        on_expired: Callable[[], None],
        label_selector: str | None = None,
        watch_seconds: int = WATCH_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.version = version
        self.on_event = on_event
        self.on_expired = on_expired
        self.label_selector = label_selector
        self.watch_seconds = watch_seconds
        self._rng = rng or random.Random()
        self.events = 0  # delivered, for tests and logs

    async def run(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            opened = loop.time()
            try:
                await self._follow()
            except ExpiredError:
                logger.warning(
                    "watch of %s: resourceVersion %s expired; listing everything again",
                    self.resource.plural,
                    self.version,
                )
                self.on_expired()
                return
            except (KubeError, orjson.JSONDecodeError) as error:
                failures += 1
                delay = self._delay(failures)
                logger.warning(
                    "watch of %s failed (%s); reopening in %.1fs",
                    self.resource.plural,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            if loop.time() - opened < SHORT_STREAM_SECONDS:
                failures += 1
                await asyncio.sleep(self._delay(failures))
            else:
                failures = 0

    async def _follow(self) -> None:
        try:
            lines = self.kube.watch_lines(
                self.resource,
                self.version,
                label_selector=self.label_selector,
                timeout_seconds=self.watch_seconds,
            )
            async for line in lines:
                self._handle(orjson.loads(line))
        except KubeApiError as error:
            if error.status == 410:
                raise ExpiredError from error
            raise

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        body = event.get("object") or {}
        if kind == "ERROR":
            code = body.get("code")
            if code == 410:
                raise ExpiredError
            raise KubeApiError(
                int(code or 500), str(body.get("reason", "")), str(body.get("message", "")), body
            )
        version = (body.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            try:
                self.on_event(slim(body), kind == "DELETED")
            except Exception:
                # A defect in handling one object must not stop the stream (kopf's handlers
                # were isolated the same way); its next change is handled afresh.
                logger.exception("handling a watch event of %s failed", self.resource.plural)
            self.events += 1
        if version:
            self.version = version

    def _delay(self, failures: int) -> float:
        return backoff_delay(
            failures - 1, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS, rng=self._rng
        )
