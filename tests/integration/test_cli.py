"""`kubectl videoqueue` against the real control plane with the session's operator running."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.objects import (
    GROUP,
    VERSION,
    create,
    get_job,
    is_true,
    long_job,
    make_job,
    make_queue,
    wait_job,
    wait_queue,
)
from videoqueue.api import BATCH_LABEL, RETRY_ANNOTATION
from videoqueue.cli.main import main
from videoqueue.cli.objects import CI_RUN_ANNOTATION
from videoqueue.envtest import ClusterBase, pod_script, poll, wait_for_object

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Plugin:
    """Runs the plugin's commands in-process against one namespace of the test cluster."""

    def __init__(self, cluster: ClusterBase, namespace: str, capsys: pytest.CaptureFixture[str]):
        self.base = ["--kubeconfig", str(cluster.kubeconfig), "-n", namespace]
        self.capsys = capsys

    def __call__(self, *args: str) -> Result:
        self.capsys.readouterr()
        out = io.StringIO()
        code = main([*self.base, *args], out=out)
        return Result(code, out.getvalue(), self.capsys.readouterr().err)

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.code == 0, result.err
        return result


@pytest.fixture
def vq(cluster: ClusterBase, namespace: str, capsys: pytest.CaptureFixture[str]) -> Plugin:
    return Plugin(cluster, namespace, capsys)


def write_job(path: Path, body: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(body))
    return str(path)


def test_list_shows_queue_order_positions_and_estimated_starts(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, vq: Plugin, tmp_path: Path
) -> None:
    create(custom, namespace, "videoqueues", make_queue(concurrency=1))
    # One finished job gives the queue a measured run time to estimate with.
    vq.ok("submit", "--name", "warmup", "-q", "work", "--type", "probe", "--input", "file:///a")
    wait_job(custom, namespace, "warmup", "Complete")
    vq.ok("submit", "-f", write_job(tmp_path / "long.yaml", long_job("busy")))
    wait_job(custom, namespace, "busy", "Running")
    for name, priority in (("low", "1"), ("high-1", "9"), ("high-2", "9")):
        vq.ok("submit", "--name", name, "-q", "work", "--type", "transcode", "--input",
              "file:///in.mp4", "--priority", priority)  # fmt: skip

    listing = vq.ok("list", "-q", "work", "-o", "json").json()
    rows = listing["jobs"]
    assert [(r["name"], r["position"]) for r in rows] == [
        ("busy", None),
        ("high-1", 1),
        ("high-2", 2),
        ("low", 3),
    ]
    assert rows[0]["phase"] == "Running"
    assert rows[0]["startTime"]
    starts = [r["estimatedStart"] for r in rows[1:]]
    assert all(starts), rows
    assert starts == sorted(starts)
    table = vq.ok("list").out
    assert table.splitlines()[0].split() == ["QUEUE", "POS", "NAME", "PHASE", "PRIORITY", "TYPE",
                                             "START"]  # fmt: skip
    assert [line.split()[2] for line in table.splitlines()[1:]] == [
        "busy", "high-1", "high-2", "low"
    ]  # fmt: skip
    shown = vq.ok("show", "high-2").out
    assert "Position:        2 in queue work" in shown
    assert "Estimated start: ~" in shown
    assert vq.ok("show", "high-2", "-o", "json").json()["estimate"]["position"] == 2
    # Nothing of the estimate was written to the API.
    assert "estimate" not in json.dumps(get_job(custom, namespace, "high-1"))


def test_show_prints_attempts_result_and_the_ci_run(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, vq: Plugin
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    url = "https://ci.example.test/org/repo/actions/runs/42"
    vq.ok("submit", "--name", "clip", "-q", "work", "--type", "clip", "--input", "file:///a.mp4",
          "--param", "start=5", "--ci-run-url", url)  # fmt: skip
    wait_job(custom, namespace, "clip", "Complete")

    shown = vq.ok("show", "clip").out
    assert f"CI run:          {url}" in shown
    assert "Phase:           Succeeded (attempt 1)" in shown
    assert "Attempts:" in shown
    assert "clip-a1" in shown
    assert "Completed" in shown
    assert '"output": "file:///media/out.mp4"' in shown
    as_json = vq.ok("show", "clip", "-o", "json").json()
    assert as_json["metadata"]["annotations"][CI_RUN_ANNOTATION] == url
    assert as_json["spec"]["params"] == {"start": 5}


def test_pause_resume_and_drain_set_the_queue_state(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, vq: Plugin
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    assert vq.ok("pause", "work").out.strip().endswith("is Paused")
    vq.ok("submit", "--name", "held", "-q", "work", "--type", "probe", "--input", "file:///a")
    listing = vq.ok("list", "-q", "work", "-o", "json").json()
    assert listing["state"] == "Paused"
    assert "Paused" in listing["jobs"][0]["note"]
    stats = poll(
        lambda: (s := vq.ok("stats", "work", "-o", "json").json())["jobs"]["pending"] == 1 and s,
        timeout=30,
        what="the paused queue's status to count the held job",
    )
    assert stats["state"] == "Paused"

    vq.ok("resume", "work")
    wait_job(custom, namespace, "held", "Complete")
    vq.ok("drain", "work")
    queue = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "videoqueues", "work")
    assert queue["spec"]["state"] == "Draining"
    summary = vq.ok("stats").out
    assert summary.splitlines()[1].split()[:2] == ["work", "Draining"]


def test_cancel_stops_a_job_and_retry_runs_a_failed_one_again(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, vq: Plugin, tmp_path: Path
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    vq.ok("submit", "-f", write_job(tmp_path / "long.yaml", long_job("endless")))
    wait_job(custom, namespace, "endless", "Running")
    vq.ok("cancel", "endless")
    wait_job(custom, namespace, "endless", "Cancelled")
    again = vq("cancel", "endless")
    assert again.code == 1
    assert "already Cancelled" in again.err

    failing = make_job("broken", annotations=pod_script("1s", exit_code=3))
    failing["spec"]["maxAttempts"] = 1
    vq.ok("submit", "-f", write_job(tmp_path / "broken.yaml", failing))
    wait_job(custom, namespace, "broken", "Failed")
    assert vq("watch", "broken").code == 1  # a Failed job: watch exits non-zero
    vq.ok("retry", "broken")
    job = get_job(custom, namespace, "broken")
    assert RETRY_ANNOTATION in job["metadata"]["annotations"]
    second = wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videojobs",
        name="broken",
        predicate=lambda o: o.get("status", {}).get("attempt", 0) >= 2 and is_true(o, "Failed"),
        timeout=60,
        what="the retried job to fail again in a second attempt",
    )
    assert [a["attempt"] for a in second["status"]["attempts"]] == [1, 2]
    refused = vq("retry", "endless")
    assert refused.code == 1
    assert "'endless'" in refused.err
    assert namespace in refused.err
    assert "Cancelled" in refused.err


def test_batch_progress_is_counted_from_the_jobs(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, vq: Plugin, tmp_path: Path
) -> None:
    create(custom, namespace, "videoqueues", make_queue(concurrency=4))
    for i in range(3):
        vq.ok("submit", "--name", f"frame-{i}", "-q", "work", "--type", "thumbnail", "--input",
              f"file:///f{i}.mp4", "--batch", "frames")  # fmt: skip
    vq.ok("submit", "-f", write_job(tmp_path / "long.yaml", long_job("slow")), "--batch", "frames")
    for i in range(3):
        wait_job(custom, namespace, f"frame-{i}", "Complete")
    wait_job(custom, namespace, "slow", "Running")

    batch = vq.ok("batch", "frames", "-o", "json").json()
    assert {
        k: batch[k] for k in ("name", "total", "pending", "running", "succeeded", "failed")
    } == {
        "name": "frames",
        "total": 4,
        "pending": 0,
        "running": 1,
        "succeeded": 3,
        "failed": 0,
    }
    assert get_job(custom, namespace, "slow")["metadata"]["labels"][BATCH_LABEL] == "frames"
    lines = vq.ok("batch").out.splitlines()
    assert lines[1].split() == ["frames", "4", "0", "1", "3", "0", "75%"]
    # The queue's own summary of unfinished batches, as the operator writes it (or the jobs).
    by_queue = vq.ok("batch", "-q", "work", "-o", "json").json()
    assert [b["name"] for b in by_queue] == ["frames"]


def test_watch_follows_a_job_to_its_end_and_exits_with_its_outcome(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, vq: Plugin, tmp_path: Path
) -> None:
    # Longer than the operator holds a running job's status (5 s from the start), so
    # Running is written.
    create(custom, namespace, "videoqueues", make_queue(run_for="10s"))
    vq.ok("submit", "--name", "good", "-q", "work", "--type", "probe", "--input", "file:///a")
    watched = vq("watch", "good", "--timeout", "90")
    assert watched.code == 0, watched.err
    phases = [line.split()[2] for line in watched.out.splitlines()]
    assert phases[-1] == "Succeeded"
    assert "Running" in phases

    failing = make_job("bad", annotations=pod_script("1s", exit_code=1))
    failing["spec"]["maxAttempts"] = 1
    vq.ok("submit", "-f", write_job(tmp_path / "bad.yaml", failing))
    assert vq("watch", "vj/bad", "--timeout", "90").code == 1

    # The queue's status lags its jobs' by up to 2 s (its write rate): a job that ended
    # within that time may not be counted yet, and the queue would look idle already.
    wait_queue(
        custom,
        namespace,
        lambda q: (q.get("status") or {}).get("failed") == 1,
        "the queue to count the failed job",
    )
    queue_watch = vq("watch", "vq/work", "--timeout", "90", "-o", "json")
    assert queue_watch.code == 0, queue_watch.err
    last = json.loads(queue_watch.out.splitlines()[-1])
    assert (last["pending"], last["running"], last["succeeded"], last["failed"]) == (0, 0, 1, 1)


def test_unknown_objects_and_bad_input_give_clear_errors(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str, vq: Plugin, tmp_path: Path
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    missing_job = vq("show", "nope")
    assert missing_job.code == 1
    assert f"VideoJob 'nope' in namespace '{namespace}' not found" in missing_job.err
    missing_queue = vq("stats", "ghost")
    assert missing_queue.code == 1
    assert f"VideoQueue 'ghost' in namespace '{namespace}' not found" in missing_queue.err
    for command in (["pause", "ghost"], ["list", "-q", "ghost"], ["watch", "vq/ghost"]):
        assert "VideoQueue 'ghost'" in vq(*command).err
    submit = vq("submit", "-q", "ghost", "--type", "probe", "--input", "file:///a")
    assert submit.code == 1
    assert "VideoQueue 'ghost'" in submit.err
    bad_priority = vq("submit", "-q", "work", "--type", "probe", "--input", "x", "--priority", "11")
    assert bad_priority.code == 1
    assert "spec.priority" in bad_priority.err
    bad_memory = vq("submit", "-q", "work", "--type", "probe", "--input", "x", "--memory", "512m")
    assert bad_memory.code == 1
    assert "spec.resources.memory" in bad_memory.err
    # A manifest is checked whole before anything is created.
    pair = tmp_path / "pair.yaml"
    pair.write_text(yaml.safe_dump_all([make_job("fine"), make_job("lost", queue="ghost")]))
    refused = vq("submit", "-f", str(pair))
    assert refused.code == 1
    assert "VideoQueue 'ghost'" in refused.err
    elsewhere = make_job("elsewhere")
    elsewhere["metadata"]["namespace"] = "kube-system"
    moved = vq("submit", "-f", write_job(tmp_path / "elsewhere.yaml", elsewhere))
    assert moved.code == 1
    assert "names namespace 'kube-system'" in moved.err
    # A job created some other way for a queue that does not exist is listed as waiting for it.
    create(custom, namespace, "videojobs", make_job("orphan", queue="ghost"))
    listing = vq.ok("list", "-o", "json").json()
    orphans = next(entry for entry in listing if entry["queue"] == "ghost")
    assert orphans["state"] == "Missing"
    assert [j["name"] for j in orphans["jobs"]] == ["orphan"]
    assert "VideoQueue 'ghost' does not exist" in orphans["jobs"][0]["note"]
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "videojobs", "orphan")
    no_input = vq("submit", "-q", "work", "--type", "probe")
    assert no_input.code == 2
    assert "--input" in no_input.err
    assert (
        custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "videojobs")["items"] == []
    )


def test_kubectl_finds_the_plugin_on_path(
    cluster: ClusterBase, operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    kubectl_dir = Path(cluster.binaries["kubectl"]).parent
    env = {**os.environ, "PATH": f"{VENV_BIN}:{kubectl_dir}:{os.environ['PATH']}",
           "KUBECONFIG": str(cluster.kubeconfig)}  # fmt: skip
    listed = subprocess.run(
        ["kubectl", "plugin", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "kubectl-videoqueue" in listed.stdout, listed.stdout + listed.stderr
    submitted = subprocess.run(
        ["kubectl", "videoqueue", "submit", "-n", namespace, "--name", "via-kubectl", "-q", "work",
         "--type", "probe", "--input", "file:///a"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    wait_job(custom, namespace, "via-kubectl", "Complete")
    stats = subprocess.run(
        ["kubectl", "videoqueue", "stats", "work", "-n", namespace, "-o", "yaml"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert stats.returncode == 0, stats.stderr
    assert yaml.safe_load(stats.stdout)["name"] == "work"
    missing = subprocess.run(
        ["kubectl", "videoqueue", "show", "nope", "-n", namespace],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def test_logs_say_plainly_when_there_is_no_log_to_read(
    operator: subprocess.Popen[bytes], custom: Any, core: Any, namespace: str, vq: Plugin
) -> None:
    """A job that has not run, an attempt it never had, a pod that is gone: each is said in
    words with what to do instead (the log itself is read on a real node, tests/e2e)."""
    create(custom, namespace, "videoqueues", make_queue(name="held", state="Paused"))
    vq.ok("submit", "--name", "waiting", "-q", "held", "--type", "probe", "--input", "file:///a")
    poll(
        lambda: get_job(custom, namespace, "waiting").get("status", {}).get("phase") == "Pending",
        timeout=30,
        what="the operator to hold the job in the paused queue",
    )
    not_run = vq("logs", "vj/waiting")
    assert not_run.code == 1
    assert "has not run yet" in not_run.err
    assert "kubectl videoqueue watch vj/waiting" in not_run.err

    create(custom, namespace, "videoqueues", make_queue())
    vq.ok("submit", "--name", "done", "-q", "work", "--type", "probe", "--input", "file:///a")
    job = wait_job(custom, namespace, "done", "Complete")
    pod = job["status"]["attempts"][0]["pod"]
    assert core.read_namespaced_pod(pod, namespace).metadata.name == pod  # there to lose
    beyond = vq("logs", "done", "--attempt", "2")
    assert beyond.code == 2
    assert "has no attempt 2; it has attempt 1" in beyond.err

    core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
    poll(
        lambda: pod not in [p.metadata.name for p in core.list_namespaced_pod(namespace).items],
        timeout=30,
        what=f"pod {pod} to be deleted",
    )
    gone = vq("logs", "vj/done")
    assert gone.code == 1
    assert f"the worker pod {pod} of attempt 1 of job 'done' is gone" in gone.err
    assert "kubectl videoqueue show done" in gone.err
    assert "ttlSecondsAfterFinished" in gone.err
    assert gone.out == ""
    assert vq("logs", "vq/done").code == 2  # a queue has no log
