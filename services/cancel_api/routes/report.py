"""The daily BPJS reconciliation report of a clinic (permission `manage bpjs sync`): JSON or CSV,
and the request for a fresh read of BPJS's record of a day."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from services.cancel_api.access import SyncAdmin
from services.cancel_api.context import ApiContext, Ctx
from services.cancel_api.domain import BPJS_FIELDS
from services.cancel_api.errors import Problem
from services.cancel_api.openapi import DayValue, problems
from services.cancel_api.schemas import CancelledByOut
from shared.clinics import clinic_zone, day_bounds, service_day
from shared.sync_job.machine import Job, report_state

STATES = ("confirmed", "not_recorded", "not_confirmable", "unconfirmed", "failed", "pending",
          "resolved_manually")  # fmt: skip
_JOB_COLUMNS = ", ".join(f"j.{f}" for f in Job.FIELDS)
# Built from constant column names only.
_REPORT_SQL = f"""
select t.id, t.ticket_number, t.room_id, t.bpjs, t.bpjs_sync, t.cancelled_at, t.cancelled_by_id,
       t.cancelled_by_name, j.queue_id is not null as job_recorded, j.last_error,
       {_JOB_COLUMNS}
from queue_ticket t left join bpjs_sync_job j on j.queue_id = t.id
where t.clinic_id = $1 and t.cancelled_at >= $2 and t.cancelled_at < $3
  and t.bpjs_sync is not null
order by t.cancelled_at, t.id
"""  # noqa: S608
_RECONCILIATION_SQL = """
select requested_at, started_at, finished_at, checked, not_recorded, error
from bpjs_reconciliation where clinic_id = $1 and service_date = $2
"""
# A new request starts over: the worker picks up rows whose finished_at is null.
_REQUEST_SQL = """
insert into bpjs_reconciliation (clinic_id, service_date, requested_at, requested_by)
values ($1, $2, now(), $3)
on conflict (clinic_id, service_date) do update set requested_at = now(),
    requested_by = excluded.requested_by, started_at = null, finished_at = null, error = null
"""
CSV = "text/csv"
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class ReportItem(BaseModel):
    queue_id: int
    ticket_number: str
    room_id: str
    bpjs: dict[str, Any] | None
    cancelled_at: datetime
    cancelled_by: CancelledByOut | None
    state: str
    bpjs_sync: str
    attempts: int
    last_error_kind: str | None
    last_error: str | None
    confirmable: bool
    confirmed_at: datetime | None
    readback_at: datetime | None
    readback_result: str | None


class Reconciliation(BaseModel):
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    checked: int
    not_recorded: int
    error: str | None


class Report(BaseModel):
    date: date
    time_zone: str
    counts: dict[str, int]
    items: list[ReportItem]
    reconciliation: Reconciliation | None


class ReconcileRequested(BaseModel):
    date: date
    status: str
    message: str


router = APIRouter(tags=["bpjs sync admin"])
Day = Annotated[
    DayValue | None,
    Query(
        alias="date",
        description="The clinic's service day (`YYYY-MM-DD`); default: yesterday in its zone.",
    ),
]
_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report; with `Accept: text/csv` its items as CSV (a download).",
        "content": {CSV: {"schema": {"type": "string"}}},
    }
}


@router.get("/bpjs_sync/report", response_model=Report, responses={**_CSV_RESPONSE, **problems()})
async def report(ctx: Ctx, who: SyncAdmin, request: Request, day: Day = None) -> Any:
    async with ctx.pool.acquire() as conn:
        zone = await _zone(ctx, conn, who.clinic_id)
        day = day or service_day(zone, datetime.now(UTC)) - timedelta(days=1)
        start, end = day_bounds(zone, day)
        rows = await conn.fetch(_REPORT_SQL, who.clinic_id, start, end)
        done = await conn.fetchrow(_RECONCILIATION_SQL, who.clinic_id, day)
    items = [_item(r) for r in rows]
    if _wants_csv(request.headers.get("accept", "")):
        fields = BPJS_FIELDS[ctx.settings.bpjs_service]
        name = f"bpjs-report-{_UNSAFE_NAME.sub('_', who.clinic_id)[:64]}-{day.isoformat()}.csv"
        return Response(
            _csv(items, zone, fields).encode("utf-8"),
            media_type=CSV,  # starlette adds "; charset=utf-8"
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Vary": "Accept"},
        )
    counts = dict.fromkeys(STATES, 0)
    for item in items:
        counts[item["state"]] = counts.get(item["state"], 0) + 1
    return Response(
        Report(
            date=day,
            time_zone=zone.key,
            counts=counts,
            items=[ReportItem.model_validate(i) for i in items],
            reconciliation=None if done is None else Reconciliation.model_validate(dict(done)),
        ).model_dump_json(),
        media_type="application/json",
        headers={"Vary": "Accept"},
    )


_DATE_IN_FUTURE = problems(409)[409] | {
    "description": "`date_in_future`: the day has not begun in the clinic's zone."
}


@router.post(
    "/bpjs_sync/report/reconcile",
    status_code=202,
    response_model=ReconcileRequested,
    responses={**problems(), 409: _DATE_IN_FUTURE},
)
async def reconcile(ctx: Ctx, who: SyncAdmin, day: Day = None) -> Any:
    """Ask the worker for a fresh read of BPJS's record of the day's cancellations."""
    async with ctx.pool.acquire() as conn:
        zone = await _zone(ctx, conn, who.clinic_id)
        today = service_day(zone, datetime.now(UTC))
        day = day or today - timedelta(days=1)
        if day > today:
            raise Problem(
                409,
                "date_in_future",
                f"Tanggal {day.isoformat()} belum tiba di zona waktu klinik ({zone.key}).",
                title="Tanggal belum tiba",
            )
        async with conn.transaction():
            await conn.execute(_REQUEST_SQL, who.clinic_id, day, who.user_id)
            # Wakes the workers now instead of at their next poll (delivered on commit).
            await conn.execute("select pg_notify('bpjs_job', '')")
    return {
        "date": day,
        "status": "requested",
        "message": f"Pemeriksaan ulang ke BPJS untuk tanggal {day.isoformat()} sudah diminta;"
        " hasilnya tampil di laporan setelah selesai.",
    }


async def _zone(ctx: ApiContext, conn: asyncpg.Connection, clinic_id: str) -> ZoneInfo:
    return await clinic_zone(conn, clinic_id, ctx.settings.clinic_timezone, ctx.zones)


def _item(r: asyncpg.Record) -> dict[str, Any]:
    job = Job.of(r) if r["job_recorded"] else None
    by = None
    if r["cancelled_by_id"] is not None:
        by = {"user_id": r["cancelled_by_id"], "name": r["cancelled_by_name"]}
    return {
        "queue_id": r["id"],
        "ticket_number": r["ticket_number"],
        "room_id": r["room_id"],
        "bpjs": r["bpjs"],
        "cancelled_at": r["cancelled_at"],
        "cancelled_by": by,
        "state": report_state(job, r["bpjs_sync"]),
        "bpjs_sync": r["bpjs_sync"],
        "attempts": r["attempts"] or 0,
        "last_error_kind": r["last_error_kind"],
        "last_error": r["last_error"],
        "confirmable": bool(r["confirmable"]),
        "confirmed_at": r["confirmed_at"],
        "readback_at": r["readback_at"],
        "readback_result": r["readback_result"],
    }


def _wants_csv(accept: str) -> bool:
    """CSV when the client asks for it at least as much as for JSON (`*/*` alone: JSON)."""
    quality: dict[str, float] = {}
    for part in accept.lower().split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media] = max(quality.get(media, 0.0), q)
    wanted = quality.get(CSV, 0.0)
    return wanted > 0 and wanted >= quality.get("application/json", 0.0)


_CSV_HEAD = ("state", "queue_id", "ticket_number", "room_id")
_CSV_TAIL = ("cancelled_at", "cancelled_by_id", "cancelled_by_name", "bpjs_sync", "attempts",
             "last_error_kind", "last_error", "confirmable", "confirmed_at", "readback_at",
             "readback_result")  # fmt: skip


def _csv(items: list[dict[str, Any]], zone: ZoneInfo, bpjs_fields: tuple[str, ...]) -> str:
    """One row per cancellation; times in the clinic's zone with their offset."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*_CSV_HEAD, *bpjs_fields, *_CSV_TAIL])
    for item in items:
        by = item["cancelled_by"] or {}
        bpjs = item["bpjs"] or {}
        values = {**item, "cancelled_by_id": by.get("user_id"), "cancelled_by_name": by.get("name")}
        row = [values[c] for c in _CSV_HEAD]
        row += [bpjs.get(f) for f in bpjs_fields]
        row += [values[c] for c in _CSV_TAIL]
        writer.writerow([_cell(v, zone) for v in row])
    return out.getvalue()


def _cell(value: Any, zone: ZoneInfo) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(zone).isoformat()
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
