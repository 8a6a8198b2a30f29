"""The worker's BPJS call slots: at most SYNC_MAX_IN_FLIGHT calls at once, within the rate limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiolimiter import AsyncLimiter

from services.bpjs_sync_worker.syncer import Syncer
from services.bpjs_sync_worker.verify import Ticket
from shared.bpjs import BpjsCredentials
from shared.sync_job.machine import Call, Step


class CallSlots:
    """A slot is held for one BPJS call only (attempts, reconciliation), never for the database
    writes before, between and after an attempt's calls; one rate-limit token per call."""

    def __init__(self, syncer: Syncer, max_in_flight: int, rate_per_s: float) -> None:
        self.syncer = syncer
        self._slots = asyncio.Semaphore(max_in_flight)
        # aiolimiter hands out at most `max_rate` per period: under 1/s, one per 1/rate s.
        rate = rate_per_s
        self.limiter = AsyncLimiter(rate, 1.0) if rate >= 1 else AsyncLimiter(1, 1 / rate)

    async def call(self, step: Step, ticket: Ticket, creds: BpjsCredentials) -> Call:
        """One call in a slot; the token is taken in the slot, so a waiting call spends none."""
        async with self._slots, self.limiter:
            return await self.syncer.call(step, ticket, creds)

    async def call_unless(
        self, held: Callable[[], bool], step: Step, ticket: Ticket, creds: BpjsCredentials
    ) -> Call | None:
        """Like call, but None and nothing sent when `held()` is true once the slot is free."""
        async with self._slots:
            if held():
                return None
            async with self.limiter:
                return await self.syncer.call(step, ticket, creds)
