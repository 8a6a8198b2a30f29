"""SQL of sync jobs: record, claim with a lease, and finish an attempt with its result event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from services.bpjs_sync_worker.verify import TICKET_COLUMNS, Ticket
from shared.events import CloudEvent, QueueCancelledData
from shared.outbox import OUTBOX_INSERT_COLUMNS, add_to_outbox, outbox_values


async def record_job(
    conn: asyncpg.Connection,
    event: CloudEvent,
    data: QueueCancelledData,
    *,
    service: str,
    first_phase_s: float,
    horizon_s: float,
) -> bool:
    """Insert the job of a QueueCancelled event; False when it exists (a duplicate delivery)."""
    status = await conn.execute(
        "insert into bpjs_sync_job (queue_id, cancel_event_id, clinic_id, ticket_number, service,"
        " event_data, first_phase_until, horizon_at)"
        " values ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7),"
        "         now() + make_interval(secs => $8))"
        " on conflict do nothing",
        data.queue_id,
        event.id,
        data.clinic_id,
        data.ticket_number,
        service,
        data.model_dump(mode="json"),
        first_phase_s,
        horizon_s,
    )
    return str(status).endswith(" 1")


async def fetch_ticket(conn: asyncpg.Connection, queue_id: int) -> Ticket | None:
    row = await conn.fetchrow(
        f"select {TICKET_COLUMNS} from queue_ticket where id = $1",  # noqa: S608 - constant
        queue_id,
    )
    return None if row is None else Ticket.of(row)


# The claimed jobs with their ticket's columns (prefixed `t_`): what is sent to BPJS, and with
# whose credentials, comes from the ticket row at every attempt.
_CLAIM_SQL = f"""
update bpjs_sync_job j set lease_owner = $1, lease_until = now() + make_interval(secs => $3)
from queue_ticket t
where t.id = j.queue_id and j.queue_id in (
    select queue_id from bpjs_sync_job
    where will_retry and status in ('pending', 'failed') and next_attempt_at <= now()
      and (lease_until is null or lease_until < now())
    order by next_attempt_at limit $2 for update skip locked)
returning j.*, {", ".join(f"t.{c.strip()} as t_{c.strip()}" for c in TICKET_COLUMNS.split(","))}
"""  # noqa: S608 - a module constant of column names


async def claim_due(
    conn: asyncpg.Connection, owner: str, limit: int, lease_s: float
) -> list[asyncpg.Record]:
    """Lease up to `limit` due jobs; SKIP LOCKED + lease: no two workers call for one job."""
    if limit <= 0:
        return []
    return list(await conn.fetch(_CLAIM_SQL, owner, limit, lease_s))


async def release_own_leases(conn: asyncpg.Connection, owner: str) -> int:
    """At start-up a worker with a stable id frees what it held when it died."""
    status = await conn.execute(
        "update bpjs_sync_job set lease_owner = null, lease_until = null where lease_owner = $1",
        owner,
    )
    return int(status.split()[-1])


async def mark_cancel_done(conn: asyncpg.Connection, queue_id: int) -> None:
    await conn.execute(
        "update bpjs_sync_job set cancel_done = true, updated_at = now() where queue_id = $1",
        queue_id,
    )


async def lock_leased(conn: asyncpg.Connection, queue_id: int, owner: str) -> asyncpg.Record | None:
    """The job row, locked, if this worker still holds its lease and it is not finished."""
    return await conn.fetchrow(
        "select * from bpjs_sync_job where queue_id = $1 and lease_owner = $2"
        " and status not in ('synced', 'resolved_manually') for update",
        queue_id,
        owner,
    )


async def save_attempt(
    conn: asyncpg.Connection,
    queue_id: int,
    *,
    status: str,
    will_retry: bool,
    warned: bool,
    next_attempt_at: datetime | None,
    error: str | None,
    error_kind: str | None,
    bpjs_code: int | None,
    bpjs_message: str | None,
    task99_done: bool,
    result: tuple[str, CloudEvent] | None,
) -> None:
    """Store the attempt, the ticket's sync state and the result event: one statement (the
    caller's transaction holds the job row locked)."""
    out = outbox_values(*result) if result is not None else (None, None, None, None, None)
    await conn.execute(_SAVE_ATTEMPT_SQL, queue_id, status, will_retry, warned, next_attempt_at,
                       error, error_kind, bpjs_code, bpjs_message, task99_done, *out)  # fmt: skip


_SAVE_ATTEMPT_SQL = f"""
with job as (
    update bpjs_sync_job set status = $2, will_retry = $3, warned = $4,
        next_attempt_at = coalesce($5, next_attempt_at), last_error = $6,
        last_error_kind = $7, last_bpjs_code = $8, last_bpjs_message = $9,
        task99_done = $10, attempts = attempts + 1, last_attempt_at = now(),
        updated_at = now(), last_worker = lease_owner, lease_owner = null, lease_until = null,
        finished_at = case when $2 = 'synced' or not $3 then now() end
    where queue_id = $1
    returning queue_id
), ticket as (
    update queue_ticket set bpjs_sync = $2, updated_at = now()
    where id = $1 and bpjs_sync is distinct from 'resolved_manually'
)
insert into outbox ({OUTBOX_INSERT_COLUMNS})
select $11::uuid, $12::text, $13::text, $14::text, $15::bytea from job where $11::uuid is not null
"""  # noqa: S608 - a module constant of column names


async def warn_overdue(conn: asyncpg.Connection, limit: int = 100) -> list[asyncpg.Record]:
    """Jobs still unsynced at the end of their first phase (e.g. held by the breaker)."""
    # Rows locked by an attempt that is finishing are skipped; that attempt warns itself.
    return list(
        await conn.fetch(
            "select * from bpjs_sync_job where status = 'pending' and not warned"
            " and first_phase_until <= now() order by first_phase_until limit $1"
            " for update skip locked",
            limit,
        )
    )


async def mark_warned(
    conn: asyncpg.Connection, queue_id: int, topic: str, event: CloudEvent
) -> None:
    await conn.execute(
        "update bpjs_sync_job set status = 'failed', warned = true, updated_at = now()"
        " where queue_id = $1",
        queue_id,
    )
    await conn.execute(
        "update queue_ticket set bpjs_sync = 'failed' where id = $1 and bpjs_sync = 'pending'",
        queue_id,
    )
    await add_to_outbox(conn, topic, event)


async def stop_unfit(conn: asyncpg.Connection, queue_id: int, owner: str, error: str) -> None:
    """End a job the ticket row does not confirm, without a call, a result event or a change
    to the ticket (only a job recorded before events were verified can get here)."""
    await conn.execute(
        "update bpjs_sync_job set status = 'failed', will_retry = false, last_error = $3,"
        " last_error_kind = 'event_mismatch', updated_at = now(), finished_at = now(),"
        " last_worker = lease_owner, lease_owner = null, lease_until = null"
        " where queue_id = $1 and lease_owner = $2",
        queue_id,
        owner,
        error,
    )


async def record_dead_letter(
    conn: asyncpg.Connection,
    consumer: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    error: str,
) -> None:
    await conn.execute(
        'insert into dead_letter (consumer, topic, partition, "offset", key, value, reason, error)'
        " values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict do nothing",
        consumer,
        topic,
        partition,
        offset,
        key,
        value,
        reason,
        error,
    )


async def stats(conn: asyncpg.Connection) -> dict[str, Any]:
    row = await conn.fetchrow(
        "select count(*) filter (where will_retry and status in ('pending','failed')) as pending,"
        " extract(epoch from now() - min(created_at) filter"
        "   (where will_retry and status in ('pending','failed'))) as oldest"
        " from bpjs_sync_job"
    )
    assert row is not None
    return {"pending": row["pending"], "oldest_s": float(row["oldest"] or 0.0)}
