"""The chaos benchmark's verdict, from what the API and the webhook receiver hold at the end.
Pure: it reads the objects, the pods recorded by a watch and the deliveries, and counts.

Each check lists its findings, one line per job (or queue); every count must be zero:
- lost: created by the harness, missing from the API;
- stuck: present but not in a terminal phase by the deadline;
- twice: an attempt that ran in more than one pod, an attempt number skipped or repeated in
  status.attempts, or a worker pod for an attempt the status does not record;
- unobserved: an attempt in status.attempts for which no worker pod was seen: the watch
  missed it, so the check above could not have caught its double (every attempt of this
  workload runs a pod);
- outcome: terminal, but not with the phase and attempt count its script makes certain;
- notifications: a terminal job whose outcome its queue notifies about and whose delivery key
  `<uid>/<attempt>/<phase>` the receiver never got, or whose status.notification.state is not
  Delivered. None (n/a) while no job has status.notification: the receiver's misses are
  then reported apart (`receiver_missed`), since delivery was at most once before it;
- statistics: a queue whose status.statistics succeeded/failed differ from the number of its
  jobs in Succeeded/Failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from benchmarks.chaos.plan import PlannedJob

TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled", "Rejected"})
FAILED_OUTCOMES = frozenset({"Failed", "Cancelled", "Rejected"})
MAX_ATTEMPT_HISTORY = 20  # status.attempts keeps the last 20

# pods[job name][attempt] = the UIDs of every worker pod ever seen for that attempt
PodsByAttempt = Mapping[str, Mapping[int, Iterable[str]]]


@dataclass(frozen=True)
class Delivery:
    """One webhook request the receiver answered."""

    key: str  # X-VideoQueue-Delivery, or the same built from the body when absent
    namespace: str
    at: float
    signed: bool = False  # its signature verified with the queue's Secret


def delivery_key(header: str | None, body: Mapping[str, Any]) -> str:
    """The idempotency key `<uid>/<attempt>/<phase>`: the header when the operator sends
    one, otherwise built from the body's uid, attempts and outcome."""
    if header:
        return header
    return f"{body.get('uid')}/{body.get('attempts')}/{body.get('outcome')}"


@dataclass
class Audit:
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    unobserved: list[str] = field(default_factory=list)
    outcome: list[str] = field(default_factory=list)
    notifications: list[str] | None = None  # None: status.notification absent (n/a)
    receiver_missed: list[str] = field(default_factory=list)
    duplicate_deliveries: int = 0  # allowed (at least once); receivers deduplicate by key
    unsigned: list[str] = field(default_factory=list)  # deliveries whose signature failed
    statistics: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int | None]:
        return {
            "jobs lost": len(self.lost),
            "jobs stuck": len(self.stuck),
            "attempts run twice": len(self.twice),
            "attempts without a pod seen": len(self.unobserved),
            "unexpected outcomes": len(self.outcome),
            "notifications owed, not sent": (
                None if self.notifications is None else len(self.notifications)
            ),
            "deliveries not validly signed": len(self.unsigned),
            "statistics disagreeing": len(self.statistics),
        }

    @property
    def clean(self) -> bool:
        return not any(self.counts().values())


def audit(
    planned: list[PlannedJob],
    jobs: Mapping[str, Mapping[str, Any]],
    pods: PodsByAttempt,
    queues: Mapping[str, Mapping[str, Any]],
    deliveries: Iterable[Delivery],
) -> Audit:
    """`jobs` and `queues` by name, as the API returns them; `pods` and `deliveries` of the
    same namespace."""
    result = Audit()
    deliveries = list(deliveries)
    received = [d.key for d in deliveries]
    result.duplicate_deliveries = len(received) - len(set(received))
    result.unsigned = [d.key for d in deliveries if not d.signed]
    keys = set(received)
    has_notification = any("notification" in (job.get("status") or {}) for job in jobs.values())
    notifications: list[str] = []
    for plan in planned:
        job = jobs.get(plan.name)
        if job is None:
            result.lost.append(f"{plan.name}: missing")
            continue
        status = job.get("status") or {}
        phase = status.get("phase")
        seen = pods.get(plan.name, {})
        result.twice += [f"{plan.name}: {p}" for p in attempt_problems(status, seen)]
        recorded = [a.get("attempt") for a in status.get("attempts") or []]
        if unseen := [a for a in recorded if a not in seen]:
            result.unobserved.append(f"{plan.name}: no pod seen for attempts {unseen}")
        if phase not in TERMINAL:
            result.stuck.append(f"{plan.name}: {phase} (attempt {status.get('attempt')})")
            continue
        got = (phase, status.get("attempt"))
        if got != plan.expected:
            result.outcome.append(f"{plan.name} ({plan.outcome}): {got}, expected {plan.expected}")
        queue = queues.get(plan.queue)
        if queue is None or not notified(queue, phase):
            continue
        owed = status.get("notification") or {}
        key = owed.get("key") or f"{job['metadata'].get('uid')}/{status.get('attempt')}/{phase}"
        if key not in keys:
            result.receiver_missed.append(f"{plan.name}: {key} never received")
        state = owed.get("state")
        if key not in keys or state != "Delivered":
            notifications.append(f"{plan.name}: {key} received={key in keys}, state={state}")
    if has_notification:
        result.notifications = notifications
    result.statistics = statistics_problems(jobs, queues)
    return result


def attempt_problems(status: Mapping[str, Any], pods: Mapping[int, Iterable[str]]) -> list[str]:
    problems = []
    for attempt, uids in sorted(pods.items()):
        count = len(set(uids))
        if count > 1:
            problems.append(f"attempt {attempt} ran in {count} pods")
    current = int(status.get("attempt") or 0)
    recorded = [int(a.get("attempt", 0)) for a in status.get("attempts") or []]
    first = max(1, current - MAX_ATTEMPT_HISTORY + 1)
    if recorded and recorded != list(range(first, current + 1)):
        problems.append(f"status.attempts {recorded} for attempt {current}")
    beyond = sorted(a for a in pods if a > current)
    if beyond:
        problems.append(f"pods for attempts {beyond} beyond status.attempt {current}")
    return problems


def notified(queue: Mapping[str, Any], phase: str) -> bool:
    """Whether the queue's spec.notifications covers a job ending in `phase`."""
    settings = (queue.get("spec") or {}).get("notifications")
    if not settings:
        return False
    on = settings.get("on") or ["Succeeded", "Failed"]
    return ("Failed" if phase in FAILED_OUTCOMES else phase) in on


def statistics_problems(
    jobs: Mapping[str, Mapping[str, Any]], queues: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    problems = []
    for name, queue in sorted(queues.items()):
        mine = [
            (job.get("status") or {}).get("phase")
            for job in jobs.values()
            if (job.get("spec") or {}).get("queueName") == name
        ]
        expected = {"succeeded": mine.count("Succeeded"), "failed": mine.count("Failed")}
        stats = (queue.get("status") or {}).get("statistics") or {}
        got = {key: int(stats.get(key, 0)) for key in expected}
        if got != expected:
            problems.append(f"queue {name}: statistics {got}, jobs {expected}")
    return problems


def recoveries(backs: list[float], admissions: Iterable[float]) -> list[float | None]:
    """For each moment a fault ended (`backs`), the time to the first admission after it;
    None when nothing was admitted after it."""
    ordered = sorted(admissions)
    result: list[float | None] = []
    for back in backs:
        after = next((at for at in ordered if at > back), None)
        result.append(None if after is None else after - back)
    return result
