"""Queue rules against the real control plane: capacity, deadlines, dependencies,
preemption, aging, rate limit, TTL, batches, queue deletion."""

from __future__ import annotations

import datetime
import subprocess
from typing import Any

import pytest

from tests.integration.objects import (
    GROUP,
    VERSION,
    condition,
    create,
    get_job,
    is_true,
    long_job,
    make_job,
    make_queue,
    timestamp,
    wait_job,
    wait_queue,
)
from videoqueue.envtest import poll, wait_for_object
from videoqueue.envtest.kwok import EXIT_CODE, RUN_DURATION

pytestmark = pytest.mark.integration

FAIL_ONCE = {EXIT_CODE: "1", RUN_DURATION: "1s"}


def wait_jobs(
    custom: Any, namespace: str, predicate: Any, what: str, timeout: float = 90
) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "videojobs"
        )["items"]
        return items if predicate(items) else None

    found: list[dict[str, Any]] = poll(check, timeout=timeout, what=what)
    return found


def reason(obj: dict[str, Any], type_: str) -> str | None:
    found = condition(obj, type_)
    return None if found is None else found.get("reason")


def events_for(core: Any, namespace: str, name: str) -> list[Any]:
    return [
        e for e in core.list_namespaced_event(namespace).items if e.involved_object.name == name
    ]


def test_max_pending_rejects_jobs_beyond_capacity_and_keeps_the_rest(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(state="Paused", maxPending=3))
    for n in range(1, 6):
        create(custom, namespace, "videojobs", make_job(f"j{n}"))

    jobs = wait_jobs(
        custom,
        namespace,
        lambda items: len(items) == 5 and all(i.get("status", {}).get("phase") for i in items),
        "all five jobs to have a phase",
    )
    phases = {j["metadata"]["name"]: j["status"]["phase"] for j in jobs}
    assert phases == {
        "j1": "Pending",
        "j2": "Pending",
        "j3": "Pending",
        "j4": "Rejected",
        "j5": "Rejected",
    }
    full = get_job(custom, namespace, "j4")
    assert reason(full, "Rejected") == "QueueFull"
    assert "spec.maxPending" in full["status"]["message"]
    poll(
        lambda: any(e.reason == "Rejected" for e in events_for(core, namespace, "j5")) or None,
        timeout=30,
        what="a Rejected Event for j5",
    )

    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "videoqueues", "work", {"spec": {"state": "Active"}}
    )
    for name in ("j1", "j2", "j3"):
        wait_job(custom, namespace, name, "Complete")


def test_attempt_past_its_deadline_fails_with_deadline_exceeded_and_is_retried(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(activeDeadlineSeconds=3))
    job = long_job("slow")
    job["spec"]["maxAttempts"] = 2
    create(custom, namespace, "videojobs", job)

    failed = wait_job(custom, namespace, "slow", "Failed", timeout=60)

    attempts = failed["status"]["attempts"]
    assert [a["reason"] for a in attempts] == ["DeadlineExceeded", "DeadlineExceeded"]
    assert reason(failed, "Failed") == "DeadlineExceeded"
    for record in attempts:
        ran = (timestamp(record["finishTime"]) - timestamp(record["startTime"])).total_seconds()
        assert 3 <= ran < 10
    poll(
        lambda: not core.list_namespaced_pod(namespace).items or None,
        timeout=60,
        what="the stopped workers to be gone",
    )


def test_job_fails_with_dependency_failed_when_a_dependency_fails_for_good(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    broken = make_job("probe", annotations=FAIL_ONCE)
    broken["spec"]["maxAttempts"] = 1
    create(custom, namespace, "videojobs", broken)
    after = make_job("transcode")
    after["spec"]["dependsOn"] = ["probe"]
    create(custom, namespace, "videojobs", after)

    failed = wait_job(custom, namespace, "transcode", "Failed")

    assert reason(failed, "Failed") == "DependencyFailed"
    assert "dependency probe ended Failed" in failed["status"]["message"]
    assert failed["status"].get("attempt", 0) == 0  # it never ran
    assert all(
        p.metadata.labels.get("videoqueue.dev/job") != "transcode"
        for p in core.list_namespaced_pod(namespace).items
    )


def test_preemption_evicts_a_lower_priority_job_which_is_requeued_without_using_an_attempt(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(concurrency=2, preemption="LowerPriority"))
    create(custom, namespace, "videojobs", long_job("low-a", priority=1))
    create(custom, namespace, "videojobs", long_job("low-b", priority=2))
    for name in ("low-a", "low-b"):
        wait_job(custom, namespace, name, "Running")

    create(custom, namespace, "videojobs", make_job("urgent", priority=9))

    wait_job(custom, namespace, "urgent", "Complete")
    evicted = get_job(custom, namespace, "low-a")
    assert evicted["status"]["attempts"][0]["reason"] == "Preempted"
    assert "urgent" in evicted["status"]["attempts"][0]["message"]
    assert evicted["status"]["phase"] in ("Pending", "Admitted", "Running")
    assert get_job(custom, namespace, "low-b")["status"]["attempts"][0].get("reason") is None
    assert any(e.reason == "Preempted" for e in events_for(core, namespace, "low-a"))
    # Re-admitted after the urgent job, as attempt 2 (the preempted one did not count).
    rerun = wait_job(custom, namespace, "low-a", "Running")
    assert rerun["status"]["attempt"] == 2


def test_aging_lets_a_long_waiting_low_priority_job_go_before_newer_high_priority_work(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    # One slot, held for 20 s; a priority-0 job waits behind it, then a priority-10 job
    # arrives. With one step per second the old job competes as priority 10 (and is older)
    # by the time the slot frees.
    create(
        custom,
        namespace,
        "videoqueues",
        make_queue(concurrency=1, aging={"intervalSeconds": 1, "maxBoost": 10}),
    )
    create(
        custom,
        namespace,
        "videojobs",
        make_job("blocker", priority=10, annotations={RUN_DURATION: "20s"}),
    )
    wait_job(custom, namespace, "blocker", "Running")
    create(custom, namespace, "videojobs", make_job("old-low", priority=0))
    wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videojobs",
        name="old-low",
        predicate=lambda j: j.get("status", {}).get("phase") == "Pending",
        timeout=30,
        what="old-low to be queued",
    )
    # Creation timestamps have whole seconds; the name breaks ties within one. Let a second
    # pass so that FIFO, not the name, orders the two once their priorities are equal.
    created = timestamp(get_job(custom, namespace, "old-low")["metadata"]["creationTimestamp"])
    poll(
        lambda: (
            datetime.datetime.now(datetime.UTC) >= created + datetime.timedelta(seconds=1) or None
        ),
        timeout=5,
        what="the next second",
    )
    create(custom, namespace, "videojobs", make_job("new-high", priority=10))

    low = wait_job(custom, namespace, "old-low", "Complete", timeout=60)
    high = wait_job(custom, namespace, "new-high", "Complete", timeout=60)
    assert timestamp(low["status"]["admittedTime"]) < timestamp(high["status"]["admittedTime"])


def test_rate_limit_spaces_starts_over_a_minute(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    create(
        custom,
        namespace,
        "videoqueues",
        make_queue(concurrency=10, rateLimit={"startsPerMinute": 2}),
    )
    for name in ("r1", "r2", "r3"):
        create(custom, namespace, "videojobs", make_job(name))

    limited = wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videojobs",
        name="r3",
        predicate=lambda j: reason(j, "Admitted") == "RateLimited",
        timeout=30,
        what="r3 to wait for the rate limit",
    )
    assert "startsPerMinute" in limited["status"]["message"]
    done = [
        wait_job(custom, namespace, name, "Complete", timeout=120) for name in ("r1", "r2", "r3")
    ]
    admitted = sorted(timestamp(j["status"]["admittedTime"]) for j in done)
    assert (admitted[2] - admitted[0]).total_seconds() >= 60


def test_finished_jobs_and_their_pods_are_deleted_after_their_ttl(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str
) -> None:
    create(
        custom,
        namespace,
        "videoqueues",
        make_queue(ttlSecondsAfterFinished={"succeeded": 2}),
    )
    create(custom, namespace, "videojobs", make_job("ok"))
    kept = make_job("failed-kept", annotations=FAIL_ONCE)
    kept["spec"]["maxAttempts"] = 1
    create(custom, namespace, "videojobs", kept)
    short = make_job("failed-short", annotations=FAIL_ONCE)
    short["spec"].update(maxAttempts=1, ttlSecondsAfterFinished={"failed": 1})
    create(custom, namespace, "videojobs", short)
    wait_job(custom, namespace, "failed-kept", "Failed")

    def names() -> set[str]:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "videojobs")
        return {i["metadata"]["name"] for i in items["items"]}

    poll(
        lambda: names() == {"failed-kept"} or None,
        timeout=60,
        what="ok and failed-short to be deleted",
    )
    poll(
        lambda: (
            {p.metadata.name for p in core.list_namespaced_pod(namespace).items}
            == {"failed-kept-a1"}
            or None
        ),
        timeout=60,
        what="the deleted jobs' pods to be garbage-collected",
    )


def test_queue_reports_progress_of_unfinished_batches(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(concurrency=4))
    for name, script in (("ep1-a", {}), ("ep1-b", {}), ("ep1-c", {RUN_DURATION: "600s"})):
        job = make_job(name, annotations=script)
        job["metadata"]["labels"] = {"videoqueue.dev/batch": "episode-1"}
        create(custom, namespace, "videojobs", job)
    done = make_job("ep0")
    done["metadata"]["labels"] = {"videoqueue.dev/batch": "episode-0"}
    create(custom, namespace, "videojobs", done)

    queue = wait_queue(
        custom,
        namespace,
        lambda q: [b.get("succeeded") for b in q.get("status", {}).get("batches", [])] == [2],
        "batch episode-1 with two jobs done",
    )

    assert queue["status"]["batches"] == [
        {"name": "episode-1", "total": 3, "pending": 0, "running": 1, "succeeded": 2, "failed": 0}
    ]


def test_deleting_a_queue_cancels_pending_jobs_lets_running_ones_finish_then_goes(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue(concurrency=1))
    create(custom, namespace, "videojobs", make_job("running", annotations={RUN_DURATION: "6s"}))
    wait_job(custom, namespace, "running", "Running")
    create(custom, namespace, "videojobs", make_job("waiting"))
    wait_queue(
        custom,
        namespace,
        lambda q: "videoqueue.dev/running-jobs" in q["metadata"].get("finalizers", []),
        "the queue's finalizer",
    )

    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "videoqueues", "work")

    cancelled = wait_job(custom, namespace, "waiting", "Cancelled")
    assert reason(cancelled, "Cancelled") == "QueueDeleted"
    queue = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "videoqueues", "work")
    assert queue["metadata"].get("deletionTimestamp")  # held while "running" runs
    wait_job(custom, namespace, "running", "Complete")

    def gone() -> bool | None:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "videoqueues")
        return not items["items"] or None

    poll(gone, timeout=30, what="the queue to be deleted")


def test_queue_statistics_and_health_match_the_jobs(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    """Statistics and health, checked against values computed from the jobs themselves."""
    create(
        custom,
        namespace,
        "videoqueues",
        make_queue(concurrency=6, health={"minFinished": 5}),
    )
    for n in range(4):
        job = make_job(f"ok-{n}", annotations={RUN_DURATION: "2s"})
        create(custom, namespace, "videojobs", job)
    for n in range(2):
        job = make_job(f"bad-{n}", annotations=FAIL_ONCE)
        job["spec"].update(maxAttempts=1, type="probe")
        create(custom, namespace, "videojobs", job)

    jobs = wait_jobs(
        custom,
        namespace,
        lambda items: (
            len(items) == 6
            and all(i.get("status", {}).get("phase") in ("Succeeded", "Failed") for i in items)
        ),
        "all six jobs to finish",
    )
    queue = wait_queue(
        custom,
        namespace,
        lambda q: (q.get("status", {}).get("statistics") or {}).get("finished") == 6,
        "statistics over six finished jobs",
    )

    stats = queue["status"]["statistics"]
    window = stats["windowSeconds"]
    assert window == 900
    assert (stats["succeeded"], stats["failed"]) == (4, 2)
    assert stats["successRate"] == pytest.approx(4 / 6, abs=1e-3)
    runs = [j["status"]["runSeconds"] for j in jobs]
    waits = [j["status"]["waitSeconds"] for j in jobs]
    assert stats["meanRunSeconds"] == pytest.approx(sum(runs) / 6, abs=1e-2)
    assert stats["meanWaitSeconds"] == pytest.approx(sum(waits) / 6, abs=1e-2)
    assert stats["throughputPerMinute"] == pytest.approx(6 * 60 / window, abs=1e-3)
    by_type = {t["type"]: t for t in stats["byType"]}
    assert by_type["transcode"]["finished"] == 4
    assert by_type["transcode"]["successRate"] == 1
    ok_runs = [j["status"]["runSeconds"] for j in jobs if j["spec"]["type"] == "transcode"]
    assert by_type["transcode"]["meanRunSeconds"] == pytest.approx(sum(ok_runs) / 4, abs=1e-2)
    assert 2 <= by_type["transcode"]["meanRunSeconds"] < 4  # the KWOK run time
    assert by_type["probe"]["successRate"] == 0
    # 2 of 6 failed: over the 10 % warning, under the 50 % critical threshold.
    assert queue["status"]["health"] == "Warning"
    assert any("33% of 6 jobs" in r for r in queue["status"]["healthReasons"])


def test_queue_whose_workers_cannot_be_scheduled_is_offline(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    queue = make_queue()
    queue["spec"]["template"]["spec"]["nodeSelector"] = {"videoqueue.dev/no-such-node": "x"}
    create(custom, namespace, "videoqueues", queue)
    create(custom, namespace, "videojobs", make_job("stuck"))

    offline = wait_queue(
        custom, namespace, lambda q: q.get("status", {}).get("health") == "Offline", "Offline"
    )

    assert is_true(offline, "Stalled")
    assert reason(offline, "Ready") == "WorkersCannotStart"
    assert "cannot be scheduled" in offline["status"]["healthReasons"][0]
