"""The bounded pool that works sync jobs: claim due jobs with a lease (kept alive while their
calls run), make the calls within the in-flight slots, the rate limit and the breaker, and store
what the job's state machine (shared.sync_job.machine) decides."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from services.bpjs_sync_worker import jobs, results, verify
from services.bpjs_sync_worker.breaker import CircuitBreaker
from services.bpjs_sync_worker.config import WorkerSettings
from services.bpjs_sync_worker.credentials import CredentialBook, NoCredentials
from services.bpjs_sync_worker.slots import CallSlots
from services.bpjs_sync_worker.syncer import Syncer, traced_attempt
from services.bpjs_sync_worker.verify import Ticket
from shared.bpjs import BpjsClient, BpjsCredentials
from shared.events import TOPIC_BPJS_SYNC_FAILED, TOPIC_BPJS_SYNCED
from shared.logging import get_logger
from shared.sync_job import machine, store
from shared.sync_job.machine import Call, Change, Job, Plan, Progress, RetryPolicy

log = get_logger(__name__)
SWEEP_INTERVAL_S = 0.5
WAKE_DEBOUNCE_S = 0.005

# outcome: synced, the failure's kind (unreachable, auth_error, not_recorded, rejected,
# no_credentials), interrupted (stopped between calls) or discarded (resolved meanwhile).
ATTEMPTS = Counter("bpjs_sync_attempts_total", "Sync attempts by how they ended", ["outcome"])
RESULTS = Counter("bpjs_sync_results_total", "Result events emitted", ["type", "error_kind"])
IN_FLIGHT = Gauge("bpjs_sync_in_flight", "Sync attempts running (in a call or waiting for a slot)")
BREAKER = Gauge("bpjs_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open")
HEARTBEATS = Counter("bpjs_sync_lease_extensions_total", "Leases extended while calls ran")


def claim_ahead(max_in_flight: int) -> int:
    """Attempts claimed beyond the in-flight limit. They wait for a BPJS slot, so a slot freed
    by a call that ended starts its next call at once, while the claim round trip and the other
    attempts' database writes run outside the slots."""
    return max_in_flight


class JobPool:
    def __init__(self, pool: asyncpg.Pool, client: BpjsClient, settings: WorkerSettings) -> None:
        self.db = pool
        self.settings = settings
        self.service = settings.bpjs_service
        self.owner = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.policy = settings.retry_policy()
        self.plan = Plan(send_task99=settings.bpjs_send_task99, readback=settings.bpjs_readback)
        self.breaker = CircuitBreaker(
            settings.breaker_threshold, settings.breaker_cooldown_s, settings.breaker_max_cooldown_s
        )
        # Every BPJS call (cancel, task 99, read-back), the reconciliation's too, takes a slot.
        self.slots = CallSlots(Syncer(client), settings.max_in_flight, settings.rate_per_s)
        self.credentials = CredentialBook.load(
            settings.credentials_default(), settings.bpjs_credentials_file
        )
        ahead = claim_ahead(settings.max_in_flight)
        self.max_attempts = settings.max_in_flight + ahead
        self.claim_batch = max(1, ahead // 2)
        self.wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._running: dict[asyncio.Task[None], int] = {}  # task -> queue id (for heartbeats)
        self._listener: asyncpg.Connection | None = None
        self._periodic: list[tuple[float, Any]] = []  # (interval, coroutine function)
        self.synced_topic = settings.topic(TOPIC_BPJS_SYNCED)
        self.failed_topic = settings.topic(TOPIC_BPJS_SYNC_FAILED)

    def every(self, interval_s: float, work: Any) -> None:
        """Run `work()` from the pool's loop at most every `interval_s` (sweepers)."""
        self._periodic.append((interval_s, work))

    async def run(self) -> None:
        """Until stop(): start due jobs within the limits, wait for a wake-up; the sweeps run
        beside, so a slow sweep never delays refilling the slots."""
        # The owner is WORKER_ID, else hostname:pid. That default is stable across restarts of a
        # container (its process is pid 1), and unique among live processes, so a restarted
        # replica frees what it held when it died instead of waiting for the leases to expire.
        async with self.db.acquire() as conn:
            freed = await jobs.release_own_leases(conn, self.owner)
        log.info("own_leases_released", count=freed, owner=self.owner)
        self.every(SWEEP_INTERVAL_S, self._sweep)
        self.every(self.settings.lease_s / 3, self._heartbeat)
        sweeps = asyncio.create_task(self._sweeps())
        while not self._stopping.is_set():
            try:
                await self._start_due()
            except Exception as exc:
                log.warning("pool_cycle_failed", error=repr(exc))
            try:
                await asyncio.wait_for(self.wake.wait(), SWEEP_INTERVAL_S)
            except TimeoutError:
                pass
            self.wake.clear()
            # Debounce: attempts finishing together are refilled by one claim query.
            await asyncio.sleep(WAKE_DEBOUNCE_S)
        await sweeps

    async def _sweeps(self) -> None:
        """Each periodic work at most every its interval, one after the other, until stop()."""
        last = [0.0] * len(self._periodic)
        while not self._stopping.is_set():
            for i, (interval, work) in enumerate(self._periodic):
                if time.monotonic() - last[i] < interval:
                    continue
                last[i] = time.monotonic()
                try:
                    await work()
                except Exception as exc:
                    log.warning("pool_sweep_failed", work=work.__name__, error=repr(exc))
                    self._listener = None
            due = min(at + interval for at, (interval, _) in zip(last, self._periodic, strict=True))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(due - time.monotonic(), 0.01))

    async def stop(self) -> None:
        """Stop claiming and let the calls in flight finish (graceful SIGTERM)."""
        self._stopping.set()
        self.wake.set()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _sweep(self) -> None:
        await self._listen()
        await self._warn_overdue()

    async def _listen(self) -> None:
        if self._listener is None or self._listener.is_closed():
            conn = await asyncpg.connect(self.settings.database_url.get_secret_value())
            await conn.add_listener("bpjs_job", lambda *_: self.wake.set())
            self._listener = conn

    async def _heartbeat(self) -> None:
        if not self._running:
            return
        async with self.db.acquire() as conn:
            ids = list(self._running.values())
            n = await jobs.extend_leases(conn, self.owner, ids, self.settings.lease_s)
        HEARTBEATS.inc(n)

    async def _start_due(self) -> None:
        running = len(self._running)
        free = self.max_attempts - running
        BREAKER.set(int(self.breaker.state))
        # In batches while enough attempts wait for a slot; at once when a slot would idle.
        if free < self.claim_batch and running >= self.settings.max_in_flight:
            return
        allowed = self.breaker.capacity(free)
        if allowed <= 0:
            return
        async with self.db.acquire() as conn:
            claimed = await jobs.claim_due(conn, self.owner, allowed, self.settings.lease_s)
        for job in claimed:
            task = asyncio.create_task(traced_attempt(job, self._plan(job)))
            self._running[task] = job["queue_id"]
            task.add_done_callback(self._done)
        IN_FLIGHT.set(len(self._running))

    def _plan(self, row: asyncpg.Record) -> Coroutine[Any, Any, None]:
        """What to do with a claimed job, decided from its ticket row before anything is sent."""
        ticket = Ticket.of(row, prefix="t_")
        problems = verify.unfit(ticket, row["clinic_id"])
        if problems:
            return self._stop_unfit(row, problems)
        try:
            creds = self.credentials.for_clinic(ticket.clinic_id)
        except NoCredentials:
            return self._no_credentials(row)  # no call, so no breaker probe either
        probe = self.breaker.is_open  # half-open: this attempt is the one probe
        self.breaker.started()
        return self._work(row, ticket, creds, probe)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        IN_FLIGHT.set(len(self._running))
        self.wake.set()

    def _job(self, row: asyncpg.Record) -> Job:
        # Whether BPJS's record can be read follows this deployment's settings.
        return replace(Job.of(row), confirmable=self.plan.confirmable(self.service))

    async def _work(
        self, row: asyncpg.Record, ticket: Ticket, creds: BpjsCredentials, probe: bool
    ) -> None:
        calls: list[Call] = []
        seen: datetime | None = row["updated_at"]  # of the job row as this attempt last read it
        try:
            job = self._job(row)
            step = machine.next_step(job, self.plan, self.service)
            while step is not None:
                if calls:
                    call = await self.slots.call(step, ticket, creds)
                else:
                    # Claimed ahead: by the time its slot is free, the breaker may hold calls
                    # (this attempt is not its probe) or the worker be stopping.
                    first = await self.slots.call_unless(
                        lambda: self._stopping.is_set() or (self.breaker.is_open and not probe),
                        step,
                        ticket,
                        creds,
                    )
                    if first is None:  # due again at once, no attempt counted
                        ATTEMPTS.labels(await self._store(row, [])).inc()
                        return
                    call = first
                calls.append(call)
                went = machine.after_call(
                    job, call, now=_now(), policy=self.policy, plan=self.plan, service=self.service
                )
                if not isinstance(went, Progress):
                    break
                if went.store_cancel_done:
                    async with self.db.acquire() as conn:
                        stored = await store.store_cancel_done(conn, row["queue_id"], self.owner)
                    # The job as stored now: a warning sent since the claim is part of it.
                    seen = None if stored is None else stored["updated_at"]
                    row = row if stored is None else {**dict(row), **dict(stored)}
                job, step = went.job, went.next
            self.breaker.record(not calls or machine.breaker_healthy(calls[-1].kind))
            ATTEMPTS.labels(await self._store(row, calls, seen)).inc()
        except Exception as exc:
            log.exception("sync_attempt_crashed", queue_id=row["queue_id"], error=repr(exc))

    async def _store(self, row: Any, calls: list[Call], seen: datetime | None = None) -> str:
        """The attempt's end, decided again on the job as it is now (the warning sweeper may
        have warned, an admin resolved it, while the calls ran); how it ended. Mostly nobody
        wrote the job meanwhile: then one statement stores what `row` decides, no lock taken."""
        if seen is not None:
            change = self._fold(row, calls)
            async with self.db.acquire() as conn:
                if await self._apply(conn, row, change, unchanged_since=(self.owner, seen)):
                    return self._ended(row, calls, change)
        async with self.db.acquire() as conn, conn.transaction():
            current = await store.lock(conn, row["queue_id"], owner=self.owner)
            if current is None:
                log.info("sync_attempt_discarded", queue_id=row["queue_id"])
                return "discarded"
            change = self._fold(current, calls)
            await self._apply(conn, current, change)
        return self._ended(row, calls, change)

    def _fold(self, row: Any, calls: list[Call]) -> Change:
        return machine.fold(
            self._job(row), calls, now=_now(), policy=self.policy, plan=self.plan,
            service=self.service,
        )  # fmt: skip

    def _ended(self, row: Any, calls: list[Call], change: Change) -> str:
        log.info(
            "sync_attempt",
            queue_id=row["queue_id"],
            attempts=change.job.attempts,
            status=change.job.status.value,
            calls=[f"{c.step.value}:{c.kind}" for c in calls],
            code=calls[-1].code if calls else None,
        )
        if change.job.status is machine.Status.SYNCED:
            return "synced"
        return (change.job.last_error_kind or "failed") if change.attempt else "interrupted"

    async def _apply(
        self,
        conn: asyncpg.Connection,
        row: Any,
        change: Change,
        unchanged_since: tuple[str, datetime] | None = None,
    ) -> bool:
        """Store `change` with the result event it emits, if any (see store.apply)."""
        event = None
        if change.emit is not None:
            topic = self.synced_topic if change.emit.type == "BpjsSynced" else self.failed_topic
            event = (topic, results.build(row, change, _now()))
        stored = await store.apply(
            conn, row["queue_id"], change, result=event, unchanged_since=unchanged_since
        )
        if stored and event is not None:
            RESULTS.labels(event[1].type, change.emit.error_kind or "").inc()  # type: ignore[union-attr]
        return stored

    async def _no_credentials(self, row: asyncpg.Record) -> None:
        """A clinic missing from the credentials file: a final failure, nothing sent to BPJS."""
        log.warning("bpjs_no_credentials", queue_id=row["queue_id"], clinic_id=row["clinic_id"])
        detail = f"Kredensial BPJS klinik {row['clinic_id']} tidak ada di BPJS_CREDENTIALS_FILE"
        try:
            ATTEMPTS.labels(machine.ErrorKind.NO_CREDENTIALS.value).inc()
            async with self.db.acquire() as conn, conn.transaction():
                current = await store.lock(conn, row["queue_id"], owner=self.owner)
                if current is not None:
                    change = machine.no_credentials(self._job(current), detail, _now())
                    await self._apply(conn, current, change)
        except Exception as exc:
            log.exception("sync_attempt_crashed", queue_id=row["queue_id"], error=repr(exc))

    async def _stop_unfit(self, row: asyncpg.Record, problems: list[str]) -> None:
        """The ticket row does not confirm the job: no call, ever."""
        verify.security_event(
            verify.EVENT_MISMATCH,
            stage="attempt",
            queue_id=row["queue_id"],
            event_clinic_id=row["clinic_id"],
            ticket_clinic_id=row["t_clinic_id"],
            event_id=str(row["cancel_event_id"]),
            fields=problems,
        )
        try:
            async with self.db.acquire() as conn, conn.transaction():
                current = await store.lock(conn, row["queue_id"], owner=self.owner)
                if current is not None:
                    error = "tiket tidak cocok dengan event: " + ", ".join(problems)
                    await self._apply(conn, current, machine.unfit(self._job(current), error))
        except Exception as exc:
            log.exception("sync_attempt_crashed", queue_id=row["queue_id"], error=repr(exc))

    async def _warn_overdue(self) -> None:
        """Warnings go out on time even while the breaker holds every call."""
        now = _now()
        async with self.db.acquire() as conn, conn.transaction():
            for row in await store.overdue(conn):
                change = machine.deadline(Job.of(row), now)
                if change is not None:
                    await self._apply(conn, row, change)


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = ["JobPool", "RetryPolicy"]
