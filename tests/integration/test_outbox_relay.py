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
