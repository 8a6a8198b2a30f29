"""The cancel API as a real process: concurrency, Kafka outages and a crash before publishing."""

import asyncio
from collections import defaultdict

import asyncpg
import httpx
import pytest

from shared.db import create_pool
from shared.outbox import OutboxRelay
from tests.fixtures.api import api_env, auth, read_events, token
from tests.fixtures.infra import free_port, wait_until

pytestmark = pytest.mark.e2e


def start_api(spawn, database, kafka, prefix, **extra):
    port = free_port()
    env = api_env(database, kafka, prefix, CANCEL_API_PORT=str(port), **extra)
    proc = spawn("services.cancel_api", env, f"http://127.0.0.1:{port}/healthz")
    return proc, f"http://127.0.0.1:{port}"


async def register_many(client: httpx.AsyncClient, n: int, payer: str = "UMUM") -> list[dict]:
    out = []
    for i in range(n):
        body = {
            "room_id": "POLI-UMUM",
            "patient": {"mrn": f"RM-{i}", "name": f"P{i}"},
            "payer": payer,
        }
        if payer == "BPJS":
            body["bpjs"] = {"booking_code": f"BK{i:05d}"}
        r = await client.post("/antrian_ruangan", json=body, headers=auth(token()))
        assert r.status_code == 201, r.text
        out.append(r.json())
    return out


async def test_twenty_concurrent_cancels_of_one_ticket_give_one_200_and_one_event(
    spawn, database, infra, topic_prefix
):
    api_kafka = infra.kafka_for("api")
    _, url = start_api(spawn, database, api_kafka, topic_prefix, CANCEL_API_WORKERS="2")
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        [t] = await register_many(client, 1, "BPJS")
        rs = await asyncio.gather(
            *(
                client.post(f"/antrian_ruangan/batal/{t['id']}", headers=auth(token(user=f"u{i}")))
                for i in range(20)
            )
        )
    codes = sorted(r.status_code for r in rs)
    assert codes == [200] + [409] * 19
    assert {r.json()["code"] for r in rs if r.status_code == 409} == {"queue_already_cancelled"}
    events = await read_events(infra.kafka, f"{topic_prefix}queue-cancelled", expect=1)
    assert len(events) == 1


async def test_cancels_accepted_while_kafka_is_down_arrive_once_when_it_is_back(
    spawn, database, private_kafka, topic_prefix
):
    topic = f"{topic_prefix}queue-cancelled"
    await private_kafka.access.create_topics(topic_prefix)
    _, url = start_api(spawn, database, private_kafka.kafka_for("api"), topic_prefix)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        tickets = await register_many(client, 50)
        private_kafka.stop()
        for t in tickets:
            r = await client.post(
                f"/antrian_ruangan/batal/{t['id']}",
                headers=auth(token()),
                json={"reason_code": "no_show"},
            )
            assert r.status_code == 200, r.text
    pool = await create_pool(database, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            assert (
                await conn.fetchval("select count(*) from outbox where published_at is null") == 50
            )
            commit_order = [
                r["event_id"] for r in await conn.fetch("select event_id from outbox order by id")
            ]
        private_kafka.start()
        events = await read_events(private_kafka.kafka, topic, expect=50, timeout=90)
        async with pool.acquire() as conn:
            await wait_until(
                lambda: conn.fetchval("select count(*) = 0 from outbox where published_at is null"),
                timeout=30,
                what="outbox drained",
            )
    finally:
        await pool.close()
    ids = [e.id for _, e in events]
    assert len(ids) == 50 and len(set(ids)) == 50
    assert {e.payload().queue_id for _, e in events} == {t["id"] for t in tickets}
    by_key: dict[bytes, list[str]] = defaultdict(list)
    for key, e in events:
        by_key[key].append(str(e.id))
    order = [str(x) for x in commit_order]
    for seq in by_key.values():
        assert seq == sorted(seq, key=order.index)


async def test_api_killed_between_commit_and_publish_publishes_the_event_once_after_restart(
    spawn, database, private_kafka, topic_prefix
):
    topic = f"{topic_prefix}queue-cancelled"
    await private_kafka.access.create_topics(topic_prefix)
    proc, url = start_api(spawn, database, private_kafka.kafka_for("api"), topic_prefix)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        [t] = await register_many(client, 1, "BPJS")
        private_kafka.stop()  # the relay cannot publish: the commit is done, the publish is not
        r = await client.post(f"/antrian_ruangan/batal/{t['id']}", headers=auth(token()))
        assert r.status_code == 200
    proc.kill()
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("select count(*) from outbox where published_at is null") == 1
    finally:
        await conn.close()
    private_kafka.start()
    proc.start()
    events = await read_events(private_kafka.kafka, topic, expect=1, timeout=60, grace=3)
    assert [e.payload().queue_id for _, e in events] == [t["id"]]


async def test_two_relays_racing_publish_every_row_exactly_once(database, infra, topic_prefix, api):
    tickets = [await api.register(name=f"P{i}") for i in range(60)]
    pools = [await create_pool(database, min_size=1, max_size=4) for _ in range(2)]
    api_kafka = infra.kafka_for("api")
    relays = [
        OutboxRelay(p, api_kafka, topics=[api.topic], batch_size=7, poll_interval_s=0.05)
        for p in pools
    ]
    # Stop the in-process API's relay from competing: the racing relays own this test's rows.
    conn = await asyncpg.connect(database)
    await conn.execute("alter table outbox disable trigger outbox_notify")
    await conn.close()
    for t in tickets:
        assert (await api.cancel(t["id"])).status_code == 200
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        events = await read_events(infra.kafka, api.topic, expect=60, timeout=60, grace=2)
    finally:
        for r in relays:
            r.stop()
        await asyncio.gather(*tasks)
        for p in pools:
            await p.close()
    ids = [e.id for _, e in events]
    assert len(ids) == 60 and len(set(ids)) == 60
