"""Learned memory sizing against the real API server, with KWOK worker pods whose results
(termination messages) carry scripted peaks: the first jobs of a key get the default and say
so; once enough of them finished, the next one gets the learned size, which survives an
operator SIGKILL and the deletion of the jobs it was learned from; a Static queue keeps the
default.

The tests start and SIGKILL operator processes of their own, so the module has a control
plane of its own (as tests/integration/test_queue_statistics.py does).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from videoqueue.cli.main import main
from videoqueue.envtest import LocalCluster, poll
from videoqueue.envtest.builders import MakeJob
from videoqueue.envtest.kwok import MESSAGE
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.scheduling.worker_pod import worker_pod_name

from .objects import GROUP, RESULT, VERSION, create, get_job, make_queue, wait_queue

pytestmark = pytest.mark.integration

Mi = 1024**2


@pytest.fixture(scope="module")
def cluster(own_cluster: LocalCluster) -> LocalCluster:
    """This module's own control plane stands in for the session's (see above)."""
    return own_cluster


def probe(name: str, peak_mi: int) -> dict[str, Any]:
    """A probe job whose KWOK worker succeeds reporting a peak of `peak_mi` MiB."""
    result = json.dumps({**RESULT, "peakMemoryBytes": peak_mi * Mi})
    return MakeJob(name).type("probe").annotations(**{MESSAGE: result}).obj()


def sizing_queue(sizing: str, **learned: Any) -> dict[str, Any]:
    memory = {"budget": "4Gi", "defaultRequest": "1Gi", "sizing": sizing, "learned": learned}
    return make_queue(concurrency=3, memory=memory, ttlSecondsAfterFinished={"succeeded": 1})


def wait_memory(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    """The job's status once its memory (and where it came from) is decided."""

    def decided() -> dict[str, Any] | None:
        status: dict[str, Any] = get_job(custom, namespace, name).get("status") or {}
        return status if status.get("memorySource") and status.get("effectiveMemory") else None

    found: dict[str, Any] = poll(decided, timeout=60, what=f"{name}'s memory decided")
    return found


def observed(key: str, count: int) -> Any:
    """A queue predicate: its status.sizing has `count` observations of `key`."""

    def check(queue: dict[str, Any]) -> bool:
        sizing = queue.get("status", {}).get("sizing") or []
        return any(s["key"] == key and s["observations"] == count for s in sizing)

    return check


def jobs_left(custom: Any, namespace: str) -> list[str]:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "videojobs")["items"]
    return [item["metadata"]["name"] for item in items]


def pod_memory(core: Any, namespace: str, job: str) -> str:
    pod = core.read_namespaced_pod(worker_pod_name(job, 1), namespace)
    worker = pod.spec.containers[0]
    return str(worker.resources.limits["memory"])


def test_learned_sizing_from_finished_jobs_survives_restart_and_deletion(
    cluster: LocalCluster, custom: Any, core: Any, namespace: str, tmp_path: Path
) -> None:
    operator = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", ["--standalone"])
    with operator:
        operator.wait_for_log("videoqueue controller started", timeout=60)
        create(
            custom,
            namespace,
            "videoqueues",
            sizing_queue("Learned", minObservations=3, headroom=1.5),
        )
        for name, peak in (("p1", 100), ("p2", 200), ("p3", 300)):
            create(custom, namespace, "videojobs", probe(name, peak))
        for name in ("p1", "p2", "p3"):
            status = wait_memory(custom, namespace, name)
            assert status["effectiveMemory"] == "1Gi"
            assert re.fullmatch(
                r"spec\.memory\.defaultRequest \([0-2] of 3 observations of probe\)",
                status["memorySource"],
            ), status["memorySource"]
        learned = wait_queue(custom, namespace, observed("probe", 3), "3 probe peaks learned")
        (entry,) = learned["status"]["sizing"]
        assert sorted(entry["peaksMi"]) == [100, 200, 300]

        # p95 of [100, 200, 300] x 1.5 = 450Mi, on the job and on its worker pod.
        create(custom, namespace, "videojobs", probe("p4", 400))
        status = wait_memory(custom, namespace, "p4")
        assert (status["effectiveMemory"], status["memorySource"]) == (
            "450Mi",
            "p95 of 3 past probe jobs x 1.5",
        )
        assert pod_memory(core, namespace, "p4") == "450Mi"

        # The jobs it was learned from are deleted by their TTL; the operator is SIGKILLed.
        poll(
            lambda: not {"p1", "p2", "p3", "p4"} & set(jobs_left(custom, namespace)) or None,
            timeout=90,
            what="the finished jobs deleted by their TTL",
        )
        operator.kill()
        operator.start()
        operator.wait_for_log("videoqueue controller started", timeout=60)

        # The restarted operator counted p4 once (not p1..p3 again) and sizes from all four.
        wait_queue(custom, namespace, observed("probe", 4), "p4's peak learned", timeout=60)
        create(custom, namespace, "videojobs", probe("p5", 100))
        status = wait_memory(custom, namespace, "p5")
        assert (status["effectiveMemory"], status["memorySource"]) == (
            "600Mi",
            "p95 of 4 past probe jobs x 1.5",
        )
        final = wait_queue(custom, namespace, observed("probe", 5), "p5's peak learned")
    (entry,) = final["status"]["sizing"]
    assert entry["peaksMi"] == [*entry["peaksMi"][:3], 400, 100]
    assert sorted(entry["peaksMi"][:3]) == [100, 200, 300]

    # kubectl videoqueue stats shows it: key, observations, p95 and the size it gives.
    out = io.StringIO()
    assert (
        main(["--kubeconfig", str(cluster.kubeconfig), "-n", namespace, "stats", "work"], out=out)
        == 0
    )
    shown = out.getvalue().splitlines()
    assert "Memory sizing (Learned: p95 x 1.5 once a key has 3 observations):" in shown
    assert ["probe", "5", "400Mi", "600Mi"] in [line.split() for line in shown]


def test_static_sizing_keeps_the_default(
    cluster: LocalCluster, custom: Any, namespace: str, tmp_path: Path
) -> None:
    operator = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", ["--standalone"])
    with operator:
        operator.wait_for_log("videoqueue controller started", timeout=60)
        create(custom, namespace, "videoqueues", sizing_queue("Static", minObservations=1))
        create(custom, namespace, "videojobs", probe("s1", 100))
        # Its peak is still recorded (switching to Learned starts from it) ...
        wait_queue(custom, namespace, observed("probe", 1), "s1's peak recorded")
        create(custom, namespace, "videojobs", probe("s2", 100))
        status = wait_memory(custom, namespace, "s2")
    # ... but Static sizes from the default.
    assert (status["effectiveMemory"], status["memorySource"]) == (
        "1Gi",
        "spec.memory.defaultRequest",
    )


def test_jobs_already_waiting_are_sized_once_their_key_is_learned(
    cluster: LocalCluster, custom: Any, namespace: str, tmp_path: Path
) -> None:
    """A job's memory is decided when it is assessed; jobs that queued before their key was
    learned are assessed again when its learned size changes (not only jobs created later)."""
    operator = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", ["--standalone"])
    with operator:
        operator.wait_for_log("videoqueue controller started", timeout=60)
        learned = {"minObservations": 1, "headroom": 1.0}
        memory = {"budget": "4Gi", "defaultRequest": "1Gi", "sizing": "Learned", "learned": learned}
        create(custom, namespace, "videoqueues", make_queue(concurrency=1, memory=memory))
        names = [f"w{i}" for i in range(1, 7)]
        for name in names:  # all at once: w2..w6 wait for the one slot
            create(custom, namespace, "videojobs", probe(name, 100))
        first = wait_memory(custom, namespace, "w1")
        assert first["effectiveMemory"] == "1Gi"
        wait_queue(custom, namespace, observed("probe", 1), "w1's peak learned")
        # The last one waited through four more jobs after w1's peak was counted.
        last: dict[str, Any] = poll(
            lambda: (
                (
                    (s := get_job(custom, namespace, "w6").get("status") or {}).get("phase")
                    in ("Admitted", "Running", "Succeeded")
                    and s
                )
                or None
            ),
            timeout=120,
            what="w6 admitted",
        )
    # (Every peak is 100Mi; how many were counted by then depends on timing.)
    assert last["effectiveMemory"] == "100Mi", last
    assert re.fullmatch(r"p95 of [1-5] past probe jobs x 1", last["memorySource"]), last
