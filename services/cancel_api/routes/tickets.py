"""Queue tickets: list, read, register, accept and finish."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from services.cancel_api import repository as repo
from services.cancel_api import service
from services.cancel_api.access import Creator, Staff, Updater
from services.cancel_api.context import Ctx, read_json_body
from services.cancel_api.errors import Problem
from services.cancel_api.openapi import DayValue, QueueIdValue, json_body, problems
from services.cancel_api.schemas import NAME, QueueList, QueueOut, RegisterRequest, queue_out
from shared.clinics import clinic_zone, service_day

router = APIRouter(tags=["tickets"])
QueueId = Annotated[QueueIdValue, Path(description="The ticket's id.")]


@router.get("/antrian_ruangan", response_model=QueueList, responses=problems())
async def list_queue(
    ctx: Ctx,
    who: Staff,
    room_id: Annotated[str | None, Query(min_length=1, max_length=64, pattern=NAME)] = None,
    status: Annotated[str, Query(pattern="^(waiting|called|accepted|done|cancelled)$")] = "waiting",
    day: Annotated[
        DayValue | None,
        Query(
            alias="date",
            description="The service day (`YYYY-MM-DD`); default: today in the clinic's zone.",
        ),
    ] = None,
) -> Any:
    async with ctx.pool.acquire() as conn:
        if day is None:
            # Today's queue: waiting tickets of earlier days are not in it.
            zone = await clinic_zone(conn, who.clinic_id, ctx.settings.clinic_timezone, ctx.zones)
            day = service_day(zone, datetime.now(UTC))
        rows = await repo.list_tickets(conn, who.clinic_id, room_id, status, day)
    return {"items": [queue_out(r) for r in rows]}


@router.get("/antrian_ruangan/{queue_id}", response_model=QueueOut, responses=problems(404))
async def read_queue(ctx: Ctx, queue_id: QueueId, who: Staff) -> Any:
    async with ctx.pool.acquire() as conn:
        row = await repo.get_ticket(conn, who.clinic_id, queue_id)
    if row is None:
        raise Problem(404, "queue_not_found", f"Antrean {queue_id} tidak ditemukan.")
    return queue_out(row)


@router.post(
    "/antrian_ruangan",
    status_code=201,
    response_model=QueueOut,
    responses=problems(415),
    openapi_extra=json_body(RegisterRequest, required=True),
)
async def register(ctx: Ctx, request: Request, who: Creator) -> Any:
    body = await read_json_body(request, RegisterRequest, optional=False)
    return await service.register_ticket(
        ctx.pool,
        who,
        body,
        bpjs_service=ctx.settings.bpjs_service,
        timezone=ctx.settings.clinic_timezone,
        request_id=request.state.request_id,
        zones=ctx.zones,
    )


@router.post(
    "/antrian_ruangan/terima/{queue_id}", response_model=QueueOut, responses=problems(404, 409)
)
async def accept(ctx: Ctx, queue_id: QueueId, request: Request, who: Updater) -> Any:
    return await service.move_ticket(
        ctx.pool, who, queue_id, "accept", request_id=request.state.request_id
    )


@router.post(
    "/antrian_ruangan/selesai/{queue_id}", response_model=QueueOut, responses=problems(404, 409)
)
async def finish(ctx: Ctx, queue_id: QueueId, request: Request, who: Updater) -> Any:
    return await service.move_ticket(
        ctx.pool, who, queue_id, "finish", request_id=request.state.request_id
    )
