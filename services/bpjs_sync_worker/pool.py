"""The bounded pool that works sync jobs: lease due jobs, call BPJS, store outcome and event."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiolimiter import AsyncLimiter
from prometheus_client import Counter, Gauge

from services.bpjs_sync_worker import jobs, results, verify
from services.bpjs_sync_worker.breaker import CircuitBreaker
from services.bpjs_sync_worker.config import WorkerSettings
from services.bpjs_sync_worker.credentials import CredentialBook, NoCredentials
from services.bpjs_sync_worker.policy import RetryPolicy, Verdict, decide
from services.bpjs_sync_worker.syncer import AttemptResult, Syncer
from services.bpjs_sync_worker.verify import Ticket
from shared.bpjs import BpjsClient, BpjsCredentials, Outcome, OutcomeKind
from shared.events import (
    TOPIC_BPJS_SYNC_FAILED,
    TOPIC_BPJS_SYNCED,
    CloudEvent,
)
from shared.logging import get_logger

log = get_logger(__name__)
SWEEP_INTERVAL_S = 0.5
WAKE_DEBOUNCE_S = 0.005
NO_CREDENTIALS = "no_credentials"
HELD = "BPJS sedang tidak dapat dihubungi (panggilan ditahan circuit breaker)"

ATTEMPTS = Counter("bpjs_sync_attempts_total", "Sync attempts by outcome", ["outcome"])
RESULTS = Counter("bpjs_sync_results_total", "Result events emitted", ["type", "error_kind"])
IN_FLIGHT = Gauge("bpjs_sync_in_flight", "Sync attempts in flight")
PENDING = Gauge("bpjs_sync_jobs_pending", "Jobs not yet synced that will be retried")
OLDEST = Gauge("bpjs_sync_oldest_pending_age_seconds", "Age of the oldest unsynced job")
BREAKER = Gauge("bpjs_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open")


class JobPool:
    def __init__(self, pool: asyncpg.Pool, client: BpjsClient, settings: WorkerSettings) -> None:
        self.db = pool
        self.settings = settings
        self.syncer = Syncer(client, send_task99=settings.bpjs_send_task99)
        self.owner = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.policy = RetryPolicy(
            settings.first_phase_s,
            settings.backoff_base_s,
            settings.max_interval_s,
            settings.horizon_s,
        )
        self.breaker = CircuitBreaker(
            settings.breaker_threshold, settings.breaker_cooldown_s, settings.breaker_max_cooldown_s
        )
        self.limiter = AsyncLimiter(settings.rate_per_s, 1.0)
        self.credentials = CredentialBook.load(
            settings.credentials_default(), settings.bpjs_credentials_file
        )
        self.wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._listener: asyncpg.Connection | None = None
        self.synced_topic = settings.topic(TOPIC_BPJS_SYNCED)
        self.failed_topic = settings.topic(TOPIC_BPJS_SYNC_FAILED)

    async def run(self) -> None:
        """Until stop(): warn overdue jobs, start due ones within the limits, wait for a wake-up."""
        # The owner is WORKER_ID, else hostname:pid. That default is stable across restarts of a
        # container (its process is pid 1), and unique among live processes, so a restarted
        # replica frees what it held when it died instead of waiting for the leases to expire.
        async with self.db.acquire() as conn:
            freed = await jobs.release_own_leases(conn, self.owner)
        log.info("own_leases_released", count=freed, owner=self.owner)
        last_sweep = 0.0
        while not self._stopping.is_set():
            try:
                now = time.monotonic()
                if now - last_sweep >= SWEEP_INTERVAL_S:  # not on every wake-up: it costs queries
                    await self._listen()
                    await self._warn_overdue()
                    await self._gauges()
                    last_sweep = now
                await self._start_due()
            except Exception as exc:
                log.warning("pool_cycle_failed", error=repr(exc))
                self._listener = None
            try:
                await asyncio.wait_for(self.wake.wait(), SWEEP_INTERVAL_S)
            except TimeoutError:
                pass
            self.wake.clear()
            # Debounce: attempts finishing together are refilled by one claim query.
            await asyncio.sleep(WAKE_DEBOUNCE_S)

    async def stop(self) -> None:
        """Stop claiming and let the calls in flight finish (graceful SIGTERM)."""
        self._stopping.set()
        self.wake.set()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _listen(self) -> None:
        if self._listener is None or self._listener.is_closed():
            conn = await asyncpg.connect(self.settings.database_url.get_secret_value())
            await conn.add_listener("bpjs_job", lambda *_: self.wake.set())
            self._listener = conn

    async def _start_due(self) -> None:
        free = self.settings.max_in_flight - len(self._running)
        allowed = self.breaker.capacity(free)
        BREAKER.set(int(self.breaker.state))
        if allowed <= 0:
            return
        async with self.db.acquire() as conn:
            claimed = await jobs.claim_due(conn, self.owner, allowed, self.settings.lease_s)
        for job in claimed:
            task = asyncio.create_task(self._plan(job))
            self._running.add(task)
            task.add_done_callback(self._done)

    def _plan(self, job: asyncpg.Record) -> Coroutine[Any, Any, None]:
        """What to do with a claimed job, decided from its ticket row before anything is sent."""
        ticket = Ticket.of(job, prefix="t_")
        unfit = verify.unfit(ticket, job["clinic_id"])
        if unfit:
            return self._stop_unfit(job, unfit)
        try:
            creds = self.credentials.for_clinic(ticket.clinic_id)
        except NoCredentials:
            return self._no_credentials(job)  # no call, so no breaker probe either
        self.breaker.started()
        return self._work(job, ticket, creds)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        IN_FLIGHT.set(len(self._running))
        self.wake.set()

    async def _work(self, job: asyncpg.Record, ticket: Ticket, creds: BpjsCredentials) -> None:
        IN_FLIGHT.set(len(self._running))
        try:
            async with self.limiter:
                result = await self.syncer.attempt(
                    job, ticket, creds, lambda: self._cancel_done(job)
                )
            self.breaker.record(result.transport_healthy)
            ATTEMPTS.labels(result.outcome.kind.value).inc()
            await self._store(job, result)
        except Exception as exc:
            log.exception("sync_attempt_crashed", queue_id=job["queue_id"], error=repr(exc))

    async def _no_credentials(self, job: asyncpg.Record) -> None:
        """A clinic missing from the credentials file: a final failure, nothing sent to BPJS."""
        log.warning("bpjs_no_credentials", queue_id=job["queue_id"], clinic_id=job["clinic_id"])
        detail = f"Kredensial BPJS klinik {job['clinic_id']} tidak ada di BPJS_CREDENTIALS_FILE"
        result = AttemptResult(
            Outcome(OutcomeKind.REJECTED, None, "", detail),
            cancel_done=bool(job["cancel_done"]),
            task99_done=bool(job["task99_done"]),
            transport_healthy=True,
            error_kind=NO_CREDENTIALS,
        )
        try:
            ATTEMPTS.labels(NO_CREDENTIALS).inc()
            await self._store(job, result)
        except Exception as exc:
            log.exception("sync_attempt_crashed", queue_id=job["queue_id"], error=repr(exc))

    async def _stop_unfit(self, job: asyncpg.Record, problems: list[str]) -> None:
        """The ticket row does not confirm the job: no call, ever (see jobs.stop_unfit)."""
        verify.security_event(
            verify.EVENT_MISMATCH,
            stage="attempt",
            queue_id=job["queue_id"],
            event_clinic_id=job["clinic_id"],
            ticket_clinic_id=job["t_clinic_id"],
            event_id=str(job["cancel_event_id"]),
            fields=problems,
        )
        try:
            async with self.db.acquire() as conn:
                error = "tiket tidak cocok dengan event: " + ", ".join(problems)
                await jobs.stop_unfit(conn, job["queue_id"], self.owner, error)
        except Exception as exc:
            log.exception("sync_attempt_crashed", queue_id=job["queue_id"], error=repr(exc))

    async def _cancel_done(self, job: asyncpg.Record) -> None:
        async with self.db.acquire() as conn:
            await jobs.mark_cancel_done(conn, job["queue_id"])

    async def _store(self, job: asyncpg.Record, result: AttemptResult) -> None:
        o = result.outcome
        async with self.db.acquire() as conn, conn.transaction():
            # Re-read under lock: the warning sweeper may have warned while the call ran.
            current = await jobs.lock_leased(conn, job["queue_id"], self.owner)
            if current is None:
                log.info("sync_attempt_discarded", queue_id=job["queue_id"], outcome=o.kind.value)
                return  # resolved by an admin meanwhile, or the lease expired and moved on
            now = datetime.now(UTC)
            attempts = current["attempts"] + 1
            warned = bool(current["warned"])
            d = decide(
                o.kind,
                now=now,
                attempts=attempts,
                warned=warned,
                first_phase_until=current["first_phase_until"],
                horizon_at=current["horizon_at"],
                policy=self.policy,
            )
            event: tuple[str, CloudEvent] | None = None
            status, will_retry = ("failed" if warned else "pending"), True
            if d.verdict is Verdict.SYNCED:
                status, will_retry = "synced", False
                event = (self.synced_topic, results.synced(current, attempts, o, now))
            elif d.verdict is Verdict.WARN_AND_RETRY:
                status, warned = "failed", True
                event = (
                    self.failed_topic,
                    results.failed(current, attempts, "unreachable", o, True, now),
                )
            elif d.verdict is not Verdict.RETRY:
                status, will_retry, warned = "failed", False, True
                kind = "rejected" if d.verdict is Verdict.REJECTED else "unreachable"
                kind = result.error_kind or kind
                event = (self.failed_topic, results.failed(current, attempts, kind, o, False, now))
            synced = status == "synced"
            await jobs.save_attempt(
                conn,
                job["queue_id"],
                status=status,
                will_retry=will_retry,
                warned=warned,
                next_attempt_at=d.next_attempt_at,
                error=None if synced else o.detail or o.message,
                error_kind=None if synced else result.error_kind or o.kind.value,
                bpjs_code=o.code,
                bpjs_message=o.message or None,
                task99_done=result.task99_done,
                result=event,
            )
        if event is not None:
            RESULTS.labels(event[1].type, event[1].data.get("error_kind", "")).inc()
        log.info(
            "sync_attempt",
            queue_id=job["queue_id"],
            attempts=attempts,
            outcome=o.kind.value,
            verdict=d.verdict.value,
            code=o.code,
        )

    async def _warn_overdue(self) -> None:
        """Warnings go out on time even while the breaker holds every call."""
        now = datetime.now(UTC)
        async with self.db.acquire() as conn, conn.transaction():
            for job in await jobs.warn_overdue(conn):
                outcome = Outcome(
                    OutcomeKind.RETRYABLE,
                    job["last_bpjs_code"],
                    job["last_bpjs_message"] or "",
                    job["last_error"] or HELD,
                )
                event = results.failed(job, job["attempts"], "unreachable", outcome, True, now)
                await jobs.mark_warned(conn, job["queue_id"], self.failed_topic, event)
                RESULTS.labels("BpjsSyncFailed", "unreachable").inc()

    async def _gauges(self) -> None:
        async with self.db.acquire() as conn:
            s = await jobs.stats(conn)
        PENDING.set(s["pending"])
        OLDEST.set(s["oldest_s"])
