"""SQL for queue tickets, their audit trail and idempotency keys (asyncpg, caller's transaction)."""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from shared.auth import Principal

COLUMNS = (
    "id, clinic_id, room_id, service_date, ticket_number, patient_mrn, patient_name, payer, bpjs,"
    " status, created_at, cancelled_at, cancelled_by_id, cancelled_by_name, reason_code,"
    " reason_text, bpjs_sync"
)


async def get_ticket(
    conn: asyncpg.Connection, clinic_id: str, queue_id: int, *, for_update: bool = False
) -> asyncpg.Record | None:
    # The clinic is part of every lookup: another clinic's ticket simply does not exist.
    lock = " for update" if for_update else ""
    return await conn.fetchrow(
        f"select {COLUMNS} from queue_ticket where id = $1 and clinic_id = $2{lock}",
        queue_id,
        clinic_id,
    )


async def list_tickets(
    conn: asyncpg.Connection, clinic_id: str, room_id: str | None, status: str, limit: int = 500
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"select {COLUMNS} from queue_ticket where clinic_id = $1"
        " and ($2::text is null or room_id = $2) and status = $3"
        " order by service_date, room_id, ticket_seq limit $4",
        clinic_id,
        room_id,
        status,
        limit,
    )
    return rows


async def next_seq(conn: asyncpg.Connection, clinic_id: str, room_id: str, day: date) -> int:
    """The next ticket number of a room and day; atomic under concurrent registrations."""
    seq = await conn.fetchval(
        "insert into ticket_counter (clinic_id, room_id, service_date, last_seq)"
        " values ($1, $2, $3, 1) on conflict (clinic_id, room_id, service_date)"
        " do update set last_seq = ticket_counter.last_seq + 1 returning last_seq",
        clinic_id,
        room_id,
        day,
    )
    return int(seq)


async def insert_ticket(conn: asyncpg.Connection, **values: Any) -> asyncpg.Record:
    row = await conn.fetchrow(
        "insert into queue_ticket (clinic_id, room_id, service_date, ticket_seq, ticket_number,"
        " patient_mrn, patient_name, payer, bpjs) values ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
        f" returning {COLUMNS}",
        values["clinic_id"],
        values["room_id"],
        values["service_date"],
        values["ticket_seq"],
        values["ticket_number"],
        values["patient_mrn"],
        values["patient_name"],
        values["payer"],
        values["bpjs"],
    )
    assert row is not None
    return row


async def mark_cancelled(
    conn: asyncpg.Connection,
    queue_id: int,
    *,
    user_id: str,
    name: str,
    reason_code: str,
    reason_text: str | None,
    bpjs_sync: str | None,
) -> asyncpg.Record:
    # The `status = 'waiting'` guard repeats the rule in the database itself.
    row = await conn.fetchrow(
        "update queue_ticket set status = 'cancelled', cancelled_at = now(), updated_at = now(),"
        " cancelled_by_id = $2, cancelled_by_name = $3, reason_code = $4, reason_text = $5,"
        f" bpjs_sync = $6 where id = $1 and status = 'waiting' returning {COLUMNS}",
        queue_id,
        user_id,
        name,
        reason_code,
        reason_text,
        bpjs_sync,
    )
    assert row is not None, "caller holds the row lock and checked the status"
    return row


async def set_status(conn: asyncpg.Connection, queue_id: int, status: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "update queue_ticket set status = $2, updated_at = now()"
        f" where id = $1 returning {COLUMNS}",
        queue_id,
        status,
    )
    assert row is not None
    return row


async def audit(
    conn: asyncpg.Connection,
    who: Principal,
    *,
    queue_id: int,
    action: str,
    from_status: str | None,
    to_status: str | None,
    reason_code: str | None = None,
    reason_text: str | None = None,
    note: str | None = None,
    request_id: str | None = None,
) -> None:
    await conn.execute(
        "insert into queue_audit (queue_id, clinic_id, action, actor_id, actor_name, from_status,"
        " to_status, reason_code, reason_text, note, request_id)"
        " values ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
        queue_id,
        who.clinic_id,
        action,
        who.user_id,
        who.name,
        from_status,
        to_status,
        reason_code,
        reason_text,
        note,
        request_id,
    )


async def lock_idempotency_key(
    conn: asyncpg.Connection, clinic_id: str, user_id: str, key: str
) -> asyncpg.Record | None:
    """Serialise requests carrying the same key, then return the stored response if any."""
    await conn.execute(
        "select pg_advisory_xact_lock(hashtextextended($1, 0))",
        f"{clinic_id}\x1f{user_id}\x1f{key}",
    )
    return await conn.fetchrow(
        "select request_hash, status_code, response_body from idempotency_key"
        " where clinic_id = $1 and user_id = $2 and key = $3",
        clinic_id,
        user_id,
        key,
    )


async def store_idempotency_key(
    conn: asyncpg.Connection,
    clinic_id: str,
    user_id: str,
    key: str,
    request_hash: str,
    status_code: int,
    body: Any,
) -> None:
    await conn.execute(
        "insert into idempotency_key (clinic_id, user_id, key, request_hash, status_code,"
        " response_body) values ($1, $2, $3, $4, $5, $6)",
        clinic_id,
        user_id,
        key,
        request_hash,
        status_code,
        body,
    )


async def purge_idempotency_keys(conn: asyncpg.Connection, older_than_hours: int) -> str:
    return str(
        await conn.execute(
            "delete from idempotency_key where created_at < now() - make_interval(hours => $1)",
            older_than_hours,
        )
    )
