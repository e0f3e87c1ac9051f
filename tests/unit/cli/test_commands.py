"""The plugin's pure parts: flags, local validation with errors that name the field, batch
counting and the output helpers."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any, cast

import pytest

from videoqueue.api import BATCH_LABEL, VideoJob
from videoqueue.cli.cluster import CliError
from videoqueue.cli.jobs import cmd_show
from videoqueue.cli.main import build_parser, main
from videoqueue.cli.render import duration, relative, table
from videoqueue.cli.submit import job_from_flags, read_manifests, validate
from videoqueue.cli.summary import batches


def submit_args(*flags: str) -> Any:
    return build_parser().parse_args(["submit", *flags])


def test_cluster_flags_work_before_and_after_the_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["-n", "a", "-o", "yaml", "list"]).namespace == "a"
    after = parser.parse_args(["list", "-n", "b", "--context", "c"])
    assert (after.namespace, after.context, after.output) == ("b", "c", "table")


def test_a_job_from_flags_has_typed_params_and_a_generated_name() -> None:
    args = submit_args(
        "-q", "media", "--type", "clip", "--input", "s3://in/a.mp4", "--priority", "8",
        "--memory", "2Gi", "--param", "start=5", "--param", "codec=h264", "--param",
        "hdr=true", "--depends-on", "probe-a",
    )  # fmt: skip
    body = job_from_flags(args)
    assert body["metadata"] == {"generateName": "clip-"}
    assert body["spec"] == {
        "queueName": "media",
        "type": "clip",
        "input": {"url": "s3://in/a.mp4"},
        "priority": 8,
        "resources": {"memory": "2Gi"},
        "params": {"start": 5, "codec": "h264", "hdr": True},
        "dependsOn": ["probe-a"],
    }
    assert validate(body).spec.priority == 8


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(["--type", "probe", "--input", "x"], "--queue", id="no-queue"),
        pytest.param(["-q", "m", "--input", "x"], "--type", id="no-type"),
        pytest.param(
            ["-q", "m", "--type", "probe", "--input", "x", "--param", "oops"],
            "KEY=VALUE",
            id="bad-param",
        ),
    ],
)
def test_missing_or_malformed_flags_are_usage_errors(flags: list[str], message: str) -> None:
    with pytest.raises(CliError, match=message) as caught:
        job_from_flags(submit_args(*flags))
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param({"priority": 11}, "spec.priority", id="priority"),
        pytest.param({"resources": {"memory": "512m"}}, "spec.resources.memory", id="memory"),
        pytest.param({"type": "Transcode!"}, "spec.type", id="type"),
        pytest.param({"input": {}}, "spec.input", id="input"),
    ],
)
def test_invalid_jobs_are_refused_locally_naming_the_field(
    spec: dict[str, Any], field: str
) -> None:
    body = {
        "metadata": {"name": "j"},
        "spec": {"queueName": "q", "type": "probe", "input": {"url": "x"}, **spec},
    }
    with pytest.raises(CliError, match=rf"invalid job: {field}:"):
        validate(body)


def test_manifests_may_hold_several_jobs_but_only_jobs(tmp_path: Path) -> None:
    good = tmp_path / "jobs.yaml"
    good.write_text(
        "kind: VideoJob\nmetadata: {name: a}\n---\nkind: VideoJob\nmetadata: {name: b}\n"
    )
    assert [b["metadata"]["name"] for b in read_manifests(str(good))] == ["a", "b"]
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text("kind: VideoJob\n---\nkind: VideoQueue\n")
    with pytest.raises(CliError, match="found kind 'VideoQueue'"):
        read_manifests(str(mixed))
    with pytest.raises(CliError, match="cannot read"):
        read_manifests(str(tmp_path / "absent.yaml"))


def test_a_missing_kubeconfig_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--kubeconfig", "/nonexistent/kubeconfig", "list"])
    assert code == 1
    err = capsys.readouterr().err
    assert "/nonexistent/kubeconfig" in err
    assert "pass --kubeconfig or set KUBECONFIG" in err


def job(name: str, phase: str | None, batch: str | None, queue: str = "q") -> VideoJob:
    return VideoJob.model_validate(
        {
            "metadata": {"name": name, "labels": {BATCH_LABEL: batch} if batch else {}},
            "spec": {"queueName": queue, "type": "probe", "input": {"url": "x"}},
            "status": {"phase": phase} if phase else {},
        }
    )


def test_batches_count_jobs_by_outcome() -> None:
    jobs = [
        job("a", "Succeeded", "b1"),
        job("b", "Running", "b1"),
        job("c", "Admitted", "b1"),
        job("d", None, "b1"),
        job("e", "Backoff", "b1"),
        job("f", "Rejected", "b1"),
        job("g", "Cancelled", "b1"),
        job("h", "Succeeded", "b2", queue="other"),
        job("i", "Succeeded", None),
    ]
    counted = {b.name: b.to_dict() for b in batches(jobs)}
    assert counted["b1"] == {
        "name": "b1",
        "total": 7,
        "pending": 2,
        "running": 2,
        "succeeded": 1,
        "failed": 2,
    }
    assert [b.name for b in batches(jobs, "q")] == ["b1"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.6, "1m"), (61, "1m1s"), (3600, "1h"), (3720, "1h2m"), (90000, "1d1h")],
)
def test_durations_read_like_kubectl_ages(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_relative_times_and_tables() -> None:
    assert relative(100.4, 100) == "now"
    assert relative(190, 100) == "in 1m30s"
    assert relative(40, 100) == "1m ago"
    out = io.StringIO()
    table(["NAME", "NOTE"], [["a", None], ["long-name", "x"]], out)
    assert out.getvalue().splitlines() == [
        "NAME        NOTE",
        "a           <none>",
        "long-name   x",
    ]


class OneJob:
    """Stands in for the cluster: `get` returns the one job."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job

    def get(self, resource: Any, name: str) -> dict[str, Any]:
        return self.job


def test_show_lists_each_attempts_memory_and_peak() -> None:
    attempts = [
        {"attempt": 1, "pod": "clip-a1", "memory": "64Mi", "peakMemory": "64Mi",
         "reason": "OOMKilled", "exitCode": 1},
        {"attempt": 2, "pod": "clip-a2", "memory": "256Mi", "peakMemory": "116Mi",
         "reason": "Completed", "exitCode": 0},
    ]  # fmt: skip
    job = {
        "apiVersion": "videoqueue.dev/v1alpha1",
        "kind": "VideoJob",
        "metadata": {"name": "clip", "namespace": "media"},
        "spec": {"queueName": "work", "type": "probe", "input": {"url": "file:///a.mp4"}},
        "status": {
            "phase": "Succeeded",
            "attempt": 2,
            "attempts": attempts,
            "effectiveMemory": "256Mi",
            "memorySource": "grown after OOMKilled",
        },
    }
    out = io.StringIO()
    args = argparse.Namespace(job="clip", output="table")

    assert cmd_show(args, cast(Any, OneJob(job)), out) == 0

    lines = out.getvalue().splitlines()
    assert "256Mi (grown after OOMKilled)" in next(ln for ln in lines if ln.startswith("Memory:"))
    header = lines.index("Attempts:") + 1
    rows = [line.split() for line in lines[header : header + 3]]
    assert [row[:5] for row in rows] == [
        ["#", "POD", "NODE", "MEMORY", "PEAK"],
        ["1", "clip-a1", "<none>", "64Mi", "64Mi"],
        ["2", "clip-a2", "<none>", "256Mi", "116Mi"],
    ]
