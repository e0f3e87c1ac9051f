"""Admission decisions, one named case per rule (see videoqueue.scheduling.admission)."""

from __future__ import annotations

import pytest

from tests.unit.scheduling.builders import (
    MakeJobView,
    MakeQueuePolicy,
    job,
    key,
    names,
    queue,
    snapshot,
)
from videoqueue.scheduling import (
    Blocked,
    BlockReason,
    JobView,
    QueuePolicy,
    Rejection,
    RejectReason,
    Snapshot,
    never_admitted,
)
from videoqueue.scheduling import decide_admissions as decide


@pytest.mark.parametrize(
    ("policy", "jobs", "expected"),
    [
        pytest.param(
            queue().concurrency(1),
            [job("low").priority(1), job("high").priority(5).created(9)],
            ["high"],
            id="higher-priority-first-even-if-newer",
        ),
        pytest.param(
            queue().concurrency(1),
            [job("new").created(2), job("old").created(1)],
            ["old"],
            id="fifo-within-a-priority",
        ),
        pytest.param(
            queue().concurrency(1),
            [job("b"), job("a")],
            ["a"],
            id="key-breaks-creation-ties",
        ),
        pytest.param(
            queue().concurrency(2),
            [job("a").created(1), job("b").created(2), job("c").created(3)],
            ["a", "b"],
            id="concurrency-caps-admissions",
        ),
        pytest.param(
            queue().concurrency(2),
            [job("r").running(), job("a").created(1), job("b").created(2)],
            ["a"],
            id="running-jobs-hold-slots",
        ),
        pytest.param(
            queue().budget("4Gi"),
            [job("r").admitted().memory("3Gi"), job("a").memory("1Gi"), job("b").memory("1Gi")],
            ["a"],
            id="admitted-jobs-hold-memory",
        ),
        pytest.param(
            queue().budget("4Gi"),
            [job(n).memory("2Gi").created(i) for i, n in enumerate("abc")],
            ["a", "b"],
            id="memory-budget-caps-admissions",
        ),
        pytest.param(
            queue().budget("4Gi"),
            [job("a").memory("4Gi")],
            ["a"],
            id="job-filling-the-budget-exactly-fits",
        ),
        pytest.param(
            queue().budget("8Gi"),
            [job("r").running().memory("6Gi"), job("big").memory("4Gi"), job("small").created(1)],
            ["small"],
            id="small-job-backfills-behind-big-one",
        ),
        pytest.param(
            queue().budget("8Gi").max("16Gi"),
            [job("huge").memory("12Gi"), job("small").created(1)],
            ["small"],
            id="job-bigger-than-budget-blocks-nobody",
        ),
        pytest.param(
            queue().budget("4Gi"),
            [job("r").running().memory("6Gi"), job("a").memory(0)],
            [],
            id="already-over-budget-admits-nothing",
        ),
        pytest.param(
            queue().concurrency(1),
            [job("r1").running(), job("r2").running(), job("a")],
            [],
            id="already-over-concurrency-admits-nothing",
        ),
        pytest.param(
            queue().concurrency(0),
            [job("a")],
            [],
            id="zero-concurrency-admits-nothing",
        ),
        pytest.param(
            queue(),
            [job("later").eligible_at(101), job("now").eligible_at(100)],
            ["now"],
            id="not-admitted-before-eligible-at",
        ),
        pytest.param(
            queue().paused(),
            [job("a")],
            [],
            id="paused-queue-admits-nothing",
        ),
        pytest.param(
            queue().concurrency(1),
            [job("requeued").created(1).queued(99), job("newer").created(50)],
            ["requeued"],
            id="requeued-job-keeps-its-place",
        ),
        pytest.param(
            queue().budget("4Gi"),
            [job(n).memory("1Gi").overhead("1Gi").created(i) for i, n in enumerate("rab")],
            ["r", "a"],
            id="sidecar-memory-counts-against-the-budget",
        ),
        pytest.param(
            queue().budget("4Gi"),
            [
                job("r").running().memory("1Gi").overhead("2Gi"),
                job("a").memory("1Gi").overhead("2Gi"),
                job("small").memory("1Gi").created(1),
            ],
            ["small"],
            id="running-pods-hold-their-sidecar-memory",
        ),
        pytest.param(
            queue().budget("4Gi"),
            [job("a").memory("1Gi").overhead("3Gi")],
            ["a"],
            id="pod-filling-the-budget-exactly-fits",
        ),
        pytest.param(
            queue().budget("4Gi"),
            [job("a").memory("1Gi").overhead("30Gi"), job("b").memory("1Gi").created(1)],
            ["b"],
            id="pod-bigger-than-budget-blocks-nobody",
        ),
    ],
)
def test_admits_in_order_within_limits(
    policy: MakeQueuePolicy, jobs: list[MakeJobView], expected: list[str]
) -> None:
    decision = decide(snapshot(policy, *jobs), now=100)

    assert names(decision.admit) == expected


class TestStarvationGuard:
    """The first job that does not fit may be overtaken only within its backfill window."""

    @staticmethod
    def _queue(*jobs: MakeJobView) -> Snapshot:
        # 8Gi budget, 6Gi of it in use: the 4Gi job does not fit, 1Gi jobs do.
        return snapshot(
            queue().budget("8Gi").backfill(60),
            job("r").running().memory("6Gi"),
            *jobs,
        )

    def test_smaller_jobs_backfill_within_the_window(self) -> None:
        state = self._queue(job("big").memory("4Gi").created(0), job("small").created(1))

        decision = decide(state, now=59)

        assert names(decision.admit) == ["small"]
        assert decision.reserved_for is None
        assert decision.wake_at == 60  # when the window closes

    def test_memory_is_reserved_once_the_window_closes(self) -> None:
        state = self._queue(job("big").memory("4Gi").created(0), job("small").created(1))

        decision = decide(state, now=60)

        assert decision.admit == ()
        assert decision.reserved_for == key("big")
        assert decision.blocked_reasons[key("small")].reason is BlockReason.MEMORY_RESERVED

    def test_window_counts_from_the_last_requeue(self) -> None:
        state = self._queue(job("big").memory("4Gi").created(0).queued(50), job("small").created(1))

        assert names(decide(state, now=100).admit) == ["small"]
        assert decide(state, now=110).reserved_for == key("big")

    def test_jobs_ahead_of_the_reserved_job_still_start(self) -> None:
        state = self._queue(
            job("big").memory("4Gi").created(0),
            job("urgent").priority(9).created(5),
            job("small").created(1),
        )

        assert names(decide(state, now=1000).admit) == ["urgent"]

    def test_only_the_first_blocked_job_reserves(self) -> None:
        # "young" blocks first and is still within its window, so the jobs behind it backfill
        # even though "old-big", further back, has waited long.
        state = self._queue(
            job("young").priority(5).memory("4Gi").created(90),
            job("old-big").memory("4Gi").created(0),
            job("small").created(1),
        )

        decision = decide(state, now=100)

        assert names(decision.admit) == ["small"]
        assert decision.wake_at == 150

    def test_job_bigger_than_the_budget_never_reserves(self) -> None:
        state = snapshot(
            queue().budget("8Gi").max("16Gi").backfill(0),
            job("huge").memory("12Gi"),
            job("small").created(1),
        )

        decision = decide(state, now=1000)

        assert names(decision.admit) == ["small"]
        assert decision.reserved_for is None

    @pytest.mark.parametrize(
        ("backfill", "expected"),
        [
            pytest.param(0, [], id="zero-window-never-overtakes"),
            pytest.param(float("inf"), ["small"], id="infinite-window-always-backfills"),
        ],
    )
    def test_window_extremes(self, backfill: float, expected: list[str]) -> None:
        state = snapshot(
            queue().budget("8Gi").backfill(backfill),
            job("r").running().memory("6Gi"),
            job("big").memory("4Gi").created(5),
            job("small").created(6),
        )

        assert names(decide(state, now=5).admit) == expected


class TestRejection:
    def test_job_over_memory_max_is_rejected_with_the_limit_named(self) -> None:
        state = snapshot(queue().budget("16Gi").max("8Gi"), job("big").memory("12Gi"))

        decision = decide(state, now=0)

        assert decision.admit == ()
        [rejection] = decision.reject
        assert rejection.key == key("big")
        assert rejection.reason is RejectReason.EXCEEDS_MEMORY_MAX
        assert rejection.message.startswith("needs 12Gi but the queue's memory.max is 8Gi")

    @pytest.mark.parametrize(
        "policy",
        [
            pytest.param(queue().max("1Gi"), id="active"),
            pytest.param(queue().max("1Gi").paused(), id="paused"),
        ],
    )
    def test_rejection_does_not_wait_for_eligibility(self, policy: MakeQueuePolicy) -> None:
        state = snapshot(policy, job("later").memory("2Gi").eligible_at(500))

        assert names(r.key for r in decide(state, now=0).reject) == ["later"]

    def test_running_job_over_a_lowered_max_is_left_alone(self) -> None:
        state = snapshot(queue().max("1Gi").budget("8Gi"), job("r").running().memory("4Gi"))

        assert decide(state, now=0).reject == ()


@pytest.mark.parametrize(
    ("policy", "view", "expected"),
    [
        pytest.param(queue().budget("8Gi").max("4Gi"), job("a").memory("4Gi"), None, id="at-max"),
        pytest.param(
            queue().budget("8Gi").max("4Gi"),
            job("a").memory("4Gi").overhead("4Gi"),
            None,
            id="pod-exactly-the-budget",
        ),
        pytest.param(
            queue().budget("8Gi").max("4Gi"),
            job("a").memory("5Gi"),
            RejectReason.EXCEEDS_MEMORY_MAX,
            id="worker-over-max",
        ),
        pytest.param(
            queue().budget("8Gi").max("4Gi"),
            job("a").memory("5Gi").overhead("4Gi"),
            RejectReason.EXCEEDS_MEMORY_MAX,
            id="over-max-wins-over-over-budget",
        ),
        pytest.param(
            queue().budget("8Gi").max("4Gi"),
            job("a").memory("4Gi").overhead("5Gi"),
            BlockReason.EXCEEDS_BUDGET,
            id="pod-over-the-whole-budget",
        ),
    ],
)
def test_never_admitted_is_the_decision_on_a_job_alone(
    policy: MakeQueuePolicy, view: MakeJobView, expected: RejectReason | BlockReason | None
) -> None:
    # The rule the plugin's estimate asks about ("can this job ever run in this queue?"):
    # what `decide_admissions` does with the job in an empty queue.
    never = never_admitted(view.obj(), policy.obj())
    decision = decide(snapshot(policy, view), now=0)
    if expected is None:
        assert never is None
        assert names(decision.admit) == ["a"]
    elif isinstance(expected, RejectReason):
        assert isinstance(never, Rejection)
        assert never.reason is expected
        assert decision.reject == (never,)
        assert decision.admit == ()
    else:
        assert isinstance(never, Blocked)
        assert never.reason is expected
        assert decision.blocked_reasons == {key("a"): never}
        assert decision.reject == ()


@pytest.mark.parametrize(
    ("policy", "jobs", "reason", "message"),
    [
        pytest.param(
            queue().budget("8Gi"),
            [job("r").running().memory("6Gi"), job("a").memory("4Gi")],
            BlockReason.WAITING_FOR_MEMORY,
            "waiting for memory: needs 4Gi, 2Gi free of 8Gi",
            id="memory",
        ),
        pytest.param(
            queue().budget("4Gi"),
            [job("r").running().memory("6Gi"), job("a").memory("1Gi")],
            BlockReason.WAITING_FOR_MEMORY,
            "waiting for memory: needs 1Gi, 0 free of 4Gi",
            id="memory-over-budget-shows-none-free",
        ),
        pytest.param(
            queue().budget("8Gi").backfill(0),
            [job("r").running().memory("6Gi"), job("a").memory("4Gi")],
            BlockReason.WAITING_FOR_MEMORY,
            "waiting for memory: needs 4Gi, 2Gi free of 8Gi; memory is reserved for it, "
            "no job behind it starts first",
            id="memory-reserved-for-it",
        ),
        pytest.param(
            queue().concurrency(2),
            [job("r1").running(), job("r2").running(), job("a")],
            BlockReason.WAITING_FOR_SLOT,
            "waiting for a free slot: 2 of 2 admitted or running",
            id="slot",
        ),
        pytest.param(
            queue().budget("8Gi").max("16Gi"),
            [job("a").memory("12Gi")],
            BlockReason.EXCEEDS_BUDGET,
            "needs 12Gi, more than the queue's whole memory.budget of 8Gi; "
            "it can start only if the budget is raised",
            id="bigger-than-budget",
        ),
        pytest.param(
            queue().budget("4Gi"),
            [job("r").running().memory("2Gi"), job("a").memory("1Gi").overhead("2Gi")],
            BlockReason.WAITING_FOR_MEMORY,
            "waiting for memory: needs 3Gi (1Gi for the worker, 2Gi for the rest of its pod), "
            "2Gi free of 4Gi",
            id="memory-with-sidecars",
        ),
        pytest.param(
            queue().budget("8Gi").backfill(30),
            [
                job("r").running().memory("6Gi"),
                job("big").memory("4Gi"),
                job("a").created(1),
            ],
            BlockReason.MEMORY_RESERVED,
            "waiting behind ns/big, which has waited over 30s and has the free memory reserved",
            id="behind-reservation",
        ),
        pytest.param(
            queue().paused(),
            [job("a")],
            BlockReason.QUEUE_NOT_ADMITTING,
            "the queue is not admitting new jobs",
            id="paused",
        ),
    ],
)
def test_blocked_reason_says_what_the_job_waits_for(
    policy: MakeQueuePolicy, jobs: list[MakeJobView], reason: BlockReason, message: str
) -> None:
    decision = decide(snapshot(policy, *jobs), now=100)

    blocked = decision.blocked_reasons[key("a")]
    assert (blocked.reason, blocked.message) == (reason, message)


def test_blocked_reasons_cover_every_eligible_job_left_waiting() -> None:
    state = snapshot(
        queue().concurrency(2),
        job("a").created(1),
        job("b").created(2),
        job("c").created(3),
        job("later").eligible_at(500),
        job("r").running(),
    )

    decision = decide(state, now=0)

    assert names(decision.admit) == ["a"]
    assert names(decision.blocked_reasons) == ["b", "c"]


@pytest.mark.parametrize(
    ("policy", "jobs", "wake_at"),
    [
        pytest.param(queue(), [job("a")], None, id="nothing-to-wait-for"),
        pytest.param(queue(), [job("a").eligible_at(130)], 130, id="eligible-at"),
        pytest.param(
            queue(), [job("a").eligible_at(130), job("b").eligible_at(120)], 120, id="earliest"
        ),
        pytest.param(queue(), [job("a").eligible_at(90)], None, id="past-eligible-at-ignored"),
        pytest.param(
            queue().budget("8Gi").backfill(60),
            [job("r").running().memory("6Gi"), job("big").memory("4Gi").created(50)],
            110,
            id="backfill-window-closes",
        ),
        pytest.param(
            queue().budget("8Gi").backfill(60),
            [
                job("r").running().memory("6Gi"),
                job("big").memory("4Gi").created(50),
                job("a").eligible_at(105),
            ],
            105,
            id="earliest-of-eligible-and-window",
        ),
        pytest.param(
            queue().budget("8Gi").backfill(10),
            [job("r").running().memory("6Gi"), job("big").memory("4Gi").created(50)],
            None,
            id="already-reserved",
        ),
        pytest.param(
            queue().budget("8Gi"),  # backfill inf: memory is never reserved
            [job("r").running().memory("6Gi"), job("big").memory("4Gi").created(50)],
            None,
            id="window-that-never-closes",
        ),
        pytest.param(
            queue().paused(), [job("a").eligible_at(130)], 130, id="paused-queue-still-wakes"
        ),
        pytest.param(
            queue().max("1Gi"),
            [job("big").memory("2Gi").eligible_at(130)],
            None,
            id="rejected-job-is-not-awaited",
        ),
    ],
)
def test_wake_at_is_the_next_time_the_decision_can_change(
    policy: MakeQueuePolicy, jobs: list[MakeJobView], wake_at: float | None
) -> None:
    assert decide(snapshot(policy, *jobs), now=100).wake_at == wake_at


class TestInputValidation:
    def test_duplicate_keys_are_refused(self) -> None:
        with pytest.raises(ValueError, match="duplicate job keys"):
            snapshot(queue(), job("a"), job("a"))

    @pytest.mark.parametrize(
        "kwargs",
        [
            pytest.param({"concurrency": -1}, id="concurrency"),
            pytest.param({"memory_budget": -1}, id="budget"),
            pytest.param({"memory_max": -1}, id="max"),
            pytest.param({"backfill_seconds": -1.0}, id="backfill"),
            pytest.param({"backfill_seconds": float("nan")}, id="backfill-nan"),
        ],
    )
    def test_negative_policy_values_are_refused(self, kwargs: dict[str, float]) -> None:
        values: dict[str, float] = {"concurrency": 1, "memory_budget": 1, "memory_max": 1}
        with pytest.raises(ValueError, match="must be >= 0"):
            QueuePolicy(**(values | kwargs))  # type: ignore[arg-type]

    def test_negative_memory_is_refused(self) -> None:
        with pytest.raises(ValueError, match="memory must be >= 0"):
            JobView(key="ns/a", priority=0, created_at=0, queued_at=0, memory=-1)


# -- worker pods still stopping -------------------------------------------------------------


def test_a_stopping_pod_holds_its_slot_and_memory_until_it_is_gone() -> None:
    # A cancelled job's pod runs on through its grace period: its memory is still in use.
    policy = queue().concurrency(2).budget("2Gi")
    jobs = (job("running").memory("1Gi").running(), job("a").memory("1Gi"))

    assert decide(snapshot(policy, *jobs), now=100).admit == (key("a"),)
    decision = decide(snapshot(policy, *jobs, stopping=["512Mi"]), now=100)

    assert decision.admit == ()
    blocked = decision.blocked_reasons[key("a")]
    assert blocked.reason is BlockReason.WAITING_FOR_SLOT
    assert blocked.message == (
        "waiting for a free slot: 2 of 2 in use (1 admitted or running, 1 still stopping)"
    )


def test_memory_held_by_stopping_pods_is_named_in_the_wait() -> None:
    policy = queue().concurrency(5).budget("2Gi")
    jobs = (job("running").memory("1Gi").running(), job("a").memory("1Gi"))

    decision = decide(snapshot(policy, *jobs, stopping=["512Mi"]), now=100)

    assert decision.admit == ()
    blocked = decision.blocked_reasons[key("a")]
    assert blocked.reason is BlockReason.WAITING_FOR_MEMORY
    assert blocked.message == (
        "waiting for memory: needs 1Gi, 512Mi free of 2Gi "
        "(512Mi held by worker pods still stopping)"
    )
    # A job that fits beside them still starts (backfill).
    small = job("b").memory("256Mi").created(1)
    assert decide(snapshot(policy, *jobs, small, stopping=["512Mi"]), now=100).admit == (key("b"),)
