"""What the index keeps of a job: its JSON deflated against its queue's first job, read back
whole."""

from __future__ import annotations

import orjson
import pytest

from videoqueue.controller import entries
from videoqueue.controller.entries import JobEntry
from videoqueue.envtest.builders import MakeJob


def job(name: str, queue: str = "transcode") -> dict[str, object]:
    body = MakeJob(name, "media", queue=queue).priority(5).uid(f"uid-{name}").pending().obj()
    body["metadata"]["resourceVersion"] = str(1000 + len(name))
    return body


@pytest.fixture(autouse=True)
def no_dictionaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entries, "_DICTIONARIES", {})


def test_a_job_reads_back_as_it_came_and_its_queues_next_jobs_cost_a_fraction() -> None:
    first, second = JobEntry(job("first")), JobEntry(job("second"))
    assert first.body == job("first")
    assert second.body == job("second")
    size = len(orjson.dumps(job("second")))
    assert len(second._packed) * 5 < size, (len(second._packed), size)
    second.compact()
    assert second.body == job("second")  # parsed again from the packed form
    assert second.job is not None
    assert second.job.metadata.name == "second"


def test_an_update_is_packed_against_the_dictionary_the_entry_keeps() -> None:
    entry = JobEntry(job("a"))
    changed = job("a") | {"status": {"phase": "Running", "message": "started"}}
    entry.update(changed)
    entry.compact()
    assert entry.body == changed


def test_past_the_dictionary_cap_jobs_are_packed_without_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(entries, "MAX_DICTIONARIES", 1)
    JobEntry(job("a", queue="one"))
    other = JobEntry(job("b", queue="two"))
    assert set(entries._DICTIONARIES) == {"media/one"}
    assert other.body == job("b", queue="two")
