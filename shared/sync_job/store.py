"""The one writer of BPJS sync job state: creates jobs and stores what the machine decided.

Used by the worker (attempts, warnings, orphans, reconciliation) and by the API's admin
endpoints (retry, resolve); both go through `machine` first, then `apply`.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from shared.events import CancelledBy, CloudEvent, QueueCancelledData
from shared.outbox import OUTBOX_INSERT_COLUMNS, outbox_values
from shared.sync_job.machine import Change, Job

# Jobs created without their event refer to it by the id the cancel stored on the ticket; a
# ticket cancelled before that column existed falls back to its outbox row, else to a stable
# id derived from the queue id (the same on every retry of the creation).
_EVENT_ID_NAMESPACE = uuid.UUID("6f0b7a52-3c55-4a4e-9d0b-5b8f1d2c9e10")

_INSERT_SQL = """
insert into bpjs_sync_job (queue_id, cancel_event_id, clinic_id, ticket_number, service,
    event_data, first_phase_until, horizon_at, created_at, next_attempt_at, confirmable,
    origin, status, will_retry, traceparent)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
    -- A job made without its event (an orphan, an admin's action) continues the trace of the
    -- cancel, kept with its outbox row while that row is (7 days after publishing), found by
    -- the event's id (unique): the indexes on the row's key hold unpublished rows only.
    coalesce($15::text, (select o.traceparent from outbox o where o.event_id = $2::uuid)))
on conflict do nothing
"""


async def insert(
    conn: asyncpg.Connection,
    data: QueueCancelledData,
    event_id: str,
    job: Job,
    *,
    service: str,
    origin: str = "event",
    traceparent: str | None = None,
) -> bool:
    """Record a job; False when one exists for the queue id or event id (a duplicate). Its
    attempts continue `traceparent`, else the trace of the ticket's outbox row, if any."""
    status = await conn.execute(
        _INSERT_SQL,
        data.queue_id,
        event_id,
        data.clinic_id,
        data.ticket_number,
        service,
        data.model_dump(mode="json"),
        job.first_phase_until,
        job.horizon_at,
        job.created_at,
        job.next_attempt_at or job.created_at,
        job.confirmable,
        origin,
        job.status.value,
        job.will_retry,
        traceparent,
    )
    return str(status).endswith(" 1")


async def event_of_ticket(
    conn: asyncpg.Connection, queue_id: int, clinic_id: str | None = None
) -> tuple[str, QueueCancelledData] | None:
    """The QueueCancelled (id, data) of a cancelled BPJS ticket, rebuilt from its row, for a
    job whose event never arrived; None when the ticket is not an unsynced BPJS cancellation."""
    # Only a ticket cancelled before tickets named their event looks for its outbox row by the
    # ticket's key, which no index on published rows answers: a scan of the week's rows.
    row = await conn.fetchrow(
        "select t.*, case when t.cancel_event_id is null then (select o.event_id from outbox o"
        "   where o.kafka_key = t.id::text and o.event_type = 'QueueCancelled' order by o.id"
        "   limit 1) end as outbox_event_id"
        " from queue_ticket t where t.id = $1 and ($2::text is null or t.clinic_id = $2)"
        " and t.payer = 'BPJS' and t.status = 'cancelled' and t.bpjs_sync is not null",
        queue_id,
        clinic_id,
    )
    if row is None:
        return None
    event_id = row["cancel_event_id"] or row["outbox_event_id"]
    if event_id is None:
        event_id = uuid.uuid5(_EVENT_ID_NAMESPACE, f"queue-cancelled:{queue_id}")
    data = QueueCancelledData.of_ticket(
        row,
        reason_code=row["reason_code"] or "other",
        reason_text=row["reason_text"],
        cancelled_by=CancelledBy(user_id=row["cancelled_by_id"], name=row["cancelled_by_name"]),
        cancelled_at=row["cancelled_at"],
    )
    return str(event_id), data


async def lock(
    conn: asyncpg.Connection,
    queue_id: int,
    *,
    owner: str | None = None,
    clinic_id: str | None = None,
) -> asyncpg.Record | None:
    """The job row, locked for the caller's transaction; with `owner`, only while that worker
    still holds its lease and the job is not finished (else an admin or another worker moved
    it on while the calls ran)."""
    if owner is not None:
        return await conn.fetchrow(
            "select * from bpjs_sync_job where queue_id = $1 and lease_owner = $2"
            " and status not in ('synced', 'resolved_manually') for update",
            queue_id,
            owner,
        )
    return await conn.fetchrow(
        "select * from bpjs_sync_job where queue_id = $1"
        " and ($2::text is null or clinic_id = $2) for update",
        queue_id,
        clinic_id,
    )


async def apply(
    conn: asyncpg.Connection,
    queue_id: int,
    change: Change,
    *,
    result: tuple[str, CloudEvent] | None = None,
    resolved_by: tuple[str, str, str] | None = None,
    unchanged_since: tuple[str, datetime] | None = None,
) -> bool:
    """Store `change`: the job's columns, the ticket's `bpjs_sync` and the result event
    (outbox), in one statement. Either the caller's transaction holds the job row locked, or
    `unchanged_since` is (lease owner, `updated_at` as the change was decided on) and nothing is
    stored unless the job is still that owner's, unfinished and unwritten since. Whether it was
    stored."""
    j = change.job
    call = change.attempt
    out = outbox_values(*result) if result is not None else (None,) * 6
    who = resolved_by or (None, None, None)
    seen = unchanged_since or (None, None)
    stored = await conn.fetchval(
        _APPLY_SQL,
        queue_id,
        j.status.value,
        j.will_retry,
        j.warned,
        j.cancel_done,
        j.task99_done,
        j.reply_lost,
        j.refused_after_loss,
        j.confirmable,
        j.confirmed_at,
        j.readback_at,
        j.readback_result,
        j.attempts,
        j.next_attempt_at,
        j.first_phase_until,
        j.horizon_at,
        j.last_error_kind,
        call is not None,
        change.error,
        call.code if call is not None else None,
        (call.message or None) if call is not None else None,
        change.release_lease,
        change.ticket_sync.value if change.ticket_sync is not None else None,
        *who,
        *out,
        *seen,
    )
    return bool(stored)


_APPLY_SQL = f"""
with job as (
    update bpjs_sync_job set status = $2, will_retry = $3, warned = $4, cancel_done = $5,
        task99_done = $6, reply_lost = $7, refused_after_loss = $8, confirmable = $9,
        confirmed_at = $10, readback_at = $11, readback_result = $12, attempts = $13,
        next_attempt_at = coalesce($14, next_attempt_at), first_phase_until = $15,
        horizon_at = $16, last_error_kind = $17,
        last_attempt_at = case when $18 then now() else last_attempt_at end,
        last_error = case when $18 or $19::text is not null then $19 else last_error end,
        last_bpjs_code = case when $18 then $20 else last_bpjs_code end,
        last_bpjs_message = case when $18 then $21 else last_bpjs_message end,
        last_worker = case when $18 then coalesce(lease_owner, last_worker) else last_worker end,
        lease_owner = case when $22 then null else lease_owner end,
        lease_until = case when $22 then null else lease_until end,
        finished_at = case when $2 in ('synced', 'resolved_manually') or not $3
                           then coalesce(finished_at, now()) end,
        resolved_by_id = coalesce($24, resolved_by_id),
        resolved_by_name = coalesce($25, resolved_by_name),
        resolved_note = coalesce($26, resolved_note),
        resolved_at = case when $24::text is not null then now() else resolved_at end,
        updated_at = now()
    where queue_id = $1 and ($33::text is null or (lease_owner = $33 and updated_at = $34
        and status not in ('synced', 'resolved_manually')))
    returning queue_id
), ticket as (
    update queue_ticket set bpjs_sync = $23, updated_at = now()
    where id = $1 and $23::text is not null and exists (select 1 from job)
      and (bpjs_sync is distinct from 'resolved_manually' or $23 = 'resolved_manually')
), event as (
    insert into outbox ({OUTBOX_INSERT_COLUMNS})
    select $27::uuid, $28::text, $29::text, $30::text, $31::bytea, $32::text from job
    where $27::uuid is not null
)
select count(*) from job
"""  # noqa: S608 - a module constant of column names


async def store_cancel_done(
    conn: asyncpg.Connection, queue_id: int, owner: str
) -> asyncpg.Record | None:
    """`batal` succeeded: stored before the next call (see machine.Progress). The job row as it
    is now (with whatever others wrote since the claim), None when the owner no longer holds it."""
    return await conn.fetchrow(
        "update bpjs_sync_job set cancel_done = true, updated_at = now()"
        " where queue_id = $1 and lease_owner = $2 returning *",
        queue_id,
        owner,
    )


async def overdue(conn: asyncpg.Connection, limit: int = 100) -> list[asyncpg.Record]:
    """Jobs still unsynced at the end of their first phase, locked (an attempt finishing holds
    its row and warns itself, so locked rows are skipped)."""
    return list(
        await conn.fetch(
            "select * from bpjs_sync_job where status = 'pending' and not warned and will_retry"
            " and first_phase_until <= now() order by first_phase_until limit $1"
            " for update skip locked",
            limit,
        )
    )


async def orphans(conn: asyncpg.Connection, older_than_s: float, limit: int) -> list[int]:
    """BPJS tickets cancelled more than `older_than_s` ago, still pending, without a job."""
    rows = await conn.fetch(
        "select t.id from queue_ticket t where t.bpjs_sync = 'pending'"
        " and t.cancelled_at < now() - make_interval(secs => $1)"
        " and not exists (select 1 from bpjs_sync_job j where j.queue_id = t.id)"
        " order by t.cancelled_at limit $2",
        older_than_s,
        limit,
    )
    return [r["id"] for r in rows]
