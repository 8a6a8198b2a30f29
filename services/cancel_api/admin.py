"""BPJS sync administration (permission `manage bpjs sync`): list, retry and resolve by hand."""

from collections.abc import Callable
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query, Request

from services.cancel_api.errors import Problem
from services.cancel_api.repository import COLUMNS, audit
from services.cancel_api.schemas import ResolveRequest, queue_out
from shared.auth import PERM_MANAGE_BPJS, Principal

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
       j.resolved_at, j.queue_id is not null as job_recorded
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
        },
    }


def admin_router(
    pool: Callable[[], asyncpg.Pool],
    require: Callable[[str], Any],
    parse_id: Callable[[str], int],
    json_body: Any,
) -> APIRouter:
    router = APIRouter(tags=["bpjs sync admin"])
    Admin = Annotated[Principal, Depends(require(PERM_MANAGE_BPJS))]

    @router.get("/bpjs_sync")
    async def list_sync(
        who: Admin,
        status: Annotated[
            str, Query(pattern="^(unsynced|pending|failed|synced|resolved_manually)$")
        ] = "unsynced",
    ) -> Any:
        async with pool().acquire() as conn:
            rows = await conn.fetch(_LIST_SQL, who.clinic_id, list(SYNC_FILTERS[status]), 500)
        return {"items": [_item(r) for r in rows]}

    async def _locked(conn: asyncpg.Connection, who: Principal, qid: int) -> asyncpg.Record:
        row = await conn.fetchrow(
            "select t.status, t.bpjs_sync, j.queue_id as job from queue_ticket t"
            " left join bpjs_sync_job j on j.queue_id = t.id"
            " where t.id = $1 and t.clinic_id = $2 and t.bpjs_sync is not null for update of t",
            qid,
            who.clinic_id,
        )
        if row is None:
            raise Problem(
                404, "sync_not_found", f"Tidak ada sinkronisasi BPJS untuk antrean {qid}."
            )
        if row["bpjs_sync"] in ("synced", "resolved_manually"):
            raise Problem(
                409,
                "sync_already_done",
                f"Sinkronisasi BPJS antrean {qid} sudah {row['bpjs_sync']}.",
            )
        return row

    @router.post("/bpjs_sync/{queue_id}/retry", status_code=202)
    async def retry(queue_id: str, request: Request, who: Admin) -> Any:
        qid = parse_id(queue_id)
        async with pool().acquire() as conn, conn.transaction():
            row = await _locked(conn, who, qid)
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
                qid,
            )
            await audit(
                conn,
                who,
                queue_id=qid,
                action="bpjs_retry",
                from_status=row["bpjs_sync"],
                to_status=row["bpjs_sync"],
                request_id=request.state.request_id,
            )
        return {
            "queue_id": qid,
            "status": "scheduled",
            "message": "Sinkronisasi BPJS dijadwalkan ulang",
        }

    @router.post("/bpjs_sync/{queue_id}/resolve")
    async def resolve(queue_id: str, request: Request, who: Admin) -> Any:
        qid = parse_id(queue_id)
        body = await json_body(request, ResolveRequest, optional=False)
        async with pool().acquire() as conn, conn.transaction():
            row = await _locked(conn, who, qid)
            ticket = await conn.fetchrow(
                "update queue_ticket set bpjs_sync = 'resolved_manually', updated_at = now()"
                f" where id = $1 returning {COLUMNS}",
                qid,
            )
            await conn.execute(
                "update bpjs_sync_job set status = 'resolved_manually', will_retry = false,"
                " resolved_by_id = $2, resolved_by_name = $3, resolved_note = $4,"
                " resolved_at = now(), finished_at = now(), updated_at = now(),"
                " lease_owner = null, lease_until = null where queue_id = $1",
                qid,
                who.user_id,
                who.name,
                body.note,
            )
            await audit(
                conn,
                who,
                queue_id=qid,
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

    return router
