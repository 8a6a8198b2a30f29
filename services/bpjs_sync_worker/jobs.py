"""Scheduling SQL of sync jobs: claim due jobs with a lease, heartbeat, dead letters, gauges.

Job state itself is written only by shared.sync_job.store."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.bpjs_sync_worker.verify import TICKET_COLUMNS, Ticket


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


async def extend_leases(
    conn: asyncpg.Connection, owner: str, queue_ids: list[int], lease_s: float
) -> int:
    """Heartbeat: the leases of the jobs whose calls are still in flight last another lease
    time, so a slow BPJS never lets another worker (or this one) claim them again."""
    status = await conn.execute(
        "update bpjs_sync_job set lease_until = now() + make_interval(secs => $3)"
        " where queue_id = any($2::bigint[]) and lease_owner = $1",
        owner,
        queue_ids,
        lease_s,
    )
    return int(status.split()[-1])


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
