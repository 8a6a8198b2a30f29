"""Admin endpoints over real worker outcomes; duplicates, crashes, SIGTERM and two workers."""

import json
import signal

import asyncpg
import pytest

from shared.kafka import make_producer
from tests.e2e.test_bpjs_sync_worker import cancel_bpjs, sync_state, topics
from tests.fixtures.api import auth, read_events, token
from tests.fixtures.infra import wait_until

pytestmark = pytest.mark.e2e
ADMIN = ["manage bpjs sync"]


async def test_admin_lists_retries_and_resolves_unsynced_cancellations(
    api, sim, start_worker, database, infra
):
    sim.seed_booking("BK-REFUSED", served=True)
    sim.seed_booking("BK-MANUAL", served=True)
    start_worker()
    a = await cancel_bpjs(api, sim, "BK-REFUSED", seed=False)
    b = await cancel_bpjs(api, sim, "BK-MANUAL", seed=False)
    synced_topic, failed_topic = topics(api)
    await read_events(infra.kafka, failed_topic, expect=2, timeout=60)
    admin = auth(token(perms=ADMIN, user="u-admin", name="Admin"))
    r = await api.client.get("/bpjs_sync", params={"status": "failed"}, headers=admin)
    assert r.status_code == 200
    items = {i["queue"]["id"]: i for i in r.json()["items"]}
    assert set(items) == {a["id"], b["id"]}
    s = items[a["id"]]["sync"]
    assert s["attempts"] == 1 and s["last_bpjs_code"] == 201 and s["will_retry"] is False
    assert "Dilayani" in (s["last_bpjs_message"] or "") and s["next_attempt_at"] is None
    assert items[a["id"]]["queue"]["patient"]["name"] == "BK-REFUSED"

    # BPJS fixed on their side: a retry now succeeds (also after a final failure).
    sim.seed_booking("BK-REFUSED")
    r = await api.client.post(f"/bpjs_sync/{a['id']}/retry", headers=admin)
    assert r.status_code == 202
    [(_, ok)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=30)
    assert ok.payload().queue_id == a["id"] and ok.payload().attempts == 2

    r = await api.client.post(f"/bpjs_sync/{b['id']}/resolve", headers=admin, json={"note": ""})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    r = await api.client.post(f"/bpjs_sync/{b['id']}/resolve", headers=admin)
    assert r.status_code == 422
    r = await api.client.post(
        f"/bpjs_sync/{b['id']}/resolve",
        headers=admin,
        json={"note": "Dibatalkan manual di portal BPJS"},
    )
    assert r.status_code == 200 and r.json()["queue"]["bpjs_sync"] == "resolved_manually"
    state = await sync_state(database, b["id"])
    assert state["job"]["resolved_by_id"] == "u-admin" and state["job"]["will_retry"] is False
    conn = await asyncpg.connect(database)
    audit = await conn.fetchrow(
        "select * from queue_audit where queue_id=$1 and action='bpjs_resolve'", b["id"]
    )
    await conn.close()
    assert audit["actor_name"] == "Admin" and audit["note"] == "Dibatalkan manual di portal BPJS"
    r = await api.client.post(f"/bpjs_sync/{b['id']}/retry", headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    resolved = await api.client.get(
        "/bpjs_sync", params={"status": "resolved_manually"}, headers=admin
    )
    assert [i["queue"]["id"] for i in resolved.json()["items"]] == [b["id"]]
    assert (await api.client.get("/bpjs_sync", headers=admin)).json()["items"] == []


async def test_admin_endpoints_need_the_permission_and_stay_in_the_clinic(
    api, sim, start_worker, infra
):
    sim.seed_booking("BK-X", served=True)
    start_worker()
    t = await cancel_bpjs(api, sim, "BK-X", seed=False)
    await read_events(infra.kafka, topics(api)[1], expect=1, timeout=60)
    staff = auth(token())
    for method, path, body in (
        ("get", "/bpjs_sync", None),
        ("post", f"/bpjs_sync/{t['id']}/retry", None),
        ("post", f"/bpjs_sync/{t['id']}/resolve", {"note": "x"}),
    ):
        r = await api.client.request(method, path, headers=staff, json=body)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
    other = auth(token(clinic="KLINIK-B", perms=ADMIN))
    assert (await api.client.get("/bpjs_sync", params={"status": "failed"}, headers=other)).json()[
        "items"
    ] == []
    r = await api.client.post(f"/bpjs_sync/{t['id']}/resolve", headers=other, json={"note": "x"})
    assert r.status_code == 404
    assert (
        await api.client.post("/bpjs_sync/abc/retry", headers=auth(token(perms=ADMIN)))
    ).status_code == 422


async def test_same_queue_cancelled_delivered_twice_makes_one_job_and_one_batal(
    api, sim, start_worker, database, infra
):
    start_worker()
    t = await cancel_bpjs(api, sim, "BK-DUP")
    synced_topic, _ = topics(api)
    await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    conn = await asyncpg.connect(database)
    payload = await conn.fetchval("select payload from outbox where event_type='QueueCancelled'")
    await conn.close()
    producer = make_producer(infra.kafka)
    await producer.start()
    for _ in range(2):  # redelivered, twice more
        await producer.send_and_wait(api.topic, bytes(payload), key=str(t["id"]).encode())
    marker = await cancel_bpjs(api, sim, "BK-AFTER")  # proves the duplicates were consumed
    await producer.stop()
    events = await read_events(infra.kafka, synced_topic, expect=2, timeout=60)
    assert sorted(e.payload().queue_id for _, e in events) == sorted([t["id"], marker["id"]])
    batal = [
        r
        for r in sim.requests_log()
        if r["path"].endswith("antrean/batal") and "BK-DUP" in r["body"]
    ]
    assert len(batal) == 1
    conn = await asyncpg.connect(database)
    assert await conn.fetchval("select count(*) from bpjs_sync_job where queue_id=$1", t["id"]) == 1
    await conn.close()


async def test_worker_killed_mid_call_then_restarted_still_syncs_once(
    api, sim, start_worker, database, infra
):
    sim.set_fault("antreanrs:batal", "latency", latency_ms=2500, times=1)
    worker = start_worker(WORKER_ID="w-crash")
    t = await cancel_bpjs(api, sim, "BK-CRASH")
    await wait_until(
        lambda: any("BK-CRASH" in r["body"] for r in sim.requests_log()), what="batal in flight"
    )
    worker.kill()  # SIGKILL while the call is in flight
    # The slow call still reaches BPJS: the simulator applies it after its latency.
    await wait_until(
        lambda: sim.applied_cancellations("antreanrs", "BK-CRASH") == 1, what="batal applied"
    )
    start_worker(WORKER_ID="w-crash")  # same identity: reclaims its lease at once
    synced_topic, _ = topics(api)
    [(_, event)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    assert event.payload().queue_id == t["id"]
    assert sim.applied_cancellations("antreanrs", "BK-CRASH") == 1
    assert (await sync_state(database, t["id"]))["ticket"] == "synced"


async def test_sigterm_lets_the_call_in_flight_finish_and_store_its_outcome(
    api, sim, start_worker, database
):
    sim.set_fault("antreanrs:batal", "latency", latency_ms=1500, times=1)
    worker = start_worker()
    t = await cancel_bpjs(api, sim, "BK-TERM")
    await wait_until(
        lambda: any("BK-TERM" in r["body"] for r in sim.requests_log()), what="call in flight"
    )
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0, worker.logs()[-3000:]
    state = await sync_state(database, t["id"])
    assert state["job"]["attempts"] == 1 and state["job"]["cancel_done"] is True
    assert state["job"]["lease_owner"] is None


async def test_two_workers_share_200_cancellations_and_call_bpjs_once_each(
    api, sim, start_worker, database, infra
):
    for i in range(200):
        sim.seed_booking(f"BK2-{i:03d}")
    # Slow BPJS and a small in-flight limit: one worker alone cannot keep up, so both must work.
    sim.set_fault("antreanrs:batal", "latency", latency_ms=200)
    start_worker(SYNC_MAX_IN_FLIGHT="4")
    start_worker(SYNC_MAX_IN_FLIGHT="4")
    made = []
    for i in range(200):
        made.append(await cancel_bpjs(api, sim, f"BK2-{i:03d}", seed=False))
    synced_topic, _ = topics(api)
    events = await read_events(infra.kafka, synced_topic, expect=200, timeout=120)
    assert sorted({e.payload().queue_id for _, e in events}) == sorted(t["id"] for t in made)
    batal = [
        json.loads(r["body"])["kodebooking"]
        for r in sim.requests_log()
        if r["path"].endswith("antrean/batal")
    ]
    assert len(batal) == 200 and len(set(batal)) == 200
    conn = await asyncpg.connect(database)
    owners = await conn.fetchval("select count(distinct last_worker) from bpjs_sync_job")
    synced = await conn.fetchval("select count(*) from queue_ticket where bpjs_sync = 'synced'")
    await conn.close()
    assert synced == 200 and owners == 2  # both workers took a share


async def test_undecodable_message_is_kept_as_a_dead_letter_and_the_stream_goes_on(
    api, sim, start_worker, database, infra
):
    start_worker()
    producer = make_producer(infra.kafka)
    await producer.start()
    await producer.send_and_wait(api.topic, b"<html>not an event</html>", key=b"1")
    await producer.stop()
    t = await cancel_bpjs(api, sim, "BK-AFTER-POISON")
    synced_topic, _ = topics(api)
    [(_, event)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    assert event.payload().queue_id == t["id"]
    conn = await asyncpg.connect(database)
    rows = await conn.fetch("select value, reason, error from dead_letter")
    await conn.close()
    assert [bytes(r["value"]) for r in rows] == [b"<html>not an event</html>"]
    assert rows[0]["reason"] == "undecodable" and "not JSON" in rows[0]["error"]
