"""Transactional outbox: write events in the caller's transaction; a relay publishes them to Kafka.

Delivery is at least once (consumers deduplicate by event id). Ordering per key holds because
rows of one key are written by causally ordered transactions and the relay never publishes a row
while an older unpublished row of the same key is held by another relay.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge

from shared.events import CloudEvent, encode_event
from shared.kafka import KafkaConfig, make_producer
from shared.logging import get_logger

log = get_logger(__name__)

OUTBOX_CHANNEL = "outbox"
GAUGE_INTERVAL_S = 1.0
OUTBOX_LAG = Gauge("outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished row")
OUTBOX_PENDING = Gauge("outbox_unpublished_rows", "Outbox rows not yet published")
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox rows published to Kafka", ["topic"])
OUTBOX_ERRORS = Counter("outbox_publish_errors_total", "Failed publish attempts of a batch")

# Rows of this relay's topics locked by it, minus rows whose key has an older unpublished row
# it did not lock. Each service's relay publishes only its own topics (its Kafka principal may
# write nothing else); per-key order holds because a key's rows all have one topic.
_CLAIM_SQL = """
with batch as (
    select id from outbox where published_at is null and topic = any($2::text[])
    order by id limit $1 for update skip locked
)
select o.id, o.topic, o.kafka_key, o.payload from outbox o
join batch b on b.id = o.id
where not exists (
    select 1 from outbox e
    where e.published_at is null and e.topic = o.topic and e.kafka_key = o.kafka_key
      and e.id < o.id and e.id not in (select id from batch)
)
order by o.id
"""


# The columns an event row is written with (as in `add_to_outbox`), and their values
# (`outbox_values`): callers that write the row as part of a larger statement use both, so
# every row has the same shape.
OUTBOX_INSERT_COLUMNS = "event_id, topic, kafka_key, event_type, payload"


def outbox_values(topic: str, event: CloudEvent) -> tuple[str, str, str, str, bytes]:
    """(event_id, topic, kafka_key, event_type, payload) of the outbox row of `event`."""
    return event.id, topic, str(event.data["queue_id"]), event.type, encode_event(event)


async def add_to_outbox(conn: asyncpg.Connection, topic: str, event: CloudEvent) -> None:
    """Write one event row inside the caller's open transaction (a trigger sends NOTIFY)."""
    await conn.execute(
        f"insert into outbox ({OUTBOX_INSERT_COLUMNS}) values ($1, $2, $3, $4, $5)",  # noqa: S608
        *outbox_values(topic, event),
    )


class OutboxRelay:
    """Publishes unpublished outbox rows of `topics`; wakes on LISTEN/NOTIFY and polls too."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        kafka: KafkaConfig,
        *,
        topics: Sequence[str],
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        max_backoff_s: float = 10.0,
        producer: AIOKafkaProducer | None = None,
    ) -> None:
        self._pool = pool
        self._kafka = kafka
        self._topics = list(topics)
        self._batch = batch_size
        self._poll = poll_interval_s
        self._max_backoff = max_backoff_s
        self._producer = producer
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self.kafka_ok = False
        self._gauges_at = 0.0

    async def run(self) -> None:
        """Run until stop(); every committed row is eventually published."""
        backoff = 0.2
        while not self._stop.is_set():
            try:
                await self._ensure_started()
                published = await self.publish_once()
                backoff = 0.2
                self.kafka_ok = True
                if published < self._batch:
                    await self._wait(self._poll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.kafka_ok = False
                OUTBOX_ERRORS.inc()
                log.warning("outbox_publish_failed", error=repr(exc), retry_in_s=round(backoff, 2))
                await self._reset_producer()
                await self._wait(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self._max_backoff)
        await self._close()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def publish_once(self) -> int:
        """Claim a batch, publish it in id order, mark it published; returns rows published."""
        assert self._producer is not None
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM_SQL, self._batch, self._topics)
            if rows:
                await self._send_all(rows)
                await conn.execute(
                    "update outbox set published_at = clock_timestamp()"
                    " where id = any($1::bigint[])",
                    [r["id"] for r in rows],
                )
        if time.monotonic() - self._gauges_at >= GAUGE_INTERVAL_S:  # a query: not every batch
            await self._update_gauges()
            self._gauges_at = time.monotonic()
        return len(rows)

    async def _send_all(self, rows: Sequence[asyncpg.Record]) -> None:
        assert self._producer is not None
        # send() only enqueues; the idempotent producer keeps per-partition order, and we
        # wait for every acknowledgement before the rows are marked published.
        futures = [
            await self._producer.send(r["topic"], bytes(r["payload"]), key=r["kafka_key"].encode())
            for r in rows
        ]
        await asyncio.gather(*futures)
        for r in rows:
            OUTBOX_PUBLISHED.labels(r["topic"]).inc()

    async def _update_gauges(self) -> None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "select count(*) as n, min(created_at) as oldest from outbox"
                " where published_at is null and topic = any($1::text[])",
                self._topics,
            )
        assert row is not None
        OUTBOX_PENDING.set(row["n"])
        oldest = row["oldest"]
        OUTBOX_LAG.set(0 if oldest is None else max(0.0, time.time() - oldest.timestamp()))

    async def _ensure_started(self) -> None:
        if self._producer is None:
            producer = make_producer(self._kafka, client_id="outbox-relay")
            await producer.start()
            self._producer = producer
        if self._listener is None or self._listener.is_closed():
            conn = await self._pool.acquire()
            await conn.add_listener(OUTBOX_CHANNEL, self._on_notify)
            self._listener = conn

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _reset_producer(self) -> None:
        if self._producer is not None:
            try:
                await self._producer.stop()
            except Exception:  # noqa: S110 - a broken producer is replaced anyway
                pass
            self._producer = None
        if self._listener is not None:
            try:
                await self._listener.remove_listener(OUTBOX_CHANNEL, self._on_notify)
                await self._pool.release(self._listener)
            except Exception:  # noqa: S110
                pass
            self._listener = None

    async def _close(self) -> None:
        await self._reset_producer()
