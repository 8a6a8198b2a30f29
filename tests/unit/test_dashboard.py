"""The Grafana dashboard of ops/grafana queries only series and labels the services export."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser as promql
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "ops" / "grafana" / "dashboards"
DASHBOARD = DASHBOARDS / "antrean.json"
SOURCES = (ROOT / "services", ROOT / "shared")

# Series Prometheus itself writes for every scrape target.
SCRAPE_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}
# Labels Prometheus adds at scrape time, and the one prometheus_client adds to gauges when the
# API runs several worker processes (multiprocess mode).
TARGET_LABELS = frozenset({"job", "instance", "pid"})
# What Grafana puts in place of its variables when it sends a query ("All" clinics).
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
    "${clinic_id}": ".*",
    "$clinic_id": ".*",
}
PROMETHEUS_TYPES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
# The services' own collectors, as the prometheus_client type they expose; their label is the
# third argument (services/notifier/metrics.py).
OWN_TYPES = {"CountsByLabel": "Counter"}


def exposed_series(kind: str, name: str, labels: frozenset[str]) -> dict[str, frozenset[str]]:
    """The series names prometheus_client writes for one metric, with their labels."""
    if kind == "Counter":
        base = name.removesuffix("_total")
        return {f"{base}_total": labels, f"{base}_created": labels}
    if kind == "Histogram":
        return {
            f"{name}_bucket": labels | {"le"},
            f"{name}_count": labels,
            f"{name}_sum": labels,
            f"{name}_created": labels,
        }
    if kind == "Summary":
        return {name: labels | {"quantile"}, f"{name}_count": labels, f"{name}_sum": labels}
    if kind == "Info":
        return {f"{name}_info": labels}
    if kind == "Enum":
        return {name: labels | {name}}
    return {name: labels}


def _strings(node: ast.expr | None) -> frozenset[str]:
    if isinstance(node, ast.List | ast.Tuple):
        return frozenset(e.value for e in node.elts if isinstance(e, ast.Constant))
    return frozenset()


def metrics_in_source(*folders: Path) -> dict[str, frozenset[str]]:
    """Every series the code defines (prometheus_client constructors with a literal name)."""
    found: dict[str, frozenset[str]] = {}
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            imported = {
                alias.asname or alias.name
                for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module == "prometheus_client"
                for alias in node.names
                if alias.name in PROMETHEUS_TYPES
            }
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                    continue
                kind = node.func.id
                if kind not in imported | OWN_TYPES.keys() or not node.args:
                    continue
                name = node.args[0]
                if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                    continue
                keywords = {k.arg: k.value for k in node.keywords}
                label_arg = node.args[2] if len(node.args) > 2 else keywords.get("labelnames")
                if kind in OWN_TYPES:
                    kind, label_arg = OWN_TYPES[kind], ast.List([label_arg])
                found.update(exposed_series(kind, name.value, _strings(label_arg)))
    return found


KNOWN_SERIES = {**SCRAPE_SERIES, **metrics_in_source(*SOURCES)}


def as_sent(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    assert "$" not in query, f"a Grafana variable the dashboard does not define: {query}"
    return query


def selectors_and_groupings(expr: Any) -> tuple[list[Any], list[tuple[Any, list[str]]]]:
    """The vector selectors of a parsed query, and each aggregation with its `by` labels."""
    selectors: list[Any] = []
    groupings: list[tuple[Any, list[str]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector):
            selectors.append(node)
        elif isinstance(node, promql.AggregateExpr) and node.modifier is not None:
            if node.modifier.type == promql.AggModifierType.By:
                groupings.append((node.expr, list(node.modifier.labels)))

    promql.walk(expr, visit)
    return selectors, groupings


def series_names(selector: Any) -> list[str]:
    if selector.name:
        return [selector.name]
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__":
            return matcher.value.split("|")
    return []


def problems_of(query: str, known: dict[str, frozenset[str]]) -> list[str]:
    """Why a query would show nothing: a syntax error, an unknown series or label."""
    try:
        expr = promql.parse(as_sent(query))
    except ValueError as exc:
        return [f"does not parse: {exc}"]
    problems: list[str] = []
    selectors, groupings = selectors_and_groupings(expr)

    def labels_of(selector: Any) -> frozenset[str]:
        return TARGET_LABELS.union(*(known.get(n, frozenset()) for n in series_names(selector)))

    for selector in selectors:
        names = series_names(selector)
        problems += [f"no selector names a series: {selector}"] if not names else []
        problems += [f"unknown series {n}" for n in names if n not in known]
        labels = labels_of(selector) | {"__name__"}
        problems += [
            f"{selector}: {m.name} is not a label of it"
            for m in selector.matchers.matchers
            if m.name not in labels
        ]
    for inner, by in groupings:
        inner_selectors, _ = selectors_and_groupings(inner)
        labels = frozenset[str]().union(*(labels_of(s) for s in inner_selectors))
        problems += [
            f"by ({label}): no series below it has it" for label in by if label not in labels
        ]
    return problems


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))  # a collapsed row holds its panels


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard["panels"]) if p.get("type") != "row"]


def test_the_metric_scan_finds_what_prometheus_client_exports():
    known = metrics_in_source(*SOURCES)
    assert known["queue_cancel_requests_total"] == {"outcome"}
    assert known["http_request_duration_seconds_bucket"] == {"method", "route", "status", "le"}
    assert known["notifier_sessions_closed_total"] == {"reason"}  # Counter adds _total
    assert known["notifier_messages_sent_total"] == {"type"}  # the notifier's own collector
    assert "notifier_sessions_closed" not in known
    assert known["bpjs_unconfirmed_cancellations"] == {"clinic_id"}
    assert known["outbox_unpublished_rows"] == frozenset()


def test_the_query_check_finds_unknown_series_labels_functions_and_broken_syntax():
    def check(query: str) -> list[str]:
        return problems_of(query, KNOWN_SERIES)

    assert not check('sum by (outcome) (rate(queue_cancel_requests_total{job="x"}[5m]))')
    assert check("rate(notifier_sessions_closed[5m])") == [
        "unknown series notifier_sessions_closed"
    ]
    assert check("sum by (clinic_id) (outbox_unpublished_rows)") == [
        "by (clinic_id): no series below it has it"
    ]
    assert "is not a label" in check('queue_cancel_requests_total{result="ok"}')[0]
    assert "does not parse" in check("sum(rate(queue_cancel_requests_total[5m])")[0]
    assert "does not parse" in check("rated(queue_cancel_requests_total[5m])")[0]
    assert "does not parse" in check("rate(queue_cancel_requests_total)")[0]


def test_the_dashboard_is_a_grafana_10_or_11_dashboard_with_datasource_and_clinic_variables(
    dashboard,
):
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    clinic = variables["clinic_id"]
    assert clinic["type"] == "query" and clinic["includeAll"] and clinic["multi"]
    assert clinic["datasource"]["uid"] == "${datasource}"
    selector = re.fullmatch(r"label_values\((.+),\s*clinic_id\)", clinic["definition"])
    assert selector, clinic["definition"]
    assert not problems_of(selector.group(1), KNOWN_SERIES)


def test_every_panel_queries_the_datasource_variable_with_a_query(panels):
    assert panels
    for panel in panels:
        title = panel.get("title")
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel.get("targets"), title
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), title
            assert target.get("refId"), title
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], title


def test_every_query_parses_and_names_only_series_and_labels_the_services_export(dashboard, panels):
    problems = {
        f"{panel['title']} [{target['refId']}]": found
        for panel in panels
        for target in panel["targets"]
        if (found := problems_of(target["expr"], KNOWN_SERIES))
    }
    assert not problems, problems


def test_per_clinic_panels_follow_the_clinic_variable(panels):
    per_clinic = [
        target["expr"]
        for panel in panels
        for target in panel["targets"]
        if "clinic_id" in target["expr"]
    ]
    assert len(per_clinic) >= 3
    for expr in per_clinic:
        assert 'clinic_id=~"$clinic_id"' in expr, expr


def test_the_dashboard_shows_the_whole_flow(panels):
    queried = " ".join(t["expr"] for p in panels for t in p["targets"])
    for series in (
        "queue_cancel_requests_total",
        "http_request_duration_seconds_bucket",
        "outbox_oldest_unpublished_age_seconds",
        "outbox_unpublished_rows",
        "outbox_quarantined_rows",
        "kafka_consumer_lag",
        "notifier_consumer_lag",
        "bpjs_calls_total",
        "bpjs_call_duration_seconds_bucket",
        "bpjs_sync_jobs_pending",
        "bpjs_sync_jobs_due",
        "bpjs_sync_failed_jobs",
        "bpjs_unconfirmed_cancellations",
        "bpjs_sync_oldest_unsynced_age_seconds",
        "bpjs_breaker_state",
        "notifier_sessions",
        "notifier_messages_sent_total",
        "notifier_sessions_closed_total",
        "service_ready",
    ):
        assert re.search(rf"\b{series}\b", queried), series


def test_panel_ids_are_unique_and_no_two_panels_overlap(dashboard):
    every = list(all_panels(dashboard["panels"]))
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), ids
    cells: dict[tuple[int, int], str] = {}
    for panel in every:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']} overlaps {other}"


def test_the_overlap_check_sees_overlapping_panels():
    overlapping = {
        "panels": [
            {"id": 1, "title": "a", "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8}},
            {"id": 2, "title": "b", "gridPos": {"x": 6, "y": 4, "w": 12, "h": 8}},
        ]
    }
    with pytest.raises(AssertionError, match="overlaps"):
        test_panel_ids_are_unique_and_no_two_panels_overlap(overlapping)


def grafana_mounts() -> dict[str, Path]:
    """Container path -> repository path, of the grafana service's bind mounts."""
    grafana = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target, *_ = str(volume).split(":")
        if source.startswith("./"):
            mounts[target] = ROOT / source
    return mounts


def in_repo(container_path: str) -> Path:
    for target, source in grafana_mounts().items():
        if container_path == target or container_path.startswith(target + "/"):
            return source / container_path.removeprefix(target).lstrip("/")
    raise AssertionError(f"{container_path} is not mounted into grafana")


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboards_folder():
    provisioning = in_repo("/etc/grafana/provisioning")
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["access"] == "proxy" and source["isDefault"]
    providers = yaml.safe_load((provisioning / "dashboards" / "antrean.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    folder = in_repo(provider["options"]["path"])
    assert folder.resolve() == DASHBOARDS.resolve()
    assert DASHBOARD in folder.glob("*.json")
