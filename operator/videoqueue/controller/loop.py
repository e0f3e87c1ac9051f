"""The operator's scheduler: one loop per queue whose cycle
  1. observes: takes the queue and its changed jobs from the index
     (`videoqueue.controller.index`, fed by the watches) as a `QueueView`,
  2. decides: `videoqueue.scheduling.cycle.plan_cycle`, pure,
  3. applies the plan (`videoqueue.controller.apply`): worker pods, then statuses, then
     Events, the queue's status and finalizer,
and sleeps until woken or until the plan's `wake_at`. Events arriving during a cycle are
coalesced into the next one, so the number of cycles adapts to the load instead of growing
with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from videoqueue.api import VideoJob
from videoqueue.controller import metrics
from videoqueue.controller.apply import (
    WRITE_RETRY_MAX_SECONDS,
    WRITE_RETRY_SECONDS,
    Writes,
    doubling,
)
from videoqueue.controller.entries import QueueEntry
from videoqueue.controller.kube import KubeClient
from videoqueue.controller.progress_settings import ProgressSettings
from videoqueue.scheduling.cycle import plan_cycle
from videoqueue.scheduling.progress_board import ProgressReport

if TYPE_CHECKING:
    from videoqueue.controller.progress import ProgressChannel

logger = logging.getLogger(__name__)

# A cycle that assesses thousands of jobs (a burst of new ones, a restart) lets the watch
# streams be read at least this often: the API server closes a watch whose reader falls a
# few dozen events behind (ours reopen from their last version; kopf's re-list).
CYCLE_SLICE_SECONDS = 0.05
# Part of a cycle's cost still grows with the queue (the decision reads every competing job),
# so a big queue's cycles are paced: after a cycle that planned for `p` seconds the next
# waits `p` more, and the events meanwhile are coalesced into it. Planning then takes at most
# half of the loop's time however fast events come; a small queue's cycles (a millisecond)
# are not delayed.
PACE_FROM_SECONDS = 0.005
PACE_MAX_SECONDS = 0.25


def pace_after(planning: float) -> float:
    """How long the next cycle waits after one that spent `planning` seconds planning."""
    return 0.0 if planning < PACE_FROM_SECONDS else min(planning, PACE_MAX_SECONDS)


class Controller(Writes):
    def __init__(
        self,
        kube: KubeClient,
        *,
        clock: Callable[[], float] = time.time,
        progress: ProgressSettings | None = None,
        start_loops: bool = True,
        fence_check: Callable[[], None] | None = None,
    ) -> None:
        """`start_loops=False`: no queue is scheduled until `start_loops()` (while the index
        is being primed). `fence_check` raises when this replica may no longer write."""
        super().__init__(clock=clock)
        self.kube = kube
        self.fence_check = fence_check
        self._loops_started = start_loops
        self._stopping = False
        self._owed_init()
        self.notifier = self._make_notifier()
        # Workers' progress and heartbeats from Redis (None: not configured). Its releases
        # re-assess the job, so progress is written by the same one patch per cycle.
        self.progress: ProgressChannel | None = None
        if progress is not None:
            # Imported only here: the Redis client was 16 MiB of a replica's memory (VmRSS
            # after the controller's imports, 74 -> 58 MiB), needed only with the channel.
            from videoqueue.controller.progress import ProgressChannel

            self.progress = ProgressChannel(
                progress, clock=clock, on_release=self.refresh_jobs, accepts=self.wants_progress
            )
            self.progress.start()
        # What every worker pod is told about the progress channel (fixed settings).
        self._env = tuple(self.progress.worker_env) if self.progress is not None else ()
        # What assessing a job costs (seconds, a moving average) and so how many a cycle takes.
        self._assess_cost = 0.0005
        self._assess_limit = 100

    def _schedule(self, entry: QueueEntry) -> None:
        if entry.task is None and self._loops_started and not self._stopping:
            entry.task = asyncio.create_task(self._loop(entry), name=f"queue {entry.key}")

    def start_loops(self) -> None:
        self._loops_started = True
        for key in self.queues:
            self._queue(key)

    async def stop(self) -> None:
        self._stopping = True
        tasks = [q.task for q in self.queues.values() if q.task is not None]
        tasks += [writer for q in self.queues.values() for writer in q.writers]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.progress is not None:
            await self.progress.stop()
        await self.notifier.stop()

    async def _loop(self, entry: QueueEntry) -> None:
        wake_at: float | None = None
        failures = 0  # cycles failed in a row: the retry backs off like a status write's
        while True:
            timeout = None if wake_at is None else max(0.0, wake_at - self.clock())
            if failures and timeout is not None:
                await asyncio.sleep(timeout)  # after a failed cycle, whatever wakes the queue
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(entry.wake.wait(), timeout)
            entry.wake.clear()
            try:
                started = time.monotonic()
                wake_at = await self.reconcile_queue(entry)
                metrics.record_cycle(entry.key, time.monotonic() - started)
                failures = 0
                if pause := pace_after(entry.planning_seconds):
                    await asyncio.sleep(pause)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                delay = doubling(failures, WRITE_RETRY_SECONDS, WRITE_RETRY_MAX_SECONDS)
                logger.exception("queue %s: cycle failed; retrying in %.0fs", entry.key, delay)
                wake_at = self.clock() + delay

    async def reconcile_queue(self, entry: QueueEntry) -> float | None:
        # One cycle of a queue at a time: a plan is made from the index as its predecessors
        # left it (a second cycle overlapping one that is still creating pods would admit
        # the same jobs again).
        async with entry.cycle_lock:
            return await self._cycle(entry)

    async def _cycle(self, entry: QueueEntry) -> float | None:
        """Observe, plan, apply; a queue with more changed jobs than a slice takes (a
        restart, a burst) goes round again after letting the watch streams be read: the
        plan only decides admissions once every changed job is assessed."""
        entry.planning_seconds = 0.0
        while True:
            now = self.clock()
            started = time.monotonic()
            view = self.view_of(entry, now, limit=self._assess_limit)
            try:
                plan = plan_cycle(view, now)
            except Exception:
                self.give_back(entry, view, now)  # the retry (with backoff) sees them again
                raise
            entry.planning_seconds += time.monotonic() - started
            if view.changed:
                # About CYCLE_SLICE_SECONDS worth of jobs per slice, judged by what the last
                # slices cost per job.
                per_job = (time.monotonic() - started) / len(view.changed)
                self._assess_cost = 0.8 * self._assess_cost + 0.2 * per_job
                self._assess_limit = max(16, int(CYCLE_SLICE_SECONDS / self._assess_cost))
            wake_at = await self.apply_plan(entry, plan, now)
            if not view.backlog:
                return wake_at
            await asyncio.sleep(0)  # events that arrive meanwhile wait for the next cycle

    # -- what the index asks of the progress channel ---------------------------------------

    def _worker_news(
        self, job: VideoJob, attempt: int
    ) -> tuple[datetime.datetime | None, ProgressReport | None]:
        if self.progress is None:
            return None, None
        return self.progress.heard_at(job, attempt), self.progress.released(job)

    def _hears_workers(self) -> bool:
        return self.progress is not None

    def _worker_env(self) -> tuple[Mapping[str, Any], ...]:
        return self._env
