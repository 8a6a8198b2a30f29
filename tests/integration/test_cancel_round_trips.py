"""What a cancel with an Idempotency-Key (every cancel the staff UI sends) costs the database in
statements, each a round trip the API's one event loop pays for; and that what the key stores
is what the cancel answered."""

import uuid

import asyncpg
import pytest

from services.cancel_api import service
from services.cancel_api.errors import Problem
from services.cancel_api.schemas import CancelRequest, RegisterRequest
from services.cancel_api.service import cancel_ticket, register_ticket
from shared.auth import Principal
from shared.config import API_DB_ROLE
from shared.db import create_pool
from shared.outbox import NOTIFY_AFTER_COMMIT, OutboxBell
from tests.fixtures.infra import role_dsn

STAFF = Principal("u-1", "Petugas Loket", "KLINIK-A", frozenset({"queue:cancel"}))


async def _statements_of(pool: asyncpg.Pool, work) -> tuple[object, list[str]]:
    """`work()`'s result and the statements it sent on the pool's one connection."""
    sent: list[str] = []
    async with pool.acquire() as conn:
        # A query logger stays on the connection across releases (only closing clears it).
        conn.add_query_logger(lambda q: sent.append(q.query))
    result = await work()
    # Not the cancel's: the bell's NOTIFY, sent after the commit in a transaction of its own.
    return result, [q for q in sent if "pg_notify" not in q]


async def _waiting_ticket(pool: asyncpg.Pool) -> int:
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
    return int(ticket["id"])


async def test_a_keyed_cancel_is_five_statements_and_its_replay_four(database, topic_prefix):
    """BEGIN, the key's lock, one read of the key and the ticket, one write of the ticket, its
    audit, outbox and key rows, COMMIT. A replay stops after the read."""
    pool = await create_pool(
        role_dsn(database, API_DB_ROLE), min_size=1, max_size=1,
        reset_session=False, session_settings=NOTIFY_AFTER_COMMIT,
    )  # fmt: skip
    bell = OutboxBell(pool)
    try:
        queue_id = await _waiting_ticket(pool)
        key = f"k-{uuid.uuid4().hex}"

        def cancel():
            return cancel_ticket(
                pool, STAFF, queue_id, CancelRequest(), topic=f"{topic_prefix}queue-cancelled",
                bell=bell, idempotency_key=key, request_id=None,
            )  # fmt: skip

        first, sent = await _statements_of(pool, cancel)
        assert len(sent) == 5, sent
        replay, sent_again = await _statements_of(pool, cancel)
        assert len(sent_again) == 4, sent_again
        assert replay == first
        async with pool.acquire() as conn:
            stored = await conn.fetchval(
                "select response_body from idempotency_key where key = $1", key
            )
            status = await conn.fetchval("select status from queue_ticket where id = $1", queue_id)
        assert stored == first and first["queue"]["status"] == status == "cancelled"
    finally:
        await bell.close()
        await pool.close()


async def _api_pool(database: str) -> asyncpg.Pool:
    return await create_pool(
        role_dsn(database, API_DB_ROLE), min_size=1, max_size=2,
        reset_session=False, session_settings=NOTIFY_AFTER_COMMIT,
    )  # fmt: skip


async def _keyed_cancel(pool, bell, queue_id: int, key: str, topic_prefix: str):
    return await cancel_ticket(
        pool, STAFF, queue_id, CancelRequest(), topic=f"{topic_prefix}queue-cancelled",
        bell=bell, idempotency_key=key, request_id=None,
    )  # fmt: skip


async def _kept(pool: asyncpg.Pool, key: str, queue_id: int) -> tuple[int, int, str]:
    """Stored keys under `key`, outbox rows of `queue_id`, and its status."""
    async with pool.acquire() as conn:
        return (
            await conn.fetchval("select count(*) from idempotency_key where key = $1", key),
            await conn.fetchval("select count(*) from outbox where kafka_key = $1", str(queue_id)),
            await conn.fetchval("select status from queue_ticket where id = $1", queue_id),
        )


async def test_a_keyed_cancel_of_a_missing_or_already_cancelled_ticket_stores_no_key(
    database, topic_prefix
):
    pool = await _api_pool(database)
    bell = OutboxBell(pool)
    try:
        missing = f"k-{uuid.uuid4().hex}"
        with pytest.raises(Problem) as refused:
            await _keyed_cancel(pool, bell, 987_654_321, missing, topic_prefix)
        assert refused.value.status == 404 and refused.value.code == "queue_not_found"
        queue_id = await _waiting_ticket(pool)
        await _keyed_cancel(pool, bell, queue_id, f"k-{uuid.uuid4().hex}", topic_prefix)
        again = f"k-{uuid.uuid4().hex}"
        with pytest.raises(Problem) as refused:
            await _keyed_cancel(pool, bell, queue_id, again, topic_prefix)
        assert refused.value.status == 409
        assert (await _kept(pool, missing, 987_654_321))[0] == 0
        assert await _kept(pool, again, queue_id) == (0, 1, "cancelled")
    finally:
        await bell.close()
        await pool.close()


async def test_a_response_that_differs_from_the_row_written_keeps_nothing(
    database, topic_prefix, monkeypatch
):
    """The key's response is built before the statement that stores it; should it ever differ
    from the row that statement wrote, the whole cancel is rolled back, key included."""
    real = service._as_cancelled

    def wrong(*args):
        return {**real(*args), "reason_text": "not what the statement wrote"}

    monkeypatch.setattr(service, "_as_cancelled", wrong)
    pool = await _api_pool(database)
    bell = OutboxBell(pool)
    try:
        queue_id = await _waiting_ticket(pool)
        key = f"k-{uuid.uuid4().hex}"
        with pytest.raises(RuntimeError, match="stored response differs"):
            await _keyed_cancel(pool, bell, queue_id, key, topic_prefix)
        assert await _kept(pool, key, queue_id) == (0, 0, "waiting")
    finally:
        await bell.close()
        await pool.close()
