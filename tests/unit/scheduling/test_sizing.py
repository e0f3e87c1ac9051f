"""Learned memory sizing (`videoqueue.scheduling.sizing`): the key a job's peaks are learned
under, the bounded per-key summary, and the memory (and its source) a job's next attempt
gets. Feeding it exactly once is pinned in test_statistics_properties."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from videoqueue.api import (
    MAX_SIZING_KEYS,
    MAX_SIZING_PEAKS,
    AttemptRecord,
    ManualRetry,
    QueueMemory,
    SizingSummary,
    VideoJobStatus,
    VideoQueueStatus,
)
from videoqueue.envtest.builders import WORKER, MakeJob, MakePod, MakeQueue
from videoqueue.scheduling.jobs import assess_job, memory_decision
from videoqueue.scheduling.queue_status import QueueFacts, summarize_queue
from videoqueue.scheduling.sizing import (
    attempt_peaks,
    observe,
    percentile,
    sizes_changed,
    sizing_key,
)
from videoqueue.scheduling.statistics import finished_record

T0 = datetime.datetime(2026, 1, 1, 10, 0, 0, tzinfo=datetime.UTC)
NOW = T0 + datetime.timedelta(minutes=5)
Mi = 1024**2
Gi = 1024**3
KEY = "transcode/720p/h264/medium"


# --- The key -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_type", "params", "key"),
    [
        pytest.param("transcode", {"preset": "h264-720p"}, KEY, id="preset"),
        pytest.param(
            "transcode",
            {"preset": "h264-1080p", "speed": "fastest"},
            "transcode/1080p/h264/fastest",
            id="preset-speed",
        ),
        pytest.param(
            "transcode",
            {"videoCodec": "vp9", "height": 600, "speed": "fast"},
            "transcode/720p/vp9/fast",
            id="height-rounded-up-to-its-bucket",
        ),
        pytest.param(
            "transcode",
            {"preset": "h264-480p", "videoCodec": "h265", "height": 1080},
            "transcode/1080p/h265/medium",
            id="explicit-fields-over-preset",
        ),
        pytest.param(
            "transcode",
            {"preset": "h264-720p", "width": 1920},
            "transcode/source/h264/medium",
            id="width-only-height-follows-the-input",
        ),
        pytest.param(
            "transcode", {"videoCodec": "av1"}, "transcode/source/av1/medium", id="no-size"
        ),
        pytest.param("transcode", {"height": 4320}, "transcode/over2160p/unknown/medium", id="8k"),
        pytest.param("hls", {"speed": "fast", "ladder": [1080]}, "hls/fast", id="hls"),
        pytest.param("probe", {}, "probe", id="probe"),
        pytest.param("thumbnail", {"count": 16, "sprite": True}, "thumbnail", id="thumbnail"),
        pytest.param("audio", {"codec": "aac"}, "audio", id="audio"),
        pytest.param("my-custom", None, "my-custom", id="custom-type"),
        pytest.param(
            "transcode",
            {"videoCodec": "x" * 500, "speed": {"a": 1}, "height": 720},
            "transcode/720p/other/other",
            id="hostile-params-keep-the-key-short",
        ),
    ],
)
def test_sizing_key(job_type: str, params: dict[str, Any] | None, key: str) -> None:
    assert sizing_key(job_type, params) == key


# --- The summary -------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 21))  # 1..20
    assert percentile(values, 95) == 19
    assert percentile(values, 100) == 20
    assert percentile(values, 50) == 10
    assert percentile([7], 95) == 7


def test_summary_keeps_the_newest_peaks_and_counts_every_observation() -> None:
    summary = observe([], [(KEY, [i]) for i in range(40)])

    (entry,) = summary
    assert entry.observations == 40
    assert entry.peaks_mi == list(range(40 - MAX_SIZING_PEAKS, 40))  # newest last


def test_summary_keeps_at_most_32_keys_dropping_the_one_updated_longest_ago() -> None:
    summary = observe([], [(f"k{i}", [i]) for i in range(MAX_SIZING_KEYS)])
    summary = observe(summary, [("k0", [5])])  # k0 updated: k1 is now the oldest
    summary = observe(summary, [("new", [9])])

    keys = [s.key for s in summary]
    assert len(keys) == MAX_SIZING_KEYS
    assert "k1" not in keys
    assert keys[-2:] == ["k0", "new"]
    assert next(s for s in summary if s.key == "k0").peaks_mi == [0, 5]
    # And it fits the status's bounds.
    VideoQueueStatus.model_validate(VideoQueueStatus(sizing=summary).to_dict())


def test_jobs_without_peaks_change_nothing() -> None:
    before = [SizingSummary(key=KEY, observations=1, peaks_mi=[100])]
    assert observe(before, [("probe", ())]) == before


def test_attempt_peaks_round_up_and_skip_attempts_fed_before_a_manual_retry() -> None:
    def attempt(n: int, peak: int | None, reason: str = "Completed") -> AttemptRecord:
        record = AttemptRecord.model_validate({"attempt": n, "reason": reason})
        record.peak_memory_bytes = peak
        return record

    status = VideoJobStatus(
        attempts=[
            attempt(1, 300 * Mi, "OOMKilled"),  # fed when it failed the first time
            attempt(2, None, "Error"),
            attempt(3, 512 * Mi, "OOMKilled"),  # its limit: a lower bound
            attempt(4, 700 * Mi + 1),
        ],
        manual_retry=ManualRetry(request="1", after_attempt=1),
    )
    assert attempt_peaks(status) == (512, 701)


def test_a_finished_job_feeds_its_key_once_through_the_queue_status() -> None:
    queue = MakeQueue("work", "media").model()
    job = MakeJob("a", "media").type("transcode").params(preset="h264-720p").model()
    status = VideoJobStatus.model_validate(
        {
            "phase": "Succeeded",
            "completionTime": NOW.isoformat(),
            "attempts": [{"attempt": 1, "memory": "1Gi", "peakMemory": "263Mi"}],
        }
    )
    record = finished_record(
        "uid-a", "media/a", "transcode", status, sizing_key=sizing_key("transcode", job.spec.params)
    )
    assert record is not None

    first = summarize_queue(queue, [], NOW, facts=QueueFacts(finished=(record,)))
    again = summarize_queue(queue, [], NOW, previous=first, facts=QueueFacts(finished=(record,)))

    assert first.sizing == again.sizing == [SizingSummary(key=KEY, observations=1, peaks_mi=[263])]


# --- The decision ------------------------------------------------------------------------


def learned_queue(peaks: list[int], observations: int | None = None, **learned: Any) -> MakeQueue:
    summary = SizingSummary(
        key=KEY,
        observations=len(peaks) if observations is None else observations,
        peaks_mi=peaks,
    )
    queue = MakeQueue("work", "media").template(WORKER).default_request("1Gi")
    return queue.sizing("Learned", minObservations=3, **learned).status(
        VideoQueueStatus(sizing=[summary])
    )


def transcode(name: str = "t") -> MakeJob:
    job = MakeJob(name, "media").uid(f"uid-{name}").generation(1).created(T0)
    return job.type("transcode").input("https://a/b.mp4").params(preset="h264-720p")


def decide(job: MakeJob, queue: MakeQueue) -> tuple[int, str]:
    model = job.model()
    return memory_decision(model, model.status, queue.model())


def test_too_few_observations_get_the_default_and_say_so() -> None:
    assert decide(transcode(), learned_queue([200, 210])) == (
        Gi,
        f"spec.memory.defaultRequest (2 of 3 observations of {KEY})",
    )


def test_enough_observations_get_the_percentile_times_headroom_rounded_up_to_a_mib() -> None:
    peaks = [250, 263, 249, 260, 255]  # p95 by nearest rank: 263
    memory, source = decide(transcode(), learned_queue(peaks, headroom=1.25))
    assert memory == 329 * Mi  # 263 x 1.25 = 328.75
    assert source == f"p95 of 5 past {KEY} jobs x 1.25"


def test_observations_ever_count_not_only_the_peaks_kept() -> None:
    memory, source = decide(transcode(), learned_queue([300], observations=500))
    assert memory == 360 * Mi
    assert source == f"p95 of 1 past {KEY} jobs x 1.2"


def test_learned_size_is_raised_to_the_floor_and_capped_at_max() -> None:
    low = learned_queue([10, 10, 10], floor="128Mi")
    assert decide(transcode(), low) == (
        128 * Mi,
        f"p95 of 3 past {KEY} jobs x 1.2, raised to learned.floor 128Mi",
    )
    high = learned_queue([3000, 3000, 3000]).max("2Gi")
    assert decide(transcode(), high) == (
        2 * Gi,
        f"p95 of 3 past {KEY} jobs x 1.2, capped at memory.max 2Gi",
    )


def test_other_keys_learn_nothing_from_these_peaks() -> None:
    probe = MakeJob("p", "media").type("probe").input("https://a/b.mp4")
    assert decide(probe, learned_queue([200] * 5)) == (
        Gi,
        "spec.memory.defaultRequest (0 of 3 observations of probe)",
    )


def test_explicit_memory_always_wins() -> None:
    job = transcode().memory("3Gi")
    assert decide(job, learned_queue([200] * 5)) == (3 * Gi, "spec.resources.memory")


def test_static_sizing_keeps_the_default() -> None:
    queue = learned_queue([200] * 5).sizing("Static")
    assert decide(transcode(), queue) == (Gi, "spec.memory.defaultRequest")


def test_pending_job_says_where_its_memory_came_from() -> None:
    assessment = assess_job(transcode().model(), [], learned_queue([200] * 5).model(), NOW)

    assert assessment.status.effective_memory == "240Mi"
    assert assessment.status.memory_source == f"p95 of 5 past {KEY} jobs x 1.2"
    assert assessment.view is not None
    assert assessment.view.memory == 240 * Mi


def test_an_oom_kill_still_grows_the_learned_size() -> None:
    queue = learned_queue([200] * 5).oom_multiplier(2.0)
    job = transcode().admitted(memory="240Mi")
    pod = MakePod(job, queue, memory=240 * Mi).terminated(137, "OOMKilled", finished=NOW)

    assessment = assess_job(job.model(), [pod.outcome()], queue.model(), NOW)

    assert assessment.status.effective_memory == "480Mi"
    assert assessment.status.memory_source == "grown after OOMKilled"


# --- The API -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("learned", "error"),
    [
        pytest.param({"percentile": 49}, "greater than or equal to 50", id="percentile-low"),
        pytest.param({"headroom": 4.5}, "less than or equal to 4", id="headroom-high"),
        pytest.param({"minObservations": 0}, "greater than or equal to 1", id="min-0"),
        pytest.param({"floor": "9Gi"}, "learned.floor", id="floor-over-budget"),
    ],
)
def test_learned_settings_are_checked(learned: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        QueueMemory.model_validate({"budget": "8Gi", "learned": learned})


def test_floor_over_max_is_refused_naming_both_fields() -> None:
    with pytest.raises(ValidationError, match=r"learned\.floor.*spec\.memory\.max"):
        QueueMemory.model_validate({"budget": "8Gi", "max": "1Gi", "learned": {"floor": "2Gi"}})


def test_learned_is_the_default() -> None:
    memory = QueueMemory.model_validate({"budget": "8Gi"})
    assert memory.sizing.value == "Learned"
    assert (memory.learned.percentile, memory.learned.headroom) == (95, 1.2)
    assert (memory.learned.min_observations, memory.learned.floor) == (10, "32Mi")


def test_until_learned_a_job_gets_its_types_default_and_says_which() -> None:
    queue = learned_queue([200, 210]).job_type("transcode", default_request="512Mi")
    assert decide(transcode(), queue) == (
        512 * Mi,
        f"spec.types.transcode.memory.defaultRequest (2 of 3 observations of {KEY})",
    )
    learned = learned_queue([250, 263, 249]).job_type("transcode", default_request="512Mi")
    assert decide(transcode(), learned) == (316 * Mi, f"p95 of 3 past {KEY} jobs x 1.2")
    static = learned_queue([200] * 5).job_type("transcode", default_request="512Mi")
    assert decide(transcode(), static.sizing("Static")) == (
        512 * Mi,
        "spec.types.transcode.memory.defaultRequest",
    )


def test_sizes_changed_names_the_keys_whose_learned_size_moved() -> None:
    two = learned_queue([200, 210]).model()  # below minObservations: no learned size
    three = learned_queue([200, 210, 220]).model()  # 220 x 1.2 = 264Mi
    same_size = learned_queue([200, 220, 210]).model()  # a new peak, the same p95
    bigger = learned_queue([200, 210, 220, 400]).model()

    assert sizes_changed(two, three) == {KEY}
    assert sizes_changed(three, same_size) == frozenset()
    assert sizes_changed(three, bigger) == {KEY}
    assert sizes_changed(None, three) == frozenset()
    assert sizes_changed(three, learned_queue([200, 210, 220]).sizing("Static").model()) == {KEY}
