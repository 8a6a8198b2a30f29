"""The BPJS sync worker (faust, real process) with real Kafka, PostgreSQL and the simulator."""

import asyncio
import json

import asyncpg
import pytest

from tests.fixtures.api import read_events
from tests.fixtures.infra import wait_until

pytestmark = pytest.mark.e2e


async def sync_state(dsn: str, queue_id: int) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        job = await conn.fetchrow("select * from bpjs_sync_job where queue_id = $1", queue_id)
        ticket = await conn.fetchval("select bpjs_sync from queue_ticket where id = $1", queue_id)
    finally:
        await conn.close()
    return {"job": dict(job) if job else None, "ticket": ticket}


async def cancel_bpjs(api, sim, booking: str, *, seed: bool = True, **body) -> dict:
    if seed:
        sim.seed_booking(booking)
    t = await api.register(payer="BPJS", bpjs={"booking_code": booking}, name=booking)
    r = await api.cancel(t["id"], json=body or {"reason_code": "no_show"})
    assert r.status_code == 200, r.text
    return t


def topics(api):
    prefix = api.topic.removesuffix("queue-cancelled")
    return f"{prefix}bpjs-synced", f"{prefix}bpjs-sync-failed"


async def test_bpjs_cancel_is_synced_with_the_reason_then_task_99(api, sim, start_worker, database, infra):
    start_worker()
    t = await cancel_bpjs(api, sim, "2024/01/31/000123", reason_code="data_error",
                          reason_text="NIK salah ketik")
    synced_topic, failed_topic = topics(api)
    [(key, event)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    data = event.payload()
    assert key == str(t["id"]).encode() and data.queue_id == t["id"]
    assert data.attempts == 1 and data.recovered is False and data.bpjs_code == 200
    calls = [r for r in sim.requests_log() if r["path"].endswith(("antrean/batal", "antrean/updatewaktu"))]
    assert [c["path"].rsplit("/", 1)[-1] for c in calls] == ["batal", "updatewaktu"]
    assert json.loads(calls[0]["body"]) == {"kodebooking": "2024/01/31/000123",
                                            "keterangan": "NIK salah ketik"}
    assert json.loads(calls[1]["body"])["taskid"] == 99
    assert sim.applied_cancellations("antreanrs", "2024/01/31/000123") == 1
    state = await sync_state(database, t["id"])
    assert state["ticket"] == "synced" and state["job"]["task99_done"]
    assert await read_events(infra.kafka, failed_topic, expect=0, timeout=1, grace=0) == []


async def test_umum_ticket_gets_no_bpjs_call_and_no_result_event(api, sim, start_worker, database, infra):
    start_worker()
    umum = await api.register(payer="UMUM", name="umum")
    assert (await api.cancel(umum["id"])).status_code == 200
    marker = await cancel_bpjs(api, sim, "MARK-1")  # processed after the UMUM one (same flow)
    synced_topic, _ = topics(api)
    events = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    assert [e.payload().queue_id for _, e in events] == [marker["id"]]
    assert all("MARK-1" in str(r["body"]) for r in sim.requests_log() if "antrean/" in r["path"])
    assert (await sync_state(database, umum["id"])) == {"job": None, "ticket": None}


async def test_two_502s_then_success_is_synced_on_the_third_attempt(api, sim, start_worker, infra):
    sim.set_fault("antreanrs:batal", "http_502", times=2)
    start_worker()
    t = await cancel_bpjs(api, sim, "BK-502")
    synced_topic, failed_topic = topics(api)
    [(_, event)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    assert event.payload().attempts == 3 and event.payload().queue_id == t["id"]
    assert event.payload().recovered is False
    assert await read_events(infra.kafka, failed_topic, expect=0, timeout=1, grace=0) == []


async def test_bpjs_down_past_the_first_phase_warns_then_recovers(api, sim, start_worker, database, infra):
    sim.set_fault("antreanrs:batal", "http_504")
    start_worker()
    loop = asyncio.get_running_loop()
    started = loop.time()
    t = await cancel_bpjs(api, sim, "BK-DOWN")
    synced_topic, failed_topic = topics(api)
    [(_, warning)] = await read_events(infra.kafka, failed_topic, expect=1, timeout=30)
    waited = loop.time() - started
    w = warning.payload()
    assert (w.error_kind, w.will_retry, w.queue_id) == ("unreachable", True, t["id"])
    assert waited < 4 + 6  # first phase (4 s here) plus slack for process scheduling
    assert (await sync_state(database, t["id"]))["ticket"] == "failed"
    sim.clear_faults()
    [(_, ok)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=30)
    assert ok.payload().recovered is True
    await wait_until(lambda: _ticket_is(database, t["id"], "synced"), what="ticket synced")
    assert sim.applied_cancellations("antreanrs", "BK-DOWN") == 1


async def _ticket_is(dsn, queue_id, status):
    return (await sync_state(dsn, queue_id))["ticket"] == status


async def test_refusal_fails_at_once_and_is_never_retried(api, sim, start_worker, database, infra):
    sim.seed_booking("BK-SERVED", served=True)
    start_worker()
    t = await cancel_bpjs(api, sim, "BK-SERVED", seed=False)
    _, failed_topic = topics(api)
    [(_, event)] = await read_events(infra.kafka, failed_topic, expect=1, timeout=60)
    f = event.payload()
    assert (f.error_kind, f.will_retry, f.bpjs_code, f.attempts) == ("rejected", False, 201, 1)
    state = await sync_state(database, t["id"])
    assert state["ticket"] == "failed" and state["job"]["will_retry"] is False
    batal_calls = lambda: [r for r in sim.requests_log() if r["path"].endswith("antrean/batal")]  # noqa: E731
    assert len(batal_calls()) == 1
    await asyncio.sleep(2.5)  # several retry intervals of this test's settings: still no call
    assert len(batal_calls()) == 1
