"""Completion notifications as job status records them (`scheduling.notifications`), through
whole cycles: owed in the same status as the outcome, what the sender reports recorded, the
TTL held while owed."""

from __future__ import annotations

import datetime

import pytest

from videoqueue.api import (
    JobConditionType,
    JobPhase,
    NotificationState,
    NotificationStatus,
    VideoJobStatus,
    find_condition,
)
from videoqueue.api.patching import status_patch
from videoqueue.envtest.builders import MakePod, MakeQueue, iso
from videoqueue.scheduling.cycle import plan_cycle
from videoqueue.scheduling.jobs import Assessment, assess_job
from videoqueue.scheduling.notifications import (
    NotificationNews,
    covers,
    holds_ttl,
    notification_key,
)

from .test_cycle_plan import NOW, T0, Job, decided, facts, job, queue, view

HOOK = "http://127.0.0.1:9/hook"
AT = NOW.timestamp()


def notifying(**fields: object) -> MakeQueue:
    return queue().notifications(HOOK, **fields)


def finishing(work: MakeQueue, *, exit_code: int = 0) -> tuple[Job, list[object]]:
    """A running job whose worker has just ended (0: succeeded, else failed for good)."""
    made = job("clip").running().max_attempts(1)
    clip = Job(made.obj())
    clip.assessment = assess_job(
        clip.job, [MakePod(job("clip").running(), work).running().outcome()], work.model(), NOW
    )
    pod = MakePod(made, work)
    ended = pod.succeeded() if exit_code == 0 else pod.failed(exit_code)
    return clip, [ended.outcome()]


def finish(work: MakeQueue, *, exit_code: int = 0) -> tuple[Job, Assessment]:
    clip, pods = finishing(work, exit_code=exit_code)
    plan = plan_cycle(view(work, [clip], [facts(clip, pods=tuple(pods))]), AT)
    return clip, decided(plan, clip.key)


def stored(clip: Job, assessment: Assessment) -> Job:
    """The job after its assessment's status was written."""
    clip.body["status"] = assessment.status.to_dict()
    clip.assessment = assessment
    return clip


def test_the_outcome_and_the_owed_notification_are_one_status_write() -> None:
    clip, done = finish(notifying())
    assert done.status.phase == JobPhase.SUCCEEDED
    assert done.status.notification == NotificationStatus(
        key="uid-clip/1/Succeeded", state=NotificationState.OWED, owed_time=NOW
    )
    patch = status_patch(clip.body["status"], done.status)
    assert patch is not None
    assert patch["phase"] == "Succeeded"
    assert patch["notification"]["state"] == "Owed"


@pytest.mark.parametrize(
    ("on", "exit_code", "owed"),
    [
        pytest.param(None, 0, True, id="default-covers-success"),
        pytest.param(["Failed"], 0, False, id="failed-only-skips-success"),
        pytest.param(["Failed"], 1, True, id="failed-only-covers-failure"),
        pytest.param(["Succeeded"], 1, False, id="succeeded-only-skips-failure"),
    ],
)
def test_owed_only_for_the_outcomes_the_queue_notifies(
    on: list[str] | None, exit_code: int, owed: bool
) -> None:
    work = notifying(on=on) if on else notifying()
    _, done = finish(work, exit_code=exit_code)
    assert done.status.phase is not None
    assert done.status.phase.is_terminal
    assert (done.status.notification is not None) == owed


def test_nothing_owed_without_notifications_or_for_jobs_that_ended_before() -> None:
    _, done = finish(queue())
    assert done.status.phase == JobPhase.SUCCEEDED
    assert done.status.notification is None

    # Notifications turned on later: a job that finished before owes nothing.
    work = notifying()
    old = Job(job("old").finished("Succeeded", reason="Completed", at=T0).obj())
    plan = plan_cycle(view(work, [old], [facts(old)]), AT)
    assert decided(plan, old.key).status.notification is None


def test_a_rejected_job_owes_a_failed_notification() -> None:
    work = notifying(on=["Failed"]).state("Paused").max_pending(1)
    jobs = [Job(job(f"j{i}", minute=i).obj()) for i in range(2)]
    plan = plan_cycle(view(work, jobs, [facts(j) for j in jobs]), AT)
    rejected = decided(plan, jobs[1].key)
    assert rejected.status.phase == JobPhase.REJECTED
    assert rejected.status.notification is not None
    assert rejected.status.notification.key == "uid-j1/0/Rejected"


def test_reassessing_the_outcome_keeps_the_notification_it_owes() -> None:
    """The outcome decided but not yet written, assessed again from the stored Running
    status: the same notification (same key, same owedTime), not a second one."""
    work = notifying()
    clip, pods = finishing(work)
    first = decided(plan_cycle(view(work, [clip], [facts(clip, pods=tuple(pods))]), AT), clip.key)
    clip.assessment = first
    later = NOW + datetime.timedelta(seconds=3)
    plan = plan_cycle(view(work, [clip], [facts(clip, pods=tuple(pods))]), later.timestamp())
    assert decided(plan, clip.key).status.notification == first.status.notification


def news(state: NotificationState, **fields: object) -> NotificationNews:
    values: dict[str, object] = {"at": NOW, "tries": 2} | fields
    return NotificationNews("uid-clip/1/Succeeded", state, **values)  # type: ignore[arg-type]


def settle(work: MakeQueue, clip: Job, told: NotificationNews | None) -> Assessment:
    plan = plan_cycle(view(work, [clip], [facts(clip, notification=told)]), AT)
    return decided(plan, clip.key)


def test_delivery_is_recorded_with_its_time_and_tries() -> None:
    work = notifying()
    clip = stored(*finish(work))
    done = settle(work, clip, news(NotificationState.DELIVERED))
    notification = done.status.notification
    assert notification is not None
    assert (notification.state, notification.delivered_time, notification.tries) == (
        NotificationState.DELIVERED,
        NOW,
        2,
    )
    assert find_condition(done.status.conditions, JobConditionType.NOTIFICATION_FAILED) is None
    assert done.notices == ()


def test_giving_up_sets_the_condition_and_a_warning_event() -> None:
    work = notifying()
    clip = stored(*finish(work))
    told = news(NotificationState.GAVE_UP, tries=5, reason="GaveUp", message="HTTP 500")
    done = settle(work, clip, told)
    assert done.status.notification is not None
    assert done.status.notification.state is NotificationState.GAVE_UP
    assert done.status.notification.message == "HTTP 500"
    failed = find_condition(done.status.conditions, JobConditionType.NOTIFICATION_FAILED)
    assert failed is not None
    assert (failed.status, failed.reason) == ("True", "GaveUp")
    assert [(n.type, n.reason) for n in done.notices] == [("Warning", "NotificationFailed")]


def test_a_missing_secret_shows_on_the_job_once_and_clears_on_delivery() -> None:
    work = notifying(secretRef={"name": "hook", "key": "token"})
    clip = stored(*finish(work))
    problem = news(
        NotificationState.OWED, tries=0, reason="NotificationSecretMissing", message="no Secret"
    )
    blocked = settle(work, clip, problem)
    assert blocked.status.notification is not None
    assert blocked.status.notification.state is NotificationState.OWED
    failed = find_condition(blocked.status.conditions, JobConditionType.NOTIFICATION_FAILED)
    assert failed is not None
    assert (failed.status, failed.reason) == ("True", "NotificationSecretMissing")
    assert [n.reason for n in blocked.notices] == ["NotificationSecretMissing"]

    clip = stored(clip, blocked)  # written; the same problem reported again changes nothing
    assert settle(work, clip, problem).status == clip.job.status

    delivered = settle(work, clip, news(NotificationState.DELIVERED, tries=1))
    failed = find_condition(delivered.status.conditions, JobConditionType.NOTIFICATION_FAILED)
    assert failed is not None
    assert (failed.status, failed.reason) == ("False", "Delivered")


def test_news_about_another_outcome_is_ignored() -> None:
    work = notifying()
    clip = stored(*finish(work))
    other = NotificationNews("uid-clip/1/Failed", NotificationState.DELIVERED, NOW, 1)
    assert settle(work, clip, other).status.notification == clip.job.status.notification


def test_notifications_removed_while_owed_give_it_up() -> None:
    clip = stored(*finish(notifying()))
    done = settle(queue(), clip, None)
    assert done.status.notification is not None
    assert done.status.notification.state is NotificationState.GAVE_UP
    failed = find_condition(done.status.conditions, JobConditionType.NOTIFICATION_FAILED)
    assert failed is not None
    assert failed.reason == "NotificationsRemoved"


def test_the_ttl_waits_while_the_notification_is_owed() -> None:
    work = notifying().ttl(succeeded=0)
    clip = stored(*finish(work))
    # The queue's statistics count it already: only the notification could hold it.
    completion = clip.job.status.completion_time
    assert completion is not None
    work.status({"statistics": {"windowSeconds": 900, "countedThrough": iso(completion)}})
    plan = plan_cycle(view(work, [clip], [], expired=(clip.key,)), AT)
    assert (plan.delete_jobs, plan.delete_once_counted) == ((), ())  # owed: held

    clip = stored(clip, settle(work, clip, news(NotificationState.DELIVERED)))
    plan = plan_cycle(view(work, [clip], [], expired=(clip.key,)), AT)
    assert plan.delete_jobs == (clip.key,)


def test_a_retried_job_keeps_owing_the_old_outcome_until_it_ends_again() -> None:
    work = notifying()
    failed = stored(*finish(work, exit_code=1))
    assert failed.job.status.notification is not None
    old_key = failed.job.status.notification.key
    failed.body["metadata"].setdefault("annotations", {})["videoqueue.dev/retry"] = "1"
    plan = plan_cycle(view(work, [failed], [facts(failed)]), AT)
    again = decided(plan, failed.key)
    assert again.status.phase != JobPhase.FAILED
    assert again.status.notification is not None
    assert (again.status.notification.key, again.status.notification.state) == (
        old_key,
        NotificationState.OWED,
    )


def test_rules() -> None:
    status = VideoJobStatus(phase=JobPhase.CANCELLED, attempt=3)
    assert notification_key("u", status) == "u/3/Cancelled"
    settings = notifying(on=["Failed"]).model().spec.notifications
    assert covers(settings, JobPhase.CANCELLED)
    assert not covers(settings, JobPhase.SUCCEEDED)
    assert not covers(settings, JobPhase.RUNNING)
    owed = status.model_copy(
        update={"notification": NotificationStatus(key="k", state=NotificationState.OWED)}
    )
    assert holds_ttl(owed, notifying().model())
    assert not holds_ttl(owed, None)  # no queue: nothing would send it
    assert not holds_ttl(owed, queue().model())
    assert not holds_ttl(status, notifying().model())
