"""The memory sizing benchmark's pure half (benchmarks/memory_sizing.py runs it): the seeded
job stream, what each finished VideoJob says about its memory, the figures per mode, the
issue's targets as verdicts, and the table."""

from __future__ import annotations

import datetime
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from videoqueue.api import parse_quantity

Mi = 1024**2
ORACLE_HEADROOM = 1.05
LEARNED_SOURCE = re.compile(r"p\d+ of \d+ past ")  # status.memorySource of a learned size
MODES = ("static", "learned", "oracle")


@dataclass(frozen=True)
class JobKind:
    """One kind of job in the stream; `key` is the benchmark's own name for it (the figures
    "after N jobs per key" count per key), not necessarily the operator's model key."""

    key: str
    type: str
    params: dict[str, Any]
    output: str | None  # under /media/out: "" for a directory, else a file suffix
    weight: float


KINDS: tuple[JobKind, ...] = (
    JobKind("probe", "probe", {}, None, 0.25),
    JobKind("thumbnail", "thumbnail", {"at": 1.0, "width": 320}, ".jpg", 0.25),
    JobKind("transcode/480p", "transcode", {"preset": "h264-480p"}, "", 0.20),
    JobKind("transcode/720p", "transcode", {"preset": "h264-720p"}, "", 0.15),
    JobKind("transcode/1080p", "transcode", {"preset": "h264-1080p"}, "", 0.15),
)
KIND = {kind.key: kind for kind in KINDS}

# Generated inputs (name -> size); each job reads one, picked by the seeded stream.
INPUTS = {"in-720.mp4": "1280x720", "in-1080.mp4": "1920x1080"}


@dataclass(frozen=True)
class PlannedJob:
    name: str
    key: str
    input: str  # a file name in INPUTS

    @property
    def distinct(self) -> tuple[str, str]:
        """What makes two jobs the same work (the oracle calibrates each once)."""
        return self.key, self.input


def plan_stream(seed: int, jobs: int) -> list[PlannedJob]:
    """`jobs` jobs drawn with the kinds' weights and a random input each, in submission order."""
    rng = random.Random(seed)
    keys = rng.choices([k.key for k in KINDS], weights=[k.weight for k in KINDS], k=jobs)
    inputs = sorted(INPUTS)
    return [PlannedJob(f"j{i:04d}", key, rng.choice(inputs)) for i, key in enumerate(keys)]


def distinct_jobs(stream: list[PlannedJob]) -> list[PlannedJob]:
    """One job of each distinct (key, input) in the stream, named after it."""
    seen = sorted({job.distinct for job in stream})
    return [
        PlannedJob(f"cal-{key.replace('/', '-')}-{name.split('.')[0]}", key, name)
        for key, name in seen
    ]


def oracle_memory(peak_bytes: int) -> str:
    """The oracle's memory for a job whose calibrated peak is `peak_bytes`: x1.05, whole Mi."""
    return f"{math.ceil(peak_bytes * ORACLE_HEADROOM / Mi)}Mi"


def job_body(job: PlannedJob, *, queue: str = "work", memory: str | None = None) -> dict[str, Any]:
    """The VideoJob of `job` (inputs and outputs under /media, as the worker pod sees them)."""
    kind = KIND[job.key]
    spec: dict[str, Any] = {
        "queueName": queue,
        "type": kind.type,
        "input": {"url": f"file:///media/{job.input}"},
        "params": dict(kind.params),
    }
    if kind.output is not None:
        # A directory: the worker names the file after the job.
        spec["output"] = {
            "url": f"file:///media/out/{job.name + kind.output if kind.output else ''}"
        }
    if memory is not None:
        spec["resources"] = {"memory": memory}
    return {
        "apiVersion": "videoqueue.dev/v1alpha1",
        "kind": "VideoJob",
        "metadata": {"name": job.name},
        "spec": spec,
    }


# -- what a finished job says ----------------------------------------------------------------


def parse_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class JobOutcome:
    name: str
    key: str
    index_in_key: int  # 0 for the first job of its key in submission order
    succeeded: bool
    first_reason: str | None  # how attempt 1 ended
    first_memory: int | None  # what attempt 1 reserved, bytes
    memory: int | None  # what the completed attempt reserved
    peak: int | None  # the completed attempt's peak (status.attempts[].peakMemory)
    attempts: int
    completed_at: float | None
    run_seconds: float  # summed over attempts with a start and a finish
    memory_source: str | None


def job_outcome(job: dict[str, Any], key: str, index_in_key: int) -> JobOutcome:
    status = job.get("status") or {}
    attempts: list[dict[str, Any]] = status.get("attempts") or []
    first = next((a for a in attempts if a.get("attempt") == 1), None)
    done = next((a for a in reversed(attempts) if a.get("reason") == "Completed"), None)

    def quantity(record: dict[str, Any] | None, name: str) -> int | None:
        value = (record or {}).get(name)
        return None if value is None else parse_quantity(value)

    run = sum(
        parse_time(a["finishTime"]) - parse_time(a["startTime"])
        for a in attempts
        if a.get("startTime") and a.get("finishTime")
    )
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return JobOutcome(
        name=job["metadata"]["name"],
        key=key,
        index_in_key=index_in_key,
        succeeded=conditions.get("Complete") == "True",
        first_reason=(first or {}).get("reason"),
        first_memory=quantity(first, "memory"),
        memory=quantity(done, "memory"),
        peak=quantity(done, "peakMemory"),
        attempts=len(attempts),
        completed_at=parse_time(status["completionTime"]) if status.get("completionTime") else None,
        run_seconds=run,
        memory_source=status.get("memorySource"),
    )


def outcomes(stream: list[PlannedJob], jobs: dict[str, dict[str, Any]]) -> list[JobOutcome]:
    """Each planned job's outcome, from the VideoJobs by name."""
    counts: Counter[str] = Counter()
    found = []
    for planned in stream:
        found.append(job_outcome(jobs[planned.name], planned.key, counts[planned.key]))
        counts[planned.key] += 1
    return found


# -- figures ---------------------------------------------------------------------------------


def nearest_rank(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by nearest rank: an observed value."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class ModeFigures:
    mode: str
    jobs: int
    succeeded: int
    attempts: int
    drain_seconds: float
    jobs_per_hour: float
    reserved_over_peak_median: float | None
    reserved_over_peak_p90: float | None
    first_attempt_oom_rate: float
    first_attempt_oom_rate_after_warmup: float | None  # jobs past the first `warmup` per key
    jobs_after_warmup: int
    mean_running_workers: float  # summed run time / drain time
    per_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    # CPU time of every process in the real node's pods during the drain (its cgroup root's
    # cpuacct.usage), and that over the drain: the cores the workers kept busy.
    worker_cpu_seconds: float | None = None
    worker_cores_busy: float | None = None
    memory_sources: dict[str, int] = field(default_factory=dict)
    # Jobs whose status.memorySource says the queue's model sized them ("p95 of 24 past ...").
    learned_sized: int = 0
    # Reserved/peak of the jobs past the first `warmup` of their key (as the OOM rate).
    reserved_over_peak_median_after_warmup: float | None = None


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def mode_figures(mode: str, found: list[JobOutcome], started_at: float, warmup: int) -> ModeFigures:
    """The figures of one mode's drain; `started_at`: when its first job was created."""
    ratios = [o.memory / o.peak for o in found if o.memory and o.peak]
    finished = [o.completed_at for o in found if o.completed_at is not None]
    drain = max(finished) - started_at if finished else math.nan
    oom = [o.first_reason == "OOMKilled" for o in found]
    later = [o.first_reason == "OOMKilled" for o in found if o.index_in_key >= warmup]
    later_ratios = [
        o.memory / o.peak for o in found if o.index_in_key >= warmup and o.memory and o.peak
    ]
    per_key: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(o.key for o in found):
        mine = [o for o in found if o.key == key]
        key_ratios = [o.memory / o.peak for o in mine if o.memory and o.peak]
        peaks = [o.peak / Mi for o in mine if o.peak]
        per_key[key] = {
            "jobs": len(mine),
            "peak_mib_median": _round(nearest_rank(peaks, 50), 1),
            "peak_mib_max": _round(max(peaks, default=None), 1),
            "reserved_mib_median": _round(
                nearest_rank([o.memory / Mi for o in mine if o.memory], 50), 1
            ),
            "reserved_over_peak_median": _round(nearest_rank(key_ratios, 50)),
            "first_attempt_ooms": sum(o.first_reason == "OOMKilled" for o in mine),
        }
    # Memory sources with their numbers masked, so the record stays small.
    sources = Counter(re.sub(r"\d+(\.\d+)?", "#", o.memory_source or "(none)") for o in found)
    return ModeFigures(
        mode=mode,
        jobs=len(found),
        succeeded=sum(o.succeeded for o in found),
        attempts=sum(o.attempts for o in found),
        drain_seconds=round(drain, 1),
        jobs_per_hour=round(len(finished) / drain * 3600, 1) if finished and drain > 0 else 0.0,
        reserved_over_peak_median=_round(nearest_rank(ratios, 50)),
        reserved_over_peak_p90=_round(nearest_rank(ratios, 90)),
        first_attempt_oom_rate=round(_rate(oom) or 0.0, 4),
        first_attempt_oom_rate_after_warmup=_round(_rate(later), 4),
        jobs_after_warmup=len(later),
        mean_running_workers=round(sum(o.run_seconds for o in found) / drain, 2)
        if drain > 0
        else 0.0,
        per_key=per_key,
        memory_sources=dict(sources.most_common(8)),
        learned_sized=sum(bool(LEARNED_SOURCE.match(o.memory_source or "")) for o in found),
        reserved_over_peak_median_after_warmup=_round(nearest_rank(later_ratios, 50)),
    )


# -- against the targets ---------------------------------------------------------------


def ratios(figures: dict[str, ModeFigures]) -> dict[str, float | None]:
    """learned/static and learned/oracle of throughput and of reserved/peak."""
    found: dict[str, float | None] = {}
    learned = figures.get("learned")
    for other in ("static", "oracle"):
        base = figures.get(other)
        if learned is None or base is None:
            continue
        found[f"throughput_learned_over_{other}"] = (
            round(learned.jobs_per_hour / base.jobs_per_hour, 3) if base.jobs_per_hour else None
        )
        if learned.reserved_over_peak_median and base.reserved_over_peak_median:
            found[f"reserved_over_peak_learned_over_{other}"] = round(
                learned.reserved_over_peak_median / base.reserved_over_peak_median, 3
            )
    return found


def verdicts(figures: dict[str, ModeFigures], warmup: int) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each of the issue's targets; "not run" without the
    learned mode (or the mode it is compared with)."""
    learned = figures.get("learned")
    found = ratios(figures)

    def check(value: float | None, ok: bool | None, text: str) -> tuple[str, str]:
        if value is None or ok is None:
            return "-", "not run"
        return text, "MET" if ok else "MISSED"

    rows = []
    median = learned.reserved_over_peak_median if learned else None
    rows.append(
        ("learned reserved/peak median <= 1.35",
         *check(median, median is not None and median <= 1.35, f"{median}"))
    )  # fmt: skip
    later = learned.reserved_over_peak_median_after_warmup if learned else None
    rows.append(
        (f"learned reserved/peak median <= 1.35 after {warmup} jobs per key",
         *check(later, later is not None and later <= 1.35, f"{later}"))
    )  # fmt: skip
    oom = learned.first_attempt_oom_rate_after_warmup if learned else None
    rows.append(
        (f"learned first-attempt OOM <= 2 % after {warmup} jobs per key",
         *check(oom, oom is not None and oom <= 0.02, f"{(oom or 0) * 100:.1f} %"))
    )  # fmt: skip
    for other, target in (("static", 1.5), ("oracle", 0.9)):
        value = found.get(f"throughput_learned_over_{other}")
        rows.append(
            (f"learned throughput >= {target:g}x {other}",
             *check(value, value is not None and value >= target, f"{value}x"))
        )  # fmt: skip
    return rows


def table(figures: dict[str, ModeFigures], warmup: int) -> str:
    modes = [m for m in MODES if m in figures]
    rows: list[tuple[str, ...]] = [
        ("", *modes),
        ("jobs (succeeded)", *(f"{figures[m].jobs} ({figures[m].succeeded})" for m in modes)),
        ("attempts", *(str(figures[m].attempts) for m in modes)),
        ("drain (s)", *(f"{figures[m].drain_seconds:.0f}" for m in modes)),
        ("jobs finished per hour", *(f"{figures[m].jobs_per_hour:.0f}" for m in modes)),
        ("mean running workers", *(f"{figures[m].mean_running_workers:.2f}" for m in modes)),
        ("worker CPU s (cores busy)", *(_cpu(figures[m]) for m in modes)),
        ("sized by the model", *(str(figures[m].learned_sized) for m in modes)),
        ("reserved/peak median", *(str(figures[m].reserved_over_peak_median) for m in modes)),
        ("reserved/peak p90", *(str(figures[m].reserved_over_peak_p90) for m in modes)),
        (
            f"  median after {warmup} jobs per key",
            *(str(figures[m].reserved_over_peak_median_after_warmup) for m in modes),
        ),
        (
            "first-attempt OOM",
            *(f"{figures[m].first_attempt_oom_rate * 100:.1f} %" for m in modes),
        ),
        (
            f"  after {warmup} jobs per key",
            *(_after_warmup(figures[m]) for m in modes),
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    keys = list(dict.fromkeys(k for m in modes for k in figures[m].per_key))
    lines += ["", "peak MiB median (max) / reserved MiB median, per key:"]
    for key in keys:
        cells = []
        for m in modes:
            k = figures[m].per_key.get(key)
            if k is None:
                cells.append("-")
                continue
            peak = f"{k['peak_mib_median']} ({k['peak_mib_max']})"
            cells.append(f"{m} {peak} / {k['reserved_mib_median']}")
        lines.append(f"  {key:16} " + "   ".join(cells))
    lines += ["", *(f"{k}: {v}" for k, v in ratios(figures).items())]
    lines += ["", "targets (issue 19):"]
    lines += [f"  {t:52} {m:>10}  {v}" for t, m, v in verdicts(figures, warmup)]
    return "\n".join(lines)


def _cpu(figures: ModeFigures) -> str:
    if figures.worker_cpu_seconds is None or figures.worker_cores_busy is None:
        return "-"
    return f"{figures.worker_cpu_seconds:.0f} ({figures.worker_cores_busy:.2f})"


def _after_warmup(figures: ModeFigures) -> str:
    rate = figures.first_attempt_oom_rate_after_warmup
    if rate is None:
        return "n/a (0 jobs)"
    return f"{rate * 100:.1f} % of {figures.jobs_after_warmup}"
