"""An outbox row Kafka refuses for good is quarantined and listed for its clinic's admins while
later rows keep flowing; a Kafka outage counts against no row."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client import REGISTRY

from services.cancel_api.app import create_app
from services.cancel_api.config import CancelApiSettings
from shared.config import API_DB_ROLE
from shared.db import create_pool
from shared.events import TOPIC_QUEUE_CANCELLED, new_event
from shared.events.models import CancelledBy, QueueCancelledData
from shared.kafka import KafkaConfig, make_admin
from shared.outbox import OutboxRelay, add_to_outbox
from tests.fixtures.api import Api, api_env, auth, read_events, token
from tests.fixtures.infra import role_dsn, wait_until

pytestmark = pytest.mark.integration

TOPIC_LIMIT_BYTES = 4096  # the topic's max.message.bytes: the broker refuses larger batches
ADMIN_PERMS = ["manage bpjs sync"]


async def _limit_message_bytes(kafka: KafkaConfig, topic: str, limit: int) -> None:
    admin = make_admin(kafka)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic)
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(limit)})]
        )

        async def applied() -> bool:
            described = await admin.describe_configs([resource])
            entries = described[0].resources[0][4]
            return any(e[0] == "max.message.bytes" and e[1] == str(limit) for e in entries)

        await wait_until(applied, what="the topic's max.message.bytes")
    finally:
        await admin.close()


@asynccontextmanager
async def _api(settings: CancelApiSettings) -> AsyncIterator[Api]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(client, settings.topic(TOPIC_QUEUE_CANCELLED))


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_a_row_too_large_for_the_broker_is_quarantined_and_later_rows_are_published(
    database, infra, topic_prefix
):
    topic = f"{topic_prefix}{TOPIC_QUEUE_CANCELLED}"
    await _limit_message_bytes(infra.kafka, topic, TOPIC_LIMIT_BYTES)
    env = api_env(database, infra.kafka_for("api"), topic_prefix)
    quarantined_before = _metric("outbox_quarantined_total", {"topic": topic})
    owner = await asyncpg.connect(database)
    try:
        # Setup with the relay off, so the poison row and the later rows wait in one backlog.
        async with _api(CancelApiSettings(**env, OUTBOX_RELAY_ENABLED="false")) as api:
            same_key = await api.register(name="Ani")
            other = await api.register(name="Budi")
            other_clinic = await api.register(name="Cici", clinic="KLINIK-B")
            poison = str(uuid.uuid4())
            await owner.execute(
                "insert into outbox (event_id, topic, kafka_key, event_type, payload)"
                " values ($1, $2, $3, 'QueueCancelled', $4)",
                poison,
                topic,
                str(same_key["id"]),
                b"{" + b" " * (TOPIC_LIMIT_BYTES * 2) + b"}",
            )
            for ticket, clinic in ((same_key, "KLINIK-A"), (other, "KLINIK-A")):
                assert (await api.cancel(ticket["id"], token(clinic))).status_code == 200
            r = await api.cancel(other_clinic["id"], token("KLINIK-B"))
            assert r.status_code == 200

        # The API's own relay, with OUTBOX_MAX_ATTEMPTS from its settings.
        async with _api(CancelApiSettings(**env, OUTBOX_MAX_ATTEMPTS="3")) as api:
            events = await read_events(infra.kafka, topic, expect=3, timeout=60)
            cancelled = sorted(e.data["queue_id"] for _, e in events)
            assert cancelled == sorted([same_key["id"], other["id"], other_clinic["id"]])

            row = await owner.fetchrow("select * from outbox where event_id = $1", poison)
            assert row["attempts"] == 3 and row["quarantined_at"] is not None
            assert row["published_at"] is None
            assert "MessageSizeTooLarge" in row["last_error"]
            published = {
                r["kafka_key"]: r["published_at"]
                for r in await owner.fetch(
                    "select kafka_key, published_at from outbox where event_id <> $1", poison
                )
            }
            # Other keys went out before the poison row was set aside; its own key after.
            assert published[str(other["id"])] < row["quarantined_at"]
            assert published[str(other_clinic["id"])] < row["quarantined_at"]
            assert published[str(same_key["id"])] > row["quarantined_at"]

            assert _metric("outbox_quarantined_total", {"topic": topic}) == quarantined_before + 1
            await wait_until(
                lambda: _metric("outbox_quarantined_rows") == 1, what="the quarantined gauge"
            )

            r = await api.client.get(
                "/outbox/quarantined", headers=auth(token("KLINIK-A", ADMIN_PERMS))
            )
            assert r.status_code == 200, r.text
            [item] = r.json()["items"]
            assert item["event_id"] == poison and item["queue_id"] == same_key["id"]
            assert item["ticket_number"] == same_key["ticket_number"]
            assert item["topic"] == topic and item["event_type"] == "QueueCancelled"
            assert item["attempts"] == 3 and "MessageSizeTooLarge" in item["last_error"]
            assert item["payload_bytes"] == TOPIC_LIMIT_BYTES * 2 + 2
            assert item["created_at"] and item["quarantined_at"]
            assert "payload" not in item

            r = await api.client.get(
                "/outbox/quarantined", headers=auth(token("KLINIK-B", ADMIN_PERMS))
            )
            assert r.status_code == 200 and r.json()["items"] == []
            r = await api.client.get("/outbox/quarantined", headers=auth(token("KLINIK-A")))
            assert r.status_code == 403 and r.json()["code"] == "forbidden"

        # Kept for good: still there, never claimed again.
        assert await owner.fetchval("select count(*) from outbox where event_id = $1", poison)
    finally:
        await owner.close()


async def test_a_quarantined_row_cannot_be_marked_published(database):
    owner = await asyncpg.connect(database)
    try:
        await owner.execute(
            "insert into outbox (event_id, topic, kafka_key, event_type, payload, quarantined_at)"
            " values ($1, 't', '1', 'QueueCancelled', '\\x00', now())",
            str(uuid.uuid4()),
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await owner.execute("update outbox set published_at = now()")
    finally:
        await owner.close()


async def test_a_row_over_the_producers_request_limit_is_quarantined_too(
    database, infra, topic_prefix
):
    # Refused by the client itself (send() raises before anything reaches the broker).
    topic = f"{topic_prefix}{TOPIC_QUEUE_CANCELLED}"
    owner = await asyncpg.connect(database)
    pool = await create_pool(role_dsn(database, API_DB_ROLE), min_size=1, max_size=4)
    relay = OutboxRelay(pool, infra.kafka_for("api"), topics=[topic], max_attempts=2)
    try:
        poison = str(uuid.uuid4())
        async with owner.transaction():
            await owner.execute(
                "insert into outbox (event_id, topic, kafka_key, event_type, payload)"
                " values ($1, $2, '7', 'QueueCancelled', $3)",
                poison,
                topic,
                b"{" + b" " * (1100 * 1024) + b"}",  # over the producer's 1 MiB request limit
            )
            await add_to_outbox(owner, topic, _event(8))
        task = asyncio.create_task(relay.run())
        try:
            await wait_until(
                lambda: owner.fetchval(
                    "select quarantined_at is not null from outbox where event_id = $1", poison
                ),
                what="the oversized row is quarantined",
            )
            await wait_until(
                lambda: _none_pending(owner, counting_quarantined=False), what="the rest"
            )
        finally:
            relay.stop()
            await asyncio.wait_for(task, 30)
        row = await owner.fetchrow("select * from outbox where event_id = $1", poison)
        assert row["attempts"] == 2 and "MessageSizeTooLarge" in row["last_error"]
        events = await read_events(infra.kafka, topic, expect=1)
        assert [e.data["queue_id"] for _, e in events] == [8]
    finally:
        await pool.close()
        await owner.close()


def _event(queue_id: int):
    return new_event(
        QueueCancelledData(
            queue_id=queue_id,
            clinic_id="KLINIK-A",
            room_id="POLI-UMUM",
            ticket_number=f"A-{queue_id:03d}",
            payer="UMUM",
            bpjs=None,
            reason_code="no_show",
            reason_text=None,
            cancelled_by=CancelledBy(user_id="u-rina", name="Rina"),
            cancelled_at=datetime.now(UTC),
        ),
        source="/antrean/cancel-api",
    )


async def test_a_kafka_outage_counts_against_no_row(database, private_kafka):
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    await private_kafka.access.create_topics(prefix)
    topic = f"{prefix}{TOPIC_QUEUE_CANCELLED}"
    pool = await create_pool(role_dsn(database, API_DB_ROLE), min_size=1, max_size=4)
    # One refusal would quarantine a row: an outage must count as none.
    relay = OutboxRelay(
        pool, private_kafka.kafka_for("api"), topics=[topic], max_attempts=1, max_backoff_s=1.0
    )
    task = asyncio.create_task(relay.run())
    owner = await asyncpg.connect(database)

    async def add(*queue_ids: int) -> None:
        async with owner.transaction():  # one commit: the relay claims them in one batch
            for queue_id in queue_ids:
                await add_to_outbox(owner, topic, _event(queue_id))

    async def held_by_the_relay() -> bool:
        # The relay has claimed every pending row and waits for Kafka to acknowledge them.
        async with owner.transaction():
            free = await owner.fetchval(
                "select count(*) from (select id from outbox where published_at is null"
                " for update skip locked) f"
            )
        return free == 0 and await owner.fetchval(_PENDING) == 3

    async def counted() -> tuple[int, int]:
        row = await owner.fetchrow(
            "select max(attempts) as a, count(quarantined_at) as q from outbox"
        )
        return row["a"], row["q"]

    try:
        await add(1)
        await wait_until(lambda: _none_pending(owner), what="the relay publishes", timeout=60)
        await asyncio.to_thread(private_kafka.stop)
        await add(2, 3, 4)
        await wait_until(held_by_the_relay, what="the relay sends during the outage", timeout=60)
        assert await counted() == (0, 0)
        await asyncio.to_thread(private_kafka.start)
        await wait_until(lambda: _none_pending(owner), what="the backlog is published", timeout=90)
        events = await read_events(private_kafka.kafka, topic, expect=4, timeout=60)
        assert sorted({e.data["queue_id"] for _, e in events}) == [1, 2, 3, 4]
        assert await counted() == (0, 0)
    finally:
        relay.stop()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 60)
        await owner.close()
        await pool.close()


_PENDING = "select count(*) from outbox where published_at is null"


async def _none_pending(owner: asyncpg.Connection, *, counting_quarantined: bool = True) -> bool:
    sql = _PENDING if counting_quarantined else f"{_PENDING} and quarantined_at is null"
    return await owner.fetchval(sql) == 0
