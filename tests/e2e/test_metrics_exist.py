"""Every metric the alert rules and the Grafana dashboards read is exported by a running service:
the API, the worker and the notifier as processes, one BPJS cancel driven end to end.

A name counts as exported when a service declares its metric family (a labelled counter with no
event yet, such as resyncs, has no series but is declared); the names the alert rules use must
also have series after the drive below."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import websockets
import yaml
from websockets.exceptions import ConnectionClosed

from tests.e2e.test_bpjs_sync_worker import sync_state
from tests.fixtures.api import api_env, auth, notifier_env, token
from tests.fixtures.infra import free_port, wait_until
from tests.fixtures.promql import (
    declared_names,
    metric_names,
    scraped_names,
    template_variables_removed,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "ops" / "prometheus" / "alerts.yml"
DASHBOARDS = REPO / "ops" / "grafana" / "dashboards"


def _panels(panels: list[dict]) -> list[dict]:
    """Every panel, also those inside a (collapsed) row."""
    found = []
    for panel in panels:
        found.append(panel)
        found += _panels(panel.get("panels") or [])
    return found


def used_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used (an alert, or a dashboard's panel)."""
    used: dict[str, set[str]] = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for name in metric_names(rule["expr"]):
                used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for path in sorted(DASHBOARDS.glob("*.json")) if DASHBOARDS.is_dir() else []:
        doc = json.loads(path.read_text())
        for panel in _panels(doc.get("panels") or []):
            for target in panel.get("targets") or []:
                expr = target.get("expr")
                for name in metric_names(template_variables_removed(expr)) if expr else ():
                    used.setdefault(name, set()).add(f"{path.name}: {panel.get('title')!r}")
    return used


def test_the_rules_use_metrics_of_each_part():
    used = used_metrics()
    for name in ("outbox_oldest_unpublished_age_seconds", "notifier_sessions_closed_total"):
        assert name in used
    assert "http_request_duration_seconds_count" in used and "up" not in used


async def test_every_metric_of_the_alerts_and_dashboards_is_exported(
    spawn, database, infra, topic_prefix, sim, start_worker
):
    notifier_port, notifier_ops = free_port(), free_port()
    notifier = spawn(
        "services.notifier",
        notifier_env(
            infra.kafka_for("notifier"), topic_prefix, notifier_port, OPS_PORT=str(notifier_ops)
        ),
        f"http://127.0.0.1:{notifier_port}/readyz",
    )
    api_port, api_ops = free_port(), free_port()
    spawn(
        "services.cancel_api",
        api_env(
            database,
            infra.kafka_for("api"),
            topic_prefix,
            CANCEL_API_PORT=str(api_port),
            OPS_PORT=str(api_ops),
        ),
        f"http://127.0.0.1:{api_port}/healthz",
    )
    worker = start_worker()
    scrapes = {
        "cancel-api": f"http://127.0.0.1:{api_ops}/metrics",
        "bpjs-sync-worker": f"http://127.0.0.1:{worker.env['WORKER_PORT']}/metrics",
        "notifier": f"http://127.0.0.1:{notifier_ops}/metrics",
    }
    assert notifier.proc is not None

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=20) as api:

        async def cancel(booking: str) -> int:
            sim.seed_booking(booking)
            body = {
                "room_id": "POLI-UMUM",
                "patient": {"mrn": f"RM-{booking}", "name": booking},
                "payer": "BPJS",
                "bpjs": {"booking_code": booking},
            }
            r = await api.post("/antrian_ruangan", json=body, headers=auth(token()))
            assert r.status_code == 201, r.text
            queue_id = r.json()["id"]
            r = await api.post(
                f"/antrian_ruangan/batal/{queue_id}",
                json={"reason_code": "no_show"},
                headers=auth(token()),
            )
            assert r.status_code == 200, r.text
            return queue_id

        # One cancellation synced and confirmed: the calls, attempts and results series.
        synced = await cancel("BK-METRICS-OK")

        async def is_synced() -> bool:
            return (await sync_state(database, synced))["ticket"] == "synced"

        await wait_until(is_synced, timeout=90, what="the cancellation synced")
        # One BPJS does not record: the per-clinic unconfirmed gauge.
        sim.set_fault("antreanrs:updatewaktu", "not_recorded")
        unrecorded = await cancel("BK-METRICS-NOT-RECORDED")

        async def not_recorded() -> bool:
            job = (await sync_state(database, unrecorded))["job"]
            return job is not None and job["last_error_kind"] == "not_recorded"

        await wait_until(not_recorded, timeout=90, what="a not_recorded attempt")

    # A session the notifier closes: the close-code counter.
    async with websockets.connect(f"ws://127.0.0.1:{notifier_port}/ws") as ws:
        await ws.send(json.dumps({"type": "auth", "token": "not-a-token"}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    used = used_metrics()
    by_rules = {
        name for name, places in used.items() if any(p.startswith("alert ") for p in places)
    }
    series: dict[str, set[str]] = {}  # per service: the sample names of its scrape
    declared: dict[str, set[str]] = {}  # and every name its metric families can have
    ready = {service: f'service_ready{{service="{service}"}} 1.0' for service in scrapes}
    is_ready: dict[str, bool] = {}

    def lacking() -> tuple[set[str], set[str]]:
        """Names no service declares; names of the rules with no series in any scrape."""
        undeclared = set(used) - set().union(*declared.values())
        no_series = by_rules - set().union(*series.values())
        return undeclared, no_series

    errors: dict[str, str] = {}

    async def everything_exported() -> bool:
        async with httpx.AsyncClient(timeout=10) as client:
            for service, url in scrapes.items():
                try:
                    page = (await client.get(url)).text
                except httpx.HTTPError as exc:  # reported below if it lasts
                    errors[service] = repr(exc)
                    page = ""
                else:
                    errors.pop(service, None)
                series[service], declared[service] = scraped_names(page), declared_names(page)
                is_ready[service] = ready[service] in page
        return lacking() == (set(), set()) and all(is_ready.values())

    # Gauges refreshed every 15 s (unconfirmed cancellations, consumer lag) may need a round.
    try:
        await wait_until(everything_exported, timeout=60, interval=1, what="every metric")
    except AssertionError:
        pass
    assert not errors, f"scrapes failed: {errors}"
    undeclared, no_series = lacking()
    missing = {name: sorted(used[name]) for name in undeclared | no_series}
    assert not missing, f"used but exported by no service: {missing}"
    assert "kafka_consumer_lag" in series["bpjs-sync-worker"]
    for service in scrapes:  # each service's garbage-collector pauses, for the dashboard
        assert "python_gc_pause_seconds_count" in series[service], service
    for service, line in ready.items():
        assert is_ready[service], f"{service}: no {line!r} in its scrape"
