"""The progress channel in the operator, against a real control plane and a real redis-server:
worker pods are told where to publish, progress reaches job status for the current attempt
only, thousands of publishers cost a bounded number of status writes, and a Redis outage
stops neither the jobs nor, once Redis is back, the progress; a worker without heartbeats
is stalled and retried; and the real worker, run as a local process with exactly the env the
operator gave its pod, gets its progress into the job (the end-to-end proof of the contract).

The operators here run with --redis-url, so this module has a control plane of its own (the
session's operator, without Redis, would otherwise act on the same namespaces).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from benchmarks.writes_per_job import JOB_STATUS, category, scrape_write_counts

from tests.worker.harness import run_worker
from videoqueue.api.progress import ProgressEvent, ProgressKind
from videoqueue.envtest import LocalCluster, poll
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.worker import make_media

from .objects import create, get_job, long_job, make_job, make_queue, wait_job
from .redis_server import RedisServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STREAM = "videoqueue:progress"


@pytest.fixture(scope="module")
def cluster(own_cluster: LocalCluster) -> LocalCluster:
    """This module's own control plane (see above) stands in for the session's."""
    return own_cluster


@contextlib.contextmanager
def start_operator(
    cluster: LocalCluster, redis_server: RedisServer, tmp_path: Path, *args: str
) -> Iterator[OperatorProcess]:
    """An operator with the progress channel on, once it reads the stream; stopped after."""
    with OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        ["--standalone", "--redis-url", redis_server.url, *args],
    ) as process:
        process.wait_for_log("progress: reading stream", timeout=60)
        yield process


def publish(
    r: redis.Redis,
    job: dict[str, Any],
    *,
    kind: ProgressKind = ProgressKind.PROGRESS,
    attempt: int | None = None,
    **values: Any,
) -> None:
    meta = job["metadata"]
    event = ProgressEvent(
        namespace=meta["namespace"],
        job=meta["name"],
        uid=meta["uid"],
        attempt=attempt if attempt is not None else job["status"]["attempt"],
        kind=kind,
        ts=time.time(),
        **values,
    )
    r.xadd(STREAM, event.to_fields(), maxlen=100_000, approximate=True)  # type: ignore[arg-type]


def wait_status(
    custom: Any, namespace: str, name: str, what: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        job = get_job(custom, namespace, name)
        return job if check(job.get("status") or {}) else None

    found: dict[str, Any] = poll(probe, timeout=60, what=f"{name}: {what}", interval=0.2)
    return found


def running(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    return wait_job(custom, namespace, name, "Running")


def test_progress_reaches_the_running_job_and_never_a_finished_one(
    cluster: LocalCluster,
    custom: Any,
    core: Any,
    namespace: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    with start_operator(cluster, redis_server, tmp_path, "--progress-interval", "1") as operator:
        create(custom, namespace, "videoqueues", make_queue(concurrency=2))
        create(custom, namespace, "videojobs", long_job("clip"))
        job = running(custom, namespace, "clip")

        # The worker pod is told where to publish.
        pod = core.read_namespaced_pod(job["status"]["attempts"][-1]["pod"], namespace)
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["VIDEOQUEUE_REDIS_URL"] == redis_server.url
        assert env["VIDEOQUEUE_PROGRESS_STREAM"] == STREAM

        with redis_server.client() as r:
            publish(r, job, kind=ProgressKind.STAGE, stage="downloading", progress=0)
            publish(r, job, progress=42, stage="processing", message="frame 420 of 1000")
            job = wait_status(
                custom, namespace, "clip", "progress 42", lambda s: s.get("progress") == 42
            )
            assert job["status"]["stage"] == "processing"
            assert job["status"]["message"] == "frame 420 of 1000"

            # The job finishes (its worker pod is told to stop): its outcome stands, and
            # progress that arrives afterwards is not written.
            custom.patch_namespaced_custom_object(
                "videoqueue.dev",
                "v1alpha1",
                namespace,
                "videojobs",
                "clip",
                {"spec": {"cancel": True}},
            )
            job = wait_job(custom, namespace, "clip", "Cancelled")
            version = job["metadata"]["resourceVersion"]
            publish(r, job, progress=77, message="late")
            # Three release intervals: a write would have happened by then.
            time.sleep(3)
            after = get_job(custom, namespace, "clip")
            assert after["metadata"]["resourceVersion"] == version
            assert after["status"].get("progress") != 77
        assert not operator.log_lines("Traceback")


# -- many publishers ------------------------------------------------------------------------

REAL_JOBS = 200
PHANTOM_PUBLISHERS = 800  # workers of jobs this operator does not know (noise)
PUBLISH_SECONDS = 20
WRITES_PER_SECOND = 20  # the operator's default --progress-writes-per-second


def test_a_thousand_publishers_cost_a_bounded_write_rate(
    cluster: LocalCluster,
    custom: Any,
    core: Any,
    namespace: str,
    redis_server: RedisServer,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    with start_operator(cluster, redis_server, tmp_path) as operator:
        create(
            custom,
            namespace,
            "videoqueues",
            make_queue(concurrency=REAL_JOBS, budget="16Gi"),
        )
        for i in range(REAL_JOBS):
            create(custom, namespace, "videojobs", long_job(f"job-{i:03d}", memory="64Mi"))

        seen: dict[str, Counter[str]] = {}

        def all_running() -> list[dict[str, Any]] | None:
            items = custom.list_namespaced_custom_object(
                "videoqueue.dev", "v1alpha1", namespace, "videojobs"
            )["items"]
            phases = Counter(str((j.get("status") or {}).get("phase")) for j in items)
            seen["jobs"] = phases
            return items if phases["Running"] == REAL_JOBS else None

        try:
            jobs = poll(all_running, timeout=240, what=f"{REAL_JOBS} jobs running", interval=1)
        except AssertionError as error:
            # Say where they stopped: the jobs' phases as written, their pods' as KWOK has them.
            pods = core.list_namespaced_pod(namespace).items
            seen["pods"] = Counter(p.status.phase for p in pods)
            raise AssertionError(f"{error}; seen {seen}") from None
        phantoms = [
            {
                "metadata": {"namespace": namespace, "name": f"phantom-{i}", "uid": f"u-{i}"},
                "status": {"attempt": 1},
            }
            for i in range(PHANTOM_PUBLISHERS)
        ]
        publishers = jobs + phantoms

        stop = threading.Event()
        published = [0]
        last: dict[str, int] = {}

        def publish_all() -> None:
            # Every publisher sends one event a second (progress, or a heartbeat).
            with redis_server.client() as r:
                tick = 0
                while not stop.is_set():
                    started = time.monotonic()
                    pipe = r.pipeline(transaction=False)
                    for n, job in enumerate(publishers):
                        meta = job["metadata"]
                        last[meta["name"]] = min(99, tick + n % 7)
                        event = ProgressEvent(
                            namespace=meta["namespace"],
                            job=meta["name"],
                            uid=meta["uid"],
                            attempt=job["status"]["attempt"],
                            kind=ProgressKind.PROGRESS,
                            progress=last[meta["name"]],
                            stage="processing",
                            ts=time.time(),
                        )
                        pipe.xadd(STREAM, event.to_fields(), maxlen=100_000, approximate=True)
                    pipe.execute()
                    published[0] += len(publishers)
                    tick += 1
                    stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))

        before = scrape_write_counts(cluster)
        cpu_before = cpu_seconds(operator)
        started = time.monotonic()
        thread = threading.Thread(target=publish_all, daemon=True)
        thread.start()
        try:
            time.sleep(PUBLISH_SECONDS)
        finally:
            stop.set()
            thread.join(timeout=30)
        seconds = time.monotonic() - started
        after = scrape_write_counts(cluster)
        cpu = cpu_seconds(operator) - cpu_before
        writes = sum(n - before[k] for k, n in after.items() if category(k) == JOB_STATUS)
        rate = writes / seconds
        with redis_server.client() as r:
            pending = r.xpending(STREAM, "videoqueue-operator")["pending"]
            length = r.xlen(STREAM)
        report(
            f"progress channel: {len(publishers)} publishers ({REAL_JOBS} running jobs), "
            f"{published[0]} events in {seconds:.1f}s ({published[0] / seconds:.0f}/s); "
            f"job status writes {writes} ({rate:.1f}/s, cap {WRITES_PER_SECOND}/s); "
            f"stream length {length}, unacknowledged {pending}; operator CPU {cpu:.1f}s "
            f"({cpu / seconds:.0%} of a core)"
        )
        assert published[0] >= len(publishers) * PUBLISH_SECONDS * 0.8
        # The cap holds (one second's burst on top), and the phantoms' noise does not eat
        # the budget of the real jobs (200 jobs every 5s would be 40/s: the cap binds).
        assert WRITES_PER_SECOND / 2 <= rate <= WRITES_PER_SECOND + WRITES_PER_SECOND / seconds + 1
        # Everything read is acknowledged: at most the batch in hand waits.
        assert pending <= 1000
        # Coalescing loses nothing that matters: every job ends with its latest progress.
        names = [job["metadata"]["name"] for job in jobs]

        def behind() -> list[str]:
            items = custom.list_namespaced_custom_object(
                "videoqueue.dev", "v1alpha1", namespace, "videojobs"
            )["items"]
            seen = {j["metadata"]["name"]: (j.get("status") or {}).get("progress") for j in items}
            return [n for n in names if seen.get(n) != last[n]]

        poll(lambda: not behind(), timeout=120, what="every job's last progress", interval=1)
        assert not operator.log_lines("Traceback")


def cpu_seconds(operator: OperatorProcess) -> float:
    """User and system CPU time of the operator process so far."""
    fields = Path(f"/proc/{operator.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- outage ---------------------------------------------------------------------------------


def test_jobs_finish_through_a_redis_outage_and_progress_resumes(
    cluster: LocalCluster,
    custom: Any,
    namespace: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    with start_operator(cluster, redis_server, tmp_path, "--progress-interval", "1") as operator:
        create(custom, namespace, "videoqueues", make_queue(concurrency=4, run_for="8s"))
        for name in ("a", "b"):
            create(custom, namespace, "videojobs", make_job(name))
        job = running(custom, namespace, "a")
        with redis_server.client() as r:
            publish(r, job, progress=30, stage="processing")
        wait_status(custom, namespace, "a", "progress 30", lambda s: s.get("progress") == 30)

        redis_server.stop()
        operator.wait_for_log("progress: lost Redis", timeout=30)
        # Jobs admitted and run to the end while Redis is away.
        create(custom, namespace, "videojobs", make_job("c"))
        for name in ("a", "b", "c"):
            done = wait_job(custom, namespace, name, "Complete", timeout=120)
            assert done["status"]["result"]["output"] == "file:///media/out.mp4"

        create(custom, namespace, "videojobs", long_job("d"))
        job = running(custom, namespace, "d")
        connects = len(operator.log_lines("progress: reading stream"))
        redis_server.start()  # empty, as a Redis without persistence comes back
        poll(
            lambda: len(operator.log_lines("progress: reading stream")) > connects,
            timeout=60,
            what="the operator to reconnect to Redis",
        )
        with redis_server.client() as r:
            publish(r, job, progress=64, stage="uploading")
        job = wait_status(custom, namespace, "d", "progress 64", lambda s: s.get("progress") == 64)
        assert job["status"]["stage"] == "uploading"


# -- stalled workers ------------------------------------------------------------------------


def test_a_worker_without_heartbeats_is_stalled_and_retried_until_attempts_run_out(
    cluster: LocalCluster,
    custom: Any,
    core: Any,
    namespace: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    with start_operator(cluster, redis_server, tmp_path, "--progress-interval", "1"):
        queue = make_queue(concurrency=2, progressDeadlineSeconds=4)
        queue["spec"]["retry"] = {"maxAttempts": 2, "backoff": {"initialSeconds": 1}}
        create(custom, namespace, "videoqueues", queue)
        create(custom, namespace, "videojobs", long_job("clip"))
        # Heartbeats every second from the moment the worker pod exists (as a real worker
        # beats from its start) keep it alive well past the deadline.
        first_pod = "clip-a1"
        poll(
            lambda: bool(
                core.list_namespaced_pod(
                    namespace, field_selector=f"metadata.name={first_pod}"
                ).items
            ),
            timeout=60,
            what=f"worker pod {first_pod}",
        )
        job = get_job(custom, namespace, "clip")
        stop = threading.Event()

        def beat() -> None:
            with redis_server.client() as r:
                while True:
                    publish(r, job, kind=ProgressKind.HEARTBEAT, attempt=1)
                    if stop.wait(1.0):
                        return

        beating = threading.Thread(target=beat, daemon=True)
        beating.start()
        try:
            job = running(custom, namespace, "clip")
            assert job["status"]["attempts"][-1]["pod"] == first_pod
            alive_until = time.monotonic() + 8
            while time.monotonic() < alive_until:
                status = get_job(custom, namespace, "clip")["status"]
                assert status["attempt"] == 1, status
                assert status["phase"] == "Running", status
                time.sleep(0.5)
        finally:
            stop.set()
            beating.join(timeout=5)

        # Silence: attempt 1 is stalled, its pod deleted; attempt 2 never beats and stalls
        # too, which uses up the attempts.
        failed = wait_job(custom, namespace, "clip", "Failed", timeout=60)
        reasons = [a.get("reason") for a in failed["status"]["attempts"]]
        assert reasons == ["Stalled", "Stalled"], failed["status"]["attempts"]
        assert "progressDeadlineSeconds" in failed["status"]["attempts"][0]["message"]
        poll(
            lambda: (
                not core.list_namespaced_pod(
                    namespace, field_selector=f"metadata.name={first_pod}"
                ).items
            ),
            timeout=60,
            what=f"stalled worker pod {first_pod} deleted",
        )


# -- end to end with the real worker --------------------------------------------------------


def test_the_real_worker_runs_with_the_env_the_operator_gave_its_pod(
    cluster: LocalCluster,
    custom: Any,
    core: Any,
    namespace: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    source = make_media(tmp_path / "in.mp4", seconds=3.0, size="320x240")
    output = tmp_path / "out.mp4"
    with start_operator(cluster, redis_server, tmp_path, "--progress-interval", "1"):
        # The worker reads and writes only under the queue's file roots (the test's dir).
        queue = make_queue(concurrency=1, worker={"fileRoots": [str(tmp_path)]})
        create(custom, namespace, "videoqueues", queue)
        manifest = long_job("promo")  # KWOK keeps the pod Running; the real work runs here
        manifest["spec"].update(
            type="transcode",
            input={"url": f"file://{source}"},
            output={"url": f"file://{output}"},
            params={"preset": "h264-480p"},
        )
        create(custom, namespace, "videojobs", manifest)
        job = running(custom, namespace, "promo")
        pod = core.read_namespaced_pod(job["status"]["attempts"][-1]["pod"], namespace)
        container = next(c for c in pod.spec.containers if c.name == "worker")
        # Exactly the env the operator wrote (no Secret here: every entry is a plain value).
        env = {e.name: e.value for e in container.env}
        assert all(e.value_from is None for e in container.env)
        payload = json.loads(env["VIDEOQUEUE_JOB"])
        assert (payload["name"], payload["uid"], payload["attempt"]) == (
            "promo",
            job["metadata"]["uid"],
            job["status"]["attempt"],
        )
        assert env["VIDEOQUEUE_REDIS_URL"] == redis_server.url

        run = run_worker(env["VIDEOQUEUE_JOB"], tmp_path, env, timeout=180)
        assert run.code == 0, run.log
        result = json.loads(run.message)
        assert result["output"] == f"file://{output}"
        assert output.stat().st_size > 0

        # The worker's own progress reached the job while its pod is still Running.
        final = wait_status(
            custom, namespace, "promo", "progress 100", lambda s: s.get("progress") == 100
        )
        assert final["status"]["phase"] == "Running"
        assert final["status"]["stage"] in ("processing", "uploading")
