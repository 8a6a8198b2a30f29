"""SQL for queue tickets, their audit trail and idempotency keys (asyncpg, caller's transaction)."""

from __future__ import annotations

from datetime import date
from typing import Any, NamedTuple

import asyncpg

from shared.auth import Principal
from shared.outbox import OUTBOX_INSERT_COLUMNS, OutboxValues

COLUMNS = (
    "id, clinic_id, room_id, service_date, ticket_number, patient_mrn, patient_name, payer, bpjs,"
    " status, created_at, cancelled_at, cancelled_by_id, cancelled_by_name, reason_code,"
    " reason_text, bpjs_sync"
)
# A ticket of the caller's clinic by id ($1, $2). The clinic is part of every lookup (another
# clinic's ticket simply does not exist), compared with `is not distinct from`, which no index
# can answer: with `=`, a clinic the statistics have not seen yet (new since the last ANALYZE)
# looks almost empty, and the planner reads the ticket through an index on (clinic_id, ...),
# walking all of that clinic's tickets, instead of through the primary key.
TICKET_OF_CLINIC = "id = $1 and clinic_id is not distinct from $2"


async def get_ticket(
    conn: asyncpg.Connection, clinic_id: str, queue_id: int, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " for update" if for_update else ""
    return await conn.fetchrow(
        f"select {COLUMNS} from queue_ticket where {TICKET_OF_CLINIC}{lock}",
        queue_id,
        clinic_id,
    )


async def read_ticket_for_cancel(
    conn: asyncpg.Connection, clinic_id: str, queue_id: int, *, for_update: bool = False
) -> asyncpg.Record | None:
    """`get_ticket` plus `updated_at`, which a following `cancel_with_audit_and_event` checks,
    and `tx_now`, the `now()` of the reading transaction: the time it stores as
    `cancelled_at`."""
    lock = " for update" if for_update else ""
    return await conn.fetchrow(
        f"select {COLUMNS}, updated_at, now() as tx_now from queue_ticket"
        f" where {TICKET_OF_CLINIC}{lock}",
        queue_id,
        clinic_id,
    )


# One statement for the three writes of a cancel. It changes the ticket only while it is still
# waiting, still has the fields the event was built from (`row` of `cancel_with_audit_and_
# event`) and has not been written since (`updated_at`), so the row it leaves is `row` with what
# it sets; the audit and outbox rows are inserted from the rows the update returns, so they are
# written exactly when the ticket was cancelled, and all three commit or none.
# As in TICKET_OF_CLINIC, the checks on the row are `is not distinct from`, so the primary key
# is the only way the planner can find it: with `=`, (clinic_id, status) matches
# queue_ticket_status_idx, and when the statistics say few tickets are waiting (an ANALYZE after
# closing time, before the day's tickets) the planner reads the ticket through that index,
# walking every waiting ticket of the clinic for each cancel.
_CANCEL_WRITES = f"""
with upd as (
    update queue_ticket set status = 'cancelled', cancelled_at = $10, updated_at = $10,
        cancelled_by_id = $3, cancelled_by_name = $4, reason_code = $5, reason_text = $6,
        bpjs_sync = $7, cancel_event_id = $15::uuid
    where {TICKET_OF_CLINIC} and status is not distinct from 'waiting'
        and room_id is not distinct from $11 and ticket_number is not distinct from $12
        and payer is not distinct from $13 and bpjs is not distinct from $14::jsonb
        and updated_at is not distinct from $21
    returning {COLUMNS}
), audit as (
    insert into queue_audit (queue_id, clinic_id, action, actor_id, actor_name, at,
        from_status, to_status, reason_code, reason_text, note, request_id)
    select id, $2::text, 'cancel', $3::text, $4::text, $10::timestamptz, $8::text, 'cancelled',
        $5::text, $6::text, null, $9::text
    from upd
), event as (
    insert into outbox ({OUTBOX_INSERT_COLUMNS})
    select $15::uuid, $16::text, $17::text, $18::text, $19::bytea, $20::text from upd
)"""
_CANCELLED_ROW = f"\nselect {COLUMNS} from upd\n"
_CANCEL_SQL = _CANCEL_WRITES + _CANCELLED_ROW
# The same, also storing the response under the request's Idempotency-Key (`IdempotencyKey`): the
# key's row is written exactly when the ticket is cancelled, in the same statement. A key
# already stored (reused for another ticket) fails the whole statement with a unique
# violation: nothing is written.
_CANCEL_AND_STORE_KEY_SQL = (
    _CANCEL_WRITES
    + """, stored as (
    insert into idempotency_key (clinic_id, user_id, key, request_hash, status_code,
        response_body)
    select $2::text, $3::text, $22::text, $23::text, 200, $24::jsonb from upd
)"""
    + _CANCELLED_ROW
)


IDEMPOTENCY_KEY_CONSTRAINT = "idempotency_key_pkey"


class IdempotencyKey(NamedTuple):
    """A request's Idempotency-Key and the hash of the request it was sent with."""

    key: str
    request_hash: str


async def cancel_with_audit_and_event(
    conn: asyncpg.Connection,
    who: Principal,
    row: asyncpg.Record,
    *,
    reason_code: str,
    reason_text: str | None,
    bpjs_sync: str | None,
    request_id: str | None,
    outbox_row: OutboxValues,
    key: IdempotencyKey | None = None,
    response: dict[str, Any] | None = None,
) -> asyncpg.Record | None:
    """Ticket `row` (from `read_ticket_for_cancel`, status waiting) -> cancelled at its `tx_now`,
    with its `audit(action="cancel")` row, the outbox row (`shared.outbox.outbox_values`) and,
    given `key`, its row storing `response`, in one statement. None, and nothing
    written, when the ticket is no longer waiting or changed since `row` was read."""
    # The `status = 'waiting'` guard repeats the rule in the database itself.
    stored = () if key is None else (key.key, key.request_hash, response)
    return await conn.fetchrow(
        _CANCEL_SQL if key is None else _CANCEL_AND_STORE_KEY_SQL,
        row["id"],
        who.clinic_id,
        who.user_id,
        who.name,
        reason_code,
        reason_text,
        bpjs_sync,
        row["status"],
        request_id,
        row["tx_now"],
        row["room_id"],
        row["ticket_number"],
        row["payer"],
        row["bpjs"],
        *outbox_row,
        row["updated_at"],
        *stored,
    )


async def list_tickets(
    conn: asyncpg.Connection,
    clinic_id: str,
    room_id: str | None,
    status: str,
    day: date,
    limit: int = 500,
) -> list[asyncpg.Record]:
    """The clinic's tickets of one service day in `status` (of one room, or all)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"select {COLUMNS} from queue_ticket where clinic_id = $1"
        " and ($2::text is null or room_id = $2) and status = $3 and service_date = $4"
        " order by service_date, room_id, ticket_seq limit $5",
        clinic_id,
        room_id,
        status,
        day,
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
) -> None:
    """Serialise requests carrying the same key until the end of the transaction. A statement
    of its own: a read in the same statement would use a snapshot taken before the lock was
    granted and miss what the key's previous holder committed."""
    await conn.execute(
        "select pg_advisory_xact_lock(hashtextextended($1, 0))",
        f"{clinic_id}\x1f{user_id}\x1f{key}",
    )


async def read_key_and_ticket_for_cancel(
    conn: asyncpg.Connection, clinic_id: str, user_id: str, key: str, queue_id: int
) -> asyncpg.Record:
    """After `lock_idempotency_key`, in one round trip: the response stored under the key
    (`request_hash`, `status_code`, `response_body`; null when none) and the ticket as
    `read_ticket_for_cancel(for_update=True)` reads it (every column null when there is none)."""
    row = await conn.fetchrow(
        "select k.request_hash, k.status_code, k.response_body, t.*"
        " from (select 1) one"
        " left join idempotency_key k on k.clinic_id = $2 and k.user_id = $3 and k.key = $4"
        f" left join lateral (select {COLUMNS}, updated_at, now() as tx_now from queue_ticket"
        f"  where {TICKET_OF_CLINIC} for update) t on true",
        queue_id,
        clinic_id,
        user_id,
        key,
    )
    assert row is not None  # the outer row of `one` is always there
    return row


async def purge_idempotency_keys(conn: asyncpg.Connection, older_than_hours: int) -> str:
    return str(
        await conn.execute(
            "delete from idempotency_key where created_at < now() - make_interval(hours => $1)",
            older_than_hours,
        )
    )
