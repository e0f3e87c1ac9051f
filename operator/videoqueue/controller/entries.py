"""What the index keeps of each watched job (`JobEntry`: compact JSON and the fields every
cycle reads) and of each queue (`QueueEntry`: its jobs and the bookkeeping that keeps a cycle
proportional to what changed), and small helpers on watched objects."""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import sys
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from videoqueue.api import (
    BATCH_LABEL,
    GROUP,
    VERSION,
    JobPhase,
    VideoJob,
    VideoJobStatus,
    VideoQueue,
)
from videoqueue.scheduling import JobView, StoppingPod
from videoqueue.scheduling.jobs import (
    Assessment,
)
from videoqueue.scheduling.jobs.model import parse_time
from videoqueue.scheduling.notifications import NotificationNews
from videoqueue.scheduling.pressure import (
    PressureState,
)
from videoqueue.scheduling.sizing import sizing_key
from videoqueue.scheduling.statistics import FinishedJob

logger = logging.getLogger(__name__)

# How long the status of a fresh admission stays unwritten while it only says Admitted or
# Running, and a Running status while its worker has run less than that: the pod records
# the admission and the start meanwhile, and a job done by then costs one status write
# (its outcome, with admission and start from the pod), or two when its pod was slow to
# start (Admitted, then the outcome), instead of three. Outcomes and anything else are
# written at once. A new job's first status (Pending, why it waits) waits as long after its
# creation: a job admitted meanwhile is first written Admitted, Running or with its outcome
# (in a burst of 5,000 most jobs waited less than that, and each cost a Pending write).
ADMISSION_WRITE_DELAY = 5.0

# An Admitted status whose pod has not started yet (being scheduled or pulling its image on
# a busy cluster) waits longer, up to this long after the admission: the pod is the record
# of the admission and the queue's status counts it. A pod the scheduler reports
# unschedulable ends the wait (ADMISSION_WRITE_DELAY): the user must see that. At N=5,000
# most pods started 5-30 s after their admission, and each such job cost an Admitted write.
# A Running status after a written Admitted waits as long after the start (one in-between
# write per attempt: at N=5,000, 59 % of jobs were written Admitted and then Running).
POD_START_WRITE_DELAY = 30.0
BUSY_PHASES = frozenset({JobPhase.ADMITTED, JobPhase.RUNNING})
# Every job without pods confirmed missing holds this one (each `frozenset()` is 216 bytes).
NONE_MISSING: frozenset[str] = frozenset()


class JobEntry:
    """A job in the index. Its object is kept as compact JSON, deflated (`pack`), parsed
    (`body`, `job`) on demand and dropped again by `compact` while the job is idle (waiting
    or finished): a parsed VideoJob with its body is ~16 KiB, the JSON ~1 KiB, and a queue
    may hold tens of thousands of idle jobs. What every cycle reads is kept as plain fields
    (slots: an instance dictionary of this many fields was 1.5 KiB a job)."""

    __slots__ = (
        "_body",
        "_dictionary",
        "_job",
        "_packed",
        "admitted_at",
        "assessment",
        "batch",
        "confirmed_missing",
        "created",
        "deleting",
        "depends_on",
        "due_at",
        "generation",
        "name",
        "namespace",
        "notification_key",
        "notification_news",
        "notification_state",
        "pods",
        "queue_key",
        "refusal",
        "refusals",
        "resource_version",
        "sizing_key",
        "stored_completion",
        "stored_phase",
        "type",
        "uid",
        "unwritten",
        "write_after",
        "write_failures",
    )

    def __init__(self, body: dict[str, Any]) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.assessment: Assessment | None = None
        self.due_at: float | None = None  # when it is next re-assessed although nothing changed
        self.write_after = 0.0  # no status write before this time (a failed write's retry)
        self.write_failures = 0  # status writes failed in a row
        # When this operator admitted it (0: not since its last start): while the status is
        # only Admitted or Running, its write waits (ADMISSION_WRITE_DELAY and
        # POD_START_WRITE_DELAY from then).
        self.admitted_at = 0.0
        # The status decided but not yet written (a deferred admission): what the next
        # assessment starts from, since part of it (e.g. a disrupted attempt) is nowhere else.
        self.unwritten: VideoJobStatus | None = None
        self.deleting = False  # its TTL ran out and the deletion was sent
        self.refusals = 0  # worker pods refused in a row (POD_REFUSED_*)
        self.refusal: tuple[str, str] | None = None  # the last refusal's reason and message
        # Pods of its current attempt the API server said are gone (the index had not seen
        # them go): told to its next assessment.
        self.confirmed_missing = NONE_MISSING
        # What became of its owed notification, until its status records it.
        self.notification_news: NotificationNews | None = None
        self.update(body)

    def update(self, body: dict[str, Any]) -> None:
        """Take a newer version of the object (slimmed: see `slim`)."""
        meta = body["metadata"]
        spec = body.get("spec") or {}
        # Strings most jobs share (a queue's namespace, its key, the type, the second of a
        # burst of creations) are kept once: each job's own copies were ~250 bytes of its
        # record (tracemalloc, 10,000 pending).
        self.namespace: str = sys.intern(meta["namespace"])
        self.name: str = meta["name"]
        self.uid: str | None = meta.get("uid")
        self.resource_version: str | None = meta.get("resourceVersion")
        self.created: str = sys.intern(meta.get("creationTimestamp") or "")
        self.generation: int | None = meta.get("generation")
        self.queue_key = sys.intern(f"{self.namespace}/{spec.get('queueName', '')}")
        self.type: str = sys.intern(spec.get("type", ""))
        params = spec.get("params")
        self.sizing_key = sys.intern(
            sizing_key(self.type, params if isinstance(params, dict) else None)
        )
        self.depends_on: tuple[str, ...] = tuple(spec.get("dependsOn") or ())
        self.batch: str | None = (meta.get("labels") or {}).get(BATCH_LABEL)
        status = body.get("status") or {}
        phase = status.get("phase")
        self.stored_phase = JobPhase(phase) if phase in _PHASE_VALUES else None
        # status.notification's key and state as stored: read per notification try, without
        # parsing the job.
        stored = status.get("notification") or {}
        self.notification_key: str | None = stored.get("key")
        self.notification_state: str | None = stored.get("state")
        # Of a stored outcome only: the statistics count a job once its outcome is stored.
        self.stored_completion: datetime.datetime | None = (
            parse_time(status.get("completionTime"))
            if self.stored_phase in _COUNTED_PHASES
            else None
        )
        raw = orjson.dumps(body)
        self._dictionary = dictionary_for(self.queue_key, raw)
        self._packed = pack(raw, self._dictionary)
        # Not kept: a queue's jobs arrive by the thousand (a listing, a burst of status
        # echoes) and are assessed one at a time; parsing again costs less than the peak.
        self._body: dict[str, Any] | None = None
        self._job: VideoJob | _Unset | None = _UNSET

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ref(self) -> dict[str, Any]:
        """Enough of the object to post an Event about it."""
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VideoJob",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "resourceVersion": self.resource_version,
            },
        }

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = orjson.loads(unpack(self._packed, self._dictionary))
        return self._body

    @property
    def job(self) -> VideoJob | None:
        """The parsed object; None when it does not parse (the CRD schema prevents it)."""
        if isinstance(self._job, _Unset):
            try:
                self._job = VideoJob.model_validate(self.body)
            except ValidationError:
                logger.exception("cannot read VideoJob %s", self.key)
                self._job = None
        return self._job

    def compact(self) -> None:
        """Drop the parsed forms; the next use parses the JSON again."""
        self._body = None
        if self._job is not None:
            self._job = _UNSET


# Each job's JSON is deflated against a dictionary: the first job the index saw of its queue,
# whose field names, spec and status most of the queue's jobs repeat; only names, uids,
# versions and times differ. A pending job's 0.8-1 KiB of JSON (a sixth of the operator's
# memory per job at 100,000 pending) became about 0.1 KiB, for ~7 us a change and ~1 us a
# parse. An entry keeps a reference to its dictionary; at most MAX_DICTIONARIES queues get
# one (jobs of further queue names are deflated without).
_DICTIONARIES: dict[str, bytes] = {}
MAX_DICTIONARIES = 4096
_WBITS = -15  # raw deflate: no header or checksum per job


def dictionary_for(queue_key: str, raw: bytes) -> bytes | None:
    """The dictionary of the queue's jobs: `raw` (copied to its size: orjson's result keeps
    the buffer it was written into) if the queue has none yet."""
    found = _DICTIONARIES.get(queue_key)
    if found is None and len(_DICTIONARIES) < MAX_DICTIONARIES:
        found = _DICTIONARIES[queue_key] = bytes(memoryview(raw))
    return found


def pack(raw: bytes, dictionary: bytes | None) -> bytes:
    if dictionary is None:
        packer = zlib.compressobj(1, zlib.DEFLATED, _WBITS)
    else:
        packer = zlib.compressobj(1, zlib.DEFLATED, _WBITS, zdict=dictionary)
    return packer.compress(raw) + packer.flush()


def unpack(packed: bytes, dictionary: bytes | None) -> bytes:
    if dictionary is None:
        unpacker = zlib.decompressobj(_WBITS)
    else:
        unpacker = zlib.decompressobj(_WBITS, zdict=dictionary)
    return unpacker.decompress(packed) + unpacker.flush()


class _Unset:
    pass


_UNSET = _Unset()
_PHASE_VALUES = frozenset(phase.value for phase in JobPhase)
_COUNTED_PHASES = frozenset({JobPhase.SUCCEEDED, JobPhase.FAILED})


@dataclass
class QueueEntry:
    """A queue and the bookkeeping that keeps its cycles proportional to what changed, not
    to the number of its jobs: a cycle touches the jobs in `changed`, `unsaved` and the
    heaps' due entries, and reads `views` for the decision; finished jobs sit idle."""

    key: str
    body: dict[str, Any] | None = None
    queue: VideoQueue | None = None
    jobs: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    cycle_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    planning_seconds: float = 0.0  # what the last cycle spent observing and planning
    all_changed: bool = True  # re-assess every job (the queue's spec changed)
    new_jobs: bool = False  # new jobs arrived since spec.maxPending was last checked
    changed: set[str] = field(default_factory=set)  # jobs to re-assess
    # Jobs whose assessment may differ from their stored status, to be written; of those,
    # the ones not looked at since (`fresh`) and the ones whose write waits, by when it may
    # go (`write_due`, a min-heap; entries go stale like `due`'s). A cycle looks only at
    # these, not at every unsaved job.
    unsaved: set[str] = field(default_factory=set)
    fresh: set[str] = field(default_factory=set)
    write_due: list[tuple[float, str]] = field(default_factory=list)
    # The jobs that take part in the decision (waiting, admitted, running), with their view,
    # and which of them wait: no job waiting, no decision to make.
    views: dict[str, JobView] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)
    # (time, job key) min-heaps: re-assessment moments (deadlines, backoff ends) and TTL
    # expiries. Entries go stale rather than being removed; a stale one costs a re-check.
    due: list[tuple[float, str]] = field(default_factory=list)
    expiries: list[tuple[float, str]] = field(default_factory=list)
    oom_kills: dict[str, tuple[float, ...]] = field(default_factory=dict)  # by job key
    # Jobs whose worker pod was refused, and until when they sit out of the decision (they
    # hold no slot and no memory meanwhile); and the queue's own pause after refusals.
    held: dict[str, float] = field(default_factory=dict)
    refused_until: float = 0.0
    # Worker pods still terminating although their attempt is over, which hold a slot and
    # their memory until they are gone: by job key, and by pod key for deleted jobs.
    stopping: dict[str, tuple[StoppingPod, ...]] = field(default_factory=dict)
    orphans: dict[str, StoppingPod] = field(default_factory=dict)
    # Status writes queued or on the wire (job keys), and the tasks writing them.
    write_queue: collections.deque[str] = field(default_factory=collections.deque)
    writing: set[str] = field(default_factory=set)
    writers: set[asyncio.Task[None]] = field(default_factory=set)
    status_changed: bool = True  # the queue's status may need a write
    status_written_at: float = 0.0
    pressure: PressureState | None = None
    # Jobs that Succeeded or Failed after the watermark of the queue's stored statistics
    # (status.statistics.countedThrough, also kept here), by record key: kept until the
    # stored statistics count them, even if the job is deleted meanwhile. And the jobs whose
    # TTL ran out before that, by completionTime: deleted once it is counted.
    uncounted: dict[str, FinishedJob] = field(default_factory=dict)
    counted_through: datetime.datetime | None = None
    delete_once_counted: list[tuple[datetime.datetime, str]] = field(default_factory=list)
    stall_warned: bool = False  # told that its stall detection is off
    # The Admitted reason each waiting job's assessment has (QueueView.explained).
    explained: dict[str, str] = field(default_factory=dict)

    def mark_unsaved(self, key: str) -> None:
        self.unsaved.add(key)
        self.fresh.add(key)

    def assess_again(self, key: str) -> None:
        self.changed.add(key)
        self.wake.set()

    def stopping_pods(self) -> tuple[StoppingPod, ...]:
        return (*(pod for pods in self.stopping.values() for pod in pods), *self.orphans.values())

    def resize(self, jobs: dict[str, JobEntry], keys: frozenset[str]) -> None:
        """Re-assess this queue's waiting jobs of these sizing keys: their learned memory
        changed (`videoqueue.scheduling.sizing.sizes_changed`)."""
        for key in self.jobs:
            job = jobs.get(key)
            if job is None or job.sizing_key not in keys:
                continue
            if (phase := job.stored_phase) is None or not (
                phase in BUSY_PHASES or phase.is_terminal
            ):
                self.changed.add(key)
        self.wake.set()


def slim(raw: Any) -> dict[str, Any]:
    """The object without metadata.managedFields, which nothing here reads: the index keeps
    every job's body (and its pods'), from watch events and write responses, and the field
    owners are most of a small object's size (about 6 of 10 KiB for a pending VideoJob)."""
    body: dict[str, Any] = dict(raw)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        body["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    return body


def is_newer(body: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """Whether `body` is at least as new as `than`. resourceVersions are opaque by contract
    but etcd revisions in practice; comparing them keeps a late watch event from rolling
    back what a write response already told us."""
    if than is None:
        return True
    try:
        return int(body["metadata"]["resourceVersion"]) >= int(than["metadata"]["resourceVersion"])
    except (KeyError, ValueError, TypeError):
        return True


def advances(version: str | None, than: str | None) -> bool:
    """Whether resourceVersion `version` is newer than `than` (see `is_newer`)."""
    try:
        return int(version) > int(than)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return True


def generation_of(body: dict[str, Any]) -> int | None:
    generation: int | None = body.get("metadata", {}).get("generation")
    return generation


def is_busy(entry: JobEntry) -> bool:
    """Admitted or running: its pod's events re-assess it often, so its parsed form is kept."""
    return entry.assessment is not None and entry.assessment.status.phase in BUSY_PHASES


def is_deleting(body: dict[str, Any] | None) -> bool:
    return body is not None and body.get("metadata", {}).get("deletionTimestamp") is not None
