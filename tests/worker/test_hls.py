"""The hls job type on real media: the package plays (playlists parsed here, independently of
the worker's own reader), every rendition is what was asked and never upscaled, keyframes
start every segment, progress reaches 100, bad params name their field."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.worker.harness import (
    ffprobe,
    frequent_progress,
    read_events,
    run_worker,
    start_worker,
    stream,
)
from videoqueue.api.progress import DEFAULT_PROGRESS_STREAM, ProgressKind
from videoqueue.envtest.wait import poll
from videoqueue.envtest.worker import job_payload, make_media
from videoqueue_worker import hls
from videoqueue_worker.errors import WorkerError
from videoqueue_worker.params import HlsParams, parse_params

SECONDS = 7.0
TOLERANCE = 0.1
"""Seconds a duration may differ (MPEG-TS timestamps, AAC frames of 21 ms)."""


@dataclass
class Variant:
    bandwidth: int
    resolution: tuple[int, int]
    codecs: str
    uri: str


def _attributes(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', text)}


def read_master(path: Path) -> list[Variant]:
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    assert lines[0] == "#EXTM3U"
    variants = []
    for index, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            found = _attributes(line.partition(":")[2])
            width, height = found["RESOLUTION"].split("x")
            variants.append(
                Variant(
                    int(found["BANDWIDTH"]),
                    (int(width), int(height)),
                    found["CODECS"],
                    lines[index + 1],
                )
            )
    return variants


def read_media_playlist(path: Path) -> tuple[list[float], list[str], list[str]]:
    """(EXTINF durations, segment URIs, tags) of a media playlist."""
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    assert lines[0] == "#EXTM3U"
    durations = [float(line[8:].partition(",")[0]) for line in lines if line.startswith("#EXTINF:")]
    uris = [line for line in lines if not line.startswith("#")]
    tags = [line for line in lines if line.startswith("#EXT-X-")]
    return durations, uris, tags


def first_video_frames_are_keyframes(segment: Path) -> bool:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1",
         "-show_entries", "frame=key_frame", "-of", "json", str(segment)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    frames = json.loads(done.stdout)["frames"]
    return bool(frames) and frames[0]["key_frame"] == 1


def _ok(run: Any) -> dict[str, Any]:
    assert run.code == 0, f"worker failed ({run.code}): {run.message}\n{run.log}"
    result: dict[str, Any] = run.result
    return result


@pytest.fixture(scope="module")
def wide_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 s of 640x360 (16:9) with a tone."""
    return make_media(tmp_path_factory.mktemp("hls") / "wide.mp4", seconds=SECONDS, size="640x360")


def test_package_plays_every_rendition(wide_media: Path, tmp_path: Path, redis_url: str) -> None:
    out = tmp_path / "pkg"
    params = {
        "renditions": [
            {"height": 720, "videoBitrate": "2800k"},  # above the input: dropped
            {"height": 360, "videoBitrate": "800k"},
            {"height": 240, "videoBitrate": "400k", "name": "low"},
        ],
        "segmentSeconds": 2,
        "audioBitrate": "96k",
        "speed": "fastest",
    }
    payload = job_payload("hls", f"file://{wide_media}", f"file://{out}/", params)
    env = {"VIDEOQUEUE_REDIS_URL": redis_url, **frequent_progress(tmp_path)}
    result = _ok(run_worker(payload, tmp_path, env))

    assert result["output"] == f"file://{out}/master.m3u8"
    assert result["dropped"] == [
        {"name": "720p", "height": 720, "reason": "above the input's height (360); never upscaled"}
    ]
    variants = read_master(out / "master.m3u8")
    assert [v.uri for v in variants] == ["360p/index.m3u8", "low/index.m3u8"]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert result["size"] == sum(p.stat().st_size for p in files)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging left behind"
    assert not list((tmp_path / "work").iterdir()), "temporary files left behind"

    for variant, height, name in zip(variants, (360, 240), ("360p", "low"), strict=True):
        width = variant.resolution[0]
        assert variant.resolution[1] == height
        assert width % 2 == 0, variant.resolution
        assert abs(width - height * 16 / 9) <= 2, variant.resolution
        assert variant.codecs.startswith("avc1.")
        assert "mp4a.40.2" in variant.codecs
        assert variant.bandwidth > 0
        durations, uris, tags = read_media_playlist(out / variant.uri)
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in tags
        assert tags[-1] == "#EXT-X-ENDLIST"
        assert "#EXT-X-INDEPENDENT-SEGMENTS" in tags
        assert sum(durations) == pytest.approx(SECONDS, abs=TOLERANCE)
        assert max(durations) <= 2 + TOLERANCE, durations
        assert len(uris) == math.ceil(SECONDS / 2)
        segments = [out / name / uri for uri in uris]
        assert all(s.is_file() for s in segments)
        assert all(first_video_frames_are_keyframes(s) for s in segments), (
            "segment not on a keyframe"
        )
        first = ffprobe(segments[0])
        assert stream(first, "video")["codec_name"] == "h264"
        assert stream(first, "video")["height"] == height
        assert stream(first, "audio")["codec_name"] == "aac"
        # The media playlist as a whole plays as one stream of the input's length.
        whole = ffprobe(out / variant.uri)
        assert float(whole["format"]["duration"]) == pytest.approx(SECONDS, abs=TOLERANCE)
        reported = next(r for r in result["renditions"] if r["name"] == name)
        assert reported == {
            "name": name,
            "width": width,
            "height": height,
            "videoBitrate": "800k" if height == 360 else "400k",
            "bandwidth": variant.bandwidth,
            "codecs": variant.codecs,
            "segments": len(uris),
            "duration": pytest.approx(SECONDS, abs=TOLERANCE),
            "playlist": variant.uri,
        }
    # A higher rung costs more: the ladder's bit rates reached the encoder.
    sizes = [sum(p.stat().st_size for p in (out / n).iterdir()) for n in ("360p", "low")]
    assert sizes[0] > sizes[1] * 1.4, sizes

    client = redis.Redis.from_url(redis_url)
    try:
        events = read_events(client, DEFAULT_PROGRESS_STREAM)
    finally:
        client.close()
    values = [
        e.progress for e in events if e.kind == ProgressKind.PROGRESS and e.progress is not None
    ]
    assert any(0 < v < 99 for v in values), f"no progress within the ladder: {values}"
    assert values == sorted(values), values
    assert [e.stage for e in events if e.kind == ProgressKind.STAGE] == ["processing", "uploading"]
    assert events[-1].kind == ProgressKind.DONE
    assert events[-1].progress == 100


def test_small_input_caps_the_lowest_rung_and_replaces_only_its_own_directories(
    media: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pkg"
    stale = out / "240p" / "seg_00099.ts"  # from an earlier package: must not stay mixed in
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    neighbour = out / "poster.jpg"  # not the package's: left alone
    neighbour.write_bytes(b"keep")
    # The standard ladder (1080/720/480/360) on a 320x240 input: nothing fits.
    payload = job_payload("hls", f"file://{media}", f"file://{out}/", {"speed": "fastest"})
    result = _ok(run_worker(payload, tmp_path))

    assert [d["height"] for d in result["dropped"]] == [1080, 720, 480]
    [rendition] = result["renditions"]
    assert (rendition["name"], rendition["height"], rendition["cappedFrom"]) == ("240p", 240, 360)
    assert rendition["segments"] == 1  # 3 s input, default 6 s segments
    assert not stale.exists()
    assert neighbour.read_bytes() == b"keep"
    [variant] = read_master(out / "master.m3u8")
    assert variant.resolution == (320, 240)
    segment = out / "240p" / "seg_00000.ts"
    assert stream(ffprobe(segment), "video")["height"] == 240


def test_input_without_audio_makes_video_only_renditions(
    silent_media: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pkg"
    params = {"renditions": [{"height": 240, "videoBitrate": "300k"}], "speed": "fastest"}
    payload = job_payload("hls", f"file://{silent_media}", f"file://{out}/", params)
    _ok(run_worker(payload, tmp_path))
    [variant] = read_master(out / "master.m3u8")
    assert "mp4a" not in variant.codecs
    info = ffprobe(out / "240p" / "seg_00000.ts")
    assert [s["codec_type"] for s in info["streams"]] == ["video"]


def test_sigterm_removes_the_half_made_package(wide_media: Path, tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    params = {"ladder": "small", "segmentSeconds": 1, "speed": "slow"}
    process = start_worker(
        job_payload("hls", f"file://{wide_media}", f"file://{out}/", params), tmp_path
    )
    try:
        poll(
            lambda: next(out.glob(".hls.*.partial/*/seg_*.ts"), None),
            timeout=60,
            what="ffmpeg writing segments into the staging directory",
        )
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143
    assert list(out.iterdir()) == [], "a half-made package was left behind"


@pytest.mark.parametrize(
    ("output", "params", "field", "words"),
    [
        pytest.param(
            "pkg/", {"segmentSeconds": 0.5}, "spec.params.segmentSeconds",
            "greater than or equal to 1", id="segment-too-short",
        ),
        pytest.param(
            "pkg/", {"segmentSeconds": 60}, "spec.params.segmentSeconds",
            "less than or equal to 30", id="segment-too-long",
        ),
        pytest.param(
            "pkg/", {"ladder": "huge"}, "spec.params.ladder", "'standard' or 'small'",
            id="unknown-ladder",
        ),
        pytest.param(
            "pkg/", {"ladder": "small", "renditions": [{"height": 240, "videoBitrate": "1M"}]},
            "spec.params", "not both", id="ladder-and-renditions",
        ),
        pytest.param(
            "pkg/", {"renditions": [{"height": 241, "videoBitrate": "1M"}]},
            "spec.params.renditions.0.height", "must be even", id="odd-height",
        ),
        pytest.param(
            "pkg/", {"renditions": [{"height": 240, "videoBitrate": "fast"}]},
            "spec.params.renditions.0.videoBitrate", "pattern", id="bad-bitrate",
        ),
        pytest.param(
            "pkg/", {"renditions": [{"height": 240}]},
            "spec.params.renditions.0.videoBitrate", "required", id="missing-bitrate",
        ),
        pytest.param(
            "pkg/", {"renditions": [{"height": 240, "videoBitrate": "1M"}] * 2},
            "spec.params", "240p appears more than once", id="duplicate-names",
        ),
        pytest.param(
            "pkg/", {"renditions": [{"height": 240, "videoBitrate": "1M", "name": "../up"}]},
            "spec.params.renditions.0.name", "pattern", id="name-escapes",
        ),
        pytest.param(
            "pkg/", {"renditions": []}, "spec.params.renditions", "at least 1",
            id="empty-ladder",
        ),
        pytest.param(
            "pkg/", {"segmentLength": 4}, "spec.params.segmentLength", "unknown parameter",
            id="typo",
        ),
        pytest.param(
            "pkg", {}, "spec.output.url", "end the URL with '/'", id="output-not-a-directory",
        ),
        pytest.param(
            "http://127.0.0.1:9/pkg/", {}, "spec.output.url", "file:// or s3:// only",
            id="http-output",
        ),
    ],
)  # fmt: skip
def test_bad_job_fails_with_the_field(
    media: Path, tmp_path: Path, output: str, params: dict[str, Any], field: str, words: str
) -> None:
    url = output if output.startswith("http") else f"file://{tmp_path}/{output}"
    run = run_worker(job_payload("hls", f"file://{media}", url, params), tmp_path)
    assert run.code == 2, run.log
    assert run.message.startswith(f"{field}: "), run.message
    assert words in run.message
    assert not (tmp_path / "pkg").exists(), "a refused job wrote something"


# -- the pure parts --------------------------------------------------------------------------


def _params(**fields: Any) -> HlsParams:
    params = parse_params("hls", fields)
    assert isinstance(params, HlsParams)
    return params


@pytest.mark.parametrize(
    ("input_height", "kept", "dropped"),
    [
        pytest.param(1080, [1080, 720, 480, 360], [], id="full-hd-keeps-all"),
        pytest.param(720, [720, 480, 360], [1080], id="hd-drops-1080"),
        pytest.param(400, [360], [1080, 720, 480], id="between-rungs"),
        pytest.param(2160, [1080, 720, 480, 360], [], id="4k-not-upscaled-either-way"),
    ],
)
def test_fit_ladder_never_upscales(input_height: int, kept: list[int], dropped: list[int]) -> None:
    ladder = hls.fit_ladder(_params(), input_height)
    assert [r.height for r in ladder.rungs] == kept
    assert [d["height"] for d in ladder.dropped] == dropped
    assert all(r.capped_from is None for r in ladder.rungs)


def test_fit_ladder_caps_to_an_even_input_height_and_keeps_a_given_name() -> None:
    params = _params(renditions=[{"height": 480, "videoBitrate": "1M", "name": "sd"}])
    [rung] = hls.fit_ladder(params, 203).rungs
    assert (rung.name, rung.height, rung.capped_from, rung.video_bitrate) == ("sd", 202, 480, "1M")


def test_display_height_follows_rotation() -> None:
    portrait = {"codec_type": "video", "width": 1920, "height": 1080}
    assert hls.display_height({"streams": [portrait]}) == 1080
    rotated = portrait | {"side_data_list": [{"rotation": -90}]}
    assert hls.display_height({"streams": [rotated]}) == 1920
    assert hls.display_height({"streams": [portrait | {"tags": {"rotate": "180"}}]}) == 1080
    assert hls.display_height({"streams": [{"codec_type": "audio"}]}) is None


def test_plan_aligns_keyframes_with_segments_and_sets_each_rungs_rate() -> None:
    params = _params(ladder="small", segmentSeconds=4)
    info = {
        "streams": [
            {"codec_type": "video", "width": 854, "height": 480, "avg_frame_rate": "30000/1001"},
            {"codec_type": "audio"},
        ]
    }
    args = hls.plan_package(params, hls.fit_ladder(params, 480), info, Path("/media/in.mp4"))

    def after(flag: str) -> str:
        return args[args.index(flag) + 1]

    assert after("-force_key_frames") == "expr:gte(t,n_forced*4)"
    assert after("-g") == "120"  # 29.97 fps x 4 s, rounded up
    assert after("-sc_threshold") == "0"
    assert after("-hls_time") == "4"
    assert (after("-b:v:0"), after("-maxrate:v:0"), after("-bufsize:v:0")) == (
        "1400000",
        "1498000",
        "2100000",
    )
    assert after("-b:v:2") == "400000"
    assert after("-var_stream_map") == "v:0,a:0,name:480p v:1,a:1,name:360p v:2,a:2,name:240p"
    assert after("-filter_complex").startswith("[0:v:0]split=3[s0][s1][s2];[s0]scale=-2:480")
    assert args[-1] == "%v/index.m3u8"  # relative: ffmpeg runs in the staging directory


@pytest.mark.parametrize(
    ("text", "bits"), [("800k", 800_000), ("2.5M", 2_500_000), ("96K", 96_000), ("64000", 64_000)]
)
def test_bits_per_second(text: str, bits: int) -> None:
    assert hls.bits_per_second(text) == bits


def test_worker_reader_agrees_with_this_tests_reader() -> None:
    master = (
        "#EXTM3U\n#EXT-X-VERSION:6\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=580800,RESOLUTION=426x240,CODECS="avc1.640015,mp4a.40.2"\n'
        "low/index.m3u8\n"
    )
    assert hls.parse_master(master) == [
        {
            "BANDWIDTH": "580800",
            "RESOLUTION": "426x240",
            "CODECS": "avc1.640015,mp4a.40.2",
            "URI": "low/index.m3u8",
        }
    ]
    media_playlist = "#EXTM3U\n#EXTINF:2.000000,\na.ts\n#EXTINF:1.5,\nb.ts\n#EXT-X-ENDLIST\n"
    assert hls.segment_durations(media_playlist) == [2.0, 1.5]


def test_publish_tree_refuses_a_scheme_it_cannot_write(tmp_path: Path) -> None:
    from videoqueue_worker import transfer
    from videoqueue_worker.sandbox import Sandbox

    location = transfer.parse_location(
        "https://media.example/pkg/", field="spec.output.url", allowed=("https",),
        sandbox=Sandbox(file_roots=()),
    )  # fmt: skip
    with pytest.raises(WorkerError, match="file:// or s3:// only"):
        hls.publish_tree(tmp_path, location, lambda _: None)


def test_output_directory_that_is_a_file_is_refused(media: Path, tmp_path: Path) -> None:
    taken = tmp_path / "pkg"
    taken.write_bytes(b"not a directory")
    run = run_worker(job_payload("hls", f"file://{media}", f"file://{taken}/", {}), tmp_path)
    assert run.code == 2, run.log
    assert run.message.startswith("spec.output.url: "), run.message
    assert "needs a directory" in run.message
    assert taken.read_bytes() == b"not a directory"
