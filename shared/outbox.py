"""Transactional outbox: write events in the caller's transaction; a relay publishes them to Kafka.

Delivery is at least once (consumers deduplicate by event id). Ordering per key holds because
rows of one key are written by causally ordered transactions and the relay never publishes a row
while an older unpublished row of the same key is held by another relay. A row Kafka refuses for
a reason of its own is quarantined after `max_attempts` refusals (shared/outbox_quarantine.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import Counter, Gauge

from shared import tracing
from shared.events import CloudEvent, encode_event
from shared.kafka import KafkaConfig, make_producer
from shared.logging import get_logger
from shared.outbox_quarantine import (
    OUTBOX_QUARANTINED_ROWS,
    BatchRefused,
    counts_against_row,
    is_refusal,
    raise_outage,
    record_refusal,
)

log = get_logger(__name__)

OUTBOX_CHANNEL = "outbox"
# Set on a writer's connections (`create_pool(session_settings=...)`): its outbox inserts send no
# NOTIFY (migration 0012), and the writer wakes the relays with an `OutboxBell` once committed.
NOTIFY_AFTER_COMMIT = {"antrean.outbox_notify": "after_commit"}
GAUGE_INTERVAL_S = 1.0
# How long the rest of a refused batch, or a row sent alone, may take to be acknowledged before
# the broker counts as unreachable (the idempotent producer retries an outage without end).
SETTLE_TIMEOUT_S = 30.0
OUTBOX_LAG = Gauge("outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished row")
OUTBOX_PENDING = Gauge("outbox_unpublished_rows", "Outbox rows waiting to be published")
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox rows published to Kafka", ["topic"])
OUTBOX_ERRORS = Counter("outbox_publish_errors_total", "Failed publish attempts of a batch")
OUTBOX_NOTIFY_ERRORS = Counter(
    "outbox_notify_errors_total", "Failed NOTIFYs of an OutboxBell (the relays' poll still runs)"
)

# Rows of this relay's topics locked by it, minus rows whose key has an older unpublished row
# it did not lock. Each service's relay publishes only its own topics (its Kafka principal may
# write nothing else); per-key order holds because a key's rows all have one topic. Quarantined
# rows are never claimed and hold back no later row.
_CLAIM_SQL = """
with batch as (
    select id from outbox
    where published_at is null and quarantined_at is null and topic = any($2::text[])
    order by id limit $1 for update skip locked
)
select o.id, o.event_id, o.topic, o.kafka_key, o.payload, o.traceparent from outbox o
join batch b on b.id = o.id
where not exists (
    select 1 from outbox e
    where e.published_at is null and e.quarantined_at is null
      and e.topic = o.topic and e.kafka_key = o.kafka_key
      and e.id < o.id and e.id not in (select id from batch)
)
order by o.id
"""
_LOCK_ONE_SQL = """
select id, event_id, topic, kafka_key, payload, traceparent from outbox
where id = $1 and published_at is null and quarantined_at is null for update skip locked
"""
_MARK_SQL = "update outbox set published_at = clock_timestamp() where id = any($1::bigint[])"
_GAUGES_SQL = """
select (select count(*) from outbox where published_at is null and quarantined_at is null
          and topic = any($1::text[])) as n,
       (select min(created_at) from outbox where published_at is null and quarantined_at is null
          and topic = any($1::text[])) as oldest,
       (select count(*) from outbox where quarantined_at is not null
          and topic = any($1::text[])) as quarantined
"""


# The columns an event row is written with (as in `add_to_outbox`), and their values
# (`outbox_values`): callers that write the row as part of a larger statement use both, so
# every row has the same shape.
OUTBOX_INSERT_COLUMNS = "event_id, topic, kafka_key, event_type, payload, traceparent"
OutboxValues = tuple[str, str, str, str, bytes, str | None]


def outbox_values(topic: str, event: CloudEvent) -> OutboxValues:
    """(event_id, topic, kafka_key, event_type, payload, traceparent) of the row of `event`."""
    key = str(event.data["queue_id"])
    return event.id, topic, key, event.type, encode_event(event), event.traceparent


async def add_to_outbox(conn: asyncpg.Connection, topic: str, event: CloudEvent) -> None:
    """Write one event row inside the caller's open transaction (a trigger sends NOTIFY)."""
    await conn.execute(
        f"insert into outbox ({OUTBOX_INSERT_COLUMNS}) values ($1, $2, $3, $4, $5, $6)",  # noqa: S608
        *outbox_values(topic, event),
    )


def _headers(row: asyncpg.Record) -> list[tuple[str, bytes]] | None:
    """The record's Kafka headers: the event's `traceparent`, for tools that read headers."""
    tp = row["traceparent"]
    return None if tp is None else [("traceparent", tp.encode())]


def _published(rows: Sequence[asyncpg.Record], started_ns: int) -> None:
    """Count rows acknowledged by Kafka; with tracing on, a publish span in each row's trace."""
    for r in rows:
        OUTBOX_PUBLISHED.labels(r["topic"]).inc()
        if r["traceparent"] is not None and tracing.enabled():
            tracing.record_span(
                f"publish {r['topic']}",
                r["traceparent"],
                start_ns=started_ns,
                kind=tracing.SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": r["topic"],
                    "messaging.message.id": str(r["event_id"]),
                    "queue_id": _queue_id(r["kafka_key"]),
                },
            )


def _queue_id(key: str) -> int | str:
    return int(key) if key.isdigit() else key


class OutboxBell:
    """Wakes the relays of a writer whose connections set NOTIFY_AFTER_COMMIT, once per commit
    that wrote outbox rows: a relay of this process directly, relays elsewhere by a NOTIFY in a
    transaction of its own.

    A NOTIFY inside the writer's transaction would make every writer's commit wait for the one
    lock all notifying commits share (held until the commit is flushed), so no two commits
    could share a flush. The bell's NOTIFY takes that lock too, but off the writer's path, and
    the rings that arrive while one is sent make one more, not one each. A writer that dies
    between its commit and its ring leaves the wake to the relays' poll.

    Only the relays of the row's topic are woken. A relay that skipped a row because another
    relay held an older row of its key is not woken again: the topics written this way carry
    one event per key (a ticket is cancelled once), and the poll covers the rest."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._local: dict[str, OutboxRelay] = {}
        self._pending: set[str] = set()
        self._sender: asyncio.Task[None] | None = None

    def attach(self, relay: OutboxRelay) -> None:
        """`relay` runs in this process: its topics' rings wake it without a NOTIFY."""
        self._local.update(dict.fromkeys(relay.topics, relay))

    def ring(self, topic: str) -> None:
        """A transaction that wrote rows of `topic` has committed."""
        relay = self._local.get(topic)
        if relay is not None:
            relay.wake()
            return
        self._pending.add(topic)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._notify())

    async def _notify(self) -> None:
        while self._pending:
            topics, self._pending = sorted(self._pending), set()
            try:
                async with self._pool.acquire() as conn:
                    await conn.execute(
                        "select pg_notify($1, t) from unnest($2::text[]) t", OUTBOX_CHANNEL, topics
                    )
            except Exception as exc:  # a late wake, not a lost row: the relays poll
                OUTBOX_NOTIFY_ERRORS.inc()
                log.warning("outbox_notify_failed", topics=topics, error=repr(exc))

    async def close(self) -> None:
        """Send what is pending (bounded: a stopping service must end)."""
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._sender, 5)


class OutboxRelay:
    """Publishes unpublished outbox rows of `topics`; wakes on a NOTIFY naming one of them, on
    `wake()` (an `OutboxBell` in its process), and polls too."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        kafka: KafkaConfig,
        *,
        topics: Sequence[str],
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        max_backoff_s: float = 10.0,
        max_attempts: int = 5,
        producer: AIOKafkaProducer | None = None,
    ) -> None:
        self._pool = pool
        self._kafka = kafka
        self._topics = list(topics)
        self._batch = batch_size
        self._poll = poll_interval_s
        self._max_backoff = max_backoff_s
        self._max_attempts = max_attempts
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

    @property
    def topics(self) -> list[str]:
        return list(self._topics)

    def wake(self) -> None:
        """Claim now: rows of this relay's topics have been committed."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def publish_once(self) -> int:
        """Claim a batch, publish it in id order, mark it published; returns rows published."""
        assert self._producer is not None
        started = tracing.now_ns()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(_CLAIM_SQL, self._batch, self._topics)
                if rows:
                    await self._send_all(rows)
                    await conn.execute(_MARK_SQL, [r["id"] for r in rows])
            published = len(rows)
            _published(rows, started)
        except BatchRefused as refused:
            published = await self._isolate(refused.rows, refused.failed)
        if time.monotonic() - self._gauges_at >= GAUGE_INTERVAL_S:  # a query: not every batch
            await self._update_gauges()
            self._gauges_at = time.monotonic()
        return published

    async def _send_all(self, rows: Sequence[asyncpg.Record]) -> None:
        """Publish `rows`; an outage raises as it is, refusals raise `BatchRefused` once every
        row's outcome is known."""
        # send() only enqueues; the idempotent producer keeps per-partition order, and we
        # wait for every acknowledgement before the rows are marked published.
        failed: dict[int, BaseException] = {}
        futures: dict[asyncio.Future[object], int] = {}
        for r in rows:
            try:
                fut = await self._send(r)
            except Exception as exc:  # refused before sending, e.g. over max_request_size
                if not is_refusal(exc):
                    raise
                failed[r["id"]] = exc
                continue
            futures[fut] = r["id"]
        if futures:
            done, pending = await asyncio.wait(futures, return_when=asyncio.FIRST_EXCEPTION)
            if pending:  # a refusal came first: the others' outcomes decide what it was
                raise_outage(done)
                done, pending = await asyncio.wait(pending, timeout=SETTLE_TIMEOUT_S)
                if pending:
                    raise KafkaTimeoutError("the rest of a refused batch was not acknowledged")
            raise_outage(futures)
            failed.update((futures[f], e) for f in futures if (e := f.exception()) is not None)
        if failed:
            raise BatchRefused(rows, failed)

    async def _send(self, r: asyncpg.Record) -> asyncio.Future[object]:
        """Enqueue one outbox row; its future settles with the broker's acknowledgement."""
        assert self._producer is not None
        fut: asyncio.Future[object] = await self._producer.send(
            r["topic"], bytes(r["payload"]), key=r["kafka_key"].encode(), headers=_headers(r)
        )
        return fut

    async def _isolate(
        self, rows: Sequence[asyncpg.Record], failed: dict[int, BaseException]
    ) -> int:
        """After a refused batch (rolled back): send its refused rows one at a time, so each
        refusal is the fault of the one row sent, and publish the others. A key stops at its
        first refused row (per-key order) until that row is published or quarantined."""
        # The refused batch left the idempotent producer's sequence numbers ahead of the broker's.
        await self._restart_producer()
        started = tracing.now_ns()
        proven = {r["topic"] for r in rows if r["id"] not in failed}
        blocked: set[tuple[str, str]] = set()
        delivered: list[asyncpg.Record] = []
        published = 0
        for r in rows:
            key = (r["topic"], r["kafka_key"])
            if key in blocked:
                continue
            if r["id"] not in failed:
                delivered.append(r)  # acknowledged in the batch: already in Kafka
            elif await self._publish_alone(r["id"], proven):
                published += 1
            else:
                blocked.add(key)
        if delivered:
            async with self._pool.acquire() as conn:
                await conn.execute(
                    _MARK_SQL + " and published_at is null and quarantined_at is null",
                    [r["id"] for r in delivered],
                )
            _published(delivered, started)
        return published + len(delivered)

    async def _publish_alone(self, row_id: int, proven: set[str]) -> bool:
        """Publish one row in its own transaction, or count its refusal; False when it was not
        published (refused, or held by another relay)."""
        refused = False
        started = tracing.now_ns()
        async with self._pool.acquire() as conn, conn.transaction():
            r = await conn.fetchrow(_LOCK_ONE_SQL, row_id)
            if r is None:
                return False
            try:
                await asyncio.wait_for(await self._send(r), SETTLE_TIMEOUT_S)
            except TimeoutError as exc:
                raise KafkaTimeoutError("a row sent alone was not acknowledged") from exc
            except Exception as exc:
                if not (is_refusal(exc) and counts_against_row(exc, r["topic"] in proven)):
                    raise  # an outage, or a topic refused as a whole: nobody's row is at fault
                await record_refusal(conn, r, exc, self._max_attempts)
                refused = True
            else:
                await conn.execute(_MARK_SQL, [row_id])
        if refused:  # committed first: a failed restart must not undo the count
            await self._restart_producer()
            return False
        _published([r], started)
        proven.add(r["topic"])
        return True

    async def _update_gauges(self) -> None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_GAUGES_SQL, self._topics)
        assert row is not None
        OUTBOX_PENDING.set(row["n"])
        OUTBOX_QUARANTINED_ROWS.set(row["quarantined"])
        oldest = row["oldest"]
        OUTBOX_LAG.set(0 if oldest is None else max(0.0, time.time() - oldest.timestamp()))

    async def _ensure_started(self) -> None:
        if self._producer is None:
            producer = make_producer(self._kafka, client_id="outbox-relay")
            await producer.start()
            self._producer = producer
        if self._listener is not None and self._listener.is_closed():
            await self._drop_listener()
        if self._listener is None:
            # Kept before LISTEN, so a failing LISTEN still leaves it to _drop_listener.
            self._listener = await self._pool.acquire()
            await self._listener.add_listener(OUTBOX_CHANNEL, self._on_notify)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, topic: str) -> None:
        # The notification names the inserted rows' topic (empty before migration 0011).
        if not topic or topic in self._topics:
            self._wake.set()

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _drop_producer(self) -> None:
        if self._producer is not None:
            try:
                await self._producer.stop()
            except Exception:  # noqa: S110 - a broken producer is replaced anyway
                pass
            self._producer = None

    async def _restart_producer(self) -> None:
        await self._drop_producer()
        producer = make_producer(self._kafka, client_id="outbox-relay")
        await producer.start()
        self._producer = producer

    async def _reset_producer(self) -> None:
        await self._drop_producer()
        await self._drop_listener()

    async def _drop_listener(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            try:
                await listener.remove_listener(OUTBOX_CHANNEL, self._on_notify)
            except Exception:  # noqa: S110 - UNLISTEN on a lost connection
                pass
            # Always given back (a held connection would keep the pool's close waiting); a
            # release that fails has terminated the connection, which gives it back too.
            with contextlib.suppress(Exception):
                await self._pool.release(listener, timeout=5)

    async def _close(self) -> None:
        await self._reset_producer()
