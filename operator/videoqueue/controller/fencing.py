"""Fencing: the acting replica holds a coordination.k8s.io/v1 Lease, and writes nothing once
its claim may have lapsed.

kopf peering chooses which replica acts, but a replica frozen past the peering lifetime (a
long GC pause, SIGSTOP, a stalled VM) wakes up still believing it acts, next to the one that
took over. So the acting replica also holds a Lease, as client-go's leader election does:
- it takes the Lease only when it is free, its own, or expired. Expired is judged on this
  replica's own clock: the holder's record (its resourceVersion) has not changed for the
  holder's `leaseDurationSeconds` since this replica first saw it. Clocks of other machines
  (the record's renewTime) are never compared with ours. Every replica polls the Lease from
  startup, so a standby's observation is already running when it is told to act;
- it renews the Lease every `duration / 4` with optimistic concurrency (the resourceVersion
  it read goes into the patch: a write that raced another one is refused with 409);
- `check()` runs before every write the operator sends (`KubeClient.write_guard`): the last
  confirmed renewal, timed by the monotonic clock when its request was *sent*, must be
  younger than `duration - margin`. Another replica cannot take the Lease before
  `duration` after it last saw that renewal, which is after it was sent; the margin absorbs
  the difference in clock rates and the time a write spends on the wire.
A replica whose claim lapsed is stale for good: `check()` refuses every write, and
`on_stale` is called once (the operator logs it and exits, to start again with nothing
remembered, as controller-runtime does on lost leadership). The Lease's own requests go
through a client of their own, without the guard, and so do kopf's peering keep-alives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from videoqueue.controller.kube import FencedError, KubeApiError, KubeClient, KubeError
from videoqueue.controller.kube_helpers import LEASES, Obj

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseSettings:
    name: str
    namespace: str
    identity: str  # this replica's holderIdentity
    duration: int  # seconds: leaseDurationSeconds of our claims

    @property
    def period(self) -> float:
        """How often the Lease is read (standing by) or renewed (holding)."""
        return self.duration / 4

    @property
    def valid_for(self) -> float:
        """How long after a confirmed renewal was sent this replica may still write:
        `duration` minus a margin of a quarter (two renewals in a row may fail)."""
        return self.duration * 3 / 4


@dataclass(frozen=True)
class Seen:
    """The Lease as this replica last read it, and when (monotonic) that version was first
    seen: the start of its expiry as this replica judges it."""

    holder: str  # "" when free
    duration: float
    version: str
    since: float


def observe(previous: Seen | None, lease: Obj, now: float) -> Seen:
    spec = lease.get("spec") or {}
    version = str((lease.get("metadata") or {}).get("resourceVersion", ""))
    since = previous.since if previous is not None and previous.version == version else now
    return Seen(
        holder=spec.get("holderIdentity") or "",
        duration=float(spec.get("leaseDurationSeconds") or 0),
        version=version,
        since=since,
    )


def may_take(seen: Seen, identity: str, now: float) -> bool:
    """Free, already ours, or unchanged for its holder's whole duration as we watched it."""
    return not seen.holder or seen.holder == identity or now >= seen.since + seen.duration


def micro_time(at: datetime) -> str:
    """A MicroTime as the API server writes it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claim(lease: Obj | None, settings: LeaseSettings, at: datetime) -> Obj:
    """The Lease (to create) or the merge patch (to apply) that makes it ours until
    `at + duration`; a patch carries the resourceVersion read, so it fails if another
    write came first."""
    stamp = micro_time(at)
    spec: dict[str, Any] = {
        "holderIdentity": settings.identity,
        "leaseDurationSeconds": settings.duration,
        "renewTime": stamp,
    }
    if lease is None:
        return {
            "apiVersion": LEASES.api_version,
            "kind": "Lease",
            "metadata": {"name": settings.name, "namespace": settings.namespace},
            "spec": {**spec, "acquireTime": stamp, "leaseTransitions": 0},
        }
    current = lease.get("spec") or {}
    if current.get("holderIdentity") != settings.identity:
        spec["acquireTime"] = stamp
        spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
    return {"metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]}, "spec": spec}


class Fence:
    """This replica's claim on the Lease: poll it (`run`), take and keep it while acting
    (`acquire`, `release`), and guard writes (`check`)."""

    def __init__(
        self,
        kube: KubeClient,
        settings: LeaseSettings,
        *,
        on_stale: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube  # a client of its own: the Lease is never behind queued writes
        self.settings = settings
        self.on_stale = on_stale
        self.clock = clock
        self.wall = wall
        self.wanted = False  # this replica acts (or is about to) and so needs the Lease
        self.confirmed: float | None = None  # when our last confirmed claim was sent
        self.stale: str | None = None  # why our claim lapsed; final
        self.seen: Seen | None = None
        self._held = asyncio.Event()
        self._poke = asyncio.Event()
        self._lock = asyncio.Lock()
        self._waiting_logged = ""

    # -- the guard ------------------------------------------------------------------------

    def check(self) -> None:
        """Raise FencedError unless this replica holds a fresh claim."""
        if self.stale is None and self.confirmed is not None:
            age = self.clock() - self.confirmed
            if age < self.settings.valid_for:
                return
            self._lose(f"no renewal of the Lease confirmed for {age:.1f}s")
        if self.stale is not None:
            raise FencedError(f"this replica is fenced: {self.stale}")
        raise FencedError("this replica does not hold the Lease: it does not act")

    def _lose(self, why: str) -> None:
        if self.stale is not None:
            return
        self.stale = why
        self.confirmed = None
        self._held.clear()
        self.on_stale(why)

    # -- taking and giving up -------------------------------------------------------------

    async def acquire(self) -> None:
        """Return once this replica holds the Lease."""
        self.wanted = True
        self._poke.set()
        await self._held.wait()

    async def release(self) -> None:
        """Stop wanting the Lease; if held, free it so the next replica takes it at once.
        Call only once this replica's writes have stopped."""
        async with self._lock:
            self.wanted = False
            self._held.clear()
            held, self.confirmed = self.confirmed, None
            if held is None or self.stale is not None or self.seen is None:
                return
            patch = {
                "metadata": {"resourceVersion": self.seen.version},
                "spec": {"holderIdentity": None, "leaseDurationSeconds": 1},
            }
            try:
                await self.kube.patch(LEASES, self.settings.namespace, self.settings.name, patch)
                logger.info("fencing: released Lease %s", self._ref)
            except KubeError as e:
                logger.warning("fencing: could not release Lease %s (%s)", self._ref, e)

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Read the Lease every period, and take or renew it while wanted; ends when stale."""
        while self.stale is None:
            try:
                async with self._lock:
                    await self.step()
            except KubeError as e:
                logger.warning("fencing: Lease %s: %s", self._ref, e)
            except Exception:
                logger.exception("fencing: Lease %s", self._ref)  # retried: the guard holds
            if self.stale is not None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.next_step_in())
            self._poke.clear()

    def next_step_in(self) -> float:
        """A period; less when waiting for another holder's Lease that expires sooner."""
        seen, now = self.seen, self.clock()
        if self.wanted and seen is not None and not may_take(seen, self.settings.identity, now):
            return max(0.0, min(self.settings.period, seen.since + seen.duration - now))
        return self.settings.period

    async def step(self) -> None:
        if self.confirmed is not None:
            self.check_quietly()
        if self.stale is not None:
            return
        lease = await self.kube.get(LEASES, self.settings.namespace, self.settings.name)
        now = self.clock()
        self.seen = observe(self.seen, lease, now) if lease is not None else None
        holder = self.seen.holder if self.seen is not None else None
        if self.confirmed is not None and holder != self.settings.identity:
            self._lose(f"the Lease is now held by {holder or 'nobody'}")
            return
        if not self.wanted:
            return
        if self.seen is not None and not may_take(self.seen, self.settings.identity, now):
            self._log_waiting(self.seen, now)
            return
        sent = self.clock()
        body = claim(lease, self.settings, self.wall())
        try:
            if lease is None:
                written, created = await self.kube.create(LEASES, self.settings.namespace, body)
                if not created:
                    self.seen = observe(self.seen, written, self.clock())
                    return  # another replica created it first: judged from the next read
            else:
                found = await self.kube.patch(
                    LEASES, self.settings.namespace, self.settings.name, body
                )
                if found is None:
                    return  # deleted meanwhile: created at the next step
                written = found
        except KubeApiError as e:
            if e.status == 409:
                return  # another write came first: judged from the next read
            raise
        self.seen = observe(self.seen, written, sent)
        if self.stale is not None or not self.wanted:
            return
        if self.confirmed is None:
            logger.info("fencing: holding Lease %s as %s", self._ref, self.settings.identity)
        self.confirmed = sent
        self._waiting_logged = ""
        self._held.set()

    def check_quietly(self) -> None:
        with contextlib.suppress(FencedError):
            self.check()

    def _log_waiting(self, seen: Seen, now: float) -> None:
        if self._waiting_logged != seen.holder:
            self._waiting_logged = seen.holder
            logger.info(
                "fencing: Lease %s is held by %s; taking it if unrenewed for %.0fs more",
                self._ref,
                seen.holder,
                max(0.0, seen.since + seen.duration - now),
            )

    @property
    def _ref(self) -> str:
        return f"{self.settings.namespace}/{self.settings.name}"
