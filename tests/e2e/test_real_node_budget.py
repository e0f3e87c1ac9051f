"""The memory budget holds on a real node while pods stop: a deleted worker pod runs on
through its preStop hook and grace period, and the kernel charges its memory until it is
gone, so the operator counts it until the kubelet reports it terminated (issue 15).

The test samples the namespace's pods throughout and sums the memory limits of every pod
that has not terminated: that sum never exceeds the queue's budget, while each job that
waited does start once the pod before it is gone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.objects import real_queue, video_job
from tests.integration.objects import GROUP, VERSION, create, wait_admitted_reason, wait_job
from videoqueue.api.quantity import parse_quantity
from videoqueue.envtest.images import ImportedImage
from videoqueue.envtest.operator_process import OperatorProcess
from videoqueue.envtest.worker import make_media

pytestmark = pytest.mark.e2e

Mi = 1024**2
BUDGET = 1024 * Mi  # a long job (768Mi) leaves 256Mi: the next one (512Mi) waits for it
GRACE = 8  # seconds each worker pod's preStop hook keeps it running after its deletion


@dataclass
class PodSample:
    at: float
    live: dict[str, int]  # pods not terminated (phase not Succeeded/Failed): memory limits
    stopping: set[str]  # of those, the ones with a deletionTimestamp


@dataclass
class PodSampler:
    """Lists the namespace's pods every 200 ms in a thread (what the kubelet has not yet
    reported terminated still holds memory on the node)."""

    core: Any
    namespace: str
    samples: list[PodSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.wait(0.2):
            pods = self.core.list_namespaced_pod(self.namespace).items
            live = {
                pod.metadata.name: sum(
                    parse_quantity((c.resources.limits or {}).get("memory", 0))
                    for c in pod.spec.containers
                )
                for pod in pods
                if pod.status.phase not in ("Succeeded", "Failed")
            }
            stopping = {
                pod.metadata.name
                for pod in pods
                if pod.metadata.deletion_timestamp is not None and pod.metadata.name in live
            }
            self.samples.append(PodSample(time.monotonic(), live, stopping))

    def stop(self) -> None:
        self._stop.set()

    def first_seen(self, pod: str) -> float:
        return next(s.at for s in self.samples if pod in s.live)

    def last_seen(self, pod: str) -> float:
        return max(s.at for s in self.samples if pod in s.live)

    def seen_stopping(self, pod: str) -> float:
        """Seconds the pod was seen running on after its deletion."""
        times = [s.at for s in self.samples if pod in s.stopping]
        return max(times) - min(times) if times else 0.0


@pytest.fixture
def sampler(core: Any, namespace: str) -> Iterator[PodSampler]:
    sampler = PodSampler(core, namespace)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        yield sampler
    finally:
        sampler.stop()
        thread.join(timeout=10)


def test_memory_of_stopping_pods_stays_counted_until_they_are_gone(
    operator: OperatorProcess,
    worker_image: ImportedImage,
    custom: Any,
    core: Any,
    namespace: str,
    media: Path,
    sampler: PodSampler,
) -> None:
    """A long transcode fills the budget and a probe waits behind it; the transcode is
    cancelled, and its pod runs on for its preStop hook: the probe starts only once that pod
    is gone. The same again with a transcode that runs past its deadline."""
    make_media(media / "long.mp4", seconds=300)  # minutes of 480p encoding on this machine
    make_media(media / "short.mp4", seconds=1)
    queue = real_queue(
        worker_image.tag, media, budget=f"{BUDGET // Mi}Mi", max_="1Gi", max_attempts=1
    )
    queue["spec"]["concurrency"] = 4  # memory is what binds here, not slots
    pod_spec = queue["spec"]["template"]["spec"]
    pod_spec["terminationGracePeriodSeconds"] = GRACE + 20
    sleep = f"import time; time.sleep({GRACE})"  # the image has python3, no shell tools
    pod_spec["containers"][0]["lifecycle"] = {
        "preStop": {"exec": {"command": ["/usr/bin/python3", "-c", sleep]}}
    }
    create(custom, namespace, "videoqueues", queue)

    def long_job(name: str, **spec: Any) -> None:
        body = video_job(
            name, "transcode", "long.mp4", output="out/", memory="768Mi",
            params={"preset": "h264-480p"}, **spec,
        )  # fmt: skip
        create(custom, namespace, "videojobs", body)
        wait_job(custom, namespace, name, "Running", timeout=120)

    def waiting_job(name: str) -> None:
        create(
            custom, namespace, "videojobs", video_job(name, "probe", "short.mp4", memory="512Mi")
        )
        wait_admitted_reason(custom, namespace, name, "WaitingForMemory")

    long_job("cancelled")
    waiting_job("after-cancel")
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "videojobs", "cancelled", {"spec": {"cancel": True}}
    )
    wait_job(custom, namespace, "after-cancel", "Complete", timeout=120)

    long_job("overdue", activeDeadlineSeconds=15)
    waiting_job("after-deadline")
    overdue = wait_job(custom, namespace, "overdue", "Failed", timeout=120)
    wait_job(custom, namespace, "after-deadline", "Complete", timeout=120)

    assert overdue["status"]["attempts"][0]["reason"] == "DeadlineExceeded"
    for stopped, waiter in (("cancelled", "after-cancel"), ("overdue", "after-deadline")):
        stopped_pod, waiter_pod = f"{stopped}-a1", f"{waiter}-a1"
        # The pod ran on after its deletion (so there was something to count)...
        assert sampler.seen_stopping(stopped_pod) >= GRACE - 3, stopped
        # ...and the job behind it started only once it was gone.
        assert sampler.first_seen(waiter_pod) > sampler.last_seen(stopped_pod), waiter
    # Never more memory in pods not yet terminated than the budget.
    peak = max(sampler.samples, key=lambda s: sum(s.live.values()))
    print(f"\npeak of live pods' memory: {sum(peak.live.values()) // Mi}Mi {peak.live}")
    assert sum(peak.live.values()) <= BUDGET, peak
