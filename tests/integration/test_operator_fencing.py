"""Fencing against the real API server: a replica frozen past the peering lifetime (SIGSTOP, as
a long GC pause or a stalled VM would) wakes up after another replica took over, and writes
nothing.

Every write is counted by the API server's own audit log (Metadata level, writes only), by
the User-Agent of the operator's requests, which names the replica
(`videoqueue-operator/<version> (<identity>)`); kopf's own requests say `kopf/<version>`.
The module has a control plane of its own, with the audit log on and kopf's peering CRD.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from videoqueue.envtest import LocalCluster, poll
from videoqueue.envtest.cluster import audit
from videoqueue.envtest.cluster.base import ClusterConfig
from videoqueue.envtest.operator_process import OperatorProcess, line_time
from videoqueue.scheduling.worker_pod import worker_pod_name

from .conftest import apply_crds
from .objects import GROUP, VERSION, PodRecorder, create, is_true, make_job, make_queue

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LIFETIME = 10  # peering lifetime and Lease duration: writes stop 7.5 s after a renewal
JOBS = 48
CONCURRENCY = 4
ACTING = "acting: this replica now schedules"
EXIT_FENCED = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(cluster_config=ClusterConfig(audit_log=True)) as local:
        apply_crds(local)
        local.kubectl("apply", "-f", str(REPO / "crds" / "peering"))
        local.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/clusterkopfpeerings.kopf.dev",
        )
        yield local


def writes_by(cluster: LocalCluster, replica: OperatorProcess) -> list[audit.Write]:
    return [w for w in audit.writes(cluster.state_dir) if f"({replica.identity})" in w.user_agent]


def kinds(writes: list[audit.Write]) -> Counter[str]:
    return Counter(f"{w.verb} {w.resource}" for w in writes)


def complete(custom: Any, namespace: str) -> dict[str, dict[str, Any]]:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "videojobs")["items"]
    return {j["metadata"]["name"]: j for j in items if is_true(j, "Complete")}


def wait_complete(custom: Any, namespace: str, at_least: int, timeout: float) -> int:
    done: int = poll(
        lambda: (n := len(complete(custom, namespace))) >= at_least and n,
        timeout=timeout,
        what=f"{at_least} jobs complete",
        interval=0.5,
    )
    return done


def test_a_replica_frozen_past_its_lease_writes_nothing_when_it_wakes(
    cluster: LocalCluster,
    custom: Any,
    core: Any,
    namespace: str,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    args = ["--peering-lifetime", str(LIFETIME), "--lease-namespace", namespace]
    a = OperatorProcess(cluster.kubeconfig, tmp_path / "a.log", args, name="replica-a")
    b = OperatorProcess(cluster.kubeconfig, tmp_path / "b.log", args, name="replica-b")
    with contextlib.ExitStack() as stack:
        pods = stack.enter_context(PodRecorder(core, namespace))
        stack.enter_context(a)
        a.wait_for_log(ACTING, timeout=60)
        stack.enter_context(b)  # younger, so of lower priority: stands by
        b.wait_for_log(r"peering in ClusterKopfPeering", timeout=60)
        create(custom, namespace, "videoqueues", make_queue(concurrency=CONCURRENCY, run_for="2s"))
        for i in range(JOBS):
            create(custom, namespace, "videojobs", make_job(f"j{i:03d}"))
        wait_complete(custom, namespace, at_least=8, timeout=120)

        # The counting works: A's writes are in the audit log under its name, B wrote none
        # of the operator's kinds while standing by (it may read, and hold no Lease).
        before = kinds(writes_by(cluster, a))
        assert before["create pods"] >= 8, before
        assert before["patch videojobs/status"] >= 8, before
        assert before["create leases"] + before["patch leases"] >= 2, before
        assert set(kinds(writes_by(cluster, b))) <= {"patch leases"}, kinds(writes_by(cluster, b))

        # A freezes past the lifetime; B takes over (keep-alive and Lease both expired).
        suspended = a.suspend()
        b_acting = line_time(b.wait_for_log(ACTING, timeout=LIFETIME * 6))
        b_admitted = pods.wait_admitted_after(
            b_acting, timeout=60, what="a pod admitted by replica B"
        )
        done_by_b = wait_complete(custom, namespace, at_least=16, timeout=120)

        # A wakes up: it finds its claim lapsed, writes nothing, and exits.
        resumed = a.resume()
        exit_status: int | None = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            exit_status = a.wait_exit(timeout=60)
        exited = time.time()
        a_after = [w for w in writes_by(cluster, a) if w.at >= datetime.fromtimestamp(resumed, UTC)]
        # The resumed replica wrote nothing at all, not even to the Lease (it was stale
        # before it tried).
        assert not a_after, kinds(a_after)
        assert exit_status == EXIT_FENCED, a.current_log()
        assert a.log_lines(r"fenced: no renewal of the Lease confirmed", current=True)

        # B acts on (it stands down while A's keep-alive is back, and resumes when A exits)
        # and finishes every job.
        poll(
            lambda: len(complete(custom, namespace)) == JOBS,
            timeout=240,
            what="every job complete",
            interval=1.0,
        )
        jobs = complete(custom, namespace)

    writes = list(audit.writes(cluster.state_dir))
    a_after = [w for w in writes_by(cluster, a) if w.at >= datetime.fromtimestamp(resumed, UTC)]
    assert not a_after, kinds(a_after)  # nor while B finished the jobs, nor on exit
    b_writes = kinds(writes_by(cluster, b))
    report(
        f"fencing (lifetime {LIFETIME}s): A frozen; B acting {b_acting - suspended:.1f}s later, "
        f"its first pod admitted {b_admitted - suspended:.1f}s after the freeze, {done_by_b} "
        f"jobs complete before A woke; A exited {exited - resumed:.1f}s after waking with "
        f"status {exit_status}, having written {dict(kinds(a_after))} after waking. "
        f"B's writes: {dict(b_writes)}"
    )
    # kopf's own writes are peering keep-alives only.
    kopf_writes = {w.resource for w in writes if w.user_agent.startswith("kopf/")}
    assert kopf_writes <= {"clusterkopfpeerings"}, kopf_writes
    # B did the work after the freeze.
    assert b_writes["create pods"] >= 8, b_writes

    # No attempt ran twice: one pod per job, created once (a second create of the same
    # deterministic name would be a 409 in the audit log), and each job succeeded on its
    # first and only attempt.
    creates: dict[str, list[int]] = defaultdict(list)
    for w in writes:
        if w.verb == "create" and w.resource == "pods" and w.namespace == namespace:
            creates[w.name].append(w.code)
    problems = [f"{pod}: {codes}" for pod, codes in creates.items() if codes.count(201) != 1]
    by_job = pods.pods_by_job()
    for name, job in jobs.items():
        status = job["status"]
        if status.get("attempt") != 1 or len(status.get("attempts") or []) != 1:
            problems.append(f"{name}: attempts {status.get('attempts')}")
        if set(by_job.get(name, {})) != {worker_pod_name(name, 1)}:
            problems.append(f"{name}: pods {sorted(by_job.get(name, {}))}")
    assert len(creates) == JOBS
    assert not problems, "\n".join(problems)
