"""ShardFilter: a queue, its jobs and their worker pods land in the same shard, and only there."""

from __future__ import annotations

from typing import Any

import pytest

from videoqueue.controller.sharding import ShardFilter
from videoqueue.envtest.builders import WORKER, MakeJob, MakePod, MakeQueue
from videoqueue.scheduling.sharding import Shard, queue_key, shard_of
from videoqueue.scheduling.worker_pod import LABEL_QUEUE

COUNT = 4
FILTERS = [ShardFilter(Shard(i, COUNT)) for i in range(COUNT)]
# 40 queues in 40 namespaces (the benchmark's layout) and 40 in one namespace.
QUEUES = [(f"shards-{i:02d}", "bench") for i in range(40)] + [
    ("media", f"queue-{i}") for i in range(40)
]


def queue(namespace: str, name: str) -> MakeQueue:
    return MakeQueue(name, namespace).template(WORKER)


def job(namespace: str, queue_name: str, name: str = "clip") -> MakeJob:
    return MakeJob(name, namespace, queue=queue_name).uid(f"uid-{name}")


def pod(namespace: str, queue_name: str, name: str = "clip") -> dict[str, Any]:
    return MakePod(job(namespace, queue_name, name), queue(namespace, queue_name)).obj()


def keepers(kind: str, body: dict[str, Any]) -> list[int]:
    return [i for i, shard in enumerate(FILTERS) if shard.wants(kind, body)]


@pytest.mark.parametrize(("namespace", "name"), QUEUES[:8] + QUEUES[40:48])
def test_a_queue_its_jobs_and_their_pods_go_to_one_and_the_same_shard(
    namespace: str, name: str
) -> None:
    owner = [shard_of(queue_key(namespace, name), COUNT)]
    assert keepers("queue", queue(namespace, name).obj()) == owner
    assert keepers("job", job(namespace, name).obj()) == owner
    assert keepers("pod", pod(namespace, name)) == owner


def test_every_queue_has_exactly_one_owner() -> None:
    owners = [keepers("queue", queue(ns, name).obj()) for ns, name in QUEUES]
    assert all(len(found) == 1 for found in owners)
    assert {found[0] for found in owners} == set(range(COUNT))


def test_a_job_goes_by_its_queue_not_by_its_own_name() -> None:
    names = [f"job-{i}" for i in range(20)]
    assert {tuple(keepers("job", job("media", "queue-1", n).obj())) for n in names} == {
        tuple(keepers("queue", queue("media", "queue-1").obj()))
    }


def test_the_same_queue_name_in_two_namespaces_is_two_queues() -> None:
    owners = {keepers("queue", queue(f"team-{i}", "work").obj())[0] for i in range(30)}
    assert len(owners) > 1


def test_a_deleted_objects_last_body_is_routed_alike() -> None:
    """A DELETED event carries the object's last state: labels and spec included."""
    body = pod("media", "queue-3")
    body["metadata"]["deletionTimestamp"] = "2026-12-03T16:00:00Z"
    assert keepers("pod", body) == keepers("queue", queue("media", "queue-3").obj())


def test_a_pod_without_the_queue_label_is_kept_by_every_shard() -> None:
    body = pod("media", "queue-3")
    del body["metadata"]["labels"][LABEL_QUEUE]
    assert keepers("pod", body) == list(range(COUNT))


def test_nodes_are_kept_by_every_shard() -> None:
    node = {"metadata": {"name": "kwok-node-0"}, "status": {"conditions": []}}
    assert keepers("node", node) == list(range(COUNT))


def test_the_only_shard_keeps_everything() -> None:
    only = ShardFilter(Shard(0, 1))
    assert all(only.wants("queue", queue(ns, name).obj()) for ns, name in QUEUES)
    assert only.wants("job", job("media", "anything").obj())


# -- wiring -----------------------------------------------------------------------------------


class Recorder:
    """Stands in for the Controller: records what reaches the index."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def observe_queue(self, body: dict[str, Any], *, deleted: bool) -> None:
        self.seen.append(("queue", body["metadata"]["name"]))

    def observe_job(self, body: dict[str, Any], *, deleted: bool) -> None:
        self.seen.append(("job", body["metadata"]["name"]))

    def observe_pod(self, body: dict[str, Any], *, deleted: bool) -> None:
        self.seen.append(("pod", body["metadata"]["name"]))

    def observe_node(self, body: dict[str, Any], *, deleted: bool) -> None:
        self.seen.append(("node", body["metadata"]["name"]))


def test_the_handlers_drop_other_shards_objects_before_the_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from videoqueue.controller import handlers

    mine = next(q for q in QUEUES if shard_of(queue_key(*q), 2) == 0)
    theirs = next(q for q in QUEUES if shard_of(queue_key(*q), 2) == 1)
    monkeypatch.setattr(handlers._state, "shard", ShardFilter(Shard(0, 2)))
    monkeypatch.setattr(handlers._state, "announced", set())
    target = Recorder()
    for ns, name in (mine, theirs):
        handlers._observe(target, "queue", queue(ns, name).obj(), deleted=False)  # type: ignore[arg-type]
        handlers._observe(target, "job", job(ns, name, f"job-{ns}").obj(), deleted=False)  # type: ignore[arg-type]
        handlers._observe(target, "pod", pod(ns, name, f"job-{ns}"), deleted=False)  # type: ignore[arg-type]
    node = {"metadata": {"name": "kwok-node-0"}}
    handlers._observe(target, "node", node, deleted=False)  # type: ignore[arg-type]
    assert target.seen == [
        ("queue", mine[1]),
        ("job", f"job-{mine[0]}"),
        ("pod", f"job-{mine[0]}-a1"),
        ("node", "kwok-node-0"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--shard", "0/2"], "--shard needs --standalone", id="peering"),
        pytest.param(
            ["--standalone", "--shard", "2/2"],
            "--shard: shard index 2 is out of range for 2 shards",
            id="index-out-of-range",
        ),
        pytest.param(
            ["--standalone", "--shard", "two"], "--shard: expected INDEX/COUNT", id="malformed"
        ),
    ],
)
def test_the_shard_flag_is_checked_before_anything_starts(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from videoqueue.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
