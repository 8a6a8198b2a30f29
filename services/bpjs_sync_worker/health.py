"""The worker's health gauges and its row in `worker_status` (breaker state, since, heartbeat)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import Gauge

from services.bpjs_sync_worker import jobs
from services.bpjs_sync_worker.breaker import BreakerState, CircuitBreaker
from shared.logging import get_logger
from shared.sync_job import health

if TYPE_CHECKING:
    from services.bpjs_sync_worker.pool import JobPool

log = get_logger(__name__)
HEARTBEAT_INTERVAL_S = 5.0
GAUGE_INTERVAL_S = 5.0

OLDEST_UNSYNCED = Gauge(
    "bpjs_sync_oldest_unsynced_age_seconds",
    "Age of the clinic's oldest BPJS cancellation not synced or resolved (with or without a job)",
    ["clinic_id"],
)
FAILED_JOBS = Gauge("bpjs_sync_failed_jobs", "Sync jobs in status failed", ["clinic_id"])
UNCONFIRMED = Gauge(
    "bpjs_unconfirmed_cancellations",
    "Cancellations BPJS's record does not (yet) show: synced but not confirmed, or not recorded",
    ["clinic_id"],
)
PENDING = Gauge("bpjs_sync_jobs_pending", "Jobs not yet synced that will be retried")
OLDEST = Gauge("bpjs_sync_oldest_pending_age_seconds", "Age of the oldest unsynced job")
JOBS_DUE = Gauge("bpjs_sync_jobs_due", "Sync jobs due now that will be retried and are not leased")
DEAD_LETTERS = Gauge("bpjs_dead_letters", "Rows in dead_letter (every clinic)")
BREAKER_SINCE = Gauge(
    "bpjs_breaker_state_since_timestamp_seconds",
    "Unix time this worker's breaker last opened or closed (half-open probes count as open)",
)
_STATE_NAMES = {
    BreakerState.CLOSED: "closed",
    BreakerState.HALF_OPEN: "half_open",
    BreakerState.OPEN: "open",
}


class HealthReporter:
    """Gauges from `shared.sync_job.health` (the admin's status endpoint reads the same SQL), and
    this worker's breaker in the database, where the API can see it."""

    def __init__(self, pool: JobPool) -> None:
        self.pool = pool
        self._clinics: dict[Gauge, set[str]] = {}
        self._write_lock = asyncio.Lock()
        self._writes: set[asyncio.Task[None]] = set()
        pool.breaker.on_change = self._breaker_changed
        BREAKER_SINCE.set(pool.breaker.since)

    def register(self) -> None:
        self.pool.every(HEARTBEAT_INTERVAL_S, self.heartbeat)
        self.pool.every(GAUGE_INTERVAL_S, self.gauges)

    def _breaker_changed(self, breaker: CircuitBreaker) -> None:
        """At once, not at the next heartbeat: the admin sees an opening within a moment."""
        BREAKER_SINCE.set(breaker.since)
        task = asyncio.get_running_loop().create_task(self._write_now())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_now(self) -> None:
        try:
            await self.heartbeat()
        except Exception as exc:  # the next heartbeat writes it again
            log.warning("worker_status_write_failed", error=repr(exc))

    async def heartbeat(self) -> None:
        # Serialised, and the state read under the lock: a heartbeat started before a change
        # can never overwrite the change's row with the older state.
        async with self._write_lock, self.pool.db.acquire() as conn:
            breaker = self.pool.breaker
            since = datetime.fromtimestamp(breaker.since, UTC)
            state = _STATE_NAMES[breaker.state]
            await health.record_worker(conn, self.pool.owner, state, since)

    async def gauges(self) -> None:
        async with self.pool.db.acquire() as conn:
            numbers = await health.clinics(conn)
            JOBS_DUE.set(await health.jobs_due(conn))
            DEAD_LETTERS.set(await health.dead_letters(conn))
            s = await jobs.stats(conn)
        PENDING.set(s["pending"])
        OLDEST.set(s["oldest_s"])
        self._per_clinic(OLDEST_UNSYNCED, {c: n.oldest_unsynced_age_s for c, n in numbers.items()})
        self._per_clinic(FAILED_JOBS, {c: n.failed for c, n in numbers.items()})
        self._per_clinic(UNCONFIRMED, {c: n.unconfirmed for c, n in numbers.items()})

    def _per_clinic(self, gauge: Gauge, values: dict[str, float]) -> None:
        """A clinic with nothing left to count drops to 0 (Prometheus keeps its series)."""
        seen = self._clinics.setdefault(gauge, set())
        for clinic in seen - values.keys():
            gauge.labels(clinic).set(0)
        for clinic, value in values.items():
            gauge.labels(clinic).set(value)
        seen.update(values)
