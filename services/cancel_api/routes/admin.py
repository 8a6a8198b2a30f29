"""BPJS sync administration (permission `manage bpjs sync`): list, retry and resolve by hand;
the job's state machine (shared.sync_job) decides what an action may do."""

from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query, Request

from services.cancel_api.access import SyncAdmin
from services.cancel_api.context import Ctx, read_json_body
from services.cancel_api.errors import Problem
from services.cancel_api.openapi import QueueIdValue, json_body, problems
from services.cancel_api.repository import COLUMNS, TICKET_OF_CLINIC, audit
from services.cancel_api.schemas import ResolveRequest, queue_out
from shared.auth import Principal
from shared.sync_job import machine, store
from shared.sync_job.machine import Job

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


async def _job(ctx: Any, conn: asyncpg.Connection, who: Principal, queue_id: int) -> Job:
    """The ticket's sync job, locked; created from the ticket row when it has none yet (its
    event is still on its way, or was lost): an admin's action never waits for the worker."""
    ticket = await conn.fetchval(
        f"select bpjs_sync from queue_ticket where {TICKET_OF_CLINIC}"
        " and bpjs_sync is not null for update",
        queue_id,
        who.clinic_id,
    )
    if ticket is None:
        raise Problem(
            404, "sync_not_found", f"Tidak ada sinkronisasi BPJS untuk antrean {queue_id}."
        )
    row = await store.lock(conn, queue_id, clinic_id=who.clinic_id)
    if row is None:
        found = await store.event_of_ticket(conn, queue_id, who.clinic_id)
        if found is None:
            raise Problem(
                404, "sync_not_found", f"Tidak ada sinkronisasi BPJS untuk antrean {queue_id}."
            )
        event_id, data = found
        service = ctx.settings.bpjs_service
        # Whether it can be confirmed follows the worker's settings; it sets it at each attempt.
        new = machine.new_job(_now(), _policy(ctx), confirmable=service == "antreanrs")
        if ticket in ("synced", "resolved_manually"):  # finished before jobs were recorded
            new = replace(new, status=machine.Status(ticket), will_retry=False)
        await store.insert(conn, data, event_id, new, service=service, origin="admin")
        row = await store.lock(conn, queue_id, clinic_id=who.clinic_id)
        assert row is not None
    return Job.of(row)


def _policy(ctx: Any) -> machine.RetryPolicy:
    s = ctx.settings
    return machine.RetryPolicy(first_phase_s=s.sync_first_phase_s, horizon_s=s.sync_horizon_s)


def _now() -> datetime:
    return datetime.now(UTC)


def _refused(exc: machine.InvalidTransition) -> Problem:
    return Problem(
        409, "invalid_transition", exc.message, "Status sinkronisasi BPJS tidak dapat diubah"
    )


@router.post("/bpjs_sync/{queue_id}/retry", status_code=202, responses=problems(404, 409))
async def retry(ctx: Ctx, queue_id: QueueId, request: Request, who: SyncAdmin) -> Any:

    async with ctx.pool.acquire() as conn, conn.transaction():
        job = await _job(ctx, conn, who, queue_id)
        try:
            change = machine.admin_retry(job, _now(), _policy(ctx))
        except machine.InvalidTransition as exc:
            raise _refused(exc) from None
        await store.apply(conn, queue_id, change)
        await audit(
            conn,
            who,
            queue_id=queue_id,
            action="bpjs_retry",
            from_status=job.status.value,
            to_status=change.job.status.value,
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
        job = await _job(ctx, conn, who, queue_id)
        try:
            change = machine.admin_resolve(job)
        except machine.InvalidTransition as exc:
            raise _refused(exc) from None
        await store.apply(conn, queue_id, change, resolved_by=(who.user_id, who.name, body.note))
        ticket = await conn.fetchrow(
            f"select {COLUMNS} from queue_ticket where id = $1",
            queue_id,
        )
        await audit(
            conn,
            who,
            queue_id=queue_id,
            action="bpjs_resolve",
            from_status=job.status.value,
            to_status="resolved_manually",
            note=body.note,
            request_id=request.state.request_id,
        )
    return {
        "queue": queue_out(ticket),
        "bpjs_sync": "resolved_manually",
        "message": "Sinkronisasi BPJS ditandai selesai manual",
    }
