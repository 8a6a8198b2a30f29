"""A cancel with an Idempotency-Key (every cancel the staff UI sends): what it costs the
database in statements, each a round trip the API's one event loop pays for; that the response
stored under the key is the one the cancel answered; and that a key already stored, or a
ticket no longer waiting, is decided on the locked path with nothing written twice."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import pytest

from services.cancel_api.errors import Problem
from services.cancel_api.schemas import CancelRequest, RegisterRequest
from services.cancel_api.service import cancel_ticket, register_ticket
from shared.auth import Principal
from shared.config import API_DB_ROLE
from shared.db import create_pool
from shared.outbox import NOTIFY_AFTER_COMMIT, OutboxBell
from tests.fixtures.infra import role_dsn
from tests.fixtures.plans import scans

STAFF = Principal("u-1", "Petugas Loket", "KLINIK-A", frozenset({"queue:cancel"}))


@asynccontextmanager
async def _api(database: str, size: int) -> AsyncIterator[tuple[asyncpg.Pool, OutboxBell]]:
    """A pool as the API's (its role and session setting) and the bell its cancels ring."""
    pool = await create_pool(
        role_dsn(database, API_DB_ROLE), min_size=1, max_size=size,
        reset_session=False, session_settings=NOTIFY_AFTER_COMMIT,
    )  # fmt: skip
    bell = OutboxBell(pool)
    try:
        yield pool, bell
    finally:
        await bell.close()
        await pool.close()


async def _statements_of(pool: asyncpg.Pool, work) -> tuple[object, list[str]]:
    """`work()`'s result and the statements it sent on the pool's one connection."""
    sent: list[str] = []
    async with pool.acquire() as conn:
        # A query logger stays on the connection across releases (only closing clears it).
        conn.add_query_logger(lambda q: sent.append(q.query))
    result = await work()
    # Not the cancel's: the bell's NOTIFY, sent after the commit in a transaction of its own.
    return result, [q for q in sent if "pg_notify" not in q]


async def _waiting_ticket(pool: asyncpg.Pool, payer: str = "UMUM") -> int:
    ticket = await register_ticket(
        pool,
        STAFF,
        RegisterRequest.model_validate(
            {"room_id": "POLI-UMUM", "payer": payer,
             "patient": {"mrn": f"RM-{uuid.uuid4().hex[:6]}", "name": "Siti Aminah"},
             **({"bpjs": {"booking_code": f"BK-{uuid.uuid4().hex[:8]}"}}
                if payer == "BPJS" else {})}
        ),
        bpjs_service="antreanrs",
        timezone="Asia/Jakarta",
        request_id=None,
    )  # fmt: skip
    return int(ticket["id"])


def _cancel(pool, bell, queue_id: int, key: str, topic_prefix: str, body=None):
    return cancel_ticket(
        pool, STAFF, queue_id, body or CancelRequest(), topic=f"{topic_prefix}queue-cancelled",
        bell=bell, idempotency_key=key, request_id=None,
    )  # fmt: skip


async def _kept(pool: asyncpg.Pool, key: str, queue_id: int) -> tuple[int, int, str | None]:
    """Keys stored as `key`, outbox rows of `queue_id`, and its status."""
    async with pool.acquire() as conn:
        return (
            await conn.fetchval("select count(*) from idempotency_key where key = $1", key),
            await conn.fetchval("select count(*) from outbox where kafka_key = $1", str(queue_id)),
            await conn.fetchval("select status from queue_ticket where id = $1", queue_id),
        )


@pytest.mark.parametrize(
    ("payer", "body"),
    [("UMUM", CancelRequest()),
     ("BPJS", CancelRequest(reason_code="no_show", reason_text="Pasien tidak datang"))],
    ids=["umum", "bpjs-with-reason"],
)  # fmt: skip
async def test_a_keyed_cancel_is_two_statements_and_stores_the_response_it_answers(
    database, topic_prefix, payer, body
):
    """A read of the ticket, then one statement writing the ticket, its audit, outbox and key
    rows (as a cancel without a key). A replay reads the ticket, then under the key's lock the
    key: BEGIN, lock, read, COMMIT."""
    async with _api(database, 1) as (pool, bell):
        queue_id = await _waiting_ticket(pool, payer)
        key = f"k-{uuid.uuid4().hex}"
        first, sent = await _statements_of(
            pool, lambda: _cancel(pool, bell, queue_id, key, topic_prefix, body)
        )
        assert len(sent) == 2, sent
        replay, sent_again = await _statements_of(
            pool, lambda: _cancel(pool, bell, queue_id, key, topic_prefix, body)
        )
        assert len(sent_again) == 5, sent_again
        assert replay == first
        async with pool.acquire() as conn:
            stored = await conn.fetchval(
                "select response_body from idempotency_key where key = $1", key
            )
            written = await conn.fetchrow(
                "select status, reason_code, reason_text, bpjs_sync from queue_ticket"
                " where id = $1",
                queue_id,
            )
        assert stored == first
        queue = first["queue"]
        assert (queue["status"], queue["reason_code"], queue["reason_text"]) == (
            written["status"], written["reason_code"], written["reason_text"]
        ) == ("cancelled", body.reason_code, body.reason_text)  # fmt: skip
        assert queue["bpjs_sync"] == written["bpjs_sync"]
        assert first["bpjs_sync"] == ("pending" if payer == "BPJS" else "not_required")


async def test_a_key_reused_for_another_waiting_ticket_is_refused_and_changes_nothing(
    database, topic_prefix
):
    """The fast path's statement fails on the stored key as a whole; the locked path refuses."""
    async with _api(database, 2) as (pool, bell):
        key = f"k-{uuid.uuid4().hex}"
        await _cancel(pool, bell, await _waiting_ticket(pool), key, topic_prefix)
        other = await _waiting_ticket(pool)
        with pytest.raises(Problem) as refused:
            await _cancel(pool, bell, other, key, topic_prefix)
        assert refused.value.status == 422 and refused.value.code == "idempotency_key_reused"
        assert await _kept(pool, key, other) == (1, 0, "waiting")


async def test_concurrent_retries_with_one_key_cancel_once_and_answer_alike(database, topic_prefix):
    """All read the ticket waiting; one statement cancels it, the others find it no longer
    waiting and replay the first's response under the key's lock."""
    async with _api(database, 4) as (pool, bell):
        queue_id = await _waiting_ticket(pool)
        key = f"k-{uuid.uuid4().hex}"
        answers = await asyncio.gather(
            *(_cancel(pool, bell, queue_id, key, topic_prefix) for _ in range(4))
        )
        assert all(a == answers[0] for a in answers)
        assert await _kept(pool, key, queue_id) == (1, 1, "cancelled")


async def test_a_keyed_cancel_of_a_missing_or_already_cancelled_ticket_stores_no_key(
    database, topic_prefix
):
    async with _api(database, 2) as (pool, bell):
        missing = f"k-{uuid.uuid4().hex}"
        with pytest.raises(Problem) as refused:
            await _cancel(pool, bell, 987_654_321, missing, topic_prefix)
        assert refused.value.status == 404 and refused.value.code == "queue_not_found"
        queue_id = await _waiting_ticket(pool)
        await _cancel(pool, bell, queue_id, f"k-{uuid.uuid4().hex}", topic_prefix)
        again = f"k-{uuid.uuid4().hex}"
        with pytest.raises(Problem) as refused:
            await _cancel(pool, bell, queue_id, again, topic_prefix)
        assert refused.value.status == 409
        assert (await _kept(pool, missing, 987_654_321))[0] == 0
        assert await _kept(pool, again, queue_id) == (0, 1, "cancelled")


def _literal(value: object) -> str:
    """`value` as an SQL literal of unknown type (EXECUTE's arguments cannot be parameters)."""
    if value is None:
        return "null"
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'"
    text = orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
    return "'" + text.replace("'", "''") + "'"


async def _scans_of_tickets(conn: asyncpg.Connection, sql: str, args: tuple) -> list[str]:
    """How the plan of `sql` with `args` reads queue_ticket: each scan's type and index."""
    plan = await conn.fetchval(f"explain (format json) {sql}", *args)  # json: decoded
    return scans(plan, "queue_ticket")


@pytest.mark.parametrize("yesterday", ["KLINIK-A", "KLINIK-B"], ids=["same-clinic", "new-clinic"])
async def test_a_cancel_finds_its_ticket_by_primary_key_whatever_the_statistics_say(
    database, topic_prefix, yesterday
):
    """The morning after a nightly ANALYZE: yesterday's tickets are all done, so the statistics
    say almost none is waiting (and, for a clinic new since then, that it has no ticket at all),
    and today's thousands of waiting tickets came after. A cancel that then read its ticket
    through (clinic, status) walks every waiting ticket of the clinic, a cost growing as the
    day fills; it must stay on the primary key, in the plan of its first executions (custom)
    and of later ones (generic)."""
    admin = await asyncpg.connect(database)
    try:
        insert = (
            "insert into queue_ticket (clinic_id, room_id, service_date, ticket_seq,"
            " ticket_number, patient_mrn, patient_name, payer, status)"
            " select $1, 'POLI-UMUM', $2, 1000 + g, 'A-' || g, 'RM-' || g,"
            " 'Pasien ' || g, 'UMUM', $3 from generate_series(1, $4) g"
        )
        today = datetime.now(ZoneInfo("Asia/Jakarta")).date()
        await admin.execute(insert, yesterday, today - timedelta(days=1), "done", 3000)
        await admin.execute("analyze queue_ticket")
        await admin.execute(insert, STAFF.clinic_id, today, "waiting", 2000)
    finally:
        await admin.close()
    async with _api(database, 1) as (pool, bell):
        sent: list[tuple[str, tuple]] = []
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda q: sent.append((q.query, q.args)))
        for key in (None, f"k-{uuid.uuid4().hex}"):
            queue_id = await _waiting_ticket(pool)
            sent.clear()
            await _cancel(pool, bell, queue_id, key, topic_prefix)
            statements = [(q, a) for q, a in sent if "queue_ticket" in q]
            assert len(statements) == 2, sent  # the read, then the cancel's writes
            # On the API's own connection (its codecs); the transaction holds the plan mode.
            async with pool.acquire() as explain, explain.transaction():
                for mode in ("force_custom_plan", "force_generic_plan"):
                    await explain.execute(f"set local plan_cache_mode = {mode}")
                    for i, (sql, args) in enumerate(statements):
                        if mode == "force_generic_plan":  # as a prepared statement's
                            await explain.execute(f"prepare s{i} as {sql}")
                            sql = f"execute s{i}({', '.join(map(_literal, args))})"
                        scans = await _scans_of_tickets(
                            explain, sql, args if mode == "force_custom_plan" else ()
                        )
                        assert scans == ["Index Scan queue_ticket_pkey"], (mode, scans, sql)
                for i in range(len(statements)):
                    await explain.execute(f"deallocate s{i}")
