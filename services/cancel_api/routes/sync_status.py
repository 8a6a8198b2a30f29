"""BPJS sync health of the admin's clinic (permission `manage bpjs sync`) for the status strip."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.cancel_api.access import SyncAdmin
from services.cancel_api.context import Ctx
from services.cancel_api.openapi import problems
from shared.sync_job import health


class OldestUnsynced(BaseModel):
    queue_id: int
    ticket_number: str
    cancelled_at: datetime
    age_seconds: float = Field(ge=0)


class SyncCounts(BaseModel):
    unsynced: int = Field(ge=0, description="BPJS cancellations not synced or resolved yet.")
    failed: int = Field(ge=0, description="Jobs in status `failed` (a warning went out).")
    unconfirmed: int = Field(ge=0, description="Cancellations BPJS's record does not (yet) show.")


class SyncStatus(BaseModel):
    bpjs: health.BpjsState = Field(
        description="`breaker_open`: a live worker holds its calls to BPJS; `unknown`: no worker"
        f" was heard from in the last {health.WORKER_FRESH_S:g} s."
    )
    since: datetime | None = Field(description="When the breaker opened (`breaker_open` only).")
    last_heartbeat_at: datetime | None = Field(description="The last worker heartbeat.")
    workers: int = Field(ge=0, description="Workers heard from recently.")
    oldest_unsynced: OldestUnsynced | None
    counts: SyncCounts
    dead_letters: int = Field(
        ge=0, description="Dead-lettered messages whose Kafka key is a ticket of this clinic."
    )
    checked_at: datetime


router = APIRouter(tags=["bpjs sync admin"])


@router.get("/bpjs_sync/status", response_model=SyncStatus, responses=problems())
async def sync_status(ctx: Ctx, who: SyncAdmin) -> Any:
    """Is BPJS reachable, the clinic's oldest unsynced cancellation, its counts, dead letters."""
    # One snapshot: the counts and the oldest cancellation agree with each other.
    async with (
        ctx.pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        bpjs = await health.bpjs(conn)
        numbers = (await health.clinics(conn, who.clinic_id)).get(who.clinic_id)
        oldest = await health.oldest_unsynced(conn, who.clinic_id)
        dead = await health.dead_letters(conn, who.clinic_id)
    numbers = numbers or health.ClinicNumbers()
    return SyncStatus(
        bpjs=bpjs.state,
        since=bpjs.since,
        last_heartbeat_at=bpjs.heartbeat_at,
        workers=bpjs.workers,
        oldest_unsynced=None
        if oldest is None
        else OldestUnsynced(
            queue_id=oldest["queue_id"],
            ticket_number=oldest["ticket_number"],
            cancelled_at=oldest["cancelled_at"],
            age_seconds=max(0.0, oldest["age_s"]),
        ),
        counts=SyncCounts(
            unsynced=numbers.unsynced, failed=numbers.failed, unconfirmed=numbers.unconfirmed
        ),
        dead_letters=dead,
        checked_at=datetime.now(UTC),
    )
