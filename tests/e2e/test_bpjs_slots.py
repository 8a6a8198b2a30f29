"""The worker's in-flight limit counts BPJS calls (no slot waits on the database), and an
attempt's end stored without a lock never overwrites what others wrote meanwhile."""

import asyncpg
import pytest

from tests.e2e.test_bpjs_sync_worker import cancel_bpjs, sync_state, topics
from tests.fixtures.api import auth, read_events, token
from tests.fixtures.infra import wait_until

pytestmark = pytest.mark.e2e


def calls_for(sim, booking: str, op: str) -> int:
    return sum(
        1
        for r in sim.requests_log()
        if r["path"].endswith(f"antrean/{op}") and booking in r["body"]
    )


async def test_a_slot_serves_another_job_while_an_attempt_waits_on_the_database(
    api, sim, start_worker, database
):
    # One slot. A's read-back is slow, so its ticket row can be locked (as a long transaction
    # elsewhere would) before A stores its result: A then waits on the database, not on BPJS.
    sim.set_fault("antreanrs:getlisttask", "latency", latency_ms=1500, times=1)
    start_worker(SYNC_MAX_IN_FLIGHT="1")
    a = await cancel_bpjs(api, sim, "BK-SLOT-A")
    await wait_until(lambda: calls_for(sim, "BK-SLOT-A", "getlisttask") == 1, what="A's read-back")
    blocker = await asyncpg.connect(database)
    tx = blocker.transaction()
    await tx.start()
    try:
        await blocker.execute("select 1 from queue_ticket where id = $1 for no key update", a["id"])
        b = await cancel_bpjs(api, sim, "BK-SLOT-B")
        # B's calls go out while A still waits for the lock with its calls all made.
        await wait_until(
            lambda: calls_for(sim, "BK-SLOT-B", "getlisttask") == 1,
            timeout=30,
            what="B's calls while A waits on the database",
        )
        assert (await sync_state(database, a["id"]))["ticket"] == "pending"
    finally:
        await tx.rollback()
        await blocker.close()

    async def both_synced() -> bool:
        states = [await sync_state(database, t["id"]) for t in (a, b)]
        return all(s["ticket"] == "synced" for s in states)

    await wait_until(both_synced, timeout=30, what="both synced")
    assert sim.applied_cancellations("antreanrs", "BK-SLOT-A") == 1
    assert sim.applied_cancellations("antreanrs", "BK-SLOT-B") == 1


async def test_an_attempt_never_overwrites_a_job_an_admin_resolved_while_its_calls_ran(
    api, sim, start_worker, database
):
    # The attempt's end is stored in one statement only while nobody wrote the job meanwhile.
    sim.set_fault("antreanrs:batal", "latency", latency_ms=1500, times=1)
    worker = start_worker()
    t = await cancel_bpjs(api, sim, "BK-SLOT-RESOLVED")
    await wait_until(lambda: calls_for(sim, "BK-SLOT-RESOLVED", "batal") == 1, what="batal sent")
    admin = auth(token(perms=["manage bpjs sync"], user="u-admin", name="Admin"))
    r = await api.client.post(
        f"/bpjs_sync/{t['id']}/resolve", headers=admin, json={"note": "Dibatalkan di portal BPJS"}
    )
    assert r.status_code == 200, r.text
    await wait_until(lambda: "sync_attempt_discarded" in worker.logs(), what="attempt discarded")
    state = await sync_state(database, t["id"])
    assert state["ticket"] == "resolved_manually"
    assert state["job"]["status"] == "resolved_manually" and state["job"]["attempts"] == 0


async def test_a_job_warned_while_its_calls_ran_is_synced_as_recovered(
    api, sim, start_worker, database, infra
):
    sim.set_fault("antreanrs:batal", "latency", latency_ms=1500, times=1)
    start_worker()
    t = await cancel_bpjs(api, sim, "BK-SLOT-WARNED")
    await wait_until(lambda: calls_for(sim, "BK-SLOT-WARNED", "batal") == 1, what="batal sent")
    # Claimed, `batal` on its way: the first phase ends now and the sweeper warns meanwhile.
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "update bpjs_sync_job set first_phase_until = now() - interval '1 second'"
            " where queue_id = $1",
            t["id"],
        )
    finally:
        await conn.close()
    synced_topic, failed_topic = topics(api)
    [(_, warning)] = await read_events(infra.kafka, failed_topic, expect=1, timeout=60)
    assert warning.payload().will_retry is True
    [(_, synced)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    assert synced.payload().queue_id == t["id"] and synced.payload().recovered is True
    state = await sync_state(database, t["id"])
    assert state["job"]["warned"] is True and state["ticket"] == "synced"
