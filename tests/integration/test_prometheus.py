"""The metrics as a real Prometheus sees them: Debian's prometheus, on loopback, scrapes the
session's operator every second while jobs run through the control plane (successes,
failures and an OOM kill that is retried), loads the shipped alert rules, and then answers
every query of the shipped Grafana dashboard with data."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
import yaml

from videoqueue.envtest import poll
from videoqueue.envtest.kwok import EXIT_CODE, REASON, REASON_FOR_ATTEMPT, RUN_DURATION
from videoqueue.envtest.operator_process import free_port

from .conftest import REPO
from .objects import GROUP, VERSION, create, is_true, make_job, make_queue

pytestmark = pytest.mark.integration

RULES = REPO / "charts/videoqueue-operator/files/prometheus-rules.yaml"
DASHBOARD = REPO / "charts/videoqueue-operator/files/grafana-dashboard.json"
# Every observation of the run lies inside this window when the queries run.
RATE_WINDOW = "10m"


class PrometheusServer:
    """`prometheus` with a temporary config and data directory on a free loopback port,
    scraping `targets` every second and evaluating `rule_files` every second."""

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(
                "prometheus is not installed; run hack/install-system-packages.sh "
                "(Debian package prometheus)"
            )
        self.binary, self.workdir = binary, workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self.config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": "videoqueue-operator", "static_configs": [{"targets": targets}]}
            ],
        }
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        poll(self._ready, timeout=60, what=f"prometheus ready on {self.url}", interval=0.2)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{path} {params}: {e.code} {e.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's samples (vector results)."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The value of a query expected to give one sample; None while it gives none."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {result}"
        return float(result[0]["value"][1]) if result else None


def get(url: str) -> tuple[int, str]:
    """Status and body; status 0 while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def panels() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        found += [panel, *panel.get("panels", [])]
    return [p for p in found if p["type"] != "row"]


def substitute(expr: str, namespace: str) -> str:
    """What Grafana sends for this dashboard with the test's namespace and all its queues."""
    variables = {
        "namespace": namespace,  # a DNS label: nothing to escape in a regular expression
        "queue": ".*",
        "__rate_interval": RATE_WINDOW,
    }
    for name, value in variables.items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def jobs_for_the_run() -> list[dict[str, Any]]:
    """Six successes of three types (one after an OOM kill) and two failures."""

    def job(name: str, type_: str, run_for: str, **annotations: str) -> dict[str, Any]:
        body = make_job(name, queue="media", annotations={RUN_DURATION: run_for, **annotations})
        body["spec"]["type"] = type_
        return body

    failed = {EXIT_CODE: "1", REASON: "Error"}
    bodies = [
        job("cut-a", "transcode", "2s"),
        job("cut-b", "transcode", "3s"),
        job("look-a", "probe", "1s"),
        job("look-b", "probe", "1s"),
        job("thumb-a", "thumbnail", "1s"),
        job("big-a", "transcode", "1s", **{REASON_FOR_ATTEMPT.format(attempt=1): "OOMKilled"}),
        job("bad-a", "transcode", "1s", **failed),
        job("bad-b", "probe", "1s", **failed),
    ]
    for body in bodies:
        if body["metadata"]["name"].startswith("bad-"):
            body["spec"]["maxAttempts"] = 1
    return bodies


def test_every_dashboard_panel_has_data_in_a_real_prometheus(
    operator: subprocess.Popen[bytes],
    operator_metrics_port: int,
    custom: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    base = f"http://127.0.0.1:{operator_metrics_port}"
    # The probes, as a kubelet would ask them.
    poll(
        lambda: get(f"{base}/readyz") == (200, "acting\n"),
        timeout=60,
        what="the operator's /readyz to say it acts",
    )
    assert get(f"{base}/healthz")[0] == 200

    target = f"127.0.0.1:{operator_metrics_port}"
    with PrometheusServer(tmp_path / "prometheus", [target], [RULES]) as prometheus:
        poll(
            lambda: prometheus.value('up{job="videoqueue-operator"}') == 1,
            timeout=30,
            what="prometheus to scrape the operator",
        )
        ns = f'namespace="{namespace}"'

        # Paused first: every job is indexed and its series scraped at zero before any
        # runs, so rate() sees every event of the run.
        create(custom, namespace, "videoqueues", make_queue("media", concurrency=3, state="Paused"))
        bodies = jobs_for_the_run()
        for body in bodies:
            create(custom, namespace, "videojobs", body)
        poll(
            lambda: (
                prometheus.value(f'sum(videoqueue_jobs{{{ns}, phase="Pending"}})') == len(bodies)
            ),
            timeout=60,
            what="prometheus to see every job pending in the paused queue",
        )
        poll(
            lambda: prometheus.value(f"count(videoqueue_jobs_finished_total{{{ns}}})") == 4 * 3,
            timeout=30,
            what="the per-job series of 3 types x 4 outcomes, at zero",
        )
        assert prometheus.value(f'videoqueue_queue_state{{{ns}, state="Paused"}}') == 1

        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "videoqueues", "media", {"spec": {"state": "Active"}}
        )

        def all_done() -> bool:
            listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "videojobs")
            done = [j for j in listed["items"] if is_true(j, "Complete") or is_true(j, "Failed")]
            return len(done) == len(bodies)

        poll(all_done, timeout=120, what="every job to complete or fail", interval=0.5)
        poll(
            lambda: prometheus.value(f"sum(videoqueue_jobs_finished_total{{{ns}}})") == len(bodies),
            timeout=30,
            what="prometheus to scrape every finished job",
        )

        # What the hooks counted, as Prometheus stored it.
        def by(label: str, expr: str) -> dict[str, float]:
            return {
                s["metric"][label]: float(s["value"][1])
                for s in prometheus.query(f"sum by ({label}) ({expr})")
                if float(s["value"][1])
            }

        assert by("outcome", f"videoqueue_jobs_finished_total{{{ns}}}") == {
            "Succeeded": 6,
            "Failed": 2,
        }
        assert by("reason", f"videoqueue_job_retries_total{{{ns}}}") == {"OOMKilled": 1}
        assert by("reason", f"videoqueue_attempts_total{{{ns}}}") == {
            "Completed": 6,
            "Error": 2,
            "OOMKilled": 1,
        }
        assert prometheus.value(f"sum(videoqueue_jobs_admitted_total{{{ns}}})") == 9
        assert prometheus.value(f"sum(videoqueue_job_run_seconds_count{{{ns}}})") == 8
        assert by("phase", f"videoqueue_jobs{{{ns}}}") == {"Succeeded": 6, "Failed": 2}

        # Every panel of the dashboard, as Grafana would query it.
        empty: list[str] = []
        for panel in panels():
            for target_ in panel["targets"]:
                expr = substitute(target_["expr"], namespace)
                values = [float(s["value"][1]) for s in prometheus.query(expr)]
                if not any(math.isfinite(v) for v in values):
                    empty.append(f"{panel['title']!r}: {expr} -> {values}")
        assert empty == [], "panels without data:\n" + "\n".join(empty)

        # The alert rules load and evaluate without errors against these series, and the
        # failure rate (2 of 8 jobs) is noticed: pending for its 10 minutes.
        def rules_evaluated() -> list[dict[str, Any]] | None:
            rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
            evaluated = all(not r["lastEvaluation"].startswith("0001") for r in rules)
            return rules if rules and evaluated else None

        rules = poll(rules_evaluated, timeout=30, what="prometheus to evaluate the alert rules")
        assert {r["name"]: r["health"] for r in rules} == {
            "VideoQueueBacklogHigh": "ok",
            "VideoQueueFailureRateHigh": "ok",
            "VideoQueuePausedTooLong": "ok",
            "VideoQueueNoJobFinished": "ok",
            "VideoQueueHealthCritical": "ok",
            "VideoQueueOperatorDown": "ok",
        }
        poll(
            lambda: prometheus.query(
                f'ALERTS{{alertname="VideoQueueFailureRateHigh", {ns}, queue="media"}}'
            ),
            timeout=30,
            what="the failure-rate alert to be pending for the queue",
        )
        assert prometheus.query('ALERTS{alertname="VideoQueueOperatorDown"}') == []
