"""kopf glue and the watch streams: events feed the controller's index; nothing here decides
or writes.

Streams. kopf watches queues and nodes (few events) with `on.event` handlers only: they
need no finalizers and no progress annotations, so watching costs no API writes. Jobs and
worker pods, thousands of events a second under load, are watched by the operator's own
streams (`videoqueue.controller.watch`), started from the resourceVersions of the listings
that primed the controller.

Activation. The controller decides on its index, so the index must be whole before the
first decision: a job that is running but not yet indexed would leave its slot looking free,
and a worker pod whose admission is not yet in its job's status (the pod is created first)
is the only record of that admission. So a controller is primed when this replica starts
acting: queues, jobs and worker pods are listed (three GETs, paged), fed to a fresh
controller without yielding in between (its scheduler loops first run once everything is
indexed); the job and pod streams then start from their listings' versions, and the kopf
queue and node events that arrived meanwhile are replayed on top (stale ones are ignored by
resourceVersion). A stream whose version has expired (410) primes a fresh controller the
same way.

Peering (several replicas, one acting; see `videoqueue.__main__`). kopf pauses a replica
that is outranked by closing its watch streams, and re-lists everything when it resumes.
The scheduler loops and the job and pod streams are ours, not kopf's, so when kopf pauses,
the controller and its streams are stopped and dropped (its index would miss deletions that
happen while paused), and when kopf resumes, a fresh one is primed as above, after
`TAKEOVER_SETTLE_SECONDS` so that the writes the previous replica still had in flight have
landed. kopf announces pauses and resumptions only in its log (there is no API for them), so
`PeeringSwitch` listens to kopf's peering logger. A standalone operator is primed once, at
startup, before kopf starts watching.

Fencing (`videoqueue.controller.fencing`). Every replica reads the Lease from startup; a
replica told to act first takes the Lease (waiting for the previous holder's to expire, as
it sees it), then primes its controller. Every write of the operator's client is refused
unless the claim is fresh. A replica that stands down stops its controller and then frees
the Lease. A replica whose claim lapsed calls `on_stale` (from the memo): the operator exits
and is started afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Literal

import kopf

from videoqueue.api import GROUP, VERSION
from videoqueue.controller.entries import slim
from videoqueue.controller.fencing import Fence, LeaseSettings
from videoqueue.controller.kube import KubeClient, KubeError
from videoqueue.controller.kube_helpers import (
    PODS,
    VIDEOJOBS,
    VIDEOQUEUES,
    ClientSettings,
    Resource,
)
from videoqueue.controller.kubeconfig import find_connection_info
from videoqueue.controller.loop import Controller
from videoqueue.controller.metrics import Activity
from videoqueue.controller.progress_settings import ProgressSettings
from videoqueue.controller.sharding import ShardFilter
from videoqueue.controller.watch import WatchStream
from videoqueue.scheduling.worker_pod import LABEL_JOB

logger = logging.getLogger(__name__)

Kind = Literal["queue", "job", "pod", "node"]

# What kopf 1.45 logs from this logger when it pauses or resumes an operator for peering
# (kopf/_core/engines/peering.py, process_peering_event). The two-replica integration test
# (tests/integration/test_operator_resilience.py) fails if a kopf upgrade changes them.
KOPF_PEERING_LOGGER = "kopf._core.engines.peering"
KOPF_PAUSING = ("Pausing operations in favour of", "Pausing all operators, including self")
KOPF_RESUMING = ("Resuming operations after the pause",)
# How long a replica that takes over waits before listing: a replica that stood down at the
# same moment may still have requests on the wire.
TAKEOVER_SETTLE_SECONDS = 1.0
RETRY_SECONDS = 2.0


class _State:
    """This replica's acting state (one per process, like kopf's own registry)."""

    def __init__(self) -> None:
        self.kube: KubeClient | None = None
        # The acting controller, with a whole index; None while standing by or priming.
        self.controller: Controller | None = None
        # The acting controller's job and pod streams.
        self.streams: list[asyncio.Task[None]] = []
        # kopf's events that arrive while a controller is being primed, replayed on top.
        self.buffer: list[tuple[Kind, dict[str, Any], bool]] | None = None
        self.activation: asyncio.Task[None] | None = None
        # Queues this replica has announced it schedules, since it last became active.
        self.announced: set[str] = set()
        self.background: set[asyncio.Task[Any]] = set()
        # The Redis progress channel, if configured; each acting controller runs its own.
        self.progress: ProgressSettings | None = None
        # This replica's claim on the Lease (None: fencing off, standalone only).
        self.fence: Fence | None = None
        self.fence_loop: asyncio.Task[None] | None = None
        # Stopping the last controller and freeing the Lease: done before acting again.
        self.standing_down: asyncio.Task[None] | None = None
        # --shard (a simulation, videoqueue.controller.sharding): the queues kept; None: all.
        self.shard: ShardFilter | None = None


_state = _State()


def controller() -> Controller:
    """The acting controller; raises while this replica stands by."""
    if _state.controller is None:
        raise RuntimeError("the operator has not started, or stands by")
    return _state.controller


def activity() -> Activity:
    """What this replica does now, for the readiness probe and the metrics."""
    if _state.controller is not None:
        return Activity("acting", _state.controller, _state.kube)
    if _state.kube is None:
        return Activity("starting")
    if _state.buffer is not None:
        return Activity("priming", kube=_state.kube)
    return Activity("standing-by", kube=_state.kube)


# -- activation -----------------------------------------------------------------------------


async def _activate(settle: float) -> None:
    """Prime a fresh controller from listings and make it the acting one."""
    kube = _state.kube
    assert kube is not None
    await asyncio.sleep(settle)
    if _state.standing_down is not None:
        await asyncio.shield(_state.standing_down)
    if _state.fence is not None:
        await _state.fence.acquire()  # listed after: what the previous holder wrote is seen
    listings: tuple[tuple[Kind, Resource, str | None], ...] = (
        ("queue", VIDEOQUEUES, None),
        ("job", VIDEOJOBS, None),
        ("pod", PODS, LABEL_JOB),  # after the jobs: a pod waits in the index for its job
    )
    while True:
        # Fed a page at a time (slimmed at once, so a listing of 20,000 jobs never sits in
        # memory whole); its scheduler loops start only once everything is indexed.
        fresh = Controller(
            kube, progress=_state.progress, start_loops=False, fence_check=kube.write_guard
        )
        listed: dict[tuple[Kind, str], int] = {}
        counts: dict[Kind, int] = {}
        feeds: list[_Feed] = []
        try:
            for kind, resource, selector in listings:
                version = ""
                async for items, page_version in kube.list_pages(resource, label_selector=selector):
                    version = page_version
                    if items is None:
                        raise _ListingRestartedError  # prime afresh: deletions meanwhile are unseen
                    for body in items:
                        if kind == "queue":  # only kopf's queue events are buffered
                            listed[(kind, _key(body))] = _version(body)
                        _observe(fresh, kind, slim(body), deleted=False)
                    counts[kind] = counts.get(kind, 0) + len(items)
                if kind != "queue":
                    # Watched from its listing's version at once (a version the server has
                    # forgotten cannot be resumed); events are held until priming is done.
                    feeds.append(_Feed(fresh, kube, kind, resource, version, selector))
            break
        except _ListingRestartedError:
            await _stop(fresh, feeds)
        except KubeError as e:
            await _stop(fresh, feeds)
            logger.warning("cannot list what to schedule (%s); retrying in %.0fs", e, RETRY_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)
    # From here on no awaits: what the streams and kopf brought meanwhile goes on top, then
    # the loops start.
    for feed in feeds:
        feed.release()
    for kind, body, deleted in _state.buffer or ():
        # A deletion older than what was listed is of an object since re-created.
        if deleted and _version(body) < listed.get((kind, _key(body)), -1):
            continue
        _observe(fresh, kind, body, deleted=deleted)
    _state.buffer = None
    _state.controller = fresh
    fresh.start_loops()
    logger.info(
        "acting: this replica now schedules (%d queues, %d jobs, %d worker pods)",
        counts.get("queue", 0),
        counts.get("job", 0),
        counts.get("pod", 0),
    )


class _Feed:
    """A watch stream of jobs or pods for the controller `target`: its events are held while
    `target` is being primed, then delivered as they come; it goes quiet once `target` no
    longer acts (its task is cancelled then, but may still hold an event in hand)."""

    def __init__(
        self,
        target: Controller,
        kube: KubeClient,
        kind: Kind,
        resource: Resource,
        version: str,
        selector: str | None,
    ) -> None:
        self.target = target
        self.kind = kind
        self.held: list[tuple[dict[str, Any], bool]] | None = []
        stream = WatchStream(
            kube,
            resource,
            version,
            on_event=self.deliver,
            on_expired=self.expired,
            label_selector=selector,
        )
        self.task = _spawn(stream.run())
        _state.streams.append(self.task)  # stopped by `_retire` whatever happens to priming

    def deliver(self, body: dict[str, Any], deleted: bool) -> None:
        if self.held is not None:
            self.held.append((body, deleted))
        elif _state.controller is self.target:
            _observe(self.target, self.kind, body, deleted=deleted)

    def release(self) -> None:
        for body, deleted in self.held or ():
            _observe(self.target, self.kind, body, deleted=deleted)
        self.held = None

    def expired(self) -> None:
        if self.held is not None or _state.controller is self.target:
            _reprime()


async def _stop(controller: Controller, feeds: list[_Feed]) -> None:
    for feed in feeds:
        feed.task.cancel()
        _state.streams.remove(feed.task)
    await controller.stop()


def _retire() -> Controller | None:
    """Detach the acting controller and stop its streams (a priming one's too); the caller
    stops the controller."""
    for task in _state.streams:
        task.cancel()
    _state.streams = []
    stopping, _state.controller = _state.controller, None
    return stopping


def _reprime() -> None:
    """Replace the acting controller with one primed from fresh listings, keeping the Lease."""
    stopping = _retire()
    if _state.activation is not None:
        _state.activation.cancel()  # a priming whose stream expired starts over
    _state.buffer = []

    async def again() -> None:
        if stopping is not None:
            await stopping.stop()
        await _activate(settle=0.0)

    _state.activation = _spawn(again())


class _ListingRestartedError(Exception):
    """A listing's continue token expired and it started over."""


def _begin_activation(settle: float) -> None:
    if _state.controller is not None or _state.buffer is not None:
        return  # acting, or priming already
    _state.buffer = []
    _state.activation = _spawn(_activate(settle))


def _pause() -> None:
    if _state.activation is not None:
        _state.activation.cancel()
        _state.activation = None
    stopping = _retire()
    _state.buffer = None
    _state.announced.clear()
    logger.info("standing by: another replica acts; scheduler loops stopped")
    _state.standing_down = _spawn(_stand_down(stopping))


async def _stand_down(stopping: Controller | None) -> None:
    """Stop the controller, then free the Lease: no write of ours follows the release."""
    if stopping is not None:
        await stopping.stop()
    if _state.fence is not None:
        await _state.fence.release()


def _spawn(coroutine: Any) -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(coroutine)
    _state.background.add(task)
    task.add_done_callback(_state.background.discard)
    return task


class PeeringSwitch(logging.Handler):
    """Stops the controller when kopf pauses this replica and primes a fresh one when kopf
    resumes it, on the log records kopf writes at exactly those transitions (before it
    closes or reopens its watch streams)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(level=logging.INFO)
        self.loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(KOPF_PAUSING):
            self.loop.call_soon_threadsafe(_pause)
        elif message.startswith(KOPF_RESUMING):
            self.loop.call_soon_threadsafe(_begin_activation, TAKEOVER_SETTLE_SECONDS)


# -- kopf handlers --------------------------------------------------------------------------


class NoDiffBase(kopf.DiffBaseStorage):
    """No essences: every handler here is an on-event one, so kopf never compares them,
    yet by default it builds one per watch event (a deep copy of the whole object), about
    a tenth of the operator's CPU under load (benchmarks/scale)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's own watches (queues, nodes, peering) connect as the operator's client does:
    one place for credentials (`find_connection_info`), so kopf needs neither the kubernetes
    nor the pykube client to log in (`videoqueue.__main__` keeps them out of the process)."""
    return find_connection_info()[0]


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf would post an Event for every handler log line; ours are posted on transitions.
    settings.posting.enabled = False
    settings.persistence.diffbase_storage = NoDiffBase()
    # Memory at scale: kopf lists in pages rather than all at once, and a per-object worker
    # (which holds its object's last event, managedFields and all) exits after 1 s idle
    # instead of 5: a burst of events for 20,000 jobs would otherwise pin all of them.
    settings.watching.chunk_size = 500
    settings.queueing.idle_timeout = 1.0
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Peering keep-alives carry no annotations and no per-object state: kopf's peering
    # writes are one PATCH per replica per lifetime (settings.peering.lifetime).
    user_agent: str | None = memo.get("user_agent")
    _state.kube = await KubeClient.from_kubeconfig(settings=ClientSettings(user_agent=user_agent))
    _state.progress = memo.get("progress")
    _state.shard = memo.get("shard")
    lease: LeaseSettings | None = memo.get("lease")
    if lease is not None:
        _state.fence = await _start_fence(lease, user_agent, memo["on_stale"])
        _state.kube.write_guard = _state.fence.check
    logger.info("videoqueue controller started")
    if settings.peering.standalone:
        _state.buffer = []
        await _activate(settle=0.0)  # before kopf watches anything
        return
    # Peering: kopf starts paused and says when this replica may act.
    peering_logger = logging.getLogger(KOPF_PEERING_LOGGER)
    peering_logger.addHandler(PeeringSwitch(asyncio.get_running_loop()))
    if peering_logger.getEffectiveLevel() > logging.INFO:
        peering_logger.setLevel(logging.INFO)  # the switch needs kopf's INFO records


async def _start_fence(
    lease: LeaseSettings, user_agent: str | None, on_stale: Callable[[str], None]
) -> Fence:
    # A client of its own, with short timeouts: a renewal that takes longer than a period is
    # worth less than the next one.
    settings = ClientSettings(
        user_agent=user_agent, request_timeout=lease.period, max_attempts=2, write_concurrency=2
    )
    fence = Fence(await KubeClient.from_kubeconfig(settings=settings), lease, on_stale=on_stale)
    _state.fence_loop = _spawn(fence.run())
    return fence


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    if _state.activation is not None:
        _state.activation.cancel()
    stopping = _retire()
    if _state.standing_down is not None:
        await asyncio.shield(_state.standing_down)
    await _stand_down(stopping)
    if _state.fence_loop is not None:
        _state.fence_loop.cancel()
    if _state.fence is not None:
        await _state.fence.kube.close()
    if _state.kube is not None:
        await _state.kube.close()


def _deleted(event: kopf.RawEvent) -> bool:
    return event.get("type") == "DELETED"


def _key(body: dict[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _version(body: dict[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion", -1))
    except (TypeError, ValueError):
        return -1


def _observe(target: Controller, kind: Kind, body: dict[str, Any], *, deleted: bool) -> None:
    if _state.shard is not None and not _state.shard.wants(kind, body):
        return  # another shard's queue, job or pod
    if kind == "queue":
        key = _key(body)
        if key not in _state.announced and not deleted:
            _state.announced.add(key)
            logger.info("scheduling queue %s on this replica", key)
        target.observe_queue(body, deleted=deleted)
    elif kind == "job":
        target.observe_job(body, deleted=deleted)
    elif kind == "node":
        target.observe_node(body, deleted=deleted)
    else:
        target.observe_pod(body, deleted=deleted)


def _dispatch(kind: Kind, event: kopf.RawEvent) -> None:
    body = slim(event["object"])
    if _state.controller is not None:
        _observe(_state.controller, kind, body, deleted=_deleted(event))
    elif _state.buffer is not None:
        _state.buffer.append((kind, body, _deleted(event)))
    # else standing by: kopf re-lists everything when it resumes


@kopf.on.event(GROUP, VERSION, "videoqueues")
async def queue_event(event: kopf.RawEvent, **_: Any) -> None:
    _dispatch("queue", event)


# Nodes only for their MemoryPressure condition (queues lower their concurrency under it).
@kopf.on.event("", "v1", "nodes")
async def node_event(event: kopf.RawEvent, **_: Any) -> None:
    _dispatch("node", event)
