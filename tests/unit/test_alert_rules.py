"""ops/prometheus/alerts.yml: promtool checks it and runs its unit tests (alerts.test.yml); every
alert is labelled, annotated, tested both ways and has its section in docs/RUNBOOK.md."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures.promql import metric_names, template_variables_removed

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "ops" / "prometheus" / "alerts.test.yml"
RUNBOOK = REPO / "docs" / "RUNBOOK.md"


def promtool() -> str:
    """promtool from Debian's prometheus package (`bash infra/prometheus.sh ensure`); missing,
    the test is skipped, except in CI where that is a failure."""
    path = shutil.which("promtool")
    if path is None:
        message = "promtool missing: run `bash infra/prometheus.sh ensure`"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_names() -> set[str]:
    return {rule["alert"] for rule in rules()}


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_promtool_checks_the_rules():
    run = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(rules())} rules found" in run.stdout


def test_promtool_unit_tests_of_the_rules_pass():
    run = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULE_TESTS.parent,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_the_issue_s_alerts_are_all_there():
    assert {
        "OutboxLagging",
        "OutboxQuarantinedRows",
        "KafkaConsumerLagging",
        "NotifierConsumerLagging",
        "BpjsSyncLagging",
        "BpjsSyncFailedJobs",
        "BpjsUnconfirmedCancellations",
        "BpjsBreakerOpen",
        "BpjsDeadLetters",
        "BpjsSyncStalled",
        "ApiServerErrors",
        "ApiUnavailable",
        "ServiceNotReady",
        "NotifierSlowClients",
        "NotifierConnectionsRefused",
    } <= alert_names()


@pytest.mark.parametrize("rule", rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_each_rule_has_a_severity_a_reason_and_its_runbook_section(rule):
    assert rule["labels"]["severity"] in {"page", "ticket"}
    notes = rule["annotations"]
    assert set(notes) == {"summary", "description", "runbook_url"}
    assert len(notes["description"]) > 80, "the description says why the threshold and `for`"
    assert notes["runbook_url"] == f"docs/RUNBOOK.md#{rule['alert'].lower()}"
    assert rule["alert"].lower() in anchors(RUNBOOK.read_text())


def test_every_alert_is_tested_firing_and_not_firing():
    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    fires, quiet = set(), set()
    for group in doc["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case["exp_alerts"] else quiet).add(case["alertname"])
    assert fires == alert_names()
    assert quiet == alert_names()
    severities = {
        (a["exp_labels"]["severity"], case["alertname"])
        for group in doc["tests"]
        for case in group.get("alert_rule_test", [])
        for a in case["exp_alerts"]
    }
    assert severities == {(r["labels"]["severity"], r["alert"]) for r in rules()}


def test_every_runbook_section_belongs_to_an_alert():
    sections = re.findall(r"^## (\w+)\s*$", RUNBOOK.read_text(), re.MULTILINE)
    assert set(sections) == alert_names()


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", set()),
        ("service_ready == 0", {"service_ready"}),
        (
            'sum by (job) (rate(http_request_duration_seconds_count{status=~"5..", '
            'route!~"/(healthz|readyz)"}[5m])) / sum by (job) '
            "(rate(http_request_duration_seconds_count[5m])) > 0.05",
            {"http_request_duration_seconds_count"},
        ),
        (
            "histogram_quantile(0.95, sum by (le, route) "
            "(rate(http_request_duration_seconds_bucket[5m])))",
            {"http_request_duration_seconds_bucket"},
        ),
        (
            "max(bpjs_sync_jobs_due) > 0 and on () (sum(increase("
            "bpjs_sync_attempts_total[10m])) or on () vector(0)) == 0",
            {"bpjs_sync_jobs_due", "bpjs_sync_attempts_total"},
        ),
        (
            "sum(rate(x_total[1h:5m] offset 1h)) without (instance) > bool 1e3",
            {"x_total"},
        ),
        (
            'label_replace(outbox_unpublished_rows, "svc", "$1", "job", "(.*)")',
            {"outbox_unpublished_rows"},
        ),
        (
            "time() - bpjs_breaker_state_since_timestamp_seconds",
            {"bpjs_breaker_state_since_timestamp_seconds"},
        ),
        (
            "count by (clinic_id) (bpjs_unconfirmed_cancellations > 0) or on() vector(0)",
            {"bpjs_unconfirmed_cancellations"},
        ),
    ],
)
def test_metric_names_of_an_expression(expr, names):
    assert metric_names(expr) == names


def test_grafana_variables_do_not_look_like_metrics():
    expr = 'sum(rate(queue_cancel_requests_total{job=~"$job"}[$__rate_interval])) by ($by)'
    assert metric_names(template_variables_removed(expr)) == {"queue_cancel_requests_total"}
