"""A job made from the ticket row (an orphan whose event never reached the worker, or an admin's
action) finds the cancel's outbox row, for its event id and trace, by that event's id.

Published outbox rows are kept for 7 days and have no index on `kafka_key`: looking the row up by
the ticket's id reads the whole week of cancellations, once per orphan, which is exactly when a
worker comes back after an outage to a backlog of them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
import pytest

from shared.sync_job import machine, store
from tests.fixtures.plans import scans

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PUBLISHED = 5000  # a busy week's published cancellations, enough for the planner to care

T = TypeVar("T")


@pytest.fixture
async def conn(db: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with db.acquire() as connection:  # the services' codecs (jsonb as dicts)
        yield connection


async def _cancelled_bpjs_ticket(conn: asyncpg.Connection, event_id: str | None) -> int:
    """A BPJS ticket cancelled and pending sync with no job, its outbox row published, amid
    PUBLISHED other cancellations' rows; statistics fresh."""
    await conn.execute(
        "insert into outbox (event_id, topic, kafka_key, event_type, payload, traceparent,"
        " published_at) select gen_random_uuid(), 'antrean.queue-cancelled', (100000 + g)::text,"
        " 'QueueCancelled', '\\x00', null, now() from generate_series(1, $1) g",
        PUBLISHED,
    )
    queue_id = await conn.fetchval(
        "insert into queue_ticket (clinic_id, room_id, service_date, ticket_seq, ticket_number,"
        " patient_mrn, patient_name, payer, bpjs, status, cancelled_at, cancelled_by_id,"
        " cancelled_by_name, reason_code, bpjs_sync, cancel_event_id)"
        " values ('KLINIK-A', 'POLI-UMUM', current_date, 1, 'A-1', 'RM-1', 'Pasien', 'BPJS',"
        " '{\"booking_code\": \"2026/12/05/A1\"}'::jsonb, 'cancelled', now(), 'u-1', 'Staf',"
        " 'no_show', 'pending', $1::uuid) returning id",
        event_id,
    )
    await conn.execute(
        "insert into outbox (event_id, topic, kafka_key, event_type, payload, traceparent,"
        " published_at) values ($1::uuid, 'antrean.queue-cancelled', $2::text, 'QueueCancelled',"
        " '\\x00', $3, now())",
        event_id or str(uuid.uuid4()),
        str(queue_id),
        TRACE,
    )
    await conn.execute("analyze outbox")
    await conn.execute("analyze queue_ticket")
    return int(queue_id)


async def _outbox_reads(conn: asyncpg.Connection, sql: str, args: tuple) -> list[str]:
    """How running `sql` with `args` (rolled back) read the outbox: each executed scan's type
    and index."""
    plan = await _rolled_back(conn, conn.fetchval(f"explain (analyze, format json) {sql}", *args))
    return scans(plan, "outbox", executed_only=True)


async def _rolled_back(conn: asyncpg.Connection, call: Awaitable[T]) -> T:
    """`call`'s result, in a transaction rolled back after it."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        return await call
    finally:
        await transaction.rollback()


async def _sent(conn: asyncpg.Connection, call: Awaitable[object]) -> list[tuple[str, tuple]]:
    """The statements `call` sends on `conn` that read the outbox, with their arguments (`call`
    rolled back)."""
    sent: list[tuple[str, tuple]] = []

    def log(query: asyncpg.connection.LoggedQuery) -> None:
        if "outbox" in query.query:
            sent.append((query.query, query.args))

    conn.add_query_logger(log)
    try:
        await _rolled_back(conn, call)
    finally:
        conn.remove_query_logger(log)
    return sent


def _job() -> machine.Job:
    return machine.new_job(datetime.now(UTC), machine.RetryPolicy(), confirmable=True)


async def test_an_orphan_job_reads_the_cancels_outbox_row_by_its_event_id(conn):
    event_id = str(uuid.uuid4())
    queue_id = await _cancelled_bpjs_ticket(conn, event_id)

    [(rebuild, rebuild_args)] = await _sent(conn, store.event_of_ticket(conn, queue_id))
    assert await _outbox_reads(conn, rebuild, rebuild_args) == []  # the ticket names its event
    found = await store.event_of_ticket(conn, queue_id)
    assert found is not None and found[0] == event_id and found[1].queue_id == queue_id

    _, data = found
    insert = store.insert(conn, data, event_id, _job(), service="antreanrs", origin="orphan")
    [(sql, args)] = await _sent(conn, insert)
    assert await _outbox_reads(conn, sql, args) == ["Index Scan outbox_event_id_key"]
    assert await store.insert(conn, data, event_id, _job(), service="antreanrs", origin="orphan")
    job = await conn.fetchrow("select * from bpjs_sync_job where queue_id = $1", queue_id)
    assert job["traceparent"] == TRACE and str(job["cancel_event_id"]) == event_id


async def test_a_ticket_cancelled_before_tickets_named_their_event_still_finds_its_outbox_row(
    conn,
):
    """Tickets cancelled before `cancel_event_id` existed: the outbox row by the ticket's key,
    a scan, for those few only."""
    queue_id = await _cancelled_bpjs_ticket(conn, None)
    outbox_event_id = await conn.fetchval(
        "select event_id::text from outbox where kafka_key = $1", str(queue_id)
    )
    found = await store.event_of_ticket(conn, queue_id)
    assert found is not None and found[0] == outbox_event_id
    _, data = found
    assert await store.insert(
        conn, data, outbox_event_id, _job(), service="antreanrs", origin="orphan"
    )
    job = await conn.fetchrow("select * from bpjs_sync_job where queue_id = $1", queue_id)
    assert job["traceparent"] == TRACE and str(job["cancel_event_id"]) == outbox_event_id
