"""BPJS sync administration (permission `manage bpjs sync`): list, retry and resolve by hand."""

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query, Request

from services.cancel_api.access import SyncAdmin
from services.cancel_api.context import Ctx, read_json_body
from services.cancel_api.errors import Problem
from services.cancel_api.openapi import QueueIdValue, json_body, problems
from services.cancel_api.repository import COLUMNS, audit
from services.cancel_api.schemas import ResolveRequest, queue_out
from shared.auth import Principal

SYNC_FILTERS = {
    "unsynced": ("pending", "failed"),
    "pending": ("pending",),
    "failed": ("failed",),
    "synced": ("synced",),
    "resolved_manually": ("resolved_manually",),
}
_TICKET_COLUMNS = ", ".join(f"t.{c.strip()}" for c in COLUMNS.split(","))
_LIST_SQL = f"""
select {_TICKET_COLUMNS}, j.attempts, j.last_error, j.last_error_kind, j.last_bpjs_code,
       j.last_bpjs_message, j.next_attempt_at, j.will_retry, j.last_attempt_at,
       j.updated_at as job_updated_at, j.resolved_by_id, j.resolved_by_name, j.resolved_note,
       j.resolved_at, j.queue_id is not null as job_recorded, j.confirmable, j.confirmed_at,
       j.readback_at, j.readback_result, j.origin
from queue_ticket t left join bpjs_sync_job j on j.queue_id = t.id
where t.clinic_id = $1 and t.bpjs_sync = any($2::text[])
order by t.cancelled_at desc nulls last limit $3
"""


def _iso(v: Any) -> str | None:
    return None if v is None else v.isoformat().replace("+00:00", "Z")


def _item(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "queue": queue_out(r),
        "sync": {
            "status": r["bpjs_sync"],
            "job_recorded": r["job_recorded"],
            "attempts": r["attempts"] or 0,
            "last_error": r["last_error"],
            "last_error_kind": r["last_error_kind"],
            "last_bpjs_code": r["last_bpjs_code"],
            "last_bpjs_message": r["last_bpjs_message"],
            "will_retry": r["will_retry"] if r["job_recorded"] else True,
            "next_attempt_at": _iso(r["next_attempt_at"]) if r["will_retry"] else None,
            "last_attempt_at": _iso(r["last_attempt_at"]),
            "updated_at": _iso(r["job_updated_at"]),
            "resolved_by": (
                {"user_id": r["resolved_by_id"], "name": r["resolved_by_name"]}
                if r["resolved_by_id"]
                else None
            ),
            "resolved_note": r["resolved_note"],
            "resolved_at": _iso(r["resolved_at"]),
            # BPJS's own record read back (antreanrs); false: this service has no read API.
            "confirmable": bool(r["confirmable"]),
            "confirmed_at": _iso(r["confirmed_at"]),
            "readback_at": _iso(r["readback_at"]),
            "readback_result": r["readback_result"],
            "origin": r["origin"],
        },
    }


router = APIRouter(tags=["bpjs sync admin"])
QueueId = Annotated[QueueIdValue, Path(description="The cancelled ticket's id.")]


@router.get("/bpjs_sync", responses=problems())
async def list_sync(
    ctx: Ctx,
    who: SyncAdmin,
    status: Annotated[
        str, Query(pattern="^(unsynced|pending|failed|synced|resolved_manually)$")
    ] = "unsynced",
) -> Any:
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(_LIST_SQL, who.clinic_id, list(SYNC_FILTERS[status]), 500)
    return {"items": [_item(r) for r in rows]}


async def _locked(conn: asyncpg.Connection, who: Principal, queue_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(
        "select t.status, t.bpjs_sync, j.queue_id as job from queue_ticket t"
        " left join bpjs_sync_job j on j.queue_id = t.id"
        " where t.id = $1 and t.clinic_id = $2 and t.bpjs_sync is not null for update of t",
        queue_id,
        who.clinic_id,
    )
    if row is None:
        raise Problem(
            404, "sync_not_found", f"Tidak ada sinkronisasi BPJS untuk antrean {queue_id}."
        )
    if row["bpjs_sync"] in ("synced", "resolved_manually"):
        raise Problem(
            409,
            "sync_already_done",
            f"Sinkronisasi BPJS antrean {queue_id} sudah {row['bpjs_sync']}.",
        )
    return row


@router.post("/bpjs_sync/{queue_id}/retry", status_code=202, responses=problems(404, 409))
async def retry(ctx: Ctx, queue_id: QueueId, request: Request, who: SyncAdmin) -> Any:

    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, who, queue_id)
        if row["job"] is None:
            raise Problem(
                409,
                "sync_not_recorded_yet",
                "Pekerja sinkronisasi belum menerima pembatalan ini; coba lagi sebentar.",
            )
        # An immediate attempt; a final failure gets a fresh retry horizon.
        await conn.execute(
            "update bpjs_sync_job set next_attempt_at = now(), will_retry = true,"
            " horizon_at = greatest(horizon_at, now() + (horizon_at - created_at)),"
            " finished_at = null, updated_at = now() where queue_id = $1",
            queue_id,
        )
        await audit(
            conn,
            who,
            queue_id=queue_id,
            action="bpjs_retry",
            from_status=row["bpjs_sync"],
            to_status=row["bpjs_sync"],
            request_id=request.state.request_id,
        )
    return {
        "queue_id": queue_id,
        "status": "scheduled",
        "message": "Sinkronisasi BPJS dijadwalkan ulang",
    }


@router.post(
    "/bpjs_sync/{queue_id}/resolve",
    responses=problems(404, 409, 415),
    openapi_extra=json_body(ResolveRequest, required=True),
)
async def resolve(ctx: Ctx, queue_id: QueueId, request: Request, who: SyncAdmin) -> Any:

    body = await read_json_body(request, ResolveRequest, optional=False)
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, who, queue_id)
        ticket = await conn.fetchrow(
            "update queue_ticket set bpjs_sync = 'resolved_manually', updated_at = now()"
            f" where id = $1 returning {COLUMNS}",
            queue_id,
        )
        await conn.execute(
            "update bpjs_sync_job set status = 'resolved_manually', will_retry = false,"
            " resolved_by_id = $2, resolved_by_name = $3, resolved_note = $4,"
            " resolved_at = now(), finished_at = now(), updated_at = now(),"
            " lease_owner = null, lease_until = null where queue_id = $1",
            queue_id,
            who.user_id,
            who.name,
            body.note,
        )
        await audit(
            conn,
            who,
            queue_id=queue_id,
            action="bpjs_resolve",
            from_status=row["bpjs_sync"],
            to_status="resolved_manually",
            note=body.note,
            request_id=request.state.request_id,
        )
    return {
        "queue": queue_out(ticket),
        "bpjs_sync": "resolved_manually",
        "message": "Sinkronisasi BPJS ditandai selesai manual",
    }
