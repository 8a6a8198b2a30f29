"""The outbox relay: its LISTEN connection killed without leaking it; the notification that
wakes it, and the writers that wake it after their commit instead (OutboxBell)."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from prometheus_client import REGISTRY

from services.cancel_api.schemas import CancelRequest, RegisterRequest
from services.cancel_api.service import cancel_ticket, register_ticket
from shared.auth import Principal
from shared.config import API_DB_ROLE
from shared.db import create_pool
from shared.kafka import KafkaConfig
from shared.outbox import NOTIFY_AFTER_COMMIT, OutboxBell, OutboxRelay
from tests.fixtures.api import token
from tests.fixtures.infra import role_dsn, wait_until

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


STAFF = Principal("u-1", "Petugas Loket", "KLINIK-A", frozenset({"queue:cancel"}))
# Far beyond any test's deadline: a row published within one was claimed on a wake.
NEVER_POLLS = 3600.0


@asynccontextmanager
async def _relay(pool: asyncpg.Pool, kafka: KafkaConfig, topic: str) -> AsyncIterator[OutboxRelay]:
    relay = OutboxRelay(pool, kafka, topics=[topic], poll_interval_s=NEVER_POLLS)
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        await asyncio.wait_for(task, 20)


async def _cancel_one(pool: asyncpg.Pool, bell: OutboxBell, topic: str) -> int:
    ticket = await register_ticket(
        pool,
        STAFF,
        RegisterRequest.model_validate(
            {"room_id": "POLI-UMUM", "payer": "UMUM",
             "patient": {"mrn": f"RM-{uuid.uuid4().hex[:6]}", "name": "Siti Aminah"}}
        ),
        bpjs_service="antreanrs",
        timezone="Asia/Jakarta",
        request_id=None,
    )  # fmt: skip
    await cancel_ticket(
        pool, STAFF, int(ticket["id"]), CancelRequest(), topic=topic, bell=bell,
        idempotency_key=None, request_id=None,
    )  # fmt: skip
    return int(ticket["id"])


async def _published(admin: asyncpg.Connection, queue_id: int) -> None:
    async def done() -> bool:
        return bool(
            await admin.fetchval(
                "select published_at is not null from outbox where kafka_key = $1", str(queue_id)
            )
        )

    await wait_until(done, what=f"the outbox row of queue {queue_id} published")


@asynccontextmanager
async def _listening(database: str) -> AsyncIterator[tuple[asyncpg.Connection, list[str]]]:
    """A connection that records the topic of every notification on the outbox channel."""
    admin = await asyncpg.connect(database)
    heard: list[str] = []
    await admin.add_listener("outbox", lambda *args: heard.append(args[3]))
    try:
        yield admin, heard
    finally:
        await admin.close()


async def _api_writer(database: str) -> asyncpg.Pool:
    """A pool as the API's: its role (which may set the setting the trigger reads) and setting."""
    return await create_pool(
        role_dsn(database, API_DB_ROLE), min_size=1, max_size=4,
        reset_session=False, session_settings=NOTIFY_AFTER_COMMIT,
    )  # fmt: skip


async def _notifications_so_far(admin: asyncpg.Connection, heard: list[str]) -> list[str]:
    """What the listener heard before a control row inserted now (notifications arrive in commit
    order, so once the control's is heard, every earlier one has been)."""
    control = f"control-{uuid.uuid4().hex[:8]}"
    await admin.execute(
        "insert into outbox (event_id, topic, kafka_key, event_type, payload)"
        " values (gen_random_uuid(), $1, '1', 'Control', '\\x7b7d')",
        control,
    )
    await wait_until(lambda: control in heard, what="the control row's notification")
    return heard[: heard.index(control)]


async def test_a_cancel_commits_without_a_notify_and_its_bell_wakes_the_relay_of_its_process(
    database, infra, topic_prefix
):
    """A NOTIFY in the cancel's transaction would serialise every cancel's commit behind one
    cluster-wide lock. The API's connections send none; the bell wakes the relay after the
    commit, so a relay that never polls still publishes at once."""
    topic = f"{topic_prefix}queue-cancelled"
    pool = await _api_writer(database)
    bell = OutboxBell(pool)
    try:
        async with _listening(database) as (admin, heard):
            async with _relay(pool, infra.kafka_for("api"), topic) as relay:
                bell.attach(relay)
                # The first may be claimed by the relay's first pass; the second is committed
                # after the relay has gone to sleep with nothing left (it published the first).
                await _published(admin, await _cancel_one(pool, bell, topic))
                await _published(admin, await _cancel_one(pool, bell, topic))
            assert await _notifications_so_far(admin, heard) == []
    finally:
        await bell.close()
        await pool.close()


async def test_a_bell_without_the_relay_in_its_process_wakes_a_relay_elsewhere_after_the_commit(
    database, infra, topic_prefix
):
    """An API whose relay runs on its own (OUTBOX_RELAY_ENABLED=false): one NOTIFY per ring,
    sent in a transaction of its own once the cancel has committed."""
    topic = f"{topic_prefix}queue-cancelled"
    writer = await _api_writer(database)
    elsewhere = await create_pool(role_dsn(database, API_DB_ROLE), min_size=1, max_size=4)
    bell = OutboxBell(writer)
    try:
        async with _listening(database) as (admin, heard):
            async with _relay(elsewhere, infra.kafka_for("api"), topic):
                await _published(admin, await _cancel_one(writer, bell, topic))
                await _published(admin, await _cancel_one(writer, bell, topic))
            assert await _notifications_so_far(admin, heard) == [topic, topic]
    finally:
        await bell.close()
        await writer.close()
        await elsewhere.close()


async def test_the_api_cancels_without_a_notify_and_its_relay_still_publishes(api, database):
    """The API's pool carries the setting, and its relay is woken by the API's bell."""
    async with _listening(database) as (admin, heard):
        for _ in range(3):
            ticket = await api.register()
            r = await api.cancel(ticket["id"], token())
            assert r.status_code == 200, r.text
            await _published(admin, ticket["id"])
        assert await _notifications_so_far(admin, heard) == []


async def test_the_rings_of_a_burst_of_commits_share_one_notify(database, topic_prefix):
    """Rings that arrive while the bell's NOTIFY is on its way make one more, not one each: a
    burst of cancels does not queue a burst of notifying commits."""
    topic = f"{topic_prefix}queue-cancelled"
    pool = await _api_writer(database)
    bell = OutboxBell(pool)
    try:
        async with _listening(database) as (admin, heard):
            for _ in range(50):
                bell.ring(topic)
            await bell.close()
            assert await _notifications_so_far(admin, heard) == [topic]
    finally:
        await pool.close()


async def test_a_bell_whose_notify_fails_counts_it_and_raises_nothing(database, topic_prefix):
    """The commit has happened: a failed wake-up is a late publish (the relay's poll), never an
    error for the cancel that rang."""
    pool = await _api_writer(database)
    bell = OutboxBell(pool)
    await pool.close()
    before = REGISTRY.get_sample_value("outbox_notify_errors_total") or 0.0
    bell.ring(f"{topic_prefix}queue-cancelled")
    await bell.close()
    assert REGISTRY.get_sample_value("outbox_notify_errors_total") == before + 1
