"""GitOps and CI against the real control plane with the session's operator: `kubectl wait`
on Complete and Failed, the GitHub Actions example run step by step, the real kstatus rules
(Flux, kpt) and the Argo CD health scripts on the objects the operator writes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.objects import (
    GROUP,
    VERSION,
    create,
    get_job,
    long_job,
    make_job,
    make_queue,
    wait_job,
)
from tests.unit.gitops.argocd import health
from videoqueue.envtest import ClusterBase, pod_script, wait_for_object

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "examples" / "ci" / "github-actions" / "transcode.yml"


def failing_job(name: str) -> dict[str, Any]:
    job = make_job(name, annotations=pod_script("1s", exit_code=2, message="bad input"))
    job["spec"]["maxAttempts"] = 1
    return job


def get_queue(custom: Any, namespace: str, name: str = "work") -> dict[str, Any]:
    queue: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "videoqueues", name
    )
    return queue


def test_kubectl_wait_for_complete_and_failed(
    cluster: ClusterBase, operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    create(custom, namespace, "videojobs", make_job("good"))
    create(custom, namespace, "videojobs", failing_job("bad"))

    done = cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Complete", "--timeout=90s", "vj/good"
    )
    assert done.stdout.strip() == "videojob.videoqueue.dev/good condition met"
    failed = cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Failed", "--timeout=90s", "vj/bad"
    )
    assert failed.stdout.strip() == "videojob.videoqueue.dev/bad condition met"
    # A failed job never becomes Complete: waiting for it times out rather than passing.
    never = cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Complete", "--timeout=2s", "vj/bad", check=False
    )
    assert never.returncode != 0
    assert "timed out" in never.stderr


def run_workflow(
    cluster: ClusterBase, namespace: str, tmp_path: Path, manifest: Path, run_id: str
) -> tuple[int, str, dict[str, str]]:
    """Runs the example workflow's shell steps as GitHub Actions would, with kubectl from the
    control plane on PATH and the test cluster's kubeconfig in place of the secret; returns
    the exit code of the first failing step (or 0), the output and the exported variables."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    job = workflow["jobs"]["transcode"]
    kubectl_dir = str(Path(cluster.binaries["kubectl"]).parent)
    github_env = tmp_path / f"github-env-{run_id}"
    github_env.touch()
    env = {
        **os.environ,
        **job["env"],
        "NAMESPACE": namespace,
        "MANIFEST": str(manifest),
        "PATH": f"{kubectl_dir}:{os.environ['PATH']}",
        "KUBECONFIG": str(cluster.kubeconfig),
        "GITHUB_ENV": str(github_env),
        "GITHUB_SERVER_URL": "https://github.example.test",
        "GITHUB_REPOSITORY": "acme/media",
        "GITHUB_RUN_ID": run_id,
        "GITHUB_RUN_ATTEMPT": "1",
        "RUNNER_TEMP": str(tmp_path),
    }
    output = []
    for step in job["steps"]:
        if "run" not in step or step.get("id") == "credentials" or "if" in step:
            continue  # checkout, the secret, and the always() diagnostics step
        assert "${{" not in step["run"], f"step {step['name']} needs GitHub expressions"
        for line in github_env.read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
        result = subprocess.run(
            ["bash", "-e", "-c", step["run"]],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
        )
        output.append(f"## {step['name']}\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            return result.returncode, "\n".join(output), env
    return 0, "\n".join(output), env


@pytest.fixture
def media_queue(operator: subprocess.Popen[bytes], custom: Any, namespace: str) -> str:
    create(custom, namespace, "videoqueues", make_queue("media", budget="8Gi"))
    return "media"


def test_ci_example_submits_the_job_linked_to_the_run_and_passes_when_it_succeeds(
    cluster: ClusterBase, custom: Any, namespace: str, media_queue: str, tmp_path: Path
) -> None:
    code, output, _ = run_workflow(
        cluster, namespace, tmp_path, REPO / "examples" / "ci" / "job.yaml", "4711"
    )
    assert code == 0, output
    job = get_job(custom, namespace, "release-trailer-4711-1")
    assert job["status"]["phase"] == "Succeeded"
    annotations, labels = job["metadata"]["annotations"], job["metadata"]["labels"]
    expected = "https://github.example.test/acme/media/actions/runs/4711"
    assert annotations["videoqueue.dev/ci-run-url"] == expected
    assert labels["videoqueue.dev/batch"] == "ci-4711"
    assert "condition met" in output
    assert "release-trailer-4711-1: Succeeded" in output


def test_ci_example_fails_the_run_when_the_job_fails(
    cluster: ClusterBase, custom: Any, namespace: str, media_queue: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "failing.yaml"
    body = failing_job("broken")
    body["spec"]["queueName"] = media_queue
    manifest.write_text(yaml.safe_dump(body))
    code, output, _ = run_workflow(cluster, namespace, tmp_path, manifest, "4712")
    assert code != 0, output
    assert "release-trailer-4712-1: Failed" in output
    assert get_job(custom, namespace, "release-trailer-4712-1")["status"]["phase"] == "Failed"


# -- kstatus ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kstatus() -> Path:
    """The kstatus helper (gitops/kstatus), built once per version into the toolchain cache."""
    built = subprocess.run(
        [str(REPO / "gitops" / "kstatus" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip())


def compute(kstatus: Path, *objects: dict[str, Any]) -> list[str]:
    """The kstatus status of each object (Current, InProgress, Failed, ...)."""
    result = subprocess.run(
        [str(kstatus)],
        input="".join(json.dumps(o) + "\n" for o in objects),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(not a.get("error") for a in answers), answers
    return [a["status"] for a in answers]


def test_kstatus_reads_the_operator_conditions(
    kstatus: Path, operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    create(custom, namespace, "videojobs", make_job("done"))
    wait_job(custom, namespace, "done", "Complete")
    queue = wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videoqueues",
        name="work",
        predicate=lambda o: (
            o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
        ),
        timeout=30,
        what="the queue's status to observe its generation",
    )
    job = get_job(custom, namespace, "done")
    assert compute(kstatus, queue, job) == ["Current", "Current"]

    # A spec change the operator has not acted on yet reads as in progress.
    stale = json.loads(json.dumps(queue))
    stale["metadata"]["generation"] += 1
    # Deleting objects read as Terminating, as for every kind.
    deleting = json.loads(json.dumps(job))
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    # A Reconciling or Stalled condition, should the operator set one, is honoured.
    reconciling = json.loads(json.dumps(queue))
    reconciling["status"]["conditions"].append(
        {
            "type": "Reconciling",
            "status": "True",
            "reason": "Resizing",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    )
    assert compute(kstatus, stale, deleting, reconciling) == [
        "InProgress",
        "Terminating",
        "InProgress",
    ]

    # As docs/gitops.md tells Flux users (change both together): a paused queue stays Ready
    # (pausing is a choice), so it is Current; a running job is Reconciling, so InProgress.
    create(custom, namespace, "videojobs", long_job("busy"))
    busy = wait_job(custom, namespace, "busy", "Running")
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "videoqueues", "work", {"spec": {"state": "Paused"}}
    )
    paused = wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videoqueues",
        name="work",
        predicate=lambda o: (
            o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
        ),
        timeout=30,
        what="the paused queue's status",
    )
    assert compute(kstatus, paused, busy) == ["Current", "InProgress"]
    # A job that failed for good is Stalled: Failed for kstatus, so a Flux wait turns red.
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "videoqueues", "work", {"spec": {"state": "Active"}}
    )
    create(custom, namespace, "videojobs", failing_job("broken"))
    broken = wait_job(custom, namespace, "broken", "Failed")
    assert compute(kstatus, broken) == ["Failed"]


# -- Argo CD --------------------------------------------------------------------------------


def test_argocd_health_of_the_objects_the_operator_writes(
    operator: subprocess.Popen[bytes], custom: Any, namespace: str
) -> None:
    create(custom, namespace, "videoqueues", make_queue())
    create(custom, namespace, "videojobs", make_job("good"))
    create(custom, namespace, "videojobs", failing_job("bad"))
    create(custom, namespace, "videojobs", long_job("busy"))
    good = wait_job(custom, namespace, "good", "Complete")
    bad = wait_job(custom, namespace, "bad", "Failed")
    busy = wait_job(custom, namespace, "busy", "Running")
    assert health("VideoJob", good)["status"] == "Healthy"
    assert health("VideoJob", bad)["status"] == "Degraded"
    running = health("VideoJob", busy)
    assert running["status"] == "Progressing"
    assert running["message"].startswith("Running (attempt 1)")

    active = wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videoqueues",
        name="work",
        predicate=lambda o: (
            o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
        ),
        timeout=30,
        what="the queue's status to observe its generation",
    )
    assert health("VideoQueue", active)["status"] == "Healthy"
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "videoqueues", "work", {"spec": {"state": "Paused"}}
    )
    paused = wait_for_object(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "videoqueues",
        name="work",
        predicate=lambda o: (
            o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
        ),
        timeout=30,
        what="the paused queue's status",
    )
    found = health("VideoQueue", paused)
    assert found["status"] == "Suspended"
    assert "Paused" in found["message"]
    assert get_queue(custom, namespace)["spec"]["state"] == "Paused"
