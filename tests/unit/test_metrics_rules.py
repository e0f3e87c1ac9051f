"""The shipped alert rules and Grafana dashboard: promtool accepts the rules and their unit
tests pass (tests/observability/), every alert can be acted on, and the dashboard has its
variables and asks only for metrics the operator serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from videoqueue.controller.metrics import REGISTRY

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts/videoqueue-operator/files/prometheus-rules.yaml"
DASHBOARD = REPO / "charts/videoqueue-operator/files/grafana-dashboard.json"
RULE_TESTS = sorted((REPO / "tests/observability").glob("*.yaml"))
ALERTS = {
    "VideoQueueBacklogHigh",
    "VideoQueueFailureRateHigh",
    "VideoQueuePausedTooLong",
    "VideoQueueNoJobFinished",
    "VideoQueueHealthCritical",
    "VideoQueueOperatorDown",
}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, (
        "promtool is missing: it comes with Debian's prometheus package "
        "(hack/install-system-packages.sh, `make system-packages`)"
    )
    return found


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_checks_the_rules() -> None:
    result = run(promtool(), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool tests in tests/observability"
    result = run(promtool(), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_tests_cover_firing_and_silence_of_backlog_and_failure_rate() -> None:
    cases: dict[str, list[bool]] = {}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
    for alert in ("VideoQueueBacklogHigh", "VideoQueueFailureRateHigh"):
        assert True in cases.get(alert, []), f"no test shows {alert} firing"
        assert False in cases.get(alert, []), f"no test shows {alert} silent"
    assert set(cases) == ALERTS, "every alert has a test"


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_alert_can_be_acted_on(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in ("warning", "critical")
    annotations = rule["annotations"]
    assert len(annotations["summary"]) <= 140, "a summary fits a notification"
    description = annotations["description"]
    assert len(description) >= 200, "the description says what it means and what to do"
    assert "kubectl" in description, "the description says how to look"
    assert "for" in rule, "a moment's blip never pages"


def served_names() -> set[str]:
    """Every sample name /metrics can serve (counters' _total, histograms' _bucket...)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "info": ("_info",),
        }
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    # Families read from the index only appear while a replica acts.
    names.update(
        {
            "videoqueue_jobs",
            "videoqueue_queue_state",
            "videoqueue_queue_health",
            "videoqueue_queue_memory_reserved_bytes",
            "videoqueue_queue_memory_budget_bytes",
            "videoqueue_queue_concurrency",
            "videoqueue_api_requests_total",
            "videoqueue_api_errors_total",
        }
    )
    return names


def used_names(expr: str) -> set[str]:
    return set(re.findall(r"\bvideoqueue_[a-z_]+", expr))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        found += [panel, *panel.get("panels", [])]
    return [p for p in found if p["type"] != "row"]


def test_rules_and_dashboard_use_only_served_metrics() -> None:
    served = served_names()
    exprs = [r["expr"] for r in rules()]
    exprs += [t["expr"] for p in panels() for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard()["templating"]["list"] if "definition" in v]
    unknown = {name for expr in exprs for name in used_names(expr)} - served
    assert unknown == set()


def test_dashboard_has_datasource_namespace_and_queue_variables() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "queue"):
        assert variables[name]["type"] == "query"
        assert variables[name]["includeAll"]
        assert variables[name]["multi"]
        assert variables[name]["datasource"]["uid"] == "${datasource}"


def test_every_panel_queries_the_chosen_datasource_and_queues() -> None:
    titles = [p["title"] for p in panels()]
    assert len(titles) == len(set(titles)), "panel titles are unique"
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            queue_metric = any(
                n.startswith(("videoqueue_jobs", "videoqueue_queue", "videoqueue_admission"))
                or n.startswith(("videoqueue_job_", "videoqueue_attempts", "videoqueue_pre"))
                for n in used_names(target["expr"])
            )
            if queue_metric:
                assert 'queue=~"$queue"' in target["expr"], panel["title"]
                assert 'namespace=~"$namespace"' in target["expr"], panel["title"]


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    text = " ".join(p["title"].lower() for p in panels())
    for topic in (
        "backlog",
        "running",
        "throughput",
        "success rate",
        "wait",
        "run time p95 by type",
        "memory",
        "retries",
        "oom",
        "health",
        "operator",
    ):
        assert topic in text, f"no panel about {topic}"
