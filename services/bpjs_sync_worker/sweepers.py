"""The pool's background sweeps besides warnings: jobs for cancellations whose event never
arrived, and the reconciliation of a clinic's day against BPJS's own record."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import Counter
from pydantic import ValidationError

from services.bpjs_sync_worker import verify
from services.bpjs_sync_worker.credentials import NoCredentials
from services.bpjs_sync_worker.health import HealthReporter
from services.bpjs_sync_worker.verify import TICKET_COLUMNS, Ticket
from shared.clinics import ZoneCache, clinic_zone, day_bounds
from shared.logging import get_logger
from shared.sync_job import machine, store
from shared.sync_job.machine import Job, Step

if TYPE_CHECKING:
    from services.bpjs_sync_worker.pool import JobPool

log = get_logger(__name__)
ORPHAN_BATCH = 100
RECONCILE_INTERVAL_S = 5.0
SCHEDULE_INTERVAL_S = 60.0
# A reconciliation started by a worker that died is taken over after this long.
RECONCILE_STALE = timedelta(minutes=10)

ORPHANS = Counter(
    "bpjs_sync_orphans_total",
    "BPJS cancellations found without a job (event lost or dead-lettered), by handling",
    ["handling"],
)
RECONCILED = Counter(
    "bpjs_reconciliation_reads_total", "Fresh reads of BPJS's record by result", ["result"]
)

_DAY_JOBS_SQL = f"""
select j.*, {", ".join(f"t.{c.strip()} as t_{c.strip()}" for c in TICKET_COLUMNS.split(","))}
from bpjs_sync_job j join queue_ticket t on t.id = j.queue_id
where j.clinic_id = $1 and t.cancelled_at >= $2 and t.cancelled_at < $3 and j.status = 'synced'
order by t.cancelled_at
"""  # noqa: S608 - a module constant of column names


class Sweepers:
    def __init__(self, pool: JobPool) -> None:
        self.pool = pool
        self.settings = pool.settings
        self._zones = ZoneCache()
        self._reconciling: asyncio.Task[None] | None = None

    def register(self) -> None:
        self.pool.every(min(30.0, self.settings.orphan_after_s / 4), self.orphans)
        self.pool.every(SCHEDULE_INTERVAL_S, self.schedule_days)
        self.pool.every(RECONCILE_INTERVAL_S, self.reconcile)
        HealthReporter(self.pool).register()

    async def orphans(self) -> None:
        """A job, from the ticket row, for every BPJS cancellation still pending long after its
        cancel with no job: its event was lost or dead-lettered."""
        p = self.pool
        async with p.db.acquire() as conn:
            ids = await store.orphans(conn, self.settings.orphan_after_s, ORPHAN_BATCH)
            created = 0
            for queue_id in ids:
                created += await self._orphan(conn, queue_id)
        if created:
            p.wake.set()

    async def _orphan(self, conn: asyncpg.Connection, queue_id: int) -> int:
        p = self.pool
        try:
            found = await store.event_of_ticket(conn, queue_id)
        except ValidationError as exc:
            # A row no event could be built from: loud, counted, left for an admin.
            ORPHANS.labels("unusable").inc()
            log.error("orphan_unusable", queue_id=queue_id, error=str(exc)[:300])
            return 0
        if found is None:
            return 0
        event_id, data = found
        ticket = Ticket.of(
            await conn.fetchrow("select * from queue_ticket where id = $1", queue_id)
        )
        problems = verify.mismatches(ticket, data, p.service)
        if problems:  # cannot differ (both come from the row), unless the row lacks fields
            log.warning("orphan_fields_missing", queue_id=queue_id, fields=problems)
        job = machine.new_job(_now(), p.policy, confirmable=p.plan.confirmable(p.service))
        if not await store.insert(conn, data, event_id, job, service=p.service, origin="orphan"):
            return 0
        ORPHANS.labels("job_created").inc()
        log.warning("orphan_job_created", queue_id=queue_id, clinic_id=data.clinic_id)
        return 1

    async def schedule_days(self) -> None:
        """After a clinic's day has ended in its own time zone (plus a margin), ask for its
        reconciliation once; an admin can ask again for any day."""
        default = self.settings.clinic_timezone
        async with self.pool.db.acquire() as conn:
            clinics = await conn.fetch(
                "select distinct clinic_id from bpjs_sync_job"
                " where created_at > now() - interval '3 days'"
            )
            for row in clinics:
                zone = await clinic_zone(conn, row["clinic_id"], default, self._zones)
                shifted = _now() - timedelta(seconds=self.settings.reconcile_after_s)
                day = shifted.astimezone(zone).date() - timedelta(days=1)
                await conn.execute(
                    "insert into bpjs_reconciliation (clinic_id, service_date, requested_by)"
                    " values ($1, $2, 'schedule') on conflict do nothing",
                    row["clinic_id"],
                    day,
                )

    async def reconcile(self) -> None:
        """Start one requested reconciliation in the background (its reads take a while and
        must not hold up the pool's loop), unless one is running."""
        if self._reconciling is not None and not self._reconciling.done():
            return
        if self.pool.breaker.capacity(1) <= 0:
            return  # BPJS is failing for everyone: read later
        self._reconciling = asyncio.create_task(self._reconcile_one())

    async def _reconcile_one(self) -> None:
        """A fresh read of BPJS's record for each synced, confirmable cancellation of one
        requested clinic day, within the rate limit (a worker that dies midway leaves the
        request to be taken over once stale)."""
        try:
            await self._reconcile()
        except Exception as exc:
            log.warning("reconcile_failed", error=repr(exc))

    async def _reconcile(self) -> None:
        p = self.pool
        async with p.db.acquire() as conn:
            request = await conn.fetchrow(
                "update bpjs_reconciliation set started_at = now(), error = null"
                " where (clinic_id, service_date) = (select clinic_id, service_date"
                "   from bpjs_reconciliation where finished_at is null"
                "   and (started_at is null or started_at < now() - $1::interval)"
                "   order by requested_at limit 1 for update skip locked)"
                " returning clinic_id, service_date",
                RECONCILE_STALE,
            )
        if request is None:
            return
        clinic_id, day = request["clinic_id"], request["service_date"]
        checked, missing, error = await self._read_day(clinic_id, day)
        async with p.db.acquire() as conn:
            await conn.execute(
                "update bpjs_reconciliation set finished_at = now(), checked = $3,"
                " not_recorded = $4, error = $5 where clinic_id = $1 and service_date = $2",
                clinic_id,
                day,
                checked,
                missing,
                error,
            )
        log.info("reconciled", clinic_id=clinic_id, day=str(day), checked=checked, missing=missing)
        if missing:
            p.wake.set()

    async def _read_day(self, clinic_id: str, day: date) -> tuple[int, int, str | None]:
        """No database connection is held while BPJS answers: reads run for many seconds."""
        p = self.pool
        if not p.plan.confirmable(p.service):
            return 0, 0, None  # no read API (antreanfktp) or no task 99 to find
        try:
            creds = p.credentials.for_clinic(clinic_id)
        except NoCredentials:
            return 0, 0, "no_credentials"
        async with p.db.acquire() as conn:
            zone = await clinic_zone(conn, clinic_id, self.settings.clinic_timezone, self._zones)
            start, end = day_bounds(zone, day)
            rows = await conn.fetch(_DAY_JOBS_SQL, clinic_id, start, end)
        checked = missing = failed = 0
        for row in rows:
            call = await p.slots.call(Step.READBACK, Ticket.of(row, prefix="t_"), creds)
            p.breaker.record(machine.breaker_healthy(call.kind))
            if call.kind not in ("success", "already_done", "rejected"):
                failed += 1
                RECONCILED.labels("unreachable").inc()
                continue
            recorded = bool(call.recorded)
            async with p.db.acquire() as conn, conn.transaction():
                current = await store.lock(conn, row["queue_id"])
                if current is None:
                    continue
                change = machine.reconcile(Job.of(current), recorded, _now(), p.policy)
                if change is None:
                    continue
                await store.apply(conn, row["queue_id"], change)
            checked += 1
            missing += 0 if recorded else 1
            RECONCILED.labels("recorded" if recorded else "not_recorded").inc()
        error = f"{failed} pembacaan gagal (BPJS tidak menjawab)" if failed else None
        return checked, missing, error


def _now() -> datetime:
    return datetime.now(UTC)
