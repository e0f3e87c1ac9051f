"""A queue's statistics are durable (issue 18): counted in the queue's status, each finished
job exactly once, so TTL deletion, restarts and SIGKILLs at the moment jobs finish change
nothing. Checked against the jobs' own records, which a watch keeps after the jobs are gone.

The tests start and SIGKILL operator processes of their own, so the module has a control
plane of its own (as tests/integration/test_operator_resilience.py does).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import watch
from urllib3.exceptions import ProtocolError

from videoqueue.envtest import LocalCluster, poll
from videoqueue.envtest.kwok import EXIT_CODE, RUN_DURATION
from videoqueue.envtest.operator_process import OperatorProcess

from .objects import GROUP, VERSION, create, make_job, make_queue, timestamp, wait_queue

pytestmark = pytest.mark.integration

FAIL = {EXIT_CODE: "1", RUN_DURATION: "1s"}
OUTCOMES = ("Succeeded", "Failed")


@pytest.fixture(scope="module")
def cluster(own_cluster: LocalCluster) -> LocalCluster:
    """This module's own control plane stands in for the session's (see above)."""
    return own_cluster


class JobRecorder:
    """The last status each job of the namespace had, kept after the job is deleted."""

    def __init__(self, custom: Any, namespace: str) -> None:
        self.custom, self.namespace = custom, namespace
        self.statuses: dict[str, dict[str, Any]] = {}
        self.deleted_at: dict[str, float] = {}  # when the watch saw each deletion
        self._lock = threading.Lock()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> JobRecorder:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._watch.stop()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        stream = self._watch.stream(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "videojobs",
            timeout_seconds=900,
        )
        with contextlib.suppress(ProtocolError):  # the stream ends when the test stops it
            for event in stream:
                job = event["object"]
                with self._lock:
                    self.statuses[job["metadata"]["name"]] = job.get("status") or {}
                    if event["type"] == "DELETED":
                        self.deleted_at[job["metadata"]["name"]] = time.time()

    def finished(self) -> dict[str, dict[str, Any]]:
        """The jobs that Succeeded or Failed, with their status."""
        with self._lock:
            return {n: s for n, s in self.statuses.items() if s.get("phase") in OUTCOMES}


def assert_counts_match(stats: dict[str, Any], finished: dict[str, dict[str, Any]]) -> None:
    """The queue's statistics against the jobs' own records (one window: all of them)."""
    phases = [s["phase"] for s in finished.values()]
    assert (stats["succeeded"], stats["failed"]) == (
        phases.count("Succeeded"),
        phases.count("Failed"),
    )
    runs = [s["runSeconds"] for s in finished.values()]
    waits = [s["waitSeconds"] for s in finished.values()]
    assert stats["meanRunSeconds"] == pytest.approx(sum(runs) / len(runs), abs=2e-3)
    assert stats["meanWaitSeconds"] == pytest.approx(sum(waits) / len(waits), abs=2e-3)
    # Every outcome is counted: nothing finished after the watermark.
    last = max(timestamp(s["completionTime"]) for s in finished.values())
    assert timestamp(stats["countedThrough"]) >= last


def more_than(jobs: JobRecorder, seen: int) -> Callable[[], int | None]:
    """A probe: how many jobs finished, once more than `seen` did."""

    def probe() -> int | None:
        count = len(jobs.finished())
        return count if count > seen else None

    return probe


def statistics(queue: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = queue.get("status", {}).get("statistics") or {}
    return found


def test_statistics_survive_ttl_deletion_and_a_restart(
    cluster: LocalCluster, custom: Any, namespace: str, tmp_path: Path
) -> None:
    """Jobs finish and their TTL deletes them; the operator restarts with none of them
    left: the statistics and the failure-rate health they give are unchanged, and the
    next job adds to them."""
    operator = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", ["--standalone"])
    ttl = {"succeeded": 3, "failed": 3}
    queue = make_queue(concurrency=6, ttlSecondsAfterFinished=ttl, health={"minFinished": 4})
    with JobRecorder(custom, namespace) as jobs, operator:
        operator.wait_for_log("videoqueue controller started", timeout=60)
        create(custom, namespace, "videoqueues", queue)
        for n in range(4):
            create(custom, namespace, "videojobs", make_job(f"ok-{n}"))
        for n in range(2):
            failing = make_job(f"bad-{n}", annotations=FAIL)
            failing["spec"]["maxAttempts"] = 1
            create(custom, namespace, "videojobs", failing)
        poll(
            lambda: len(jobs.deleted_at) == 6 or None,
            timeout=120,
            what="all six jobs to finish and be deleted by their TTL",
        )
        before = wait_queue(
            custom, namespace, lambda q: statistics(q).get("finished") == 6, "six jobs counted"
        )
        assert before["status"]["health"] == "Warning"  # 2 of 6 failed: over 10 %

        operator.kill()
        operator.start()
        operator.wait_for_log("videoqueue controller started", timeout=60)
        # The restarted operator writes the queue's status: it counts a job finished since.
        create(custom, namespace, "videojobs", make_job("after-restart"))
        after = wait_queue(
            custom,
            namespace,
            lambda q: statistics(q).get("finished", 0) >= 7,
            "the restarted operator's count of the job finished since",
            timeout=90,
        )

    stats = statistics(after)
    assert_counts_match(stats, jobs.finished())
    assert (stats["finished"], stats["succeeded"], stats["failed"]) == (7, 5, 2)
    assert after["status"]["health"] == "Warning"  # 2 of 7 failed: still seen
    assert any(
        "of 7 jobs finished in the window failed" in r for r in after["status"]["healthReasons"]
    )


def test_sigkill_right_after_jobs_finish_counts_each_once(
    cluster: LocalCluster, custom: Any, namespace: str, tmp_path: Path
) -> None:
    """The operator is SIGKILLed right after jobs finished (their outcomes stored, the
    queue's count not yet written: it goes with the next queue status write, within 2 s)
    and restarted, five times over the run; the jobs finished before each restart are
    deleted by their TTL meanwhile. No job is counted twice or lost."""
    operator = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", ["--standalone"])
    ttl = {"succeeded": 1, "failed": 1}
    queue = make_queue(concurrency=3, ttlSecondsAfterFinished=ttl, health={"minFinished": 100})
    total, kill_after = 15, (1, 4, 7, 10, 13)
    restarts: list[float] = []
    with JobRecorder(custom, namespace) as jobs, operator:
        operator.wait_for_log("videoqueue controller started", timeout=60)
        create(custom, namespace, "videoqueues", queue)
        for n in range(total):
            if n % 4 == 3:
                failing = make_job(f"bad-{n:02d}", annotations=FAIL)
                failing["spec"]["maxAttempts"] = 1
                create(custom, namespace, "videojobs", failing)
            else:
                create(custom, namespace, "videojobs", make_job(f"ok-{n:02d}"))
        for threshold in kill_after:
            poll(
                more_than(jobs, threshold - 1),
                timeout=90,
                what=f"{threshold} jobs to finish",
                interval=0.05,
            )
            operator.kill()
            operator.start()
            restarts.append(time.time())
        poll(lambda: len(jobs.finished()) == total or None, timeout=120, what="every job")
        after = wait_queue(
            custom,
            namespace,
            lambda q: statistics(q).get("finished", 0) >= total,
            f"all {total} jobs counted",
            timeout=90,
        )

    stats = statistics(after)
    assert stats["finished"] == total
    assert_counts_match(stats, jobs.finished())
    # The restarts had jobs gone to forget: an operator that rebuilt its statistics from
    # the jobs still there would have lost them.
    gone_before_last = [name for name, at in jobs.deleted_at.items() if at < restarts[-1]]
    assert gone_before_last, f"no job was deleted before the last restart: {jobs.deleted_at}"
