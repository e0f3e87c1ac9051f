"""What the index keeps of an assessment's status: the same values, with the parts many
waiting jobs repeat (conditions, strings) held once."""

from __future__ import annotations

import datetime

from videoqueue.api import VideoJobStatus
from videoqueue.envtest.builders import T0, MakeJob
from videoqueue.envtest.builders.objects import at, condition
from videoqueue.scheduling.jobs import keep_status


def waiting_status(name: str, told_at: datetime.datetime = T0) -> VideoJobStatus:
    conditions = [
        condition("Admitted", "False", "QueueNotAdmitting", told_at),
        condition("Reconciling", "True", "Pending", told_at),
    ]
    made = MakeJob(name, "media").status(phase="Pending", conditions=conditions)
    status = made.model().status
    status.memory_source = "".join(["spec.memory.", "defaultRequest"])  # a string of its own
    return status


def test_equal_conditions_and_strings_of_kept_statuses_are_held_once() -> None:
    first, second = waiting_status("a"), waiting_status("b")
    assert first.conditions, "the builder's pending status has conditions"
    assert first.conditions[0] is not second.conditions[0]
    assert first.memory_source is not second.memory_source
    before = second.model_dump()

    keep_status(first)
    kept = keep_status(second)

    assert kept.model_dump() == before  # the same values
    for mine, theirs in zip(kept.conditions, first.conditions, strict=True):
        assert mine is theirs
    assert kept.memory_source is first.memory_source


def test_conditions_that_differ_in_any_field_stay_apart() -> None:
    first, later = keep_status(waiting_status("a")), keep_status(waiting_status("b", at(60)))
    assert len(first.conditions) == 2
    assert [c.type for c in first.conditions] == [c.type for c in later.conditions]
    for mine, theirs in zip(first.conditions, later.conditions, strict=True):
        assert mine is not theirs
        assert mine.last_transition_time != theirs.last_transition_time


def test_statuses_of_jobs_that_never_ran_are_shared_when_equal_in_every_field() -> None:
    first = keep_status(waiting_status("a"))
    same = waiting_status("b")
    kept = keep_status(same)
    assert kept is first  # one status for both jobs
    assert kept.model_dump() == same.model_dump()

    queued_later = waiting_status("c")
    queued_later.queued_time = at(1)
    assert keep_status(queued_later) is queued_later


def test_a_status_with_attempt_records_or_a_result_stays_its_own() -> None:
    keep_status(waiting_status("a"))
    ran = MakeJob("b", "media").running(1).model().status
    assert ran.attempts
    assert keep_status(ran) is ran
    with_result = waiting_status("c")
    with_result.result = {"output": "s3://bucket/c.mp4"}
    assert keep_status(with_result) is with_result
