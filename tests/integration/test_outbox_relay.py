"""The outbox relay survives its LISTEN connection being killed without leaking it."""

import asyncio

import asyncpg

from shared.db import create_pool
from shared.outbox import OutboxRelay
from tests.fixtures.infra import wait_until

LISTENERS = "select pid from pg_stat_activity where datname = current_database() and query = $1"


async def test_a_killed_listen_connection_is_given_back_so_the_pool_can_close(
    database, infra, topic_prefix
):
    pool = await create_pool(database, min_size=1, max_size=4)
    relay = OutboxRelay(pool, infra.kafka, topics=[f"{topic_prefix}queue-cancelled"])
    task = asyncio.create_task(relay.run())
    admin = await asyncpg.connect(database)
    try:
        listen = 'LISTEN "outbox"'
        first = await wait_until(lambda: admin.fetch(LISTENERS, listen), what="the relay listens")
        await admin.execute("select pg_terminate_backend($1)", first[0]["pid"])

        async def listening_again() -> bool:
            rows = await admin.fetch(LISTENERS, listen)
            return bool(rows) and rows[0]["pid"] != first[0]["pid"]

        await wait_until(listening_again, what="the relay listens on a new connection")
        relay.stop()
        await asyncio.wait_for(task, 20)
        # Every connection the relay took must be back: close() waits for them all.
        await asyncio.wait_for(pool.close(), 10)
    finally:
        pool.terminate()
        await admin.close()


async def test_the_outbox_notification_names_the_topic_and_a_relay_wakes_only_for_its_own(
    database, infra, topic_prefix
):
    """Each service's relay publishes only its own topics: a row of another service's topic
    (every cancel, for the worker's relay) must not wake it for a claim that finds nothing."""
    mine, other = f"{topic_prefix}bpjs-synced", f"{topic_prefix}queue-cancelled"
    heard: list[str] = []
    listener = await asyncpg.connect(database)
    pool = await create_pool(database, min_size=1, max_size=2)
    try:
        await listener.add_listener("outbox", lambda *args: heard.append(args[3]))
        async with pool.acquire() as conn:
            await conn.execute(
                "insert into outbox (event_id, topic, kafka_key, event_type, payload)"
                " values (gen_random_uuid(), $1, '1', 'QueueCancelled', '\\x7b7d'),"
                " (gen_random_uuid(), $1, '2', 'QueueCancelled', '\\x7b7d')",
                other,
            )
        await wait_until(lambda: heard, what="the outbox notification")
        assert heard == [other]  # one per topic of the statement, not per row

        relay = OutboxRelay(pool, infra.kafka, topics=[mine])
        relay._on_notify(listener, 0, "outbox", other)
        assert not relay._wake.is_set()
        relay._on_notify(listener, 0, "outbox", mine)
        assert relay._wake.is_set()
        relay._wake.clear()
        relay._on_notify(listener, 0, "outbox", "")  # a database not migrated yet: wake
        assert relay._wake.is_set()
    finally:
        await listener.close()
        await pool.close()
