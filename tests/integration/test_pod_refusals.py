"""Worker pods the API server refuses (issue 14): the refusal shows on the job, with the API
server's own words, the operator tries again with backoff instead of in a loop, and the job
holds no slot while it has no pod. Requests are counted by the API server itself."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import pytest

from tests.integration.objects import (
    condition,
    create,
    make_job,
    make_queue,
    wait_admitted_reason,
    wait_job,
    wait_queue,
)
from videoqueue.envtest import ClusterBase, poll

pytestmark = pytest.mark.integration

_POD_CREATES = re.compile(
    r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.MULTILINE
)


def refused_pod_creates(cluster: ClusterBase, code: str) -> int:
    """POST pods answered with `code`, as the API server counts them (all namespaces)."""
    total = 0
    for match in _POD_CREATES.finditer(cluster.kubectl("get", "--raw", "/metrics").stdout):
        labels = match["labels"]
        if (
            'verb="POST"' in labels
            and 'resource="pods"' in labels
            and 'subresource=""' in labels
            and f'code="{code}"' in labels
        ):
            total += int(float(match["value"]))
    return total


def warning_events(core: Any, namespace: str, name: str, reason: str) -> list[Any]:
    return [
        e
        for e in core.list_namespaced_event(namespace).items
        if e.involved_object.name == name and e.reason == reason and e.type == "Warning"
    ]


def test_invalid_pod_is_shown_on_the_job_and_retried_with_backoff(
    operator: subprocess.Popen[bytes],
    cluster: ClusterBase,
    custom: Any,
    core: Any,
    namespace: str,
) -> None:
    queue = make_queue(concurrency=2)
    del queue["spec"]["template"]["spec"]["containers"][0]["image"]  # the API requires one
    before = refused_pod_creates(cluster, "422")
    started = time.monotonic()
    create(custom, namespace, "videoqueues", queue)
    create(custom, namespace, "videojobs", make_job("no-image"))

    job = wait_admitted_reason(custom, namespace, "no-image", "WorkerPodRefused")
    admitted = condition(job, "Admitted")
    assert admitted is not None
    assert admitted["status"] == "False"

    message = admitted["message"]
    assert "spec.containers[0].image: Required value" in message  # the API server's words
    assert job["status"]["phase"] == "Pending"
    poll(
        lambda: warning_events(core, namespace, "no-image", "WorkerPodRefused") or None,
        timeout=30,
        what="a Warning Event on the job",
    )
    # No pod, so no slot and no memory: the queue counts the job as waiting, not admitted.
    wait_queue(
        custom,
        namespace,
        lambda q: (
            q.get("status", {}).get("pending") == 1
            and q["status"].get("admitted", 0) == 0
            and q["status"].get("memory", {}).get("reserved") in (None, "0")
        ),
        what="the queue to count the job as pending, with nothing reserved",
    )
    # Over 35 s the backoff (10 s, then 20 s) allows 3 tries; a loop would make thousands.
    poll(
        lambda: time.monotonic() - started >= 35 or None,
        timeout=60,
        interval=1,
        what="35 s of retries",
    )
    tries = refused_pod_creates(cluster, "422") - before
    assert 1 <= tries <= 4, f"{tries} refused pod creations in 35 s"

    # Fixing the template is picked up at once, not after the backoff.
    fix = [{"op": "add", "path": "/spec/template/spec/containers/0/image", "value": "w:1"}]
    cluster.kubectl("patch", "vq", "work", "-n", namespace, "--type=json", f"-p={json.dumps(fix)}")
    done = wait_job(custom, namespace, "no-image", "Complete", timeout=30)
    assert done["status"]["attempt"] == 1  # refusals use up no attempt


def test_pod_security_refusal_is_shown_on_the_job(
    operator: subprocess.Popen[bytes],
    cluster: ClusterBase,
    custom: Any,
    core: Any,
    namespace: str,
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    queue = make_queue()
    queue["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    create(custom, namespace, "videoqueues", queue)
    create(custom, namespace, "videojobs", make_job("privileged"))

    job = wait_admitted_reason(custom, namespace, "privileged", "WorkerPodRefused")
    admitted = condition(job, "Admitted")
    assert admitted is not None
    assert admitted["status"] == "False"

    message = admitted["message"]
    assert "403" in message
    assert 'violates PodSecurity "restricted' in message
    assert core.list_namespaced_pod(namespace).items == []
