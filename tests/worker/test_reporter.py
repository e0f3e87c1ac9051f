"""The reporter on its own: ordering, retries, the bounded queue and heartbeats, with a sink
that can be made to fail (the real Redis cases are in test_progress.py)."""

from __future__ import annotations

import threading
import time

import pytest

import tests.worker.harness  # noqa: F401  # puts worker-image on sys.path
from videoqueue.api.progress import ProgressEvent, ProgressKind
from videoqueue.envtest.wait import poll
from videoqueue_worker import reporter as reporter_module
from videoqueue_worker.reporter import JobRef, Reporter, Sink

JOB = JobRef(namespace="ns", name="j", uid="u", attempt=1)


class FlakySink(Sink):
    """Fails while `down` is set; records what it accepted."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.accepted: list[ProgressEvent] = []
        self.refused = 0

    def add(self, fields: dict[str, str]) -> None:
        if self.down.is_set():
            self.refused += 1
            raise ConnectionError("Redis is down")
        self.accepted.append(ProgressEvent.model_validate(fields))


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reporter_module, "RETRY_SECONDS", 0.05)


def test_events_arrive_in_order_after_an_outage() -> None:
    sink = FlakySink()
    sink.down.set()
    with Reporter(JOB, sink, heartbeat_seconds=60) as reporter:
        reporter.stage("processing")
        for percent in (10, 5, 40, 40, 90):  # a lower or equal value is not news
            reporter.progress(percent)
        poll(lambda: sink.refused >= 2, timeout=10, what="the sink to be tried while down")
        sink.down.clear()
        reporter.done("done", succeeded=True)
    kinds = [e.kind for e in sink.accepted]
    assert kinds[0] == ProgressKind.STAGE
    assert kinds[-1] == ProgressKind.DONE
    progress = [e.progress for e in sink.accepted if e.kind == ProgressKind.PROGRESS]
    assert progress == [10, 40, 90]
    assert sink.accepted[-1].progress == 100


def test_the_queue_is_bounded_and_keeps_stages_and_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reporter_module, "MAX_PENDING_EVENTS", 8)
    sink = FlakySink()
    sink.down.set()
    with Reporter(JOB, sink, heartbeat_seconds=60, flush_seconds=5) as reporter:
        reporter.stage("downloading")
        for percent in range(1, 60):
            reporter.progress(percent)
        reporter.stage("processing")
        for percent in range(60, 100):
            reporter.progress(percent)
        sink.down.clear()
        reporter.done("done", succeeded=True)
    stages = [e.stage for e in sink.accepted if e.kind == ProgressKind.STAGE]
    assert stages == ["downloading", "processing"]
    assert len(sink.accepted) <= 8 + 1  # at most the queue, plus one in flight
    assert [e.progress for e in sink.accepted if e.kind == ProgressKind.PROGRESS][-1] == 99
    assert sink.accepted[-1].kind == ProgressKind.DONE


def test_heartbeats_while_nothing_else_happens_and_not_pile_up_while_down() -> None:
    sink = FlakySink()
    with Reporter(JOB, sink, heartbeat_seconds=0.05) as reporter:
        reporter.stage("processing")
        poll(
            lambda: sum(e.kind == ProgressKind.HEARTBEAT for e in sink.accepted) >= 3,
            timeout=10,
            what="three heartbeats",
        )
        sink.down.set()
        before = len(sink.accepted)
        refused = sink.refused
        # Down for ten retries or more: many heartbeat intervals pass meanwhile.
        poll(lambda: sink.refused >= refused + 10, timeout=10, what="retries while down")
        recovered = time.time()
        sink.down.clear()
        poll(lambda: len(sink.accepted) > before, timeout=10, what="delivery after the outage")
    # The heartbeats missed during the outage collapsed into one (at most) instead of ten.
    stale = [e for e in sink.accepted[before:] if e.ts < recovered]
    assert len(stale) <= 1, stale
    assert all(e.stage == "processing" for e in sink.accepted)


def test_without_a_sink_nothing_runs() -> None:
    with Reporter(JOB, None) as reporter:
        reporter.stage("processing")
        reporter.progress(50)
        reporter.done("done", succeeded=True)
    assert reporter.sent == 0
    assert not [t for t in threading.enumerate() if t.name == "progress"]


def test_no_heartbeat_follows_the_end() -> None:
    """Between `done` and `close` (the worker writes its result in between) the heartbeat
    keeps its beat; none may be published after DONE, which consumers take as the last word."""
    sink = FlakySink()
    with Reporter(JOB, sink, heartbeat_seconds=0.02) as reporter:
        reporter.stage("processing")
        poll(
            lambda: any(e.kind == ProgressKind.HEARTBEAT for e in sink.accepted),
            timeout=10,
            what="a heartbeat before the end (the beat runs)",
        )
        reporter.done("done", succeeded=True)
        poll(
            lambda: any(e.kind == ProgressKind.DONE for e in sink.accepted),
            timeout=10,
            what="DONE to be published",
        )
        time.sleep(0.2)  # ten heartbeat intervals pass before close()
    assert sink.accepted[-1].kind == ProgressKind.DONE
