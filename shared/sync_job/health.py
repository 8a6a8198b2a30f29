"""BPJS sync health in numbers: the worker's gauges and the API's status strip read this SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

BpjsState = Literal["reachable", "breaker_open", "unknown"]

# A worker not heard from for this long is gone (it writes every few seconds).
WORKER_FRESH_S = 60.0
UNSYNCED = ("pending", "failed")

# Per clinic, in one round trip: its unsynced BPJS cancellations (the ticket's `bpjs_sync`, so
# a cancellation whose event never arrived counts before it has a job) and the oldest one's age,
# its failed jobs, and the cancellations BPJS's record does not (yet) show.
_CLINICS_SQL = """
select clinic_id, 'unsynced' as what, count(*) as n,
       extract(epoch from now() - min(cancelled_at))::float8 as age_s
from queue_ticket
where bpjs_sync in ('pending', 'failed') and ($1::text is null or clinic_id = $1)
group by clinic_id
union all
select clinic_id, 'failed', count(*), null from bpjs_sync_job
where status = 'failed' and ($1::text is null or clinic_id = $1)
group by clinic_id
union all
select clinic_id, 'unconfirmed', count(*), null from bpjs_sync_job
where confirmable and ($1::text is null or clinic_id = $1)
  and ((status = 'synced' and confirmed_at is null)
       or (status in ('pending', 'failed') and last_error_kind = 'not_recorded'))
group by clinic_id
"""

_OLDEST_SQL = """
select id as queue_id, ticket_number, cancelled_at,
       extract(epoch from now() - cancelled_at)::float8 as age_s
from queue_ticket
where clinic_id = $1 and bpjs_sync in ('pending', 'failed')
order by cancelled_at, id limit 1
"""

# Same predicate as the pool's claim: due now, will be retried, held by no live lease.
_DUE_SQL = """
select count(*) from bpjs_sync_job
where will_retry and status in ('pending', 'failed') and next_attempt_at <= now()
  and (lease_until is null or lease_until < now())
"""

# dead_letter has no clinic: a message is the clinic's when its Kafka key is the id of one of
# the clinic's tickets (the key is the queue id as text; other keys are never cast).
_DEAD_LETTERS_SQL = """
select count(*) from dead_letter d
left join queue_ticket t on t.id = case when encode(d.key, 'escape') ~ '^[1-9][0-9]{0,17}$'
                                        then encode(d.key, 'escape')::bigint end
where $1::text is null or t.clinic_id = $1
"""

_RECORD_WORKER_SQL = """
insert into worker_status (worker_id, breaker_state, breaker_since, heartbeat_at)
values ($1, $2, $3, now())
on conflict (worker_id) do update set breaker_state = excluded.breaker_state,
    breaker_since = excluded.breaker_since, heartbeat_at = now()
"""

# The breaker of any live worker open (or probing) means cancellations are being held.
_WORKERS_SQL = """
select count(*) filter (where fresh) as fresh,
       count(*) filter (where fresh and breaker_state <> 'closed') as open,
       min(breaker_since) filter (where fresh and breaker_state <> 'closed') as open_since,
       max(heartbeat_at) as heartbeat_at
from (select *, heartbeat_at > now() - make_interval(secs => $1) as fresh
      from worker_status) w
"""


@dataclass
class ClinicNumbers:
    unsynced: int = 0
    oldest_unsynced_age_s: float = 0.0
    failed: int = 0
    unconfirmed: int = 0


@dataclass(frozen=True)
class Bpjs:
    """What the workers say about BPJS: `reachable`, `breaker_open` (since) or `unknown`."""

    state: BpjsState
    since: datetime | None
    heartbeat_at: datetime | None
    workers: int


async def clinics(
    conn: asyncpg.Connection, clinic_id: str | None = None
) -> dict[str, ClinicNumbers]:
    """Each clinic with anything to count (or only `clinic_id`)."""
    out: dict[str, ClinicNumbers] = {}
    for r in await conn.fetch(_CLINICS_SQL, clinic_id):
        numbers = out.setdefault(r["clinic_id"], ClinicNumbers())
        setattr(numbers, r["what"], r["n"])
        if r["what"] == "unsynced":
            numbers.oldest_unsynced_age_s = max(0.0, r["age_s"] or 0.0)
    return out


async def oldest_unsynced(conn: asyncpg.Connection, clinic_id: str) -> asyncpg.Record | None:
    """The clinic's oldest unsynced cancellation: queue_id, ticket_number, cancelled_at, age_s."""
    return await conn.fetchrow(_OLDEST_SQL, clinic_id)


async def jobs_due(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(_DUE_SQL))


async def dead_letters(conn: asyncpg.Connection, clinic_id: str | None = None) -> int:
    """Every dead letter, or those of one clinic's tickets."""
    return int(await conn.fetchval(_DEAD_LETTERS_SQL, clinic_id))


async def record_worker(
    conn: asyncpg.Connection, worker_id: str, breaker_state: str, breaker_since: datetime
) -> None:
    """A worker's heartbeat with its breaker's state (closed, half_open, open) and since when."""
    await conn.execute(_RECORD_WORKER_SQL, worker_id, breaker_state, breaker_since)


async def bpjs(conn: asyncpg.Connection, fresh_s: float = WORKER_FRESH_S) -> Bpjs:
    r = await conn.fetchrow(_WORKERS_SQL, fresh_s)
    assert r is not None
    if not r["fresh"]:
        return Bpjs("unknown", None, r["heartbeat_at"], 0)
    if r["open"]:
        return Bpjs("breaker_open", r["open_since"], r["heartbeat_at"], r["fresh"])
    return Bpjs("reachable", None, r["heartbeat_at"], r["fresh"])
