"""One sync attempt for one job: `batal` (both services), then task 99 (antreanrs, a setting)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram

from services.bpjs_sync_worker.verify import Ticket
from shared.bpjs import BpjsClient, BpjsCredentials, CallResult, Outcome, OutcomeKind
from shared.logging import get_logger
from shared.reasons import bpjs_reason

log = get_logger(__name__)

BPJS_LATENCY = Histogram(
    "bpjs_call_duration_seconds",
    "BPJS call latency",
    ["call", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 20),
)
BPJS_CALLS = Counter("bpjs_calls_total", "BPJS calls by call and outcome", ["call", "outcome"])


@dataclass(frozen=True)
class AttemptResult:
    outcome: Outcome  # of the cancellation as a whole
    cancel_done: bool
    task99_done: bool
    transport_healthy: bool  # BPJS answered (for the circuit breaker)
    error_kind: str | None = None  # of a failure decided without BPJS (no_credentials)


def _observe(call: str, result: CallResult) -> None:
    BPJS_LATENCY.labels(call, result.outcome.kind.value).observe(result.elapsed)
    BPJS_CALLS.labels(call, result.outcome.kind.value).inc()


class Syncer:
    def __init__(self, client: BpjsClient, *, send_task99: bool) -> None:
        self.client = client
        self.send_task99 = send_task99 and client.service == "antreanrs"

    async def attempt(
        self, job: Any, ticket: Ticket, creds: BpjsCredentials, on_cancel_done: Any
    ) -> AttemptResult:
        """The calls for `job`, with every field taken from its ticket row, never the event."""
        cancel_done = bool(job["cancel_done"])
        task99_done = bool(job["task99_done"])
        last: Outcome | None = None
        if not cancel_done:
            result = await self._cancel(creds, ticket)
            _observe("batal", result)
            last = result.outcome
            if not result.ok:
                healthy = result.outcome.kind is not OutcomeKind.RETRYABLE
                return AttemptResult(result.outcome, False, task99_done, healthy)
            cancel_done = True
            await on_cancel_done()  # persisted now: a crash before task 99 never re-cancels blindly
        if self.send_task99 and not task99_done:
            booking = ticket.booking("booking_code")
            result = await self.client.update_task(creds, booking, 99, int(time.time() * 1000))
            _observe("task99", result)
            if result.outcome.kind is OutcomeKind.RETRYABLE:
                return AttemptResult(result.outcome, True, False, False)
            if result.outcome.kind is OutcomeKind.REJECTED:
                # The cancellation itself is recorded at BPJS; a refused timeline update is
                # kept as a note for the admin, not turned into a failed cancellation.
                log.warning(
                    "task99_refused",
                    queue_id=job["queue_id"],
                    code=result.outcome.code,
                    message=result.outcome.message,
                )
            task99_done = True
            last = last or result.outcome
        outcome = last or Outcome(OutcomeKind.ALREADY_DONE, None, "", "already synced")
        if outcome.kind is not OutcomeKind.SUCCESS and outcome.kind is not OutcomeKind.ALREADY_DONE:
            outcome = Outcome(OutcomeKind.SUCCESS, outcome.code, outcome.message, outcome.detail)
        return AttemptResult(outcome, cancel_done, task99_done, True)

    async def _cancel(self, creds: BpjsCredentials, ticket: Ticket) -> CallResult:
        reason = bpjs_reason(ticket.reason_code, ticket.reason_text)
        if self.client.service == "antreanrs":
            return await self.client.cancel_rs(creds, ticket.booking("booking_code"), reason)
        return await self.client.cancel_fktp(
            creds,
            ticket.booking("visit_date"),
            ticket.booking("poli_code"),
            ticket.booking("card_number"),
            reason,
        )
