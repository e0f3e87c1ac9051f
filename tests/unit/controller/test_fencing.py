"""Fencing (videoqueue.controller.fencing): when a replica may take the Lease, renewing it,
and refusing every write once its claim may have lapsed.

Each replica has a clock of its own, moved by hand. The Lease lives in a small in-memory
store that keeps a resourceVersion and refuses a patch carrying an old one (409), as the API
server does; the integration test (tests/integration/test_operator_fencing.py) runs the same
code against the real API server.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from videoqueue.controller.fencing import (
    Fence,
    LeaseSettings,
    Seen,
    claim,
    may_take,
    micro_time,
    observe,
)
from videoqueue.controller.kube import FencedError, KubeApiError, KubeClient
from videoqueue.controller.kube_helpers import CreateResult, Obj, Resource

DURATION = 12  # seconds: renewed every 3, writes allowed for 9 after a confirmed renewal
AT = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def settings(identity: str) -> LeaseSettings:
    return LeaseSettings("videoqueue-operator", "ops", identity, DURATION)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class LeaseStore:
    """One Lease with a resourceVersion, and the writes made to it."""

    def __init__(self) -> None:
        self.lease: Obj | None = None
        self.version = 0
        self.writes: list[str] = []
        self.down = False
        self.conflict_next = False

    def _stored(self, lease: Obj) -> Obj:
        self.version += 1
        lease["metadata"]["resourceVersion"] = str(self.version)
        self.lease = lease
        return copy.deepcopy(lease)

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Obj | None:
        if self.down:
            raise KubeApiError(503, "ServiceUnavailable", "down", {})
        return copy.deepcopy(self.lease)

    async def create(self, resource: Resource, namespace: str | None, body: Obj) -> CreateResult:
        if self.lease is not None:
            return CreateResult(copy.deepcopy(self.lease), created=False)
        self.writes.append("create")
        return CreateResult(self._stored(copy.deepcopy(body)), created=True)

    async def patch(
        self, resource: Resource, namespace: str | None, name: str, patch: Any, **_: Any
    ) -> Obj | None:
        if self.down:
            raise KubeApiError(503, "ServiceUnavailable", "down", {})
        if self.lease is None:
            return None
        version = (patch.get("metadata") or {}).get("resourceVersion")
        if self.conflict_next:
            self.conflict_next = False
            self._stored(copy.deepcopy(self.lease))  # someone else's write
        if version is not None and version != self.lease["metadata"]["resourceVersion"]:
            raise KubeApiError(409, "Conflict", "the object has been modified", {})
        self.writes.append("patch")
        lease = copy.deepcopy(self.lease)
        for key, value in patch.get("spec", {}).items():
            if value is None:
                lease["spec"].pop(key, None)
            else:
                lease["spec"][key] = value
        return self._stored(lease)

    @property
    def holder(self) -> str | None:
        return None if self.lease is None else self.lease["spec"].get("holderIdentity")


class Replica:
    def __init__(self, store: LeaseStore, identity: str, now: float = 1000.0) -> None:
        self.clock = Clock(now)
        self.stale: list[str] = []
        self.fence = Fence(
            cast(KubeClient, store),
            settings(identity),
            on_stale=self.stale.append,
            clock=self.clock,
            wall=lambda: AT + timedelta(seconds=self.clock.now),
        )

    async def acquire(self) -> asyncio.Task[None]:
        """Ask for the Lease and take one step: the task is done if it was taken."""
        task = asyncio.create_task(self.fence.acquire())
        await asyncio.sleep(0)
        await self.fence.step()
        await asyncio.sleep(0)
        return task

    def may_write(self) -> bool:
        try:
            self.fence.check()
        except FencedError:
            return False
        return True


# -- the pure rules -------------------------------------------------------------------------


def lease(holder: str | None, version: str, duration: int = DURATION) -> Obj:
    spec: dict[str, Any] = {"leaseDurationSeconds": duration}
    if holder is not None:
        spec["holderIdentity"] = holder
    return {"metadata": {"resourceVersion": version}, "spec": spec}


def test_expiry_counts_from_when_this_replica_first_saw_the_version() -> None:
    first = observe(None, lease("a", "7"), now=100.0)
    same = observe(first, lease("a", "7"), now=110.0)
    renewed = observe(same, lease("a", "8"), now=111.0)
    assert (first.since, same.since, renewed.since) == (100.0, 100.0, 111.0)
    assert renewed == Seen(holder="a", duration=DURATION, version="8", since=111.0)


@pytest.mark.parametrize(
    ("holder", "now", "expected"),
    [
        pytest.param("", 100.0, True, id="free"),
        pytest.param("me", 100.0, True, id="already-ours"),
        pytest.param("other", 100.0 + DURATION - 0.1, False, id="other-not-yet-expired"),
        pytest.param("other", 100.0 + DURATION, True, id="other-unchanged-for-its-duration"),
    ],
)
def test_may_take(holder: str, now: float, expected: bool) -> None:
    seen = Seen(holder=holder, duration=DURATION, version="1", since=100.0)
    assert may_take(seen, "me", now) is expected


def test_a_claim_creates_renews_or_takes_over() -> None:
    mine = settings("me")
    created = claim(None, mine, AT)
    assert created["spec"] == {
        "holderIdentity": "me",
        "leaseDurationSeconds": DURATION,
        "renewTime": "2026-12-03T09:00:00.000000Z",
        "acquireTime": "2026-12-03T09:00:00.000000Z",
        "leaseTransitions": 0,
    }
    later = AT + timedelta(seconds=3, microseconds=5)
    renewal = claim({**lease("me", "4"), "spec": {"holderIdentity": "me"}}, mine, later)
    assert renewal["metadata"] == {"resourceVersion": "4"}  # the optimistic lock
    assert renewal["spec"]["renewTime"] == micro_time(later) == "2026-12-03T09:00:03.000005Z"
    assert "acquireTime" not in renewal["spec"]
    takeover = claim(
        {
            "metadata": {"resourceVersion": "9"},
            "spec": {"holderIdentity": "b", "leaseTransitions": 2},
        },
        mine,
        later,
    )
    assert takeover["spec"]["leaseTransitions"] == 3
    assert takeover["spec"]["acquireTime"] == micro_time(later)


def test_settings_leave_a_margin_below_the_duration() -> None:
    s = settings("me")
    assert s.period == DURATION / 4
    assert s.period < s.valid_for < s.duration


# -- a replica and its Lease ----------------------------------------------------------------


async def test_a_replica_writes_only_while_it_holds_a_fresh_claim() -> None:
    store = LeaseStore()
    a = Replica(store, "a")
    assert not a.may_write()  # standing by: no claim at all
    assert not a.stale  # ...which is not being stale

    taken = await a.acquire()
    assert taken.done()
    assert store.holder == "a"
    assert store.writes == ["create"]
    assert a.may_write()

    # Renewed every period: the claim stays fresh as long as renewals are confirmed.
    for _ in range(5):
        a.clock.advance(settings("a").period)
        await a.fence.step()
        assert a.may_write()
    assert store.writes == ["create"] + ["patch"] * 5

    # Renewals fail (the API server is away): writes stop once the last confirmed one is
    # valid_for old, and the replica is stale for good.
    store.down = True
    a.clock.advance(settings("a").valid_for - 0.01)
    assert a.may_write()
    a.clock.advance(0.02)
    assert not a.may_write()
    assert len(a.stale) == 1
    assert "no renewal of the Lease confirmed" in a.stale[0]
    store.down = False
    a.clock.advance(1)
    await a.fence.step()  # never renews a lapsed claim
    assert not a.may_write()
    assert store.writes == ["create"] + ["patch"] * 5
    with pytest.raises(FencedError, match="fenced: no renewal"):
        a.fence.check()
    assert len(a.stale) == 1  # reported once


async def test_a_standby_takes_the_lease_only_once_unrenewed_for_its_duration() -> None:
    store = LeaseStore()
    a = Replica(store, "a", now=1000.0)
    b = Replica(store, "b", now=50.0)  # clocks of different machines never agree
    assert (await a.acquire()).done()
    await b.fence.step()  # b reads the Lease from startup, standing by

    # a renews; b's wait starts over each time it sees a new version.
    waiting = await b.acquire()
    for _ in range(4):
        a.clock.advance(3)
        await a.fence.step()
        b.clock.advance(3)
        await b.fence.step()
        assert not waiting.done()
        assert not b.may_write()
    assert store.holder == "a"

    # a freezes. b takes the Lease DURATION after it first saw a's last renewal, no sooner.
    b.clock.advance(DURATION - 0.1)
    await b.fence.step()
    assert not waiting.done()
    b.clock.advance(0.1)
    await b.fence.step()
    await asyncio.sleep(0)
    assert waiting.done()
    assert store.holder == "b"
    assert b.may_write()
    assert store.lease is not None
    assert store.lease["spec"]["leaseTransitions"] == 1

    # a wakes up: by its own clock its claim lapsed, so it writes nothing, and its step
    # renews nothing.
    a.clock.advance(DURATION + 5)
    writes = list(store.writes)
    assert not a.may_write()
    await a.fence.step()
    assert store.writes == writes
    assert store.holder == "b"
    assert a.stale


async def test_a_holder_that_sees_another_in_the_lease_stops_at_once() -> None:
    """Even within its validity (clocks that ran at different rates): the Lease says who
    holds it."""
    store = LeaseStore()
    a = Replica(store, "a")
    assert (await a.acquire()).done()
    assert store.lease is not None
    store.lease["spec"]["holderIdentity"] = "b"
    store.version += 1
    store.lease["metadata"]["resourceVersion"] = str(store.version)
    a.clock.advance(1)
    await a.fence.step()
    assert not a.may_write()
    assert a.stale == ["the Lease is now held by b"]


async def test_release_hands_over_at_once() -> None:
    store = LeaseStore()
    a, b = Replica(store, "a"), Replica(store, "b")
    assert (await a.acquire()).done()
    await b.fence.step()
    await a.fence.release()
    assert store.holder is None
    assert not a.may_write()
    assert not a.stale
    assert (await b.acquire()).done()  # no wait for expiry
    assert store.holder == "b"


async def test_a_restarted_replica_takes_its_own_lease_back_at_once() -> None:
    store = LeaseStore()
    first = Replica(store, "pod-1")
    assert (await first.acquire()).done()
    again = Replica(store, "pod-1", now=7.0)  # same identity, new process, fresh clock
    assert (await again.acquire()).done()
    assert again.may_write()


async def test_a_claim_that_loses_a_race_is_not_held() -> None:
    """Two replicas wrote after reading the same version: the second gets 409 and holds
    nothing; it judges again from its next read."""
    store = LeaseStore()
    a, b = Replica(store, "a"), Replica(store, "b")
    assert (await a.acquire()).done()
    await a.fence.release()  # free, at version 2
    store.conflict_next = True  # another write lands between b's read and b's claim
    waiting = await b.acquire()
    assert not waiting.done()
    assert not b.may_write()
    assert not b.stale
    await b.fence.step()
    await asyncio.sleep(0)
    assert waiting.done()
    assert b.may_write()


# -- flags ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--no-fencing"], id="default-mode"),
        pytest.param(["--peering", "p", "--no-fencing"], id="peering"),
    ],
)
def test_fencing_is_off_only_for_a_standalone_operator(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from videoqueue.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert "--no-fencing needs --standalone" in capsys.readouterr().err


def test_the_lease_and_the_identity_come_from_flags_then_the_pod(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from videoqueue import __main__ as entry

    monkeypatch.setattr(entry, "SERVICE_ACCOUNT_DIR", tmp_path)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert entry.lease_namespace(None) == "default"
    (tmp_path / "namespace").write_text("from-account\n")
    assert entry.lease_namespace(None) == "from-account"
    monkeypatch.setenv("POD_NAMESPACE", "from-pod")
    assert entry.lease_namespace(None) == "from-pod"
    assert entry.lease_namespace("from-flag") == "from-flag"

    monkeypatch.setenv("POD_ID", "videoqueue-operator-7d9f-x2")
    assert entry.own_identity() == "videoqueue-operator-7d9f-x2"
    monkeypatch.delenv("POD_ID")
    assert entry.own_identity() != entry.own_identity()  # random: two processes never tie


async def test_a_replica_waiting_for_the_lease_looks_again_when_it_expires() -> None:
    store = LeaseStore()
    a, b = Replica(store, "a"), Replica(store, "b")
    assert (await a.acquire()).done()
    assert b.fence.next_step_in() == settings("b").period  # standing by: every period
    await b.acquire()
    b.clock.advance(DURATION - 1)
    assert b.fence.next_step_in() == pytest.approx(1.0)  # sooner than a period
    b.clock.advance(1)
    await b.fence.step()
    assert store.holder == "b"
