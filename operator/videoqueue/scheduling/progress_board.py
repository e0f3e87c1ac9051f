"""The progress channel's per-job state: the latest values and heartbeat of each job's
current attempt, released for writing at a bounded rate (`ProgressBoard`), and how released
values go into a job's status (`apply_progress`). Pure: no Redis, the time is passed in. The
channel that feeds the board is in `videoqueue.controller.progress`."""

from __future__ import annotations

from dataclasses import dataclass

from videoqueue.api import JobPhase, VideoJob, VideoJobStatus
from videoqueue.api.progress import ProgressEvent

# --- The board: latest values per job, released at a bounded rate --------------------------


@dataclass(frozen=True)
class ProgressReport:
    """The values of one attempt that are ready to be written."""

    uid: str
    attempt: int
    stage: str | None
    progress: int | None
    message: str | None


@dataclass
class _Latest:
    uid: str
    attempt: int
    ts: float
    heard_at: float
    stage: str | None = None
    progress: int | None = None
    message: str | None = None
    released: ProgressReport | None = None
    released_at: float | None = None

    def report(self) -> ProgressReport:
        return ProgressReport(self.uid, self.attempt, self.stage, self.progress, self.message)


class ProgressBoard:
    """The latest progress of every job, and when each may be written next.

    Pure: the time is passed in. `add` takes events in any order (a worker's newer event
    wins by its timestamp, a newer attempt or another uid replaces an older one); `take_due`
    says which jobs to write now, at most one per job every `job_interval` seconds and, over
    all jobs, `writes_per_second` a second (a token bucket holding one second's worth), the
    jobs that have waited longest first.
    """

    def __init__(self, *, job_interval: float, writes_per_second: float) -> None:
        self.job_interval = job_interval
        self.rate = writes_per_second
        self.burst = max(1.0, writes_per_second)
        self._tokens = self.burst
        self._filled_at: float | None = None
        self._jobs: dict[str, _Latest] = {}
        # Jobs whose latest values differ from their released ones, oldest change first.
        self._pending: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, event: ProgressEvent, now: float) -> None:
        key = f"{event.namespace}/{event.job}"
        latest = self._jobs.get(key)
        if latest is not None and latest.uid == event.uid:
            if event.attempt < latest.attempt:
                return  # a late event of an attempt that is over
            if event.attempt == latest.attempt and event.ts < latest.ts:
                return  # older than what we have (entries claimed from a dead replica)
        elif latest is not None and event.ts < latest.ts:
            return  # another uid: the job was re-created; the newer worker wins
        if latest is None or latest.uid != event.uid or latest.attempt != event.attempt:
            latest = self._jobs[key] = _Latest(event.uid, event.attempt, event.ts, now)
        latest.ts = event.ts
        latest.heard_at = now
        if event.stage is not None:
            latest.stage = event.stage
        if event.progress is not None:
            latest.progress = event.progress
        if event.message is not None:
            latest.message = event.message
        if latest.released != latest.report():
            self._pending.setdefault(key, None)
        else:
            self._pending.pop(key, None)

    def _fill(self, now: float) -> None:
        if self._filled_at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._filled_at) * self.rate)
        self._filled_at = now

    def take_due(self, now: float) -> list[str]:
        """The jobs whose latest values are to be written now; they count as released."""
        self._fill(now)
        due: list[str] = []
        for key in list(self._pending):
            if self._tokens < 1:
                break
            latest = self._jobs[key]
            if latest.released_at is not None and now - latest.released_at < self.job_interval:
                continue
            latest.released = latest.report()
            latest.released_at = now
            self._tokens -= 1
            del self._pending[key]
            due.append(key)
        return due

    def next_due(self, now: float) -> float | None:
        """When `take_due` may next return something; None while nothing is pending."""
        if not self._pending:
            return None
        self._fill(now)
        token_at = now if self._tokens >= 1 else now + (1 - self._tokens) / self.rate
        earliest = min(
            now if (at := self._jobs[key].released_at) is None else max(now, at + self.job_interval)
            for key in self._pending
        )
        return max(token_at, earliest)

    def released(self, key: str) -> ProgressReport | None:
        """The values of `key` ("namespace/name") released for writing, if any."""
        latest = self._jobs.get(key)
        return None if latest is None else latest.released

    def heard_at(self, key: str, uid: str, attempt: int) -> float | None:
        """When the last event of this attempt arrived (the time passed to `add`)."""
        latest = self._jobs.get(key)
        if latest is None or latest.uid != uid or latest.attempt != attempt:
            return None
        return latest.heard_at

    def forget_older_than(self, moment: float) -> int:
        """Drop jobs not heard of since `moment`; returns how many."""
        old = [key for key, latest in self._jobs.items() if latest.heard_at < moment]
        for key in old:
            del self._jobs[key]
            self._pending.pop(key, None)
        return len(old)


# --- Writing into status -------------------------------------------------------------------


def apply_progress(
    job: VideoJob, status: VideoJobStatus, report: ProgressReport | None
) -> VideoJobStatus:
    """`status` (as assessed) with the released progress of the job's current attempt, or
    `status` itself when the report is of another job or attempt or the attempt is not under
    way (finished jobs keep what their worker's pod said)."""
    if (
        report is None
        or report.uid != job.metadata.uid
        or report.attempt != status.attempt
        or status.phase not in (JobPhase.ADMITTED, JobPhase.RUNNING)
    ):
        return status
    values = {
        "stage": report.stage if report.stage is not None else status.stage,
        "progress": report.progress if report.progress is not None else status.progress,
        "message": report.message if report.message is not None else status.message,
    }
    if all(getattr(status, name) == value for name, value in values.items()):
        return status
    return status.model_copy(update=values)
