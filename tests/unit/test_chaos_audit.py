"""The chaos benchmark's pure parts: the seeded plan and the audit that counts what went
wrong (benchmarks/chaos/plan.py, audit.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import urllib.request
from typing import Any

import pytest
from benchmarks.chaos.audit import (
    Delivery,
    attempt_problems,
    audit,
    delivery_key,
    recoveries,
    statistics_problems,
)
from benchmarks.chaos.plan import FaultKind, Outcome, PlannedJob, plan_faults, plan_jobs
from benchmarks.chaos.receiver import DELIVERY_HEADER, Receiver

from videoqueue.envtest.kwok import REASON, REASON_FOR_ATTEMPT

Q = "q"


def job(
    name: str,
    phase: str | None,
    attempt: int,
    *,
    uid: str | None = None,
    notification: dict[str, Any] | None = None,
    queue: str = Q,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "attempt": attempt,
        "attempts": [{"attempt": n} for n in range(1, attempt + 1)],
    }
    if notification is not None:
        status["notification"] = notification
    return {
        "metadata": {"name": name, "uid": uid or f"uid-{name}"},
        "spec": {"queueName": queue},
        "status": status,
    }


def queue(succeeded: int, failed: int, *, on: list[str] | None = None) -> dict[str, Any]:
    notifications: dict[str, Any] = {"url": "http://127.0.0.1:1/hook"}
    if on is not None:
        notifications["on"] = on
    return {
        "spec": {"notifications": notifications},
        "status": {"statistics": {"succeeded": succeeded, "failed": failed}},
    }


def hook(key: str) -> Delivery:
    return Delivery(key, "ns", 0.0, signed=True)


OK = PlannedJob("a", Q, 5, Outcome.OK, "1s")
RETRY = PlannedJob("b", Q, 3, Outcome.RETRY, "1s")
FAIL = PlannedJob("c", Q, 9, Outcome.FAIL, "1s")


World = tuple[
    dict[str, dict[str, Any]],
    dict[str, dict[int, list[str]]],
    dict[str, dict[str, Any]],
    list[Delivery],
]


def clean_world() -> World:
    jobs = {
        "a": job("a", "Succeeded", 1),
        "b": job("b", "Succeeded", 2),
        "c": job("c", "Failed", 2),
    }
    pods = {"a": {1: ["p-a1"]}, "b": {1: ["p-b1"], 2: ["p-b2"]}, "c": {1: ["p-c1"], 2: ["p-c2"]}}
    hooks = [hook("uid-a/1/Succeeded"), hook("uid-b/2/Succeeded"), hook("uid-c/2/Failed")]
    return jobs, pods, {Q: queue(2, 1)}, hooks


def test_a_clean_run_counts_zero_everywhere() -> None:
    jobs, pods, queues, hooks = clean_world()
    found = audit([OK, RETRY, FAIL], jobs, pods, queues, hooks)
    assert found.clean
    assert found.counts() == {
        "jobs lost": 0,
        "jobs stuck": 0,
        "attempts run twice": 0,
        "attempts without a pod seen": 0,
        "unexpected outcomes": 0,
        "notifications owed, not sent": None,  # no job has status.notification yet
        "deliveries not validly signed": 0,
        "statistics disagreeing": 0,
    }


def test_each_kind_of_damage_is_counted_once_where_it_belongs() -> None:
    jobs, pods, _, hooks = clean_world()
    del jobs["a"]  # lost
    jobs["b"] = job("b", "Running", 2)  # stuck
    pods["c"] = {1: ["p-c1"], 2: ["p-c2", "p-c2-again"]}  # attempt 2 ran twice
    found = audit([OK, RETRY, FAIL], jobs, pods, {Q: queue(0, 1)}, hooks)
    assert (found.lost, found.stuck) == (["a: missing"], ["b: Running (attempt 2)"])
    assert found.twice == ["c: attempt 2 ran in 2 pods"]
    assert found.statistics == []
    assert not found.clean


def test_an_attempt_the_watch_never_saw_is_counted_so_twice_is_not_vacuous() -> None:
    jobs, pods, queues, hooks = clean_world()
    del pods["b"][1]
    found = audit([OK, RETRY, FAIL], jobs, pods, queues, hooks)
    assert found.unobserved == ["b: no pod seen for attempts [1]"]
    assert not found.clean


def test_an_outcome_its_script_does_not_give_is_counted() -> None:
    jobs, pods, queues, hooks = clean_world()
    jobs["b"] = job("b", "Succeeded", 3)  # an extra attempt
    pods["b"][3] = ["p-b3"]
    found = audit([OK, RETRY, FAIL], jobs, pods, queues, hooks)
    assert found.outcome == ["b (retry): ('Succeeded', 3), expected ('Succeeded', 2)"]


@pytest.mark.parametrize(
    ("attempts", "pods", "problem"),
    [
        pytest.param([1, 2], {1: ["x"], 2: ["y"]}, None, id="clean"),
        pytest.param([1, 1], {1: ["x"]}, "status.attempts [1, 1] for attempt 2", id="repeated"),
        pytest.param([1, 3], {1: ["x"]}, "status.attempts [1, 3] for attempt 2", id="skipped"),
        pytest.param([1, 2], {1: ["x"], 3: ["z"]}, "pods for attempts [3] beyond", id="unrecorded"),
        pytest.param([1, 2], {2: ["y", "y"]}, None, id="one-pod-seen-twice-by-the-watch"),
    ],
)
def test_attempt_history_problems(
    attempts: list[int], pods: dict[int, list[str]], problem: str | None
) -> None:
    status = {"attempt": 2, "attempts": [{"attempt": n} for n in attempts]}
    found = attempt_problems(status, pods)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1
        assert found[0].startswith(problem)


def test_history_longer_than_kept_starts_after_the_dropped_attempts() -> None:
    status = {"attempt": 25, "attempts": [{"attempt": n} for n in range(6, 26)]}
    assert attempt_problems(status, {}) == []


def test_notifications_are_na_until_the_status_field_exists_but_misses_are_reported() -> None:
    jobs, pods, queues, _ = clean_world()
    found = audit([OK, RETRY, FAIL], jobs, pods, queues, [hook("uid-a/1/Succeeded")])
    assert found.notifications is None
    assert found.clean
    assert [line.split(":")[0] for line in found.receiver_missed] == ["b", "c"]


def test_notifications_owed_count_undelivered_state_and_missing_keys() -> None:
    jobs, pods, queues, hooks = clean_world()
    for j in jobs.values():
        j["status"]["notification"] = {"state": "Delivered"}
    jobs["b"]["status"]["notification"] = {"state": "Pending"}  # received, but not recorded
    hooks = [h for h in hooks if not h.key.startswith("uid-c")]  # never received
    found = audit([OK, RETRY, FAIL], jobs, pods, queues, hooks)
    assert [line.split(":")[0] for line in found.notifications or []] == ["b", "c"]
    assert not found.clean


def test_a_queue_that_does_not_notify_failures_owes_none() -> None:
    jobs, pods, _, hooks = clean_world()
    queues = {Q: queue(2, 1, on=["Succeeded"])}
    found = audit([OK, RETRY, FAIL], jobs, pods, queues, hooks[:2])
    assert found.receiver_missed == []


def test_duplicate_deliveries_are_allowed_and_counted() -> None:
    jobs, pods, queues, hooks = clean_world()
    found = audit([OK, RETRY, FAIL], jobs, pods, queues, [*hooks, hooks[0]])
    assert found.clean
    assert found.duplicate_deliveries == 1


def test_statistics_are_compared_per_queue() -> None:
    jobs = {
        "a": job("a", "Succeeded", 1),
        "b": job("b", "Failed", 1, queue="other"),
        "c": job("c", "Running", 1),
    }
    queues = {Q: queue(1, 0), "other": queue(0, 0)}
    assert statistics_problems(jobs, queues) == [
        "queue other: statistics {'succeeded': 0, 'failed': 0}, jobs {'succeeded': 0, 'failed': 1}"
    ]


def test_the_delivery_key_is_the_header_or_built_from_the_body() -> None:
    body = {"uid": "u", "attempts": 2, "outcome": "Failed"}
    assert delivery_key("u/2/Failed", {}) == "u/2/Failed"
    assert delivery_key(None, body) == "u/2/Failed"


def test_recovery_is_the_first_admission_after_each_fault() -> None:
    admissions = [10.0, 3.0, 12.5, 30.0]
    assert recoveries([2.0, 10.0, 30.0], admissions) == [1.0, 2.5, None]


def test_the_plan_is_seeded_and_mixes_every_outcome() -> None:
    first = plan_jobs(random.Random(7), 400, ["q-0", "q-1"], ("1s", "2s"))
    assert first == plan_jobs(random.Random(7), 400, ["q-0", "q-1"], ("1s", "2s"))
    assert {j.outcome for j in first} == set(Outcome)
    assert {j.priority for j in first} == set(range(11))
    assert {j.queue for j in first} == {"q-0", "q-1"}


def test_job_manifests_script_their_outcome() -> None:
    fail = PlannedJob("c", Q, 9, Outcome.FAIL, "2s").manifest()
    assert fail["metadata"]["annotations"][REASON] == "Error"
    assert fail["spec"]["maxAttempts"] == 2
    oom = PlannedJob("o", Q, 1, Outcome.OOM, "2s").manifest()
    assert oom["metadata"]["annotations"][REASON_FOR_ATTEMPT.format(attempt=1)] == "OOMKilled"
    assert "maxAttempts" not in oom["spec"]


def test_replica_kills_come_last_the_rest_shuffled() -> None:
    counts = {FaultKind.OPERATOR_KILL: 3, FaultKind.ETCD_RESTART: 1, FaultKind.REPLICA_KILL: 2}
    faults = plan_faults(random.Random(1), counts, (1.0, 2.0))
    kinds = [f.kind for f in faults]
    assert sorted(kinds[:4]) == sorted([FaultKind.OPERATOR_KILL] * 3 + [FaultKind.ETCD_RESTART])
    assert kinds[4:] == [FaultKind.REPLICA_KILL] * 2
    assert all(1.0 <= f.pause <= 2.0 for f in faults)


def test_the_key_recorded_in_status_is_the_one_looked_for() -> None:
    jobs, pods, queues, hooks = clean_world()
    for j in jobs.values():
        j["status"]["notification"] = {"state": "Delivered"}
    jobs["a"]["status"]["notification"]["key"] = "their-own-key"
    found = audit([OK, RETRY, FAIL], jobs, pods, queues, [*hooks[1:], hook("their-own-key")])
    assert found.notifications == []


def test_the_receiver_records_keys_namespaces_and_verified_signatures() -> None:
    body = json.dumps({"uid": "u", "attempts": 1, "outcome": "Succeeded", "namespace": "ns"})
    digest = hmac.new(b"key", b"1700000000." + body.encode(), hashlib.sha256).hexdigest()
    signed = {"X-VideoQueue-Timestamp": "1700000000", "X-VideoQueue-Signature": f"sha256={digest}"}
    forged = {**signed, "X-VideoQueue-Timestamp": "1700000001"}  # the signature no longer fits
    with Receiver(b"key") as receiver:
        for headers in ({}, {DELIVERY_HEADER: "u/1/Succeeded", **signed}, forged):
            request = urllib.request.Request(
                receiver.url, body.encode(), {"Content-Type": "application/json", **headers}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        got = receiver.of("ns")
    assert [(d.key, d.signed) for d in got] == [
        ("u/1/Succeeded", False),
        ("u/1/Succeeded", True),
        ("u/1/Succeeded", False),
    ]
    found = audit([], {}, {}, {}, got)
    assert found.counts()["deliveries not validly signed"] == 2
    assert receiver.of("other") == []
