"""The BPJS calls of a sync job (`batal`, task 99, the `getlisttask` read-back), built from the
ticket row; what their outcomes mean for the job is decided by shared.sync_job.machine. Each
attempt is a span of the cancel's trace (the job's `traceparent`), each call a child of it."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

import structlog
from prometheus_client import Counter, Histogram

from services.bpjs_sync_worker.verify import Ticket
from shared import tracing
from shared.bpjs import BpjsClient, BpjsCredentials, CallResult
from shared.reasons import bpjs_reason
from shared.sync_job.machine import Call, Step

BPJS_LATENCY = Histogram(
    "bpjs_call_duration_seconds",
    "BPJS call latency",
    ["call", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 20),
)
BPJS_CALLS = Counter("bpjs_calls_total", "BPJS calls by call and outcome", ["call", "outcome"])
ABSENT_TASK = 99  # "tidak hadir/batal" in BPJS's task timeline


class Syncer:
    def __init__(self, client: BpjsClient) -> None:
        self.client = client

    async def call(self, step: Step, ticket: Ticket, creds: BpjsCredentials) -> Call:
        """One call of `step`, every field taken from the ticket row, never the event."""
        with tracing.span(
            f"bpjs {step.value}",
            kind=tracing.SpanKind.CLIENT,
            attributes={"queue_id": ticket.queue_id, "call": step.value},
        ) as span:
            result = await self._send(step, ticket, creds)
            o = result.outcome
            # Never the request or its headers: they hold the clinic's credentials.
            span.set(outcome=o.kind.value, **{"http.response.status_code": result.http_status})
            if not result.ok:
                span.fail(o.kind.value)
        tracing.annotate(outcome=o.kind.value)  # the attempt's: the last call decides it
        BPJS_LATENCY.labels(step.value, o.kind.value).observe(result.elapsed)
        BPJS_CALLS.labels(step.value, o.kind.value).inc()
        recorded = _has_task99(result.data) if step is Step.READBACK else None
        return Call(step, o.kind.value, o.code, o.message, o.detail, recorded)

    async def _send(self, step: Step, ticket: Ticket, creds: BpjsCredentials) -> CallResult:
        if step is Step.CANCEL:
            return await self._cancel(creds, ticket)
        if step is Step.TASK99:
            booking = ticket.booking("booking_code")
            now_ms = int(time.time() * 1000)
            return await self.client.update_task(creds, booking, ABSENT_TASK, now_ms)
        return await self.client.get_list_task(creds, ticket.booking("booking_code"))

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


async def traced_attempt(job: Any, work: Awaitable[None]) -> None:
    """Run a claimed job's attempt `work` as a span continuing the job's trace, with its queue
    id on every log line."""
    queue_id = job["queue_id"]
    with (
        tracing.span(
            "bpjs sync attempt",
            parent=job["traceparent"],
            attributes={
                "queue_id": queue_id,
                "clinic_id": job["clinic_id"],
                "attempt": job["attempts"] + 1,
            },
        ),
        structlog.contextvars.bound_contextvars(queue_id=queue_id),
    ):
        await work


def _has_task99(data: Any) -> bool:
    """Whether a decrypted `getlisttask` reply (a bare list or `{"list": [...]}`) lists task 99.
    Numbers may come as strings."""
    items = data.get("list") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return False
    for item in items:
        if isinstance(item, dict) and str(item.get("taskid", "")).strip() == str(ABSENT_TASK):
            return True
    return False
