"""Quarantined outbox rows of the admin's clinic (permission `manage bpjs sync`)."""

from typing import Any

import asyncpg
from fastapi import APIRouter

from services.cancel_api.access import SyncAdmin
from services.cancel_api.context import Ctx
from services.cancel_api.openapi import problems

LIST_LIMIT = 500
# A row's key is its ticket's id as text: only rows whose key is a ticket of the clinic are
# shown (the cast is guarded, so a key of another shape is skipped, never an error).
_QUARANTINED_SQL = """
select o.event_id, o.topic, o.event_type, t.id as queue_id, t.ticket_number, o.attempts,
       o.last_error, o.created_at, o.quarantined_at, octet_length(o.payload) as payload_bytes
from outbox o
join queue_ticket t
  on t.id = case when o.kafka_key ~ '^[1-9][0-9]{0,17}$' then o.kafka_key::bigint end
where o.quarantined_at is not null and t.clinic_id = $1
order by o.quarantined_at desc, o.id desc limit $2
"""


def _iso(v: Any) -> str | None:
    return None if v is None else v.isoformat().replace("+00:00", "Z")


def _item(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "event_id": str(r["event_id"]),
        "topic": r["topic"],
        "event_type": r["event_type"],
        "queue_id": r["queue_id"],
        "ticket_number": r["ticket_number"],
        "attempts": r["attempts"],
        "last_error": r["last_error"],
        "created_at": _iso(r["created_at"]),
        "quarantined_at": _iso(r["quarantined_at"]),
        "payload_bytes": r["payload_bytes"],
    }


router = APIRouter(tags=["outbox admin"])


@router.get("/outbox/quarantined", responses=problems())
async def list_quarantined(ctx: Ctx, who: SyncAdmin) -> Any:
    """Events Kafka refused for good, newest first (at most 500); the payload is not shown."""
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(_QUARANTINED_SQL, who.clinic_id, LIST_LIMIT)
    return {"items": [_item(r) for r in rows]}
