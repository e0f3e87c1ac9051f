"""What the chaos benchmark runs, decided up front from one seed: the jobs (queue, priority,
how each one ends) and the faults (which, in what order, after what pause). Pure: no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from videoqueue.envtest.builders import MakeJob
from videoqueue.envtest.kwok import REASON, REASON_FOR_ATTEMPT, RUN_DURATION


class Outcome(StrEnum):
    """How a job's attempts end on KWOK (annotations copied onto its worker pods)."""

    OK = "ok"  # succeeds on attempt 1
    RETRY = "retry"  # attempt 1 exits 1 (Error), attempt 2 succeeds
    OOM = "oom"  # attempt 1 is OOMKilled (137), attempt 2 gets more memory and succeeds
    FAIL = "fail"  # every attempt exits 1: Failed after maxAttempts (2)


# Shares of the mix, in this order (the rest succeed at once).
MIX = ((Outcome.RETRY, 0.10), (Outcome.OOM, 0.10), (Outcome.FAIL, 0.08))
FAIL_ATTEMPTS = 2


@dataclass(frozen=True)
class PlannedJob:
    name: str
    queue: str
    priority: int
    outcome: Outcome
    run_for: str

    @property
    def expected(self) -> tuple[str, int]:
        """The phase and the number of attempts the job must end with."""
        if self.outcome is Outcome.OK:
            return "Succeeded", 1
        if self.outcome is Outcome.FAIL:
            return "Failed", FAIL_ATTEMPTS
        return "Succeeded", 2

    def manifest(self) -> dict[str, Any]:
        annotations = {RUN_DURATION: self.run_for}
        if self.outcome is Outcome.RETRY:
            annotations[REASON_FOR_ATTEMPT.format(attempt=1)] = "Error"
        elif self.outcome is Outcome.OOM:
            annotations[REASON_FOR_ATTEMPT.format(attempt=1)] = "OOMKilled"
        elif self.outcome is Outcome.FAIL:
            annotations[REASON] = "Error"
        job = MakeJob(self.name, queue=self.queue).priority(self.priority)
        if self.outcome is Outcome.FAIL:
            job.max_attempts(FAIL_ATTEMPTS)
        return job.annotations(**annotations).obj()


def plan_jobs(
    rng: random.Random, count: int, queues: list[str], run_for: tuple[str, ...]
) -> list[PlannedJob]:
    jobs = []
    for i in range(count):
        draw, outcome = rng.random(), Outcome.OK
        for kind, share in MIX:
            if draw < share:
                outcome = kind
                break
            draw -= share
        queue, priority = rng.choice(queues), rng.randint(0, 10)
        jobs.append(PlannedJob(f"j{i:05d}", queue, priority, outcome, rng.choice(run_for)))
    return jobs


class FaultKind(StrEnum):
    OPERATOR_KILL = "operator SIGKILL"
    APISERVER_RESTART = "kube-apiserver restart"
    ETCD_RESTART = "etcd restart"
    REDIS_RESTART = "redis restart"
    REPLICA_KILL = "active replica SIGKILL"


@dataclass(frozen=True)
class PlannedFault:
    kind: FaultKind
    pause: float  # seconds after the previous fault's recovery (or the first admission)


def plan_faults(
    rng: random.Random,
    counts: dict[FaultKind, int],
    pause: tuple[float, float],
) -> list[PlannedFault]:
    """The single-operator faults in a random order, then the active-replica kills (they
    need two replicas, which run last); each after a random pause in `pause`."""
    single = [
        kind for kind, n in counts.items() if kind is not FaultKind.REPLICA_KILL for _ in range(n)
    ]
    rng.shuffle(single)
    kinds = single + [FaultKind.REPLICA_KILL] * counts.get(FaultKind.REPLICA_KILL, 0)
    return [PlannedFault(kind, round(rng.uniform(*pause), 2)) for kind in kinds]
