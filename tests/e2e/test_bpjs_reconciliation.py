"""The daily reconciliation against BPJS's own record: worker process, real Kafka, PostgreSQL and
the simulator; the report read through the API."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from tests.e2e.test_bpjs_sync_worker import cancel_bpjs, sync_state, topics
from tests.fixtures.api import read_events, token
from tests.fixtures.infra import wait_until

pytestmark = pytest.mark.e2e
ADMIN = ["manage bpjs sync", "cancel antrean"]


def today() -> str:
    return datetime.now(UTC).astimezone(ZoneInfo("Asia/Jakarta")).date().isoformat()


async def reconciliation(dsn: str, day: str) -> dict | None:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "select * from bpjs_reconciliation where service_date = $1",
            datetime.fromisoformat(day).date(),
        )
    finally:
        await conn.close()
    return dict(row) if row else None


async def test_a_cancellation_bpjs_no_longer_shows_is_found_by_reconciliation_and_sent_again(
    api, sim, start_worker, database, infra
):
    worker = start_worker()
    kept = await cancel_bpjs(api, sim, "BK-REC-KEPT")
    lost = await cancel_bpjs(api, sim, "BK-REC-LOST")
    synced_topic, _ = topics(api)
    await read_events(infra.kafka, synced_topic, expect=2, timeout=60)
    for t in (kept, lost):
        state = await sync_state(database, t["id"])
        assert state["job"]["confirmed_at"] is not None, "synced only once task 99 was read back"
    # BPJS's record loses the cancellation of one booking (task 99 gone).
    sim.seed_booking("BK-REC-LOST", tasks={}, cancelled=True)
    admin = {"Authorization": f"Bearer {token(perms=ADMIN)}"}
    day = today()
    r = await api.client.post("/bpjs_sync/report/reconcile", params={"date": day}, headers=admin)
    assert r.status_code == 202, r.text

    async def finished():
        row = await reconciliation(database, day)
        return row is not None and row["finished_at"] is not None

    await wait_until(finished, timeout=60)
    row = await reconciliation(database, day)
    assert (row["checked"], row["not_recorded"], row["error"]) == (2, 1, None)
    # The reopened job sends task 99 again and is confirmed again.
    await wait_until(
        lambda: 99 in {int(k) for k in (sim.booking("BK-REC-LOST") or {}).get("tasks", {})},
        timeout=60,
    )

    async def confirmed_again():
        job = (await sync_state(database, lost["id"]))["job"]
        return job["status"] == "synced" and job["confirmed_at"] is not None

    await wait_until(confirmed_again, timeout=60)
    report = (await api.client.get("/bpjs_sync/report", params={"date": day}, headers=admin)).json()
    states = {i["queue_id"]: i["state"] for i in report["items"]}
    assert states == {kept["id"]: "confirmed", lost["id"]: "confirmed"}
    assert report["reconciliation"]["not_recorded"] == 1
    metrics = httpx.get(f"http://127.0.0.1:{worker.env['WORKER_PORT']}/metrics").text
    assert 'bpjs_reconciliation_reads_total{result="not_recorded"} 1.0' in metrics
    assert 'bpjs_reconciliation_reads_total{result="recorded"} 1.0' in metrics


async def test_the_unconfirmed_gauge_counts_cancellations_bpjs_does_not_show_per_clinic(
    api, sim, start_worker, database, infra
):
    worker = start_worker(SYNC_FIRST_PHASE_S="60")
    sim.set_fault("antreanrs:updatewaktu", "not_recorded")
    t = await cancel_bpjs(api, sim, "BK-REC-GAUGE")

    async def not_recorded():
        job = (await sync_state(database, t["id"]))["job"]
        return job is not None and job["last_error_kind"] == "not_recorded"

    await wait_until(not_recorded, timeout=60)
    url = f"http://127.0.0.1:{worker.env['WORKER_PORT']}/metrics"
    line = f'bpjs_unconfirmed_cancellations{{clinic_id="{t["clinic_id"]}"}} 1.0'
    await wait_until(lambda: line in httpx.get(url).text, timeout=30)
    sim.clear_faults()
    gone = f'bpjs_unconfirmed_cancellations{{clinic_id="{t["clinic_id"]}"}} 0.0'
    await wait_until(lambda: gone in httpx.get(url).text, timeout=60)


async def test_each_clinic_day_is_asked_for_reconciliation_after_it_ends_in_its_zone(
    api, sim, start_worker, database, infra
):
    # With no margin after midnight, yesterday (in the clinic's zone) is due at once.
    start_worker(SYNC_RECONCILE_AFTER_S="0")
    t = await cancel_bpjs(api, sim, "BK-REC-SCHEDULE")
    synced_topic, _ = topics(api)
    await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    zone = ZoneInfo("Asia/Jakarta")
    yesterday = (datetime.now(UTC).astimezone(zone).date() - timedelta(days=1)).isoformat()

    async def done():
        row = await reconciliation(database, yesterday)
        return row is not None and row["finished_at"] is not None

    await wait_until(done, timeout=90)
    row = await reconciliation(database, yesterday)
    assert row["clinic_id"] == t["clinic_id"] and row["requested_by"] == "schedule"
    # Nothing of yesterday to read: the cancellation of today is not part of it.
    assert (row["checked"], row["not_recorded"]) == (0, 0)
