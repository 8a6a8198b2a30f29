"""The admin's status endpoint and the worker's metrics agree, with the worker as a process and
BPJS failing (HTTP 500) until its breaker opens, then recovering."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.bpjs_sync_worker.health import GAUGE_INTERVAL_S
from tests.e2e.test_bpjs_sync_worker import cancel_bpjs
from tests.fixtures.api import auth, token
from tests.fixtures.infra import wait_until

pytestmark = pytest.mark.e2e
ADMIN = auth(token(perms=["manage bpjs sync"], user="u-adm", name="Admin"))


def scrape(worker) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"http://127.0.0.1:{worker.env['WORKER_PORT']}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


A = (("clinic_id", "KLINIK-A"),)


async def status(api) -> dict:
    r = await api.client.get("/bpjs_sync/status", headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


async def test_breaker_opened_by_bpjs_errors_shows_on_the_status_endpoint_as_in_the_metrics(
    api, sim, start_worker
):
    sim.set_fault("*", "http_500")
    worker = start_worker(SYNC_FIRST_PHASE_S="2", BREAKER_THRESHOLD="3")
    made = [await cancel_bpjs(api, sim, f"BK-STATUS-{i}") for i in range(3)]

    async def opened() -> dict | None:
        s = await status(api)
        return s if s["bpjs"] == "breaker_open" else None

    s = await wait_until(opened, 60, interval=0.5, what="the status endpoint says breaker_open")
    since = datetime.fromisoformat(s["since"].replace("Z", "+00:00")).timestamp()
    assert s["workers"] == 1 and s["oldest_unsynced"]["queue_id"] == made[0]["id"]
    # Half-open probes fail and reopen it (cooldown 0.5 to 1 s here): still the same open period.
    metric = scrape(worker)[("bpjs_breaker_state_since_timestamp_seconds", ())]
    assert metric == pytest.approx(since, abs=0.001)

    async def warned_everywhere() -> bool:
        s, m = await status(api), scrape(worker)
        return s["counts"]["failed"] == 3 == m.get(("bpjs_sync_failed_jobs", A))

    await wait_until(warned_everywhere, 60, interval=0.5, what="3 failed jobs in both")

    async def same_oldest_age() -> bool:
        m = scrape(worker)  # computed at the worker's last sweep, at most one interval ago
        age = (await status(api))["oldest_unsynced"]["age_seconds"]
        metric_age = m[("bpjs_sync_oldest_unsynced_age_seconds", A)]
        return 0 < metric_age <= age + 0.5 and age - metric_age <= GAUGE_INTERVAL_S + 1

    await wait_until(same_oldest_age, 30, interval=0.5, what="the same oldest age in both")
    s = await status(api)
    assert s["bpjs"] == "breaker_open"
    assert datetime.fromisoformat(s["since"].replace("Z", "+00:00")).timestamp() == since
    assert scrape(worker)[("bpjs_breaker_state_since_timestamp_seconds", ())] == metric

    sim.clear_faults()  # BPJS is back: the next probe closes the breaker, the jobs sync

    async def caught_up() -> bool:
        s, m = await status(api), scrape(worker)
        return (
            s["bpjs"] == "reachable"
            and s["oldest_unsynced"] is None
            and s["counts"]["failed"] == 0
            and m.get(("bpjs_sync_failed_jobs", A)) == 0
            and m.get(("bpjs_sync_oldest_unsynced_age_seconds", A)) == 0
        )

    await wait_until(caught_up, 60, interval=0.5, what="status and metrics back to nothing held")
    closed = scrape(worker)[("bpjs_breaker_state_since_timestamp_seconds", ())]
    assert closed > metric and (await status(api))["since"] is None
